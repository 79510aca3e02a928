package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// FS is the seam between a durable engine and the disk, so that tests can
// inject failures (a full disk, a failing fsync, a rename that fails).
// Paths are absolute or relative to the process; OS is the real one.
type FS interface {
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	ReadDir(name string) ([]os.DirEntry, error)
	MkdirAll(path string, perm os.FileMode) error
	// SyncDir makes the directory's entries (creations, renames, removals)
	// durable.
	SyncDir(name string) error
	// Lock takes an exclusive lock on the file name, for the life of the
	// returned closer, or fails at once if another process holds it.
	Lock(name string) (io.Closer, error)
}

// File is what the log does with an open file.
type File interface {
	io.Reader
	io.ReaderAt
	io.WriterAt // writes name their offset, so the fault seam sees every one
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// OS is the real file system.
type OS struct{}

func (OS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	return os.OpenFile(name, flag, perm)
}
func (OS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (OS) Remove(name string) error                     { return os.Remove(name) }
func (OS) ReadDir(name string) ([]os.DirEntry, error)   { return os.ReadDir(name) }
func (OS) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }
func (OS) Lock(name string) (io.Closer, error)          { return lockFile(name) }

func (OS) SyncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// pathErr names the file an operation failed on, unless err (an
// *os.PathError, as the os package returns) already does.
func pathErr(op, name string, err error) error {
	if pe := (*os.PathError)(nil); errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}
