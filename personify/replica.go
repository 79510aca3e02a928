package personify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/segment"
)

// Journal is a shared, totally ordered log of changes, for a fleet of
// engines that must agree (see NewReplica). The personify/pgstore module
// implements it on PostgreSQL. A change is opaque bytes holding
// pseudonyms, names and times, never an identifier or a key.
//
// The journal's storage is trusted to store, not to decide: every change
// is authenticated together with its sequence number, and a change whose
// authentication fails (forged, altered, or copied to another position),
// that does not decode, or that the local API would refuse, is refused by
// every replica alike.
type Journal interface {
	// Append stores a change durably and returns its sequence number.
	// Numbers are consecutive (no gaps) and their order is the order every
	// replica applies changes in. Before storing, Append calls seal once
	// with the number the change gets and stores what seal returns (the
	// change with its authentication tag). Append must be safe for
	// concurrent use.
	Append(ctx context.Context, change []byte, seal func(seq uint64, change []byte) []byte) (seq uint64, err error)
}

// KeyChecker is implemented by a Journal that knows which keys the live
// replicas of its fleet hold (pgstore does). RotateKey on a replica asks it
// first and refuses a rotation that a live replica could not follow.
type KeyChecker interface {
	// CheckKey returns an error if a live replica does not hold the key
	// with fingerprint fp.
	CheckKey(ctx context.Context, fp anonymize.Fingerprint) error
}

// ErrNotApplied is returned by a replica's write when the change was
// appended to the journal but this engine did not apply it in time (its
// journal reader is behind or stopped): the change will take effect when
// the reader catches up, but its outcome is unknown to the caller.
var ErrNotApplied = errors.New("personify: change appended to the journal but not applied yet")

// ErrGap is returned by Apply when a change skips sequence numbers.
var ErrGap = errors.New("personify: journal change out of sequence")

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
	stalled atomic.Pointer[error]
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
	if pg, ok := j.(Purger); ok {
		e.schedulePurge = pg.SchedulePurge
	}
	return e, nil
}

// A change in the journal:
//
//	version 1 byte (2)
//	origin  8 bytes: the writing engine's id
//	counter 8 bytes: its counter
//	key     8 bytes: the fingerprint of the key whose journal subkey seals it
//	change  the change's encoding (change_codec.go)
//	tag     32 bytes: HMAC-SHA256 under that subkey of "personify/v1/journal",
//	        the sequence number (8 bytes LE) and every byte above
//
// The key must be the fleet's current key at the change's position, which
// is the same on every replica; the tag binds the position, so a valid
// change copied elsewhere in the journal fails.
const (
	changeVersion   = 2
	changeHeaderLen = 1 + 8 + 8 + 8
	changeTagLen    = sha256.Size
	journalMACLabel = "personify/v1/journal-mac"
)

// commit appends o and waits for this engine to apply it. There is no
// check against the local state first: this replica may be behind the
// journal (a segment another replica just defined), and whether a change
// is valid is decided where it lands in the journal's order, identically
// on every replica, when it is applied.
func (r *replicator) commit(e *Engine, o *op) (opResult, error) {
	if err := r.stall(); err != nil {
		return opResult{}, err
	}
	ctr := r.next.Add(1)
	w := &replicaWait{done: make(chan struct{})}
	r.mu.Lock()
	r.waiting[ctr] = w
	r.mu.Unlock()
	change := make([]byte, changeHeaderLen, 64)
	change[0] = changeVersion
	binary.LittleEndian.PutUint64(change[1:], r.id)
	binary.LittleEndian.PutUint64(change[9:], ctr)
	fp := e.keyring().Current()
	copy(change[17:], fp[:])
	change = appendChange(change, o)
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	seq, err := r.j.Append(ctx, change, e.sealChange)
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

// stall returns why the replica stopped applying the journal, or nil.
func (r *replicator) stall() error {
	if p := r.stalled.Load(); p != nil {
		return *p
	}
	return nil
}

// wake hands the outcome of this engine's own change back to its writer.
func (r *replicator) wake(ctr uint64, res opResult, err error) {
	r.mu.Lock()
	w := r.waiting[ctr]
	delete(r.waiting, ctr)
	r.mu.Unlock()
	if w != nil {
		w.res, w.err = res, err
		close(w.done)
	}
}

// wakeAll hands err to every writer still waiting for its change.
func (r *replicator) wakeAll(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ctr, w := range r.waiting {
		w.err = err
		close(w.done)
		delete(r.waiting, ctr)
	}
}

// sealChange appends the change's tag for position seq (Journal.Append's
// seal).
func (e *Engine) sealChange(seq uint64, change []byte) []byte {
	var fp anonymize.Fingerprint
	if len(change) >= changeHeaderLen {
		copy(fp[:], change[17:25])
	}
	return append(change, e.changeTag(fp, seq, change)...)
}

// changeTag computes a change's tag under the journal subkey of key fp, or
// returns nil if the engine lacks that key.
func (e *Engine) changeTag(fp anonymize.Fingerprint, seq uint64, change []byte) []byte {
	m := e.journalMAC(fp)
	if m == nil {
		return nil
	}
	m.Write([]byte("personify/v1/journal"))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	m.Write(b[:])
	m.Write(change)
	return m.Sum(nil)
}

// journalMAC returns an HMAC-SHA256 under the journal subkey of key fp, or
// nil if the engine lacks that key (or it was destroyed).
func (e *Engine) journalMAC(fp anonymize.Fingerprint) hash.Hash {
	sub, err := e.key(fp).Subkey(journalMACLabel)
	if err != nil {
		return nil
	}
	defer sub.Destroy()
	b := sub.Bytes()
	defer clear(b)
	return hmac.New(sha256.New, b)
}

// openChange checks a journal change at position seq and decodes its op:
// format, authentication under the current key, record, and the API's own
// checks. It also returns the change's origin and counter once they are
// authenticated (ok), so that a refusal reaches its writer.
func (e *Engine) openChange(seq uint64, change []byte) (o op, origin, ctr uint64, ok bool, err error) {
	if len(change) < changeHeaderLen+1+changeTagLen {
		return op{}, 0, 0, false, fmt.Errorf("%w: change %d has %d bytes, too few for a change", ErrInvalidChange, seq, len(change))
	}
	if change[0] != changeVersion {
		return op{}, 0, 0, false, fmt.Errorf("%w: change %d has format version %d, want %d (unauthenticated changes of earlier releases are refused)", ErrInvalidChange, seq, change[0], changeVersion)
	}
	body, tag := change[:len(change)-changeTagLen], change[len(change)-changeTagLen:]
	var fp anonymize.Fingerprint
	copy(fp[:], body[17:25])
	want := e.changeTag(fp, seq, body) // nil if the engine lacks that key
	if want == nil || !hmac.Equal(want, tag) {
		return op{}, 0, 0, false, fmt.Errorf("%w: change %d fails authentication (forged, altered, moved from another position, or sealed under a key this replica lacks)", ErrInvalidChange, seq)
	}
	origin, ctr = binary.LittleEndian.Uint64(body[1:]), binary.LittleEndian.Uint64(body[9:])
	// Authentic, but it must also have been made under the keys in force
	// at its position, the same on every replica: a change sealed under
	// an older key was computed before a rotation its writer had not seen
	// (an erasure computed then would miss people stored under the new key).
	if cur := e.keyring().Current(); fp != cur {
		return op{}, origin, ctr, true, fmt.Errorf("%w: %w: change %d was made under key %s, but the fleet's key at that point is %s (its writer had not seen the rotation yet)",
			ErrInvalidChange, ErrKeyChanged, seq, fp, cur)
	}
	o, err = decodeChange(body[changeHeaderLen:], recVersion)
	if err != nil {
		return op{}, origin, ctr, true, fmt.Errorf("%w: change %d: %w", ErrInvalidChange, seq, err)
	}
	o.seq = seq
	if err := o.validate(); err != nil {
		return op{}, origin, ctr, true, fmt.Errorf("%w: change %d: %w", ErrInvalidChange, seq, err)
	}
	return o, origin, ctr, true, nil
}

// Apply applies the journal's change number seq. The journal's reader
// calls it for every change in sequence order; a change at or below
// Applied is ignored, so redelivery after a reconnect is harmless. A change
// that skips a number returns ErrGap: the reader must load a newer snapshot
// (LoadSnapshot) or deliver the missing changes.
//
// A change that does not decode, fails authentication or fails the checks
// of the local API is refused: it is not applied, Applied moves past it,
// ReplicaStatus counts it, an audit event records why, and Apply returns
// nil, so that one bad row never halts the fleet and every replica refuses
// it alike. A key rotation to a key this replica was not given returns
// ErrKeyUnavailable and Applied stays before it, until the replica is
// restarted with the key.
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
	o, origin, ctr, authentic, err := e.openChange(seq, change)
	if err != nil {
		err = e.refuse(seq, "journal", err)
		r.applied.Store(seq)
		if authentic && origin == r.id {
			r.wake(ctr, opResult{}, err)
		}
		return nil
	}
	if o.kind == opRotateKey && e.key(o.key).IsZero() {
		err := fmt.Errorf("%w: change %d rotates the fleet to key %s: restart this replica with that key in Options.UpcomingKeys (it applies nothing until then, so it never diverges)",
			ErrKeyUnavailable, seq, o.key)
		r.stalled.Store(&err)
		return err
	}
	res, aerr := e.apply(&o)
	r.applied.Store(seq)
	if origin == r.id {
		r.wake(ctr, res, aerr)
	}
	return nil
}

// ReplicaStatus describes where a replica stands in its fleet's journal.
type ReplicaStatus struct {
	// Applied is the last change applied (or included by the last snapshot
	// loaded).
	Applied uint64
	// Refused counts the changes refused as undecodable, unauthenticated
	// or invalid (each also an audit event "personify.change_refused").
	Refused uint64
	// Stalled, when not nil, is why the replica stopped applying the
	// journal (ErrKeyUnavailable): it refuses writes until restarted.
	Stalled error
	// Keys are the fingerprints of every key the replica holds (current,
	// previous and upcoming), for a fleet to check before a rotation.
	Keys []anonymize.Fingerprint
}

// ReplicaStatus returns the replica's position in the journal and whether
// it is stalled. It is the zero ReplicaStatus for an engine not made by
// NewReplica.
func (e *Engine) ReplicaStatus() ReplicaStatus {
	r := e.replica
	if r == nil {
		return ReplicaStatus{}
	}
	st := ReplicaStatus{Applied: r.applied.Load(), Refused: e.refused.Load(), Stalled: r.stall()}
	for fp, k := range e.keySet() {
		if !k.IsZero() {
			st.Keys = append(st.Keys, fp)
		}
	}
	return st
}

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

// SnapshotTag authenticates a replica snapshot stored at journal position
// seq, under the journal subkey of the current key, so that a fleet's
// store cannot substitute one (LoadReplicaSnapshot checks it).
func (e *Engine) SnapshotTag(seq uint64, data []byte) []byte {
	return e.snapshotTag(e.keyring().Current(), seq, data)
}

func (e *Engine) snapshotTag(fp anonymize.Fingerprint, seq uint64, data []byte) []byte {
	m := e.journalMAC(fp)
	if m == nil {
		return nil
	}
	m.Write([]byte("personify/v1/snapshot"))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	m.Write(b[:])
	m.Write(fp[:])
	m.Write(data)
	return append(fp[:8:8], m.Sum(nil)...)
}

// LoadReplicaSnapshot loads a snapshot that a fleet stored at journal
// position seq with tag (SnapshotTag), refusing it with ErrInvalidChange
// if the tag does not match: someone who can write the fleet's database
// but lacks the key cannot substitute a snapshot.
func (e *Engine) LoadReplicaSnapshot(seq uint64, data, tag []byte) error {
	if err := e.VerifySnapshotTag(seq, data, tag); err != nil {
		return err
	}
	return e.LoadSnapshot(bytes.NewReader(data))
}

// VerifySnapshotTag checks a fleet snapshot's tag (SnapshotTag) and the
// position it holds, without loading it: ErrInvalidChange if either is
// wrong, ErrWrongKey if it is sealed under a key this engine lacks.
func (e *Engine) VerifySnapshotTag(seq uint64, data, tag []byte) error {
	if len(tag) != 8+sha256.Size {
		return fmt.Errorf("%w: snapshot %d has no valid authentication tag", ErrInvalidChange, seq)
	}
	var fp anonymize.Fingerprint
	copy(fp[:], tag[:8])
	want := e.snapshotTag(fp, seq, data)
	if want == nil {
		return fmt.Errorf("%w: snapshot %d is sealed under key %s, which this replica was not given", ErrWrongKey, seq, fp)
	}
	if !hmac.Equal(want, tag) {
		return fmt.Errorf("%w: snapshot %d fails authentication", ErrInvalidChange, seq)
	}
	if got, err := SnapshotSeq(bytes.NewReader(data)); err != nil {
		return err
	} else if got != seq {
		return fmt.Errorf("%w: snapshot stored at %d holds position %d", ErrInvalidChange, seq, got)
	}
	return nil
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
	// SchedulePurge asks for a compaction by the given time: an erasure at
	// or after PurgedThrough is due then. Every replica is told of every
	// erasure it applies (and, after loading a snapshot, of those still
	// pending), so the deadline survives restarts.
	SchedulePurge(by time.Time)
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
