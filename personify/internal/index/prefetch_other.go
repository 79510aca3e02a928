//go:build !amd64 && !arm64

package index

import "unsafe"

// Prefetch is a no-op where no Prefetch instruction is wired up.
func Prefetch(unsafe.Pointer) {}
