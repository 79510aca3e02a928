package personify

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/personify-go/personify/personify/internal/fleet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memJournal is a Journal in memory, with one reader goroutine per
// replica, as pgstore runs one per process.
type memJournal struct {
	mu   sync.Mutex
	cond *sync.Cond
	log  [][]byte
}

func newMemJournal() *memJournal {
	j := &memJournal{}
	j.cond = sync.NewCond(&j.mu)
	return j
}

func (j *memJournal) Append(_ context.Context, change []byte, seal func(uint64, []byte) []byte) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.log = append(j.log, seal(uint64(len(j.log))+1, bytes.Clone(change)))
	j.cond.Broadcast()
	return uint64(len(j.log)), nil
}

// follow delivers the journal to e until stop is closed.
func (j *memJournal) follow(t *testing.T, e *Engine, stop <-chan struct{}) {
	go func() {
		<-stop
		j.mu.Lock()
		j.cond.Broadcast()
		j.mu.Unlock()
	}()
	for {
		j.mu.Lock()
		for uint64(len(j.log)) <= e.Applied() {
			select {
			case <-stop:
				j.mu.Unlock()
				return
			default:
			}
			j.cond.Wait()
		}
		next := e.Applied() + 1
		change := j.log[next-1]
		j.mu.Unlock()
		if err := e.Apply(next, change); err != nil {
			t.Error(err)
			return
		}
	}
}

func TestReplicasConverge(t *testing.T) {
	j := newMemJournal()
	clock := &fakeClock{t: t0}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var replicas []*Engine
	for range 3 {
		e, err := NewReplica(Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now}, j, ReplicaOptions{})
		require.NoError(t, err)
		replicas = append(replicas, e)
		readers.Go(func() { j.follow(t, e, stop) })
	}
	defer func() { close(stop); readers.Wait() }()

	// Definitions from one replica, then concurrent writes on all three.
	require.NoError(t, replicas[0].DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, replicas[0].Define(Segment{Name: "runners", Purpose: "ads"}))
	var wg sync.WaitGroup
	for i, e := range replicas {
		wg.Go(func() {
			for k := range 100 {
				require.NoError(t, e.Add("runners", person(i*1000+k)))
				if k%10 == 0 {
					_, err := e.Forget(person(((i+1)%3)*1000 + k)) // another replica's person
					require.NoError(t, err)
				}
			}
		})
	}
	wg.Wait()
	// A write returns once its own replica applied it.
	p := replicas[1].mustPseudonym(t, person(2099))
	assert.True(t, replicas[2].In(p, "runners"))
	last := uint64(len(j.log))
	require.Eventually(t, func() bool {
		for _, e := range replicas {
			if e.Applied() != last {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
	want := stateDump(t, replicas[0])
	for _, e := range replicas[1:] {
		assert.Equal(t, want, stateDump(t, e))
	}

	// Errors come back to the writer, decided where the change lands in
	// the journal's order, the same on every replica.
	require.ErrorIs(t, replicas[1].Add("nope", person(1)), ErrUnknownSegment)

	// A new replica starts from a snapshot and catches up.
	var snap bytes.Buffer
	seq, _, err := replicas[0].WriteReplicaSnapshot(&snap)
	require.NoError(t, err)
	got, err := snapshotSeq(bytes.NewReader(snap.Bytes()))
	require.NoError(t, err)
	assert.Equal(t, seq, got)
	require.NoError(t, replicas[0].Add("runners", person(5555)))
	require.Eventually(t, func() bool { return replicas[0].Applied() == uint64(len(j.log)) }, 5*time.Second, time.Millisecond)
	late, err := NewReplica(Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now}, j, ReplicaOptions{})
	require.NoError(t, err)
	require.ErrorIs(t, late.LoadSnapshot(bytes.NewReader(snap.Bytes())), errReplicaLoad, "only the journal's reader loads a replica's snapshots")
	require.NoError(t, late.LoadReplicaSnapshot(seq, snap.Bytes(), replicas[0].SnapshotTag(seq, snap.Bytes())))
	assert.Equal(t, seq, late.Applied())
	require.ErrorIs(t, late.Apply(seq+2, j.log[seq]), fleet.ErrGap)
	j.mu.Lock()
	rest := j.log[seq:]
	j.mu.Unlock()
	for k, change := range rest {
		require.NoError(t, late.Apply(seq+1+uint64(k), change))
	}
	require.NoError(t, late.Apply(seq+1, j.log[seq]), "redelivery is ignored")
	assert.Equal(t, stateDump(t, replicas[0]), stateDump(t, late))
}
