package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Files of a durable engine's directory:
//
//	LOCK                      held (flock) while an engine has the directory open
//	snapshot-<seq>.pfy        the state after log record <seq> (16 hex digits)
//	log-<seq>.wal             log records from <seq> on
//	*.tmp                     a snapshot or log being written; removed when found
//
// A compaction at <seq> writes snapshot-<seq> and log-<seq+1>: the snapshot
// is written and fsynced under a temporary name, the log is created and
// made durable, the snapshot is renamed into place, appends switch to the
// new log, and every older file is removed last: that is how an erasure
// leaves the disk. So the newest snapshot's next log always exists, and a
// directory where it is missing, or where logs leave a gap, is corrupt: a
// deleted log is never an empty history.
const lockName = "LOCK"

// ErrLocked is returned by OpenDir when another engine (in this process or
// another) has the directory open.
var ErrLocked = errors.New("the directory is in use by another engine")

// ErrLockHeld is returned by an FS's Lock when another holder has the lock.
var ErrLockHeld = errors.New("lock held")

// Dir is a durable engine's directory, locked for the engine's lifetime.
// It is not safe for concurrent use.
type Dir struct {
	fs   FS
	path string
	lock io.Closer
}

// OpenDir creates dir if needed and locks it.
func OpenDir(fs FS, dir string) (*Dir, error) {
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := fs.Lock(filepath.Join(dir, lockName))
	if errors.Is(err, ErrLockHeld) {
		return nil, fmt.Errorf("%w: %s (close the other engine first; a crashed process releases it by itself)", ErrLocked, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return &Dir{fs: fs, path: dir, lock: lock}, nil
}

// Close releases the lock.
func (d *Dir) Close() error { return d.lock.Close() }

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

// SnapshotPath and LogPath name the files of sequence number seq.
func (d *Dir) SnapshotPath(seq uint64) string {
	return filepath.Join(d.path, fmt.Sprintf("snapshot-%016x.pfy", seq))
}
func (d *Dir) LogPath(seq uint64) string {
	return filepath.Join(d.path, fmt.Sprintf("log-%016x.wal", seq))
}

// parseName returns the sequence number in a snapshot or log file name.
func parseName(name, prefix, suffix string) (uint64, bool) {
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
		return 0, false
	}
	hex := strings.TrimSuffix(strings.TrimPrefix(name, prefix), suffix)
	if len(hex) != 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 64)
	return v, err == nil
}

// List returns the sequence numbers of the directory's snapshots and logs,
// ascending, and removes the temporary files of an unfinished snapshot or
// log.
func (d *Dir) List() (snaps, logs []uint64, err error) {
	entries, err := d.fs.ReadDir(d.path)
	if err != nil {
		return nil, nil, err
	}
	for _, de := range entries {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = d.fs.Remove(filepath.Join(d.path, name))
			continue
		}
		if seq, ok := parseName(name, "snapshot-", ".pfy"); ok {
			snaps = append(snaps, seq)
		} else if seq, ok := parseName(name, "log-", ".wal"); ok {
			logs = append(logs, seq)
		}
	}
	slices.Sort(snaps)
	slices.Sort(logs)
	return snaps, logs, nil
}

// HeaderOnly reports whether log <start> holds a header and nothing else.
func (d *Dir) HeaderOnly(start uint64) bool {
	f, err := d.fs.OpenFile(d.LogPath(start), os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	return err == nil && fi.Size() == LogHeaderLen
}

// ReadSnapshot opens snapshot <seq> and hands read a reader of it.
func (d *Dir) ReadSnapshot(seq uint64, read func(r io.Reader, name string) error) error {
	name := d.SnapshotPath(seq)
	f, err := d.fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return pathErr("open", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return pathErr("open", name, err)
	}
	return read(io.NewSectionReader(f, 0, fi.Size()), name)
}

// Replay replays log <start>; see the package's Replay.
func (d *Dir) Replay(start uint64, last bool, checkKey func(name string, key [8]byte) error,
	record func(version int, seq uint64, payload []byte, off int64) error,
	torn func(name string, off int64, dropped int, reason error)) (*Log, error) {
	name := d.LogPath(start)
	return Replay(d.fs, name, start, last, checkKey, record, func(off int64, n int, reason error) { torn(name, off, n, reason) })
}

// Compaction is the outcome of Dir.Compact.
type Compaction struct {
	// Log is the log appends go to from now on (the new one, or the one
	// given if the new one could not be made).
	Log *Log
	// Installed reports whether the snapshot is in place.
	Installed bool
	// Synced reports whether the directory was synced after the snapshot
	// was renamed into place: until a sync succeeds, older files must stay.
	Synced bool
}

// Compact writes snapshot <seq> with write and starts log <seq+1>, in the
// order that keeps every moment on disk consistent: the snapshot under a
// temporary name, fsynced; the next log created and made durable; the
// snapshot renamed into place; appends switched to the new log; the
// directory synced. A crash between two steps leaves an older snapshot
// whose logs still cover every record. If active is already log <seq+1>
// with nothing in it, it stays. The caller removes older files
// (RemoveStale) once the result is Synced.
func (d *Dir) Compact(seq uint64, key [8]byte, active *Log, write func(io.Writer) error) (Compaction, error) {
	final := d.SnapshotPath(seq)
	tmp := final + ".tmp"
	f, err := d.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return Compaction{Log: active}, pathErr("create", tmp, err)
	}
	err = write(io.NewOffsetWriter(f, 0))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = d.fs.Remove(tmp)
		return Compaction{Log: active}, fmt.Errorf("write snapshot %s: %w", final, err)
	}
	var next *Log // nil: log <seq+1> is already the active log, with nothing in it
	if active == nil || active.start != seq+1 {
		if next, err = createLog(d.fs, d.path, d.LogPath(seq+1), seq+1, key); err != nil {
			_ = d.fs.Remove(tmp)
			return Compaction{Log: active}, err // appends go on in the current log
		}
	}
	if err := d.fs.Rename(tmp, final); err != nil {
		_ = d.fs.Remove(tmp)
		if next != nil {
			// Decided by the removal alone: never append to a file whose
			// name is gone. If the removal does not survive a crash, the
			// empty log reappears after the current one, which replay
			// accepts.
			if d.fs.Remove(next.name) == nil {
				_ = d.fs.SyncDir(d.path)
				next.Close()
			} else {
				// The new log stays: follow it, the older logs still cover
				// every record.
				closeLog(active)
				active = next
			}
		}
		return Compaction{Log: active}, fmt.Errorf("install snapshot %s: %w", final, err)
	}
	// The snapshot is in place and its next log exists: whether or not the
	// rename survives a crash, the files on disk cover every record.
	if next != nil {
		closeLog(active)
		active = next
	}
	if err := d.fs.SyncDir(d.path); err != nil {
		return Compaction{Log: active, Installed: true}, fmt.Errorf("snapshot %s: sync the directory: %w", final, err)
	}
	return Compaction{Log: active, Installed: true, Synced: true}, nil
}

func closeLog(l *Log) {
	if l != nil {
		l.Close()
	}
}

// SyncDir makes the directory's entries durable.
func (d *Dir) SyncDir() error { return d.fs.SyncDir(d.path) }

// RemoveStale removes the snapshots older than snapshot <snapSeq>, the
// logs whose records are all in it (but active), and temporary files
// left by failed removals (nothing is being written while it runs), and
// reports whether none is left.
func (d *Dir) RemoveStale(snapSeq uint64, active *Log) bool {
	entries, err := d.fs.ReadDir(d.path)
	if err != nil {
		return false
	}
	clean, removed := true, false
	for _, de := range entries {
		name := de.Name()
		path := filepath.Join(d.path, name)
		stale := strings.HasSuffix(name, ".tmp")
		if seq, ok := parseName(name, "snapshot-", ".pfy"); ok && seq < snapSeq {
			stale = true
		}
		if seq, ok := parseName(name, "log-", ".wal"); ok && seq <= snapSeq && (active == nil || path != active.name) {
			stale = true
		}
		if stale {
			if d.fs.Remove(path) == nil {
				removed = true
			} else {
				clean = false
			}
		}
	}
	if removed && d.fs.SyncDir(d.path) != nil {
		clean = false
	}
	return clean
}
