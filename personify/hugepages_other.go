//go:build !linux

package personify

import "unsafe"

// adviseHugePages is a no-op outside Linux.
func adviseHugePages(unsafe.Pointer, uintptr) {}
