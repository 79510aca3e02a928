package personify

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personify-go/personify/segment"
)

// Journal is a shared, totally ordered log of changes, for a fleet of
// engines that must agree (see NewReplica). The personify/pgstore module
// implements it on PostgreSQL. A change is opaque bytes holding
// pseudonyms, names and times, never an identifier or a key.
type Journal interface {
	// Append stores change durably and returns its sequence number. Numbers
	// are consecutive (no gaps) and their order is the order every replica
	// applies changes in. Append must be safe for concurrent use.
	Append(ctx context.Context, change []byte) (seq uint64, err error)
}

// ErrNotApplied is returned by a replica's write when the change was
// appended to the journal but this engine did not apply it in time (its
// journal reader is behind or stopped): the change will take effect when
// the reader catches up, but its outcome is unknown to the caller.
var ErrNotApplied = errors.New("personify: change appended to the journal but not applied yet")

// replicator is the write path of a replica engine.
type replicator struct {
	j       Journal
	id      uint64 // random: marks this engine's own changes
	next    atomic.Uint64
	timeout time.Duration

	mu      sync.Mutex
	waiting map[uint64]*replicaWait

	applyMu sync.Mutex    // one Apply (or snapshot) at a time
	applied atomic.Uint64 // last sequence number applied
}

type replicaWait struct {
	res  opResult
	err  error
	done chan struct{}
}

// ReplicaOptions configures NewReplica.
type ReplicaOptions struct {
	// WriteTimeout bounds how long a write waits for this engine to apply
	// its own change after appending it (ErrNotApplied past it). Zero means
	// 30 seconds.
	WriteTimeout time.Duration
}

// NewReplica returns an in-memory engine whose changes go through a shared
// journal: a write (Add, SetConsent, Forget...) is appended to j and
// returns once this engine has applied it, and whoever reads the journal
// (pgstore does) hands every change, this engine's and the other
// replicas', to Apply in sequence order. Every replica thus applies the
// same changes in the same order and holds the same state. Lookups are as
// fast as New's.
func NewReplica(opts Options, j Journal, ropts ReplicaOptions) (*Engine, error) {
	if j == nil {
		return nil, fmt.Errorf("personify: NewReplica: the journal is nil")
	}
	e, err := New(opts)
	if err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	r := &replicator{j: j, id: binary.LittleEndian.Uint64(id[:]) | 1, timeout: ropts.WriteTimeout,
		waiting: map[uint64]*replicaWait{}}
	if r.timeout <= 0 {
		r.timeout = 30 * time.Second
	}
	e.replica = r
	return e, nil
}

// A change is an origin (8 bytes: the writing engine's id; 8 bytes: its
// counter) followed by a log record (op.go) with sequence number 0.
const changeOriginLen = 16

// commit appends o and waits for this engine to apply it. There is no
// check against the local state first: this replica may be behind the
// journal (a segment another replica just defined), and whether a change
// is valid is decided where it lands in the journal's order, identically
// on every replica, when it is applied.
func (r *replicator) commit(e *Engine, o *op) (opResult, error) {
	ctr := r.next.Add(1)
	w := &replicaWait{done: make(chan struct{})}
	r.mu.Lock()
	r.waiting[ctr] = w
	r.mu.Unlock()
	change := make([]byte, changeOriginLen, 64)
	binary.LittleEndian.PutUint64(change, r.id)
	binary.LittleEndian.PutUint64(change[8:], ctr)
	change = appendRecord(change, 0, o)
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	seq, err := r.j.Append(ctx, change)
	if err != nil {
		r.forget(ctr)
		return opResult{}, fmt.Errorf("%w: %w", errWrite, err)
	}
	select {
	case <-w.done:
		w.res.seq = seq
		return w.res, w.err
	case <-ctx.Done():
		r.forget(ctr)
		return opResult{seq: seq}, fmt.Errorf("%w: change %d, after %v", ErrNotApplied, seq, r.timeout)
	}
}

func (r *replicator) forget(ctr uint64) {
	r.mu.Lock()
	delete(r.waiting, ctr)
	r.mu.Unlock()
}

// Apply applies the journal's change number seq. The journal's reader
// calls it for every change in sequence order; a change at or below
// Applied is ignored, so redelivery after a reconnect is harmless. A change
// that skips a number returns ErrGap: the reader must load a newer snapshot
// (LoadSnapshot) or deliver the missing changes. A malformed change returns
// an error wrapping ErrCorrupt and is not applied.
func (e *Engine) Apply(seq uint64, change []byte) error {
	r := e.replica
	if r == nil {
		return fmt.Errorf("personify: Apply is for engines made by NewReplica")
	}
	if e.closed.Load() {
		return ErrClosed
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	applied := r.applied.Load()
	if seq <= applied {
		return nil
	}
	if seq != applied+1 {
		return fmt.Errorf("%w: change %d follows %d", ErrGap, seq, applied)
	}
	if len(change) < changeOriginLen {
		return fmt.Errorf("%w: change %d: %d bytes", ErrCorrupt, seq, len(change))
	}
	origin, ctr := binary.LittleEndian.Uint64(change), binary.LittleEndian.Uint64(change[8:])
	_, o, n, err := decodeRecord(change[changeOriginLen:])
	if err == nil && n != len(change)-changeOriginLen {
		err = fmt.Errorf("%d bytes after the record", len(change)-changeOriginLen-n)
	}
	if err != nil {
		return fmt.Errorf("%w: change %d: %w", ErrCorrupt, seq, err)
	}
	res, aerr := e.apply(&o)
	r.applied.Store(seq)
	if origin == r.id {
		r.mu.Lock()
		w := r.waiting[ctr]
		delete(r.waiting, ctr)
		r.mu.Unlock()
		if w != nil {
			w.res, w.err = res, aerr
			close(w.done)
		}
	}
	return nil
}

// ErrGap is returned by Apply when a change skips sequence numbers.
var ErrGap = errors.New("personify: journal change out of sequence")

// Applied returns the sequence number of the last journal change this
// replica applied (or that its last loaded snapshot includes).
func (e *Engine) Applied() uint64 {
	if e.replica == nil {
		return 0
	}
	return e.replica.applied.Load()
}

// WriteReplicaSnapshot writes a snapshot of a replica (see WriteSnapshot)
// and returns the journal sequence number it includes: a fleet keeps it
// with the snapshot so that a replica starting from it reads the journal
// after that number.
func (e *Engine) WriteReplicaSnapshot(w io.Writer) (seq uint64, n int64, err error) {
	r := e.replica
	if r == nil {
		return 0, 0, fmt.Errorf("personify: WriteReplicaSnapshot is for engines made by NewReplica")
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	seq = r.applied.Load()
	n, err = e.writeSnapshot(w, seq)
	return seq, n, err
}

// loadReplicaSnapshot is LoadSnapshot's path for replicas: the engine
// moves to the snapshot's sequence number.
func (e *Engine) loadReplicaSnapshot(st *state, load func() error) error {
	r := e.replica
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if err := load(); err != nil {
		return err
	}
	r.applied.Store(st.meta.Seq)
	return nil
}

// Purger is implemented by a Journal whose storage keeps copies of changes
// until a compaction, so that erasure receipts can say when a Forget is
// physically complete (Engine.Purged).
type Purger interface {
	// PurgedThrough returns the sequence number up to which no copy of any
	// change remains in the journal's storage.
	PurgedThrough() uint64
	// PurgeWithin is the deadline receipts promise for physical erasure.
	PurgeWithin() time.Duration
	// SchedulePurge asks for a compaction soon (after a Forget).
	SchedulePurge()
}

// SnapshotSeq returns the journal sequence number recorded in a snapshot
// written by WriteReplicaSnapshot (or the log position of a durable
// engine's), reading only its first section.
func SnapshotSeq(r io.Reader) (uint64, error) {
	sr, err := segment.NewReader(r)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	sec, err := sr.Next()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if sec.Name != snapMetaName {
		return 0, fmt.Errorf("%w: the snapshot does not start with its metadata", ErrCorrupt)
	}
	var m snapMeta
	if err := json.Unmarshal(sec.Blob(), &m); err != nil {
		return 0, fmt.Errorf("%w: metadata: %w", ErrCorrupt, err)
	}
	return m.Seq, nil
}
