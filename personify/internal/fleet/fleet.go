// Package fleet is the seam between the engine (package personify) and
// the public package replica: the journal's interfaces as the engine sees
// them, the errors both return, and the journal reader's access to a
// replica engine, which package personify provides and package replica
// hands to whoever reads the journal (pgstore). Nothing here is for users:
// package replica documents all of it.
package fleet

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// Journal is replica.Journal.
type Journal interface {
	Append(ctx context.Context, change []byte, seal func(seq uint64, change []byte) []byte) (seq uint64, err error)
}

// KeyChecker is replica.KeyChecker.
type KeyChecker interface {
	CheckKey(ctx context.Context, fp anonymize.Fingerprint) error
}

// Purger is replica.Purger.
type Purger interface {
	PurgedThrough() uint64
	PurgeWithin() time.Duration
	SchedulePurge(by time.Time)
}

// The errors replica re-exports.
var (
	ErrGap        = errors.New("personify: journal change out of sequence")
	ErrNotApplied = errors.New("personify: the change's outcome is not known yet (it reached the journal, or may have, but was not applied here in time)")
)

// Status is replica.Status.
type Status struct {
	Applied uint64
	Refused uint64
	Stalled error
	Keys    []anonymize.Fingerprint
	Missing []anonymize.KeyInfo
}

// Side is the journal reader's access to a replica engine.
type Side interface {
	Apply(seq uint64, change []byte) error
	Applied() uint64
	Status() Status
	WriteSnapshot(w io.Writer) (seq uint64, n int64, err error)
	LoadSnapshot(seq uint64, data, tag []byte) error
	VerifySnapshot(seq uint64, data, tag []byte) error
	SnapshotTag(seq uint64, data []byte) []byte
}

// NewReplica makes a replica engine (a *personify.Engine, as any: this
// package cannot name it) from opts (a personify.Options) and its Side.
// Package personify sets it when it is initialized.
var NewReplica func(opts any, j Journal, writeTimeout time.Duration) (engine any, side Side, err error)
