package redisbench

import "syscall"

// sysProcAttr asks the kernel to kill redis-server if the process that
// started it dies without calling Close (a panicking or timed-out test
// binary), so no server outlives its owner.
// The kernel sends it when the starting OS thread exits, which the Go runtime
// does only when a goroutine locked to its thread returns; calling Start from
// such a goroutine would kill the server early.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
