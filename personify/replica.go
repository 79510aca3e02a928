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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
	"github.com/personify-go/personify/personify/internal/wal"
	"github.com/personify-go/personify/segment"
)

// The engine side of a fleet (package replica is the public one): a
// replica's writes are appended to a shared journal and applied when the
// journal's reader hands them back, in the journal's order, with every
// other replica's (see package replica for the journal's contract and the
// promises). What the reader calls is replicaSide, behind fleet.Side.

func init() {
	fleet.NewReplica = func(opts any, j fleet.Journal, timeout time.Duration) (any, fleet.Side, error) {
		o, ok := opts.(Options)
		if !ok {
			return nil, nil, fmt.Errorf("personify: internal error: replica options of type %T", opts)
		}
		e, err := newReplica(o, j, timeout)
		if err != nil {
			return nil, nil, err
		}
		return e, replicaSide{e}, nil
	}
}

// replicator is the write path of a replica engine.
type replicator struct {
	j       fleet.Journal
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

// newReplica returns an in-memory engine whose changes go through a shared
// journal (package replica's New): a write is appended to j and returns
// once this engine has applied it, and the journal's reader hands every
// change, this engine's and the other replicas', to replicaSide.Apply in
// sequence order. Lookups are as fast as New's.
func newReplica(opts Options, j fleet.Journal, timeout time.Duration) (*Engine, error) {
	if j == nil {
		return nil, fmt.Errorf("personify: the journal is nil")
	}
	e, err := New(opts)
	if err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	r := &replicator{j: j, id: binary.LittleEndian.Uint64(id[:]) | 1, timeout: timeout,
		waiting: map[uint64]*replicaWait{}}
	if r.timeout <= 0 {
		r.timeout = 30 * time.Second
	}
	e.replica = r
	if pg, ok := j.(fleet.Purger); ok {
		e.schedulePurge = pg.SchedulePurge
	}
	e.startCapFlusher(opts.CapFlush)
	return e, nil
}

// replicaSide is what the journal's reader calls (fleet.Side).
type replicaSide struct{ e *Engine }

func (s replicaSide) Apply(seq uint64, change []byte) error { return s.e.applyJournal(seq, change) }
func (s replicaSide) Applied() uint64                       { return s.e.replica.applied.Load() }
func (s replicaSide) Status() fleet.Status                  { return s.e.replicaStatus() }
func (s replicaSide) WriteSnapshot(w io.Writer) (uint64, int64, error) {
	return s.e.writeReplicaSnapshot(w)
}
func (s replicaSide) LoadSnapshot(seq uint64, data, tag []byte) error {
	return s.e.loadTaggedSnapshot(seq, data, tag)
}
func (s replicaSide) VerifySnapshot(seq uint64, data, tag []byte) error {
	return s.e.verifySnapshotTag(seq, data, tag)
}
func (s replicaSide) SnapshotTag(seq uint64, data []byte) []byte {
	return s.e.snapshotTag(s.e.keyring().Current(), seq, data)
}

// A change in the journal:
//
//	version 1 byte (2)
//	origin  8 bytes: the writing engine's id
//	counter 8 bytes: its counter
//	key     8 bytes: the fingerprint of the key whose journal subkey seals it
//	change  the change framed as a log record (internal/wal: magic "PFYR",
//	        length, checksum, sequence number 0, then the change's encoding,
//	        change_codec.go)
//	tag     32 bytes: HMAC-SHA256 under that subkey of "personify/v1/journal",
//	        the sequence number (8 bytes LE) and every byte above
//
// The key must be the fleet's current key at the change's position, which
// is the same on every replica; the tag binds the position, so a valid
// change copied elsewhere in the journal fails. The format is the one
// earlier releases write and read, so that a fleet upgrades one replica at
// a time. (Development builds between them wrote the encoding without the
// record's frame, under the same version; those rows are read too: a
// record starts with its magic, which no encoding does, since no change
// kind is 'P'.)
//
// The version of the change encoding (recVersion) is tied to the change
// format's: a new encoding needs a new change version, or replicas of the
// previous release would misread it.
const (
	changeVersion   = 2
	changeHeaderLen = 1 + 8 + 8 + 8
	changeTagLen    = sha256.Size
	journalMACLabel = "personify/v1/journal-mac"
)

// Compile-time: recVersion == changeVersion (see above).
var _ [0]struct{} = [recVersion - changeVersion]struct{}{}

// commit appends o and waits for this engine to apply it. There is no
// check against the local state first: this replica may be behind the
// journal (a segment another replica just defined), and whether a change
// is valid is decided where it lands in the journal's order, identically
// on every replica, when it is applied.
func (r *replicator) commit(ctx context.Context, e *Engine, o *op) (opResult, error) {
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
	change = appendRecord(change, 0, o)
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	seq, err := r.j.Append(ctx, change, e.sealChange)
	if err != nil {
		r.forget(ctr)
		if errors.Is(err, fleet.ErrNotApplied) { // the journal may yet store it: the outcome is unknown, not a failure
			return opResult{}, err
		}
		return opResult{}, wrapAs(errWrite, err)
	}
	select {
	case <-w.done:
		w.res.seq = seq
		return w.res, w.err
	case <-ctx.Done():
		r.forget(ctr)
		return opResult{seq: seq}, fmt.Errorf("%w: change %d is in the journal: %w", fleet.ErrNotApplied, seq, ctx.Err())
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
		return op{}, origin, ctr, true, wrapAs(ErrInvalidChange, fmt.Errorf("%w: change %d was made under key %s, but the fleet's key at that point is %s (its writer had not seen the rotation yet)",
			ErrKeyChanged, seq, fp, cur))
	}
	if enc := body[changeHeaderLen:]; wal.IsRecord(enc) {
		var n int
		_, o, n, err = decodeRecord(enc)
		if err == nil && n != len(enc) {
			err = fmt.Errorf("%w: %d bytes after the record", errRecord, len(enc)-n)
		}
	} else {
		o, err = decodeChange(enc, recVersion) // a development build's row
	}
	if err != nil {
		return op{}, origin, ctr, true, fmt.Errorf("%w: change %d: %w", ErrInvalidChange, seq, err)
	}
	o.seq = seq
	if err := o.validate(); err != nil {
		return op{}, origin, ctr, true, wrapAs(ErrInvalidChange, inContext(err, "change %d", seq))
	}
	return o, origin, ctr, true, nil
}

// applyJournal applies the journal's change number seq (replica.Feed's
// Apply). The journal's reader calls it for every change in sequence
// order; a change at or below Applied is ignored, so redelivery after a
// reconnect is harmless. A change that skips a number returns ErrGap: the
// reader must load a newer snapshot (Feed.LoadSnapshot) or deliver the
// missing changes.
//
// A change that does not decode, fails authentication or fails the checks
// of the local API is refused: it is not applied, Applied moves past it,
// replica.Status counts it, an audit event records why, and Apply returns
// nil, so that one bad row never halts the fleet and every replica refuses
// it alike. A key rotation to a key this replica was not given returns
// ErrKeyUnavailable and Applied stays before it, until the replica is
// restarted with the key.
func (e *Engine) applyJournal(seq uint64, change []byte) error {
	r := e.replica
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
		return fmt.Errorf("%w: change %d follows %d", fleet.ErrGap, seq, applied)
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
	o.self = origin == r.id && o.kind == opImpressions // counted when they happened
	res, aerr := e.apply(&o)
	r.applied.Store(seq)
	if origin == r.id {
		r.wake(ctr, res, aerr)
	}
	return nil
}

// replicaStatus says where a replica stands in its fleet's journal.
func (e *Engine) replicaStatus() fleet.Status {
	r := e.replica
	st := fleet.Status{Applied: r.applied.Load(), Refused: e.refused.Load(), Stalled: r.stall(), Missing: e.kr.Load().missing}
	for fp, k := range e.keySet() {
		if !k.IsZero() {
			st.Keys = append(st.Keys, fp)
		}
	}
	slices.SortFunc(st.Keys, func(a, b anonymize.Fingerprint) int { return bytes.Compare(a[:], b[:]) })
	return st
}

// writeReplicaSnapshot writes a snapshot of a replica and returns the
// journal sequence number it includes: a fleet keeps it with the snapshot
// so that a replica starting from it reads the journal after that number.
func (e *Engine) writeReplicaSnapshot(w io.Writer) (seq uint64, n int64, err error) {
	r := e.replica
	defer e.lockFlush()() // before applyMu: a flush in progress waits for the journal's reader
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	seq = r.applied.Load()
	n, err = e.writeSnapshot(w, seq)
	return seq, n, err
}

// snapshotTag authenticates a replica snapshot stored at journal position
// seq under the journal subkey of key fp, so that a fleet's store cannot
// substitute one (verifySnapshotTag checks it); nil if the engine lacks
// the key.
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

// loadTaggedSnapshot loads a snapshot that a fleet stored at journal
// position seq with tag, refusing it with ErrInvalidChange if the tag does
// not match: someone who can write the fleet's database but lacks the key
// cannot substitute a snapshot.
func (e *Engine) loadTaggedSnapshot(seq uint64, data, tag []byte) error {
	if err := e.verifySnapshotTag(seq, data, tag); err != nil {
		return err
	}
	st, err := readState(bytes.NewReader(data), "snapshot", e.keySet(), e.hasher)
	if err != nil {
		return err
	}
	return e.loadReplicaSnapshot(st, func() error { return e.installSnapshot(st) })
}

// verifySnapshotTag checks a fleet snapshot's tag and the position it
// holds, without loading it: ErrInvalidChange if either is wrong,
// ErrWrongKey if it is sealed under a key this engine lacks.
func (e *Engine) verifySnapshotTag(seq uint64, data, tag []byte) error {
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
	if got, err := snapshotSeq(bytes.NewReader(data)); err != nil {
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

// snapshotSeq returns the journal sequence number recorded in a replica's
// snapshot (or the log position of a durable engine's), reading only its
// first section.
func snapshotSeq(r io.Reader) (uint64, error) {
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
