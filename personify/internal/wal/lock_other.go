//go:build !unix

package wal

import (
	"errors"
	"io"
	"io/fs"
	"os"
)

// lockFile creates name exclusively; without flock, a crash leaves the file
// behind and the next Open reports the directory as locked until it is
// removed by hand.
func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, ErrLockHeld
	}
	if err != nil {
		return nil, err
	}
	return removeOnClose{f}, nil
}

type removeOnClose struct{ *os.File }

func (r removeOnClose) Close() error {
	err := r.File.Close()
	if rerr := os.Remove(r.Name()); err == nil {
		err = rerr
	}
	return err
}
