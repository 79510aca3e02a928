//go:build unix

package wal

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock (flock) on name, creating it.
// The lock ends when the returned file is closed or the process dies, so a
// crash never leaves a stale lock behind.
func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLockHeld
		}
		return nil, err
	}
	return f, nil
}
