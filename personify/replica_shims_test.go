package personify

import (
	"io"
	"time"

	"github.com/personify-go/personify/personify/internal/fleet"
)

// The package's own tests drive replicas directly, through the same
// functions package replica's Feed and Replica call.

type Journal = fleet.Journal

type ReplicaOptions struct{ WriteTimeout time.Duration }

func NewReplica(opts Options, j Journal, ro ReplicaOptions) (*Engine, error) {
	return newReplica(opts, j, ro.WriteTimeout)
}

func (e *Engine) Apply(seq uint64, change []byte) error { return replicaSide{e}.Apply(seq, change) }
func (e *Engine) Applied() uint64                       { return replicaSide{e}.Applied() }
func (e *Engine) ReplicaStatus() fleet.Status           { return replicaSide{e}.Status() }
func (e *Engine) WriteReplicaSnapshot(w io.Writer) (uint64, int64, error) {
	return replicaSide{e}.WriteSnapshot(w)
}
func (e *Engine) SnapshotTag(seq uint64, data []byte) []byte {
	return replicaSide{e}.SnapshotTag(seq, data)
}
func (e *Engine) LoadReplicaSnapshot(seq uint64, data, tag []byte) error {
	return replicaSide{e}.LoadSnapshot(seq, data, tag)
}

var ErrNotAppliedForTests = fleet.ErrNotApplied
