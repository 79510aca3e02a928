package personify

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lossyJournal is a memJournal whose next Append, when drop is set, stores
// nothing and answers ErrNotApplied (pgstore: "the journal's commit got
// no answer", and the transaction in fact rolled back).
type lossyJournal struct {
	*memJournal
	drop atomic.Bool
}

func (j *lossyJournal) Append(ctx context.Context, change []byte, seal func(uint64, []byte) []byte) (uint64, error) {
	if j.drop.Swap(false) {
		return 0, fmt.Errorf("%w: commit got no answer", fleet.ErrNotApplied)
	}
	return j.memJournal.Append(ctx, change, seal)
}

// lossyFleet is replicas A and B on a lossyJournal, both following it.
func lossyFleet(t *testing.T) (j *lossyJournal, a, b *Engine) {
	j = &lossyJournal{memJournal: newMemJournal()}
	var err error
	a, err = NewReplica(Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: time.Hour}, j, ReplicaOptions{WriteTimeout: 5 * time.Second})
	require.NoError(t, err)
	b, err = NewReplica(Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: time.Hour}, j, ReplicaOptions{WriteTimeout: 5 * time.Second})
	require.NoError(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { j.follow(t, a, stop) })
	wg.Go(func() { j.follow(t, b, stop) })
	t.Cleanup(func() { close(stop); wg.Wait() })
	require.NoError(t, a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, a.Define(Segment{Name: "all", Purpose: "ads"}))
	return j, a, b
}

func settleAll(t *testing.T, j *memJournal, es ...*Engine) {
	require.Eventually(t, func() bool {
		j.mu.Lock()
		n := uint64(len(j.log))
		j.mu.Unlock()
		for _, e := range es {
			if e.Applied() != n {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
}

func flightsOf(e *Engine, name string) (n int, pseudonyms []anonymize.Pseudonym) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if f := e.flights[name]; f != nil {
		for _, b := range f.batches {
			n++
			for _, im := range b.imps {
				pseudonyms = append(pseudonyms, im.p)
			}
			for _, im := range b.redo {
				pseudonyms = append(pseudonyms, im.p)
			}
		}
	}
	return n, pseudonyms
}

// Two batches that hold the same impressions (AllowAt at one time): one
// whose append had no answer and was never stored, and the next flush's.
// The one that lands is taken for itself, not for the one that had no
// answer (whose redo it counted: A 2, B 1), and both leave the flight.
func TestCapFlightEqualContentTakesTheAnsweredBatch(t *testing.T) {
	for _, sameTime := range []bool{false, true} {
		t.Run(fmt.Sprintf("sameTime=%v", sameTime), func(t *testing.T) {
			j, a, b := lossyFleet(t)
			require.NoError(t, a.Add("all", person(1)))
			require.NoError(t, a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
			settleAll(t, j.memJournal, a, b)
			p := a.mustPseudonym(t, person(1))
			T := time.Now().Truncate(time.Second)
			require.True(t, a.AllowAt(p, "c", T))
			j.drop.Store(true)
			require.ErrorIs(t, a.FlushCounts(context.Background()), ErrNotAppliedForTests) // batch 1, never stored, stays in flight
			require.NoError(t, a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
			T2 := T
			if !sameTime {
				T2 = T.Add(time.Nanosecond)
			}
			require.True(t, a.AllowAt(p, "c", T2))
			require.NoError(t, a.FlushCounts(context.Background())) // batch 2 lands
			settleAll(t, j.memJournal, a, b)
			n, _ := flightsOf(a, "c")
			la, lb := capCountOf(t, a, person(1), "c"), capCountOf(t, b, person(1), "c")
			t.Logf("c: A %d, B %d; batches left in flight on A: %d", la, lb, n)
			assert.Equal(t, lb, la, "replicas agree")
			assert.Zero(t, n, "the batch that landed left the flight")
		})
	}
}

// A batch in the journal that this replica's reader skips by loading a
// snapshot holding it never comes back as a change: the load lets it go,
// and nothing of it (a person forgotten since) stays in memory (it stayed
// for good, with the pseudonym).
func TestCapFlightStoredBatchInALoadedSnapshotGoes(t *testing.T) {
	f := newGatedFleet(t, 200*time.Millisecond)
	require.NoError(t, f.a.Add("all", person(1)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	f.settle(t)
	p := f.a.mustPseudonym(t, person(1))
	require.True(t, f.a.Record(p, "c"))
	f.arm(func() { f.gate(false) })
	require.ErrorIs(t, f.a.FlushCounts(context.Background()), ErrNotAppliedForTests) // in the journal, A's reader behind
	f.j.mu.Lock()
	n := uint64(len(f.j.log))
	f.j.mu.Unlock()
	require.Eventually(t, func() bool { return f.b.Applied() == n }, 5*time.Second, time.Millisecond)
	k, _ := flightsOf(f.a, "c")
	require.Equal(t, 1, k, "in flight until it lands")
	var snap bytes.Buffer
	seq, _, err := f.b.WriteReplicaSnapshot(&snap)
	require.NoError(t, err)
	require.NoError(t, f.a.LoadReplicaSnapshot(seq, snap.Bytes(), f.b.SnapshotTag(seq, snap.Bytes()))) // A's reader on a gap
	f.gate(true)
	_, err = f.a.Forget(person(1))
	require.NoError(t, err)
	f.settle(t)
	k, ps := flightsOf(f.a, "c")
	assert.NotContains(t, ps, p, "no pseudonym of a forgotten person stays in memory")
	assert.Zero(t, k, "the snapshot holds it: it goes")
	assert.Equal(t, capCountOf(t, f.b, person(1), "c"), capCountOf(t, f.a, person(1), "c"))
}

// A batch whose append had no answer and that was never stored keeps no
// pseudonym of a person forgotten since, and goes after unsureFor.
func TestCapFlightUnansweredBatchForgetsAndGoes(t *testing.T) {
	j, a, b := lossyFleet(t)
	require.NoError(t, a.Add("all", person(1)))
	require.NoError(t, a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	settleAll(t, j.memJournal, a, b)
	p := a.mustPseudonym(t, person(1))
	require.True(t, a.Record(p, "c"))
	j.drop.Store(true)
	require.ErrorIs(t, a.FlushCounts(context.Background()), ErrNotAppliedForTests) // never stored
	k, ps := flightsOf(a, "c")
	require.Equal(t, 1, k, "it may yet land: in flight")
	require.Contains(t, ps, p)
	_, err := a.Forget(person(1))
	require.NoError(t, err)
	settleAll(t, j.memJournal, a, b)
	k, ps = flightsOf(a, "c")
	assert.NotContains(t, ps, p, "no pseudonym of a forgotten person stays in memory")
	require.Equal(t, 1, k, "the batch waits for unsureFor")
	defer func(d time.Duration) { unsureFor = d }(unsureFor)
	unsureFor = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	require.NoError(t, a.FlushCounts(context.Background()))
	k, _ = flightsOf(a, "c")
	assert.Zero(t, k, "a batch with no answer that has not come back within unsureFor goes")
}

// A snapshot load redoes what is in flight in the same step as it
// installs the state: a batch a flush takes from the new state's counters
// right after is not redone (it was, when the redo came after mu was let
// go, and counted twice: A 2, B 1).
func TestCapFlightSnapshotLoadRedoesOnlyTheOldState(t *testing.T) {
	f := newGatedFleet(t, 5*time.Second)
	require.NoError(t, f.a.Add("all", person(1)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	f.settle(t)
	var snap bytes.Buffer
	seq, _, err := f.b.WriteReplicaSnapshot(&snap)
	require.NoError(t, err)
	st, err := readState(bytes.NewReader(snap.Bytes()), "snapshot", f.a.keySet(), f.a.hasher)
	require.NoError(t, err)
	p := f.a.mustPseudonym(t, person(1))
	flushed := make(chan error, 1)
	require.NoError(t, f.a.loadReplicaSnapshot(st, func() error {
		if err := f.a.installSnapshot(st); err != nil {
			return err
		}
		// Between installSnapshot and the redo: an Allow counts into the
		// new state and the periodic flush takes it.
		require.True(t, f.a.Record(p, "c"))
		go func() { flushed <- f.a.FlushCounts(context.Background()) }()
		require.Eventually(t, func() bool { n, _ := flightsOf(f.a, "c"); return n == 1 }, 5*time.Second, time.Millisecond)
		return nil
	}))
	require.Equal(t, seq, f.a.Applied())
	require.NoError(t, <-flushed)
	f.settle(t)
	la, lb := capCountOf(t, f.a, person(1), "c"), capCountOf(t, f.b, person(1), "c")
	t.Logf("c: A %d, B %d", la, lb)
	assert.Equal(t, lb, la, "replicas agree")
}
