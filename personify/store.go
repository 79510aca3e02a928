package personify

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// Files of a durable engine's directory:
//
//	LOCK                      held (flock) while an engine has the directory open
//	snapshot-<seq>.pfy        the state after log record <seq> (16 hex digits)
//	log-<seq>.wal             log records from <seq> on
//	*.tmp                     a snapshot being written; removed by Open
//
// A log file starts with a 24-byte header (magic "PFYLOG2\n", the key
// fingerprint it was started under, the first sequence number), then
// frames of records (see op.go). A compaction writes snapshot-<seq> and
// log-<seq+1>: the log is created (and made durable) first, the snapshot
// renamed into place after it, and every older file removed last: that is
// how an erasure leaves the disk. So the newest snapshot's next log always
// exists, and Open refuses a directory where it is missing, or where logs
// leave a gap, as ErrCorrupt: a deleted log is never an empty history.
// Logs of earlier releases ("PFYLOG1\n", version 1 records) are read, and
// Open compacts them away before it appends.
const (
	logMagic     = "PFYLOG2\n"
	logMagicV1   = "PFYLOG1\n"
	logHeaderLen = 24
	lockName     = "LOCK"
)

// Durable-mode errors.
var (
	// ErrLocked is returned by Open when another engine (in this process or
	// another) has the directory open.
	ErrLocked = errors.New("personify: directory is in use by another engine")
	// ErrWrongKey is returned by Open and LoadSnapshot when the data was
	// written under a key the engine was not given.
	ErrWrongKey = errors.New("personify: data was written under another key")

	errLockHeld = errors.New("lock held")
)

// DurableOptions are the settings of a durable engine (Options.Durable),
// which New ignores.
type DurableOptions struct {
	// MaintenanceInterval is how often the engine applies retention
	// (Expire), ends key grace periods, and writes a snapshot when the log
	// has grown. Zero means one minute; negative turns maintenance off:
	// then call Expire and Compact yourself, Compact by each receipt's
	// PurgeBy included (Open still compacts for erasures that are overdue).
	MaintenanceInterval time.Duration
	// CompactAfter is the log size, in bytes, past which maintenance writes
	// a snapshot and starts a new log. Zero means 64 MiB.
	CompactAfter int64
	// PurgeWithin is the deadline an erasure's receipt promises for its
	// physical deletion (Receipt.PurgeBy); maintenance compacts within a
	// quarter of it after a Forget, so that the erasures of that window
	// share one snapshot. The deadline is logged with the erasure, so it
	// holds across restarts (Open compacts at once for erasures whose time
	// came while the engine was down). Zero means one minute; at most 30
	// days (the GDPR's one month).
	PurgeWithin time.Duration

	fs fileSystem // nil: the real one; tests inject faults here
}

// store is a durable engine's log and snapshots.
type store struct {
	dir         string
	fs          fileSystem
	lock        io.Closer
	purgeWithin time.Duration
	compactAt   int64
	interval    time.Duration
	audit       *slog.Logger

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*pending
	leading bool // a leader is writing: the others wait

	// Leader-only.
	log      file
	logName  string
	logSize  int64
	dirty    bool   // a failed write may have left bytes past logSize
	seq      uint64 // last record written
	snapSeq  uint64 // last snapshot's seq
	buf      []byte
	logStart uint64 // the active log's first sequence number
	// needSnapshot is set when LoadSnapshot installed a state that is not
	// on disk yet; writes wait for a snapshot of it.
	needSnapshot error
	logVersion   int // record version of the active log (a log of an earlier release is never appended to)
	// snapUnsynced is set when the newest snapshot was renamed into place
	// but the directory sync after it failed: no older file is removed
	// until a sync succeeds.
	snapUnsynced bool

	purged atomic.Uint64 // every record up to here is in a snapshot and no older file remains
	// purgeReq is the earliest time an erasure wants a compaction by (zero:
	// none asked since maintenance last looked); purge signals it.
	pmu      sync.Mutex
	purgeReq time.Time
	purge    chan struct{}
	grow     chan struct{} // the log passed CompactAfter
	stop     chan struct{}
	stopped  chan struct{}
}

type pending struct {
	o    *op
	seq  uint64
	res  opResult
	err  error
	done bool
}

// Open opens (creating if needed) a durable engine whose data lives in dir:
// every change is logged and fsynced before it returns, so that it
// survives a crash, and the state is snapshotted from time to time. Open
// loads the newest snapshot and replays the log after it; a torn record at
// the end of the log (a crash mid-write) is dropped with a warning in the
// audit log, and any other damage is an error wrapping ErrCorrupt that
// names the file and offset. Data written under another key is refused
// with ErrWrongKey; a directory that another engine has open, with
// ErrLocked.
//
// The engine runs maintenance in the background (see Options.Durable) until
// Close, which must be called to release the directory.
func Open(dir string, opts Options) (*Engine, error) {
	dopts := opts.Durable
	e, err := New(opts)
	if err != nil {
		return nil, err
	}
	fs := dopts.fs
	if fs == nil {
		fs = osFS{}
	}
	s := &store{dir: dir, fs: fs, purgeWithin: dopts.PurgeWithin, compactAt: dopts.CompactAfter,
		interval: dopts.MaintenanceInterval, audit: e.audit,
		purge: make(chan struct{}, 1), grow: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	if s.purgeWithin <= 0 {
		s.purgeWithin = time.Minute
	}
	if s.purgeWithin > maxPurgeWithin {
		return nil, fmt.Errorf("%w: Options.Durable.PurgeWithin is %v: an erasure's physical deletion can be promised for at most %v", ErrInvalidDefinition, s.purgeWithin, maxPurgeWithin)
	}
	if s.compactAt <= 0 {
		s.compactAt = 64 << 20
	}
	if s.interval == 0 {
		s.interval = time.Minute
	}
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("personify: open %s: %w", dir, err)
	}
	lock, err := fs.Lock(filepath.Join(dir, lockName))
	if errors.Is(err, errLockHeld) {
		return nil, fmt.Errorf("%w: %s (close the other engine first; a crashed process releases it by itself)", ErrLocked, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("personify: open %s: lock: %w", dir, err)
	}
	s.lock = lock
	e.schedulePurge = s.requestPurge
	if err := s.load(e, opts); err != nil {
		lock.Close()
		return nil, err
	}
	// Restore what Open guarantees before the first write: appends go to
	// a current-format log that follows the newest snapshot, and an
	// erasure whose compaction was due while the engine was down is
	// physically complete before Open returns.
	due, pending := s.nextPurge(e)
	if s.logVersion != recVersion || s.logStart != s.snapSeq+1 || pending && !due.After(e.now()) {
		if err := s.compactLocked(e); err != nil {
			if s.logVersion != recVersion {
				s.log.Close()
				lock.Close()
				return nil, fmt.Errorf("personify: open %s: the log was written by an earlier release and could not be compacted into the current format: %w", dir, err)
			}
			s.warn("compact", err) // maintenance retries
		}
	}
	e.store = s
	if s.interval > 0 {
		go s.maintain(e)
	} else {
		close(s.stopped)
	}
	return e, nil
}

func snapName(seq uint64) string { return fmt.Sprintf("snapshot-%016x.pfy", seq) }
func logName(seq uint64) string  { return fmt.Sprintf("log-%016x.wal", seq) }

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

func (s *store) path(name string) string { return filepath.Join(s.dir, name) }

// load brings e to the state on disk, or initializes an empty directory.
func (s *store) load(e *Engine, opts Options) error {
	entries, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("personify: open %s: %w", s.dir, err)
	}
	var snaps, logs []uint64
	for _, de := range entries {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = s.fs.Remove(s.path(name)) // an unfinished snapshot
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
	if len(snaps) == 0 {
		// A new directory (or one whose creation crashed after its first,
		// empty log): log 1, then an empty snapshot that records the key.
		if len(logs) > 1 || len(logs) == 1 && (logs[0] != 1 || !s.headerOnly(logs[0])) {
			return fmt.Errorf("%w: %s holds logs but no snapshot: restore the snapshot from a backup", ErrCorrupt, s.dir)
		}
		s.logVersion = recVersion
		return s.compactLocked(e)
	}
	s.snapSeq = snaps[len(snaps)-1]
	name := s.path(snapName(s.snapSeq))
	f, err := s.fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("personify: open %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("personify: open %s: %w", name, err)
	}
	st, err := readState(io.NewSectionReader(f, 0, fi.Size()), name, e.keySet(), e.hasher)
	f.Close()
	if err != nil {
		return err
	}
	if st.meta.Seq != s.snapSeq {
		return corrupt(name, 0, "holds sequence %d, its name says %d", st.meta.Seq, s.snapSeq)
	}
	e.mu.Lock()
	e.installLocked(st)
	e.mu.Unlock()
	s.seq = s.snapSeq
	if !slices.Contains(logs, s.snapSeq+1) {
		return corrupt(s.path(logName(s.snapSeq+1)), 0, "is missing: the newest snapshot (%s) is followed by this log, so every write since the snapshot would be lost; restore it from a backup", snapName(s.snapSeq))
	}

	// Replay every record after the snapshot, in order.
	e.replaying = true
	defer func() { e.replaying = false }()
	// Every log, oldest first: records the snapshot holds are skipped. (A
	// log older than the snapshot can still hold newer records when a
	// compaction could not start its new log and appends went on in the
	// old one.)
	for i, start := range logs {
		if start > s.seq+1 {
			return corrupt(s.path(logName(start)), 0, "starts at record %d, but the logs before it end at record %d: the records in between are missing", start, s.seq)
		}
		if err := s.replay(e, start, i == len(logs)-1); err != nil {
			return err
		}
	}
	if cur := e.keyring().Current(); cur != opts.Key.Fingerprint() {
		return fmt.Errorf("%w: the data in %s is under key %s, Options.Key is %s: open it with that key, then call Engine.RotateKey to move to the new one",
			ErrWrongKey, s.dir, cur, opts.Key.Fingerprint())
	}
	s.markPurged(e)
	return nil
}

// headerOnly reports whether log <start> holds a header and nothing else.
func (s *store) headerOnly(start uint64) bool {
	f, err := s.fs.OpenFile(s.path(logName(start)), os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	return err == nil && fi.Size() == logHeaderLen
}

// replay applies the records of one log file after the snapshot. In the
// last file, a damaged record with nothing valid after it is a torn write
// (a crash mid-append) and is cut off; anywhere else damage is an error.
func (s *store) replay(e *Engine, start uint64, last bool) error {
	name := s.path(logName(start))
	f, err := s.fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("personify: open %s: %w", name, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("personify: read %s: %w", name, err)
	}
	version := 0
	if len(b) >= logHeaderLen {
		switch string(b[:8]) {
		case logMagic:
			version = recVersion
		case logMagicV1:
			version = 1
		}
	}
	keep := func() {
		if last {
			s.log, s.logName, s.logSize, s.logStart, s.logVersion = f, name, int64(len(b)), start, version
		} else {
			f.Close()
		}
	}
	if version == 0 || binary.LittleEndian.Uint64(b[16:]) != start {
		f.Close()
		return corrupt(name, 0, "not a personify log header")
	}
	var fp anonymize.Fingerprint
	copy(fp[:], b[8:16])
	if !e.hasKey(fp) && !slices.ContainsFunc(e.ringKeys(), func(k anonymize.KeyInfo) bool { return k.Fingerprint == fp }) {
		f.Close()
		return fmt.Errorf("%w: %s was written under key %s, which the engine was not given", ErrWrongKey, name, fp)
	}
	off := logHeaderLen
	for off < len(b) {
		payload, size, err := decodeFrame(b[off:])
		if err != nil {
			if last && !validFrameAfter(b, off+1) {
				s.audit.LogAttrs(context.Background(), slog.LevelWarn, "personify.torn_log_tail",
					slog.String("file", name), slog.Int("offset", off), slog.Int("bytes_dropped", len(b)-off), slog.String("reason", err.Error()))
				if err := f.Truncate(int64(off)); err != nil {
					f.Close()
					return fmt.Errorf("personify: truncate the torn tail of %s at %d: %w", name, off, err)
				}
				if err := f.Sync(); err != nil {
					f.Close()
					return fmt.Errorf("personify: sync %s: %w", name, err)
				}
				b = b[:off]
				break
			}
			f.Close()
			return corrupt(name, int64(off), "%v (valid frames follow, so this is not a torn write)", err)
		}
		for roff := 0; roff < len(payload); {
			seq, o, rsize, err := decodeRecordVersion(payload[roff:], version)
			if err != nil {
				f.Close()
				return corrupt(name, int64(off+frameHeaderLen+roff), "%v", err)
			}
			switch {
			case seq <= s.seq:
				// Already applied (in the snapshot, or an older log).
			case seq == s.seq+1:
				_, _ = e.applyRead(&o, "log") // an op that failed live fails the same way here
				s.seq = seq
			default:
				f.Close()
				return corrupt(name, int64(off+frameHeaderLen+roff), "record %d follows record %d", seq, s.seq)
			}
			roff += rsize
		}
		off += size
	}
	keep()
	return nil
}

// validFrameAfter reports whether any valid frame starts at or after off.
func validFrameAfter(b []byte, off int) bool {
	for off < len(b) {
		i := bytes.Index(b[off:], []byte(frameMagic))
		if i < 0 {
			return false
		}
		if _, _, err := decodeFrame(b[off+i:]); err == nil {
			return true
		}
		off += i + 1
	}
	return false
}

// createLog creates log file <start>, empty but for its header, under a
// temporary name that is fsynced and renamed, so that a log exists whole
// or not at all, and makes the rename durable. It returns the open file;
// the caller switches appends to it.
func (s *store) createLog(e *Engine, start uint64) (file, error) {
	name := s.path(logName(start))
	tmp := name + ".tmp"
	f, err := s.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("personify: create %s: %w", name, err)
	}
	var h [logHeaderLen]byte
	copy(h[:], logMagic)
	fp := e.keyring().Current()
	copy(h[8:], fp[:])
	binary.LittleEndian.PutUint64(h[16:], start)
	_, err = f.WriteAt(h[:], 0)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = s.fs.Rename(tmp, name)
	}
	if err == nil {
		err = s.fs.SyncDir(s.dir)
	}
	if err != nil {
		f.Close()
		_ = s.fs.Remove(tmp)
		_ = s.fs.Remove(name) // if the rename happened; Open copes if this fails too
		return nil, fmt.Errorf("personify: create %s: %w", name, err)
	}
	return f, nil
}

// switchLog makes f, log <start>, the one appended to.
func (s *store) switchLog(f file, start uint64) {
	if s.log != nil {
		s.log.Close()
	}
	s.log, s.logName, s.logSize, s.logStart, s.logVersion, s.dirty = f, s.path(logName(start)), logHeaderLen, start, recVersion, false
}

// removeStale removes snapshots older than the newest and logs whose
// records are all in it, and reports whether none is left.
func (s *store) removeStale() bool {
	entries, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return false
	}
	clean, removed := true, false
	for _, de := range entries {
		name := de.Name()
		stale := false
		if seq, ok := parseName(name, "snapshot-", ".pfy"); ok && seq < s.snapSeq {
			stale = true
		}
		if seq, ok := parseName(name, "log-", ".wal"); ok && seq <= s.snapSeq && s.path(name) != s.logName {
			stale = true
		}
		if strings.HasSuffix(name, ".tmp") { // a snapshot or log whose removal failed; none is being written now
			stale = true
		}
		if stale {
			if s.fs.Remove(s.path(name)) == nil {
				removed = true
			} else {
				clean = false
			}
		}
	}
	if removed && s.fs.SyncDir(s.dir) != nil {
		clean = false
	}
	return clean
}

// markPurged records that no file holds anything erased up to the newest
// snapshot, if that is so: the active log starts after the snapshot and
// every older file is gone. The erasures it completes leave the engine's
// pending list.
func (s *store) markPurged(e *Engine) {
	if s.snapUnsynced {
		if s.fs.SyncDir(s.dir) != nil {
			return
		}
		s.snapUnsynced = false
	}
	if s.logStart == s.snapSeq+1 && s.removeStale() {
		s.purged.Store(s.snapSeq)
		e.mu.Lock()
		e.nextPurgeLocked(s.snapSeq)
		e.mu.Unlock()
	}
}

// nextPurge returns when the next compaction for an erasure is due, if one
// is pending.
func (s *store) nextPurge(e *Engine) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nextPurgeLocked(s.purged.Load())
}

// commit logs o with whatever other writers have queued meanwhile (one
// write and one fsync for all of them: group commit), then applies them in
// log order. A write or fsync that fails fails every op of the batch, and
// none of them is applied.
func (s *store) commit(e *Engine, o *op) (opResult, error) {
	p := &pending{o: o}
	s.mu.Lock()
	s.queue = append(s.queue, p)
	for s.leading && !p.done {
		s.cond.Wait()
	}
	if p.done {
		s.mu.Unlock()
		return p.res, p.err
	}
	s.leading = true
	batch := s.queue
	s.queue = nil
	s.mu.Unlock()

	s.flush(e, batch)

	s.mu.Lock()
	for _, b := range batch {
		b.done = true
	}
	s.leading = false
	s.cond.Broadcast()
	s.mu.Unlock()
	return p.res, p.err
}

// exclusive runs fn with no write in flight and none starting.
func (s *store) exclusive(fn func() error) error {
	s.mu.Lock()
	for s.leading {
		s.cond.Wait()
	}
	s.leading = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.leading = false
		s.cond.Broadcast()
		s.mu.Unlock()
	}()
	return fn()
}

func (s *store) flush(e *Engine, batch []*pending) {
	if s.needSnapshot != nil { // a LoadSnapshot's state is not on disk yet: nothing else may be logged
		if err := s.compactLocked(e); err != nil {
			for _, b := range batch {
				b.err = fmt.Errorf("%w: the state loaded by LoadSnapshot could not be saved: %w", errWrite, err)
			}
			return
		}
	}
	buf := startFrame(s.buf[:0])
	frame := 0 // where the current frame starts in buf
	var logged []*pending
	for _, b := range batch {
		if err := e.check(b.o); err != nil {
			b.err = err
			continue
		}
		if len(logged) > 0 && len(buf)-frame+recHeaderLen+b.o.sizeBound() > maxFrameLen {
			// A frame's length field has 31 bits: a batch this large is
			// written as several frames, still with one write and fsync.
			buf = endFrame(buf, frame)
			frame = len(buf)
			buf = startFrame(buf)
		}
		b.seq = s.seq + uint64(len(logged)) + 1
		buf = appendRecord(buf, b.seq, b.o)
		logged = append(logged, b)
	}
	buf = endFrame(buf, frame)
	if cap(buf) <= 1<<20 {
		s.buf = buf
	}
	if len(logged) == 0 {
		return
	}
	if err := s.append(buf); err != nil {
		for _, b := range logged {
			b.err = err
		}
		return
	}
	s.seq += uint64(len(logged))
	for _, b := range logged { // Close waits for this loop (it takes the store exclusively)
		b.o.seq = b.seq
		b.res, b.err = e.apply(b.o)
		b.res.seq = b.seq
	}
	if s.logSize > s.compactAt {
		s.kick()
	}
}

// append writes records at the end of the log and fsyncs. On failure it
// cuts the log back to where it was, so that a later write starts clean
// (and retries the cut first if that failed too).
func (s *store) append(b []byte) error {
	if s.log == nil {
		return fmt.Errorf("%w: the log is not open", errWrite)
	}
	if s.dirty {
		err := s.log.Truncate(s.logSize)
		if err == nil {
			err = s.log.Sync()
		}
		if err != nil {
			return fmt.Errorf("%w: %s: cannot undo an earlier failed write: %w", errWrite, s.logName, err)
		}
		s.dirty = false
	}
	_, err := s.log.WriteAt(b, s.logSize)
	if err == nil {
		err = s.log.Sync()
	}
	if err != nil {
		// Cut the failed frame off, durably, so that it cannot come back
		// after a crash; until that works, every write fails.
		s.dirty = true
		if s.log.Truncate(s.logSize) == nil && s.log.Sync() == nil {
			s.dirty = false
		}
		return fmt.Errorf("%w: %s: %w", errWrite, s.logName, err)
	}
	s.logSize += int64(len(b))
	return nil
}

// Compact writes a snapshot of the whole state, starts a new log, and
// removes every older snapshot and log, so that nothing erased or expired
// before the call remains in any file. Maintenance does this by itself
// (after Forget, and when the log grows); an in-memory engine has nothing
// to compact.
func (e *Engine) Compact() error {
	if e.closed.Load() {
		return ErrClosed
	}
	if e.store == nil {
		return nil
	}
	return e.store.exclusive(func() error { return e.store.compactLocked(e) })
}

// compactLocked writes snapshot-<seq> and starts log <seq+1>. The caller
// has the store to itself. The order keeps every moment on disk
// consistent: the snapshot is written and fsynced under a temporary name;
// the next log is created and made durable; the snapshot is renamed into
// place; appends switch to the new log; older files are removed. A crash
// between two steps leaves an older snapshot whose logs still cover every
// record.
func (s *store) compactLocked(e *Engine) error {
	seq := s.seq
	final := s.path(snapName(seq))
	tmp := final + ".tmp"
	f, err := s.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("personify: snapshot: %w", err)
	}
	_, err = e.writeSnapshot(io.NewOffsetWriter(f, 0), seq) // the codec buffers its own writes
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = s.fs.Remove(tmp)
		return fmt.Errorf("personify: snapshot %s: %w", final, err)
	}
	var next file // nil: log <seq+1> is already the active log, with nothing in it
	if s.log == nil || s.logStart != seq+1 {
		if next, err = s.createLog(e, seq+1); err != nil {
			_ = s.fs.Remove(tmp)
			return err // appends go on in the current log
		}
	}
	if err := s.fs.Rename(tmp, final); err != nil {
		_ = s.fs.Remove(tmp)
		if next != nil {
			// Decided by the removal alone: never append to a file whose
			// name is gone. If the removal does not survive a crash, the
			// empty log reappears after the current one, which replay
			// accepts.
			if s.fs.Remove(s.path(logName(seq+1))) == nil {
				_ = s.fs.SyncDir(s.dir)
				next.Close() // as if nothing happened: appends go on in the current log
			} else {
				s.switchLog(next, seq+1) // the new log stays: follow it, the older logs still cover every record
			}
		}
		return fmt.Errorf("personify: snapshot %s: %w", final, err)
	}
	// The snapshot is in place and its next log exists: whether or not the
	// rename survives a crash, the files on disk cover every record.
	if next != nil {
		s.switchLog(next, seq+1)
	}
	s.snapSeq = seq
	s.needSnapshot = nil
	if err := s.fs.SyncDir(s.dir); err != nil {
		s.snapUnsynced = true
		// Not known durable yet: the older files stay until a later
		// directory sync succeeds (markPurged retries it).
		return fmt.Errorf("personify: snapshot %s: sync the directory: %w", final, err)
	}
	s.snapUnsynced = false
	s.markPurged(e)
	return nil
}

// kick asks maintenance for a compaction now (the log has grown).
func (s *store) kick() {
	select {
	case s.grow <- struct{}{}:
	default:
	}
}

// requestPurge asks maintenance for a compaction by due (an erasure's
// engine.schedulePurge); the earliest request wins.
func (s *store) requestPurge(due time.Time) {
	s.pmu.Lock()
	if s.purgeReq.IsZero() || due.Before(s.purgeReq) {
		s.purgeReq = due
	}
	s.pmu.Unlock()
	select {
	case s.purge <- struct{}{}:
	default:
	}
}

// takePurgeRequest returns and clears the earliest requested time.
func (s *store) takePurgeRequest() time.Time {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	t := s.purgeReq
	s.purgeReq = time.Time{}
	return t
}

// maintain runs retention, key expiry and compaction until Close. A
// compaction for erasures runs when the earliest pending one is due (a
// quarter of its window after the Forget, so that the window's erasures
// share one snapshot); the pending erasures are part of the state, so this
// holds across restarts. A failed compaction is retried a second later.
func (s *store) maintain(e *Engine) {
	defer close(s.stopped)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var armed time.Time // when timer fires; zero: stopped
	arm := func(due time.Time) {
		if !armed.IsZero() && !due.Before(armed) {
			return
		}
		armed = due
		timer.Reset(max(due.Sub(e.now()), 0))
	}
	rearm := func() {
		if due, ok := s.nextPurge(e); ok {
			arm(due)
		}
	}
	if req := s.takePurgeRequest(); !req.IsZero() {
		arm(req)
	}
	rearm()
	for {
		select {
		case <-s.stop:
			timer.Stop()
			return
		case <-s.purge:
			if req := s.takePurgeRequest(); !req.IsZero() {
				arm(req)
			}
		case <-timer.C:
			armed = time.Time{}
			if err := s.compactIfNeeded(e, true); err != nil {
				arm(e.now().Add(time.Second))
				continue
			}
			rearm() // erasures that arrived during the compaction
		case <-s.grow:
			_ = s.compactIfNeeded(e, false)
		case <-t.C:
			if _, err := e.Expire(e.now()); err != nil && !errors.Is(err, ErrClosed) {
				s.warn("expire", err)
			}
			due, pending := s.nextPurge(e)
			_ = s.compactIfNeeded(e, pending && !due.After(e.now()))
			rearm()
		}
	}
}

func (s *store) compactIfNeeded(e *Engine, asked bool) error {
	err := s.exclusive(func() error {
		if e.closed.Load() {
			return nil
		}
		if s.seq == s.snapSeq && s.logStart == s.snapSeq+1 { // the newest snapshot holds everything
			s.markPurged(e)
			if s.purged.Load() < s.snapSeq {
				return fmt.Errorf("personify: older files in %s could not be removed", s.dir)
			}
			return nil
		}
		if !asked && s.logSize < s.compactAt {
			return nil
		}
		return s.compactLocked(e)
	})
	if err != nil {
		s.warn("compact", err)
	}
	return err
}

func (s *store) warn(what string, err error) {
	s.audit.LogAttrs(context.Background(), slog.LevelWarn, "personify."+what+"_failed", slog.String("error", err.Error()))
}

// close stops maintenance, waits for the write in flight, marks the
// engine closed and releases the files.
func (s *store) close(e *Engine) error {
	close(s.stop)
	<-s.stopped
	return s.exclusive(func() error {
		e.markClosed()
		var err error
		if s.log != nil {
			err = s.log.Close()
			s.log = nil
		}
		if lerr := s.lock.Close(); err == nil {
			err = lerr
		}
		return err
	})
}

// Purged reports whether the erasure that r proves is physically complete:
// no snapshot or log under the engine's directory (or row in a fleet's
// database) holds the person any more. In memory it is complete when Forget
// returns. A receipt that does not verify against this engine's receipt
// keys (altered, or issued elsewhere) is never reported purged.
func (e *Engine) Purged(r Receipt) bool {
	if e.VerifyReceipt(r) != nil {
		return false
	}
	switch {
	case r.Seq == 0:
		return true
	case e.store != nil:
		return e.store.purged.Load() >= r.Seq
	case e.replica != nil:
		if pg, ok := e.replica.j.(Purger); ok {
			return pg.PurgedThrough() >= r.Seq
		}
	}
	return true
}
