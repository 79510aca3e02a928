//go:build !linux

package bench

import "unsafe"

func adviseHugePages(unsafe.Pointer, uintptr) {}
