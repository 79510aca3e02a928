// Package wal is the durable engine's write-ahead log and the directory
// that holds it: the file seam, the lock file, frames and records with
// their checksums, appending with fsync (and cutting a failed write back),
// group commit, replay with the torn-tail rule, and the order in which a
// compaction's files appear and disappear. It knows files, frames and
// records; the records' payloads are the engine's, handed in encoded and
// handed back on replay.
package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// A log file starts with a 24-byte header: magic "PFYLOG2\n" (or
// "PFYLOG1\n", the format of earlier releases, read but never appended
// to), the 8-byte fingerprint of the key it was started under, and the
// sequence number of its first record (little endian). Frames follow.
const (
	// LogMagic starts every log this package writes; LogMagicV1 those of
	// earlier releases.
	LogMagic     = "PFYLOG2\n"
	LogMagicV1   = "PFYLOG1\n"
	LogHeaderLen = 24
	// LogVersion is the version of the logs this package writes; payloads
	// are decoded with the version of the log they come from.
	LogVersion = 2
)

// ErrCorrupt is wrapped by every error about damaged or inconsistent
// files; the engine reports it as its own ErrCorrupt.
var ErrCorrupt = errors.New("stored data is corrupt")

// CorruptError names a damaged file and where the damage is.
type CorruptError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corrupt(name string, off int64, format string, args ...any) error {
	return &CorruptError{File: name, Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// Log is the log file being appended to. It is not safe for concurrent
// use: the group commit's leader (or the store, exclusively) uses it.
type Log struct {
	f       File
	name    string
	size    int64
	start   uint64
	version int
	dirty   bool // a failed write may have left bytes past size
}

// Name returns the log's path.
func (l *Log) Name() string { return l.name }

// Start returns the sequence number the log starts at.
func (l *Log) Start() uint64 { return l.start }

// Size returns the log's length in bytes.
func (l *Log) Size() int64 { return l.size }

// Version returns the log's format version: a log of an earlier version is
// replayed but never appended to.
func (l *Log) Version() int { return l.version }

// Close closes the file.
func (l *Log) Close() error { return l.f.Close() }

// createLog creates log file name, empty but for its header, under a
// temporary name that is fsynced and renamed, so that a log exists whole
// or not at all, and makes the rename durable.
func createLog(fs FS, dir, name string, start uint64, key [8]byte) (*Log, error) {
	tmp := name + ".tmp"
	f, err := fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, pathErr("create", name, err)
	}
	var h [LogHeaderLen]byte
	copy(h[:], LogMagic)
	copy(h[8:], key[:])
	binary.LittleEndian.PutUint64(h[16:], start)
	_, err = f.WriteAt(h[:], 0)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = fs.Rename(tmp, name)
	}
	if err == nil {
		err = fs.SyncDir(dir)
	}
	if err != nil {
		f.Close()
		_ = fs.Remove(tmp)
		_ = fs.Remove(name) // if the rename happened; replay copes if this fails too
		return nil, pathErr("create", name, err)
	}
	return &Log{f: f, name: name, size: LogHeaderLen, start: start, version: LogVersion}, nil
}

// ErrWrite is wrapped by the errors of a write that did not reach the log:
// nothing of it is on disk, and a later write starts clean.
var ErrWrite = errors.New("log write failed")

// Append writes b at the end of the log and fsyncs. On failure it cuts
// the log back to where it was, durably, so that the failed frame cannot
// come back after a crash (and retries the cut first next time if that
// failed too).
func (l *Log) Append(b []byte) error {
	if l.dirty {
		err := l.f.Truncate(l.size)
		if err == nil {
			err = l.f.Sync()
		}
		if err != nil {
			return fmt.Errorf("%w: %s: cannot undo an earlier failed write: %w", ErrWrite, l.name, err)
		}
		l.dirty = false
	}
	_, err := l.f.WriteAt(b, l.size)
	if err == nil {
		err = l.f.Sync()
	}
	if err != nil {
		l.dirty = true
		if l.f.Truncate(l.size) == nil && l.f.Sync() == nil {
			l.dirty = false
		}
		return fmt.Errorf("%w: %s: %w", ErrWrite, l.name, err)
	}
	l.size += int64(len(b))
	return nil
}

// Header is what a log's header says.
type Header struct {
	Version int
	Key     [8]byte // the fingerprint of the key the log was started under
	Start   uint64
}

// Replay reads log file name, which must start at sequence number start,
// and calls record for every record in it, in order, with the log's
// version; checkKey vets the log's key fingerprint first. In the last log
// (last), a damaged frame with no valid frame after it is a torn write (a
// crash mid-append): it is cut off, durably, and torn is called with what
// was dropped. Anywhere else damage is a CorruptError. For the last log,
// Replay returns it open for appending.
func Replay(fs FS, name string, start uint64, last bool, checkKey func(name string, key [8]byte) error,
	record func(version int, seq uint64, payload []byte, off int64) error,
	torn func(off int64, dropped int, reason error)) (*Log, error) {
	f, err := fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	fail := func(err error) (*Log, error) {
		f.Close()
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fail(pathErr("read", name, err))
	}
	h := Header{}
	if len(b) >= LogHeaderLen {
		switch string(b[:8]) {
		case LogMagic:
			h.Version = LogVersion
		case LogMagicV1:
			h.Version = 1
		}
		copy(h.Key[:], b[8:16])
		h.Start = binary.LittleEndian.Uint64(b[16:])
	}
	if h.Version == 0 || h.Start != start {
		return fail(corrupt(name, 0, "not a personify log header"))
	}
	if err := checkKey(name, h.Key); err != nil {
		return fail(err)
	}
	off := LogHeaderLen
	for off < len(b) {
		payload, size, err := DecodeFrame(b[off:])
		if err != nil {
			if last && !validFrameAfter(b, off+1) {
				torn(int64(off), len(b)-off, err)
				if err := f.Truncate(int64(off)); err != nil {
					return fail(fmt.Errorf("truncate the torn tail of %s at %d: %w", name, off, err))
				}
				if err := f.Sync(); err != nil {
					return fail(fmt.Errorf("sync %s: %w", name, err))
				}
				b = b[:off]
				break
			}
			return fail(corrupt(name, int64(off), "%v (valid frames follow, so this is not a torn write)", err))
		}
		for roff := 0; roff < len(payload); {
			at := int64(off + FrameHeaderLen + roff)
			seq, p, rsize, err := DecodeRecord(payload[roff:])
			if err != nil {
				return fail(corrupt(name, at, "%v", err))
			}
			if err := record(h.Version, seq, p, at); err != nil {
				var ce *CorruptError
				if errors.As(err, &ce) {
					return fail(err)
				}
				return fail(corrupt(name, at, "%v", err))
			}
			roff += rsize
		}
		off += size
	}
	if !last {
		f.Close()
		return nil, nil
	}
	return &Log{f: f, name: name, size: int64(len(b)), start: start, version: h.Version}, nil
}
