//go:build !linux

package index

import "unsafe"

// adviseHugePages is a no-op outside Linux.
func adviseHugePages(unsafe.Pointer, uintptr) {}
