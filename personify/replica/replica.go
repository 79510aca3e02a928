// Package replica connects engines into a fleet: replicas of a service that
// share segments, consent, suppressions and erasures through a shared,
// totally ordered journal. Most users run a fleet with the pgstore module
// (a journal on PostgreSQL) and never import this package; it is the seam
// for writing another journal.
//
// New returns two halves of one replica engine: a Replica, the engine's
// API for the application (its writes go through the journal), and a Feed,
// for the journal's reader alone, which hands the replica every change in
// the journal's order (Feed.Apply) and moves whole states in and out
// (Feed.WriteSnapshot, Feed.LoadSnapshot). Every replica applies the same
// changes in the same order and holds the same state.
//
// The journal's storage is trusted to store, not to decide. Every change
// is authenticated together with its sequence number (an HMAC-SHA256 tag
// under a subkey of the fleet's key, computed by the seal function the
// replica hands Journal.Append), and so is every snapshot (Feed.SnapshotTag).
// A change whose tag fails, that does not decode, or that the local API
// would refuse is refused by every replica alike, never applied, and Apply
// moves past it: one bad row never halts the fleet. A replica that meets a
// key rotation to a key it lacks stalls (ErrKeyUnavailable; Status.Stalled)
// and refuses writes until it is restarted with the key, so that it never
// diverges from the fleet.
package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/personify/internal/fleet"
)

// Journal is a shared, totally ordered log of changes. A change is opaque
// bytes holding pseudonyms, names and times, never an identifier or a key.
//
// The zero value of the interface is nil, which New refuses. Implementations
// must be safe for concurrent use: every writer of the replica appends
// through it.
type Journal interface {
	// Append stores a change durably and returns its sequence number.
	// Numbers are consecutive (no gaps) and their order is the order every
	// replica applies changes in. Before storing, Append calls seal once
	// with the number the change gets and stores what seal returns (the
	// change with its authentication tag, which binds the number). Append
	// must be safe for concurrent use. A change whose Append returned
	// without an answer (ErrNotApplied) is stored before any change
	// appended after that, or never: a replica takes its own frequency-cap
	// batch for lost once a later one comes back (or after a minute).
	Append(ctx context.Context, change []byte, seal func(seq uint64, change []byte) []byte) (seq uint64, err error)
}

// KeyChecker is implemented by a Journal that knows which keys the live
// replicas of its fleet hold (pgstore's does). RotateKey asks it first and
// refuses a rotation that a live replica could not follow.
//
// The zero value of the interface is nil, and the check is optional: a
// Journal without the method checks nothing. Implementations must be safe for
// concurrent use.
type KeyChecker interface {
	// CheckKey returns an error if a live replica does not hold the key
	// with fingerprint fp.
	CheckKey(ctx context.Context, fp anonymize.Fingerprint) error
}

// Purger is implemented by a Journal whose storage keeps copies of changes
// until a compaction, so that erasure receipts can say when a Forget is
// physically complete (Replica.Purged).
//
// The zero value of the interface is nil, and purging is optional: a Journal
// without it reports erasures physically complete when they are applied.
// Implementations must be safe for concurrent use.
type Purger interface {
	// PurgedThrough returns the sequence number up to which no copy of any
	// change remains in the journal's storage.
	PurgedThrough() uint64
	// PurgeWithin is the deadline receipts promise for physical erasure.
	PurgeWithin() time.Duration
	// SchedulePurge asks for a compaction by the given time: an erasure
	// after PurgedThrough is due then. Every replica is told of every
	// erasure it applies (and, after loading a snapshot, of those still
	// pending), so the deadline survives restarts.
	SchedulePurge(by time.Time)
}

// Errors of a replica. ErrKeyUnavailable is personify's, re-exported.
var (
	// ErrGap is returned by Feed.Apply when a change skips sequence
	// numbers: the reader must deliver the missing changes or load a newer
	// snapshot.
	ErrGap = fleet.ErrGap
	// ErrNotApplied is returned by a write whose outcome this replica could
	// not confirm in time (its reader is behind or stopped, the context
	// ended, or the journal's commit got no answer): the change was
	// appended to the journal, or may have been, and if it was it takes
	// effect when the replicas apply it. To learn which, Sync and look;
	// writes that set a state (Add, SetConsent, Suppress, Remove, Forget)
	// can simply be retried. A write that certainly failed returns another
	// error, never this one.
	ErrNotApplied = fleet.ErrNotApplied
	// ErrKeyUnavailable is returned when the journal rotates the fleet to a
	// key this replica was not given: it stops applying the journal there
	// and refuses writes until restarted with the key in
	// personify.Options.UpcomingKeys.
	ErrKeyUnavailable = personify.ErrKeyUnavailable
)

// Options configures New.
//
// The zero value gives the defaults. It is a plain value, read once by New,
// safe for concurrent reads.
type Options struct {
	// WriteTimeout bounds how long a write waits for this replica to apply
	// its own change after appending it (ErrNotApplied past it; a
	// context's deadline can shorten it). Zero means 30 seconds.
	WriteTimeout time.Duration `json:"write_timeout"`
}

// Replica is an engine of a fleet, for the application: the engine's
// lookups, reads and writes (see package personify), with writes going
// through the journal. It has no method that could split it from the
// fleet. A Replica is safe for concurrent use; its zero value is not
// usable: call New.
type Replica struct {
	e *personify.Engine
}

// Feed is the journal reader's side of a replica: the only way changes
// and snapshots reach it. It is safe for concurrent use, but the reader
// calls Apply in sequence order, from one goroutine.
//
// The zero Feed is not usable: New returns the replica's Feed.
type Feed struct {
	side fleet.Side
}

// New returns a replica engine configured by opts (Key is required), whose
// changes go through j. The reader of j hands every change to the Feed;
// the application uses the Replica.
func New(opts personify.Options, j Journal, ropts Options) (*Replica, *Feed, error) {
	if j == nil {
		return nil, nil, errors.New("personify: replica.New: the journal is nil")
	}
	e, side, err := fleet.NewReplica(opts, j, ropts.WriteTimeout)
	if err != nil {
		return nil, nil, err
	}
	eng, ok := e.(*personify.Engine)
	if !ok {
		return nil, nil, fmt.Errorf("personify: internal error: replica engine of type %T", e)
	}
	return &Replica{e: eng}, &Feed{side: side}, nil
}

// Status describes where a replica stands in its fleet's journal.
//
// The zero Status is a replica's that has applied nothing. A Status is a
// plain value, a copy taken at one moment, safe to share between goroutines.
type Status struct {
	// Applied is the last change applied (or included by the last snapshot
	// loaded).
	Applied uint64 `json:"applied"`
	// Refused counts the changes refused as undecodable, unauthenticated
	// or invalid (each also an audit event "personify.change_refused").
	Refused uint64 `json:"refused"`
	// Stalled, when not nil, is why the replica stopped applying the
	// journal (ErrKeyUnavailable): it refuses writes until restarted.
	Stalled error `json:"-"`
	// Keys are the fingerprints of every key the replica holds (current,
	// previous and upcoming), for a fleet to check before a rotation.
	Keys []anonymize.Fingerprint `json:"keys"`
	// Missing are keys the fleet's data is under that this replica was not
	// given: it refuses writes and erasures by identifier until their grace
	// periods end (or it is restarted with them).
	Missing []anonymize.KeyInfo `json:"missing,omitempty"`
}

// Apply applies the journal's change number seq. The reader calls it for
// every change in sequence order; a change at or below Applied is ignored,
// so redelivery after a reconnect is harmless. A change that skips a
// number returns ErrGap. A change that does not decode, fails
// authentication or fails the checks of the local API is refused: Applied
// moves past it, Status counts it, an audit event says why, and Apply
// returns nil. A key rotation to a key this replica lacks returns
// ErrKeyUnavailable and Applied stays before it.
func (f *Feed) Apply(seq uint64, change []byte) error { return f.side.Apply(seq, change) }

// Applied returns the sequence number of the last change applied (or
// included by the last snapshot loaded).
func (f *Feed) Applied() uint64 { return f.side.Applied() }

// Status returns the replica's position in the journal and whether it is
// stalled.
func (f *Feed) Status() Status {
	st := f.side.Status()
	return Status{Applied: st.Applied, Refused: st.Refused, Stalled: st.Stalled, Keys: st.Keys, Missing: st.Missing}
}

// WriteSnapshot writes the replica's whole state and returns the journal
// sequence number it includes: keep the number with the snapshot (and its
// SnapshotTag), so that a replica starting from it reads the journal after
// that number.
func (f *Feed) WriteSnapshot(w io.Writer) (seq uint64, n int64, err error) {
	return f.side.WriteSnapshot(w)
}

// SnapshotTag authenticates a snapshot stored at journal position seq, so
// that the fleet's storage cannot substitute one.
func (f *Feed) SnapshotTag(seq uint64, data []byte) []byte { return f.side.SnapshotTag(seq, data) }

// VerifySnapshot checks a snapshot's tag and the position it holds without
// loading it: an error wrapping personify.ErrInvalidChange if either is
// wrong, personify.ErrWrongKey if it is sealed under a key the replica
// lacks.
func (f *Feed) VerifySnapshot(seq uint64, data, tag []byte) error {
	return f.side.VerifySnapshot(seq, data, tag)
}

// LoadSnapshot loads a snapshot the fleet stored at journal position seq
// with its tag, after checking it (VerifySnapshot): the replica moves to
// that position, with the snapshot's keyring. Lookups see the old state or
// the new one, never a mix.
func (f *Feed) LoadSnapshot(seq uint64, data, tag []byte) error {
	return f.side.LoadSnapshot(seq, data, tag)
}
