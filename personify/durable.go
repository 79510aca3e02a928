package personify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
	"github.com/personify-go/personify/personify/internal/wal"
)

// A durable engine's files, their order and their checks are the
// write-ahead log's (package internal/wal): snapshot-<seq>.pfy holds the
// state after log record <seq>, log-<seq+1>.wal the records after it, in
// frames of one group commit each. The engine hands the log encoded
// changes (change_codec.go) and is handed them back on replay, and writes
// and reads the snapshots (snapshot_write.go, snapshot_read.go).

// Durable-mode errors.
var (
	// ErrLocked is returned by Open when another engine (in this process or
	// another) has the directory open.
	ErrLocked = errors.New("personify: directory is in use by another engine")
	// ErrWrongKey is returned by Open and LoadSnapshot when the data was
	// written under a key the engine was not given.
	ErrWrongKey = errors.New("personify: data was written under another key")
)

// DurableOptions are the settings of a durable engine (Options.Durable),
// which New ignores.
//
// The zero value gives the defaults of each field. It is a plain value, read
// once by Open, safe for concurrent reads.
type DurableOptions struct {
	// MaintenanceInterval is how often the engine applies retention
	// (Expire), ends key grace periods, and writes a snapshot when the log
	// has grown. Zero means one minute; negative turns maintenance off:
	// then call Expire and Compact yourself, Compact by each receipt's
	// PurgeBy included (Open still compacts for erasures that are overdue).
	MaintenanceInterval time.Duration `json:"maintenance_interval"`
	// CompactAfter is the log size, in bytes, past which maintenance writes
	// a snapshot and starts a new log. Zero means 64 MiB.
	CompactAfter int64 `json:"compact_after"`
	// PurgeWithin is the deadline an erasure's receipt promises for its
	// physical deletion (Receipt.PurgeBy); maintenance compacts within a
	// quarter of it after a Forget, so that the erasures of that window
	// share one snapshot. The deadline is logged with the erasure, so it
	// holds across restarts (Open compacts at once for erasures whose time
	// came while the engine was down). Zero means one minute; at most 30
	// days (the GDPR's one month).
	PurgeWithin time.Duration `json:"purge_within"`

	// OnSync, if not nil, is told how long each fsync of the engine's files
	// took (the log's group commits, snapshots, the directory), for a
	// latency metric. It runs on the writing goroutine, while writers wait:
	// keep it fast (a histogram's Observe).
	OnSync func(time.Duration) `json:"-"`

	fs wal.FS // nil: the real one; tests inject faults here
}

// store is a durable engine's log and snapshots.
type store struct {
	dir         *wal.Dir
	purgeWithin time.Duration
	compactAt   int64
	interval    time.Duration
	audit       *slog.Logger
	group       wal.Group[*pending]

	// The group's leader, or whoever has the store exclusively.
	log     *wal.Log
	seq     uint64 // last record written
	snapSeq uint64 // last snapshot's seq
	buf     []byte
	// needSnapshot is set when LoadSnapshot installed a state that is not
	// on disk yet; writes wait for a snapshot of it.
	needSnapshot error
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
	o   *op
	seq uint64
	res opResult
	err error
}

// Open opens (creating if needed) a durable engine whose data lives in dir:
// every change is logged and fsynced before it returns, so that it
// survives a crash, and the state is snapshotted from time to time. Open
// loads the newest snapshot and replays the logs after it; a torn frame at
// the end of the last log (a crash mid-write) is dropped with a warning in
// the audit log, and any other damage, a missing log included, is an error
// wrapping ErrCorrupt that names the file and offset. Data written under
// another key is refused with ErrWrongKey; a directory that another engine
// has open, with ErrLocked.
//
// The engine runs maintenance in the background (see Options.Durable) until
// Close, which must be called to release the directory.
func Open(dir string, opts Options) (*Engine, error) {
	if dir == "" {
		return nil, errors.New("personify: Open: the directory is empty: give the path of a directory for the engine's files")
	}
	dopts := opts.Durable
	e, err := New(opts)
	if err != nil {
		return nil, err
	}
	fs := dopts.fs
	if fs == nil {
		fs = wal.OS{}
	}
	if dopts.OnSync != nil {
		fs = timedFS{FS: fs, observe: dopts.OnSync}
	}
	s := &store{purgeWithin: dopts.PurgeWithin, compactAt: dopts.CompactAfter, interval: dopts.MaintenanceInterval, audit: e.audit,
		purge: make(chan struct{}, 1), grow: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
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
	if s.dir, err = wal.OpenDir(fs, dir); err != nil {
		if errors.Is(err, wal.ErrLocked) {
			return nil, fmt.Errorf("%w: %s (close the other engine first; a crashed process releases it by itself)", ErrLocked, dir)
		}
		return nil, fmt.Errorf("personify: Open: %w", err)
	}
	e.schedulePurge = s.requestPurge
	if err := s.load(e, opts); err != nil {
		s.closeFiles()
		return nil, openErr(err)
	}
	// Restore what Open guarantees before the first write: appends go to
	// a current-format log that follows the newest snapshot, and an
	// erasure whose compaction was due while the engine was down is
	// physically complete before Open returns.
	due, pending := s.nextPurge(e)
	if s.log.Version() != wal.LogVersion || s.log.Start() != s.snapSeq+1 || pending && !due.After(e.now()) {
		if err := s.compactLocked(e); err != nil {
			if s.log.Version() != wal.LogVersion {
				s.closeFiles()
				return nil, storeErr(fmt.Errorf("personify: Open %s: the log was written by an earlier release and could not be compacted into the current format: %w", dir, err))
			}
			s.warn("compact", err) // maintenance retries
		}
	}
	e.store = s
	e.startCapFlusher(opts.CapFlush)
	if s.interval > 0 {
		go s.maintain(e)
	} else {
		close(s.stopped)
	}
	return e, nil
}

// openErr presents an error of Open's with the package's prefix, once.
func openErr(err error) error {
	err = storeErr(err)
	if strings.HasPrefix(err.Error(), errPrefix) {
		return err
	}
	return fmt.Errorf("personify: Open: %w", err)
}

// storeErr presents the log's errors as the engine's: damage wraps
// ErrCorrupt.
func storeErr(err error) error {
	if err == nil || errors.Is(err, ErrCorrupt) || !errors.Is(err, wal.ErrCorrupt) {
		return err
	}
	return wrapAs(ErrCorrupt, err)
}

// closeFiles closes the active log and releases the directory.
func (s *store) closeFiles() error {
	var err error
	if s.log != nil {
		err = s.log.Close()
		s.log = nil
	}
	if lerr := s.dir.Close(); err == nil {
		err = lerr
	}
	return err
}

// load brings e to the state on disk, or initializes an empty directory.
func (s *store) load(e *Engine, opts Options) error {
	snaps, logs, err := s.dir.List()
	if err != nil {
		return fmt.Errorf("personify: Open: %w", err)
	}
	if len(snaps) == 0 {
		// A new directory (or one whose creation crashed after its first,
		// empty log): log 1, then an empty snapshot that records the key.
		if len(logs) > 1 || len(logs) == 1 && (logs[0] != 1 || !s.dir.HeaderOnly(logs[0])) {
			return fmt.Errorf("%w: %s holds logs but no snapshot: restore the snapshot from a backup", ErrCorrupt, s.dir.Path())
		}
		return s.compactLocked(e)
	}
	s.snapSeq = snaps[len(snaps)-1]
	err = s.dir.ReadSnapshot(s.snapSeq, func(r io.Reader, name string) error {
		st, err := readState(r, name, e.keySet(), e.hasher)
		if err != nil {
			return err
		}
		if st.meta.Seq != s.snapSeq {
			return corrupt(name, 0, "holds sequence %d, its name says %d", st.meta.Seq, s.snapSeq)
		}
		e.mu.Lock()
		e.installLocked(st)
		e.mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	s.seq = s.snapSeq
	if !slices.Contains(logs, s.snapSeq+1) {
		return corrupt(s.dir.LogPath(s.snapSeq+1), 0, "is missing: the newest snapshot, %s, is followed by this log, so every write since the snapshot would be lost; restore it from a backup", filepath.Base(s.dir.SnapshotPath(s.snapSeq)))
	}

	// Replay every record after the snapshot, in order: every log, oldest
	// first; records the snapshot holds are skipped.
	e.replaying = true
	defer func() { e.replaying = false }()
	checkKey := func(name string, fp [8]byte) error {
		key := anonymize.Fingerprint(fp)
		if e.hasKey(key) || slices.ContainsFunc(e.ringKeys(), func(k anonymize.KeyInfo) bool { return k.Fingerprint == key }) {
			return nil
		}
		return inContext(fmt.Errorf("%w: key %s, which the engine was not given", ErrWrongKey, key), "%s", name)
	}
	record := func(version int, seq uint64, payload []byte, _ int64) error {
		switch {
		case seq <= s.seq: // already applied (in the snapshot, or an older log)
			return nil
		case seq != s.seq+1:
			return fmt.Errorf("record %d follows record %d", seq, s.seq)
		}
		o, err := decodeChange(payload, version)
		if err != nil {
			return err
		}
		o.seq = seq
		_, _ = e.applyRead(&o, "log") // an op that failed live fails the same way here
		s.seq = seq
		return nil
	}
	torn := func(name string, off int64, dropped int, reason error) {
		s.audit.LogAttrs(context.Background(), slog.LevelWarn, "personify.torn_log_tail",
			slog.String("file", name), slog.Int64("offset", off), slog.Int("bytes_dropped", dropped), slog.String("reason", reason.Error()))
	}
	for i, start := range logs {
		if start > s.seq+1 {
			return corrupt(s.dir.LogPath(start), 0, "starts at record %d, but the logs before it end at record %d: the records in between are missing", start, s.seq)
		}
		l, err := s.dir.Replay(start, i == len(logs)-1, checkKey, record, torn)
		if err != nil {
			return err
		}
		if l != nil {
			s.log = l
		}
	}
	if cur := e.keyring().Current(); cur != opts.Key.Fingerprint() {
		return fmt.Errorf("%w: the data in %s is under key %s, Options.Key is %s: open it with that key, then call Engine.RotateKey to move to the new one",
			ErrWrongKey, s.dir.Path(), cur, opts.Key.Fingerprint())
	}
	s.markPurged(e)
	return nil
}

// commit logs o with whatever other writers have queued meanwhile (one
// write and one fsync for all of them: group commit), then applies them in
// log order. A write or fsync that fails fails every op of the batch, and
// none of them is applied.
//
// ctx bounds the wait in the queue (behind a batch in flight or a
// compaction): an op whose ctx ends there is neither logged nor applied.
func (s *store) commit(ctx context.Context, e *Engine, o *op) (opResult, error) {
	p := &pending{o: o}
	if err := s.group.DoContext(ctx, p, func(batch []*pending) { s.flush(e, batch) }); err != nil {
		return opResult{}, wrapAs(errWrite, err)
	}
	return p.res, p.err
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
	buf := wal.StartFrame(s.buf[:0])
	frame := 0 // where the current frame starts in buf
	var logged []*pending
	for _, b := range batch {
		if err := e.check(b.o); err != nil {
			b.err = err
			continue
		}
		if len(logged) > 0 && len(buf)-frame+wal.RecHeaderLen+b.o.sizeBound() > wal.MaxFrameLen {
			// A frame's length field has 31 bits: a batch this large is
			// written as several frames, still with one write and fsync.
			buf = wal.EndFrame(buf, frame)
			frame = len(buf)
			buf = wal.StartFrame(buf)
		}
		b.seq = s.seq + uint64(len(logged)) + 1
		buf = appendRecord(buf, b.seq, b.o)
		logged = append(logged, b)
	}
	buf = wal.EndFrame(buf, frame)
	if cap(buf) <= 1<<20 {
		s.buf = buf
	}
	if len(logged) == 0 {
		return
	}
	var err error
	if s.log == nil {
		err = errors.New("the log is not open")
	} else {
		err = s.log.Append(buf)
	}
	if err != nil {
		for _, b := range logged {
			b.err = wrapAs(errWrite, err)
		}
		return
	}
	s.seq += uint64(len(logged))
	for _, b := range logged { // Close waits for this loop (it takes the store exclusively)
		b.o.seq = b.seq
		b.res, b.err = e.apply(b.o)
		b.res.seq = b.seq
	}
	if s.log.Size() > s.compactAt {
		s.kick()
	}
}

// exclusive runs fn with no write in flight and none starting.
func (s *store) exclusive(fn func() error) error { return s.group.Exclusive(fn) }

// Compact writes a snapshot of the whole state, starts a new log, and
// removes every older snapshot and log, so that nothing erased or expired
// before the call remains in any file. Maintenance does this by itself
// (after Forget, when a key's grace period ends, and when the log grows);
// an in-memory engine has nothing to compact.
func (e *Engine) Compact() error {
	if e.closed.Load() {
		return ErrClosed
	}
	if e.store == nil {
		return nil
	}
	defer e.lockFlush()()
	if err := e.store.exclusive(func() error { return e.store.compactLocked(e) }); err != nil {
		return storeErr(fmt.Errorf("personify: Compact: %w", err))
	}
	return nil
}

// compactLocked writes snapshot-<seq> and starts log <seq+1> (the order of
// the files is wal.Dir.Compact's), then removes the older files. The
// caller has the store to itself.
func (s *store) compactLocked(e *Engine) error {
	seq := s.seq
	c, err := s.dir.Compact(seq, e.keyring().Current(), s.log, func(w io.Writer) error {
		_, err := e.writeSnapshot(w, seq) // the codec buffers its own writes
		return err
	})
	s.log = c.Log
	if c.Installed {
		s.snapSeq = seq
		s.needSnapshot = nil
		s.snapUnsynced = !c.Synced
	}
	if err != nil {
		return err
	}
	s.markPurged(e)
	return nil
}

// markPurged records that no file holds anything erased up to the newest
// snapshot, if that is so: the active log starts after the snapshot and
// every older file is gone. The erasures it completes leave the engine's
// pending list.
func (s *store) markPurged(e *Engine) {
	if s.snapUnsynced {
		if s.dir.SyncDir() != nil {
			return
		}
		s.snapUnsynced = false
	}
	if s.log != nil && s.log.Start() == s.snapSeq+1 && s.dir.RemoveStale(s.snapSeq, s.log) {
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

// close stops maintenance, waits for the write in flight, marks the
// engine closed and releases the files.
func (s *store) close(e *Engine) error {
	close(s.stop)
	<-s.stopped
	return s.exclusive(func() error {
		e.markClosed()
		return s.closeFiles()
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
		if pg, ok := e.replica.j.(fleet.Purger); ok {
			return pg.PurgedThrough() >= r.Seq
		}
	}
	return true
}

// timedFS reports how long each fsync takes (DurableOptions.OnSync).
type timedFS struct {
	wal.FS
	observe func(time.Duration)
}

func (t timedFS) OpenFile(name string, flag int, perm os.FileMode) (wal.File, error) {
	f, err := t.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return timedFile{File: f, observe: t.observe}, nil
}

func (t timedFS) SyncDir(name string) error {
	start := time.Now()
	err := t.FS.SyncDir(name)
	t.observe(time.Since(start))
	return err
}

type timedFile struct {
	wal.File
	observe func(time.Duration)
}

func (t timedFile) Sync() error {
	start := time.Now()
	err := t.File.Sync()
	t.observe(time.Since(start))
	return err
}
