//go:build !linux

package redisbench

import "syscall"

// sysProcAttr returns nil: only Linux offers a parent-death signal, so
// elsewhere Close is the only guarantee that the server stops.
func sysProcAttr() *syscall.SysProcAttr { return nil }
