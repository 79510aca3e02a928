package personify

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// inFlightEngine is a durable engine whose clock runs hook once, when armed:
// FlushCounts reads the clock (op.at) after it has drained a batch and put
// it in flight, and before it commits it, so hook runs in exactly that gap.
func inFlightEngine(t *testing.T) (e *Engine, arm func(func()), reopen func() *Engine) {
	dir := t.TempDir()
	var armed atomic.Pointer[func()]
	now := func() time.Time {
		if f := armed.Swap(nil); f != nil {
			(*f)()
		}
		return time.Now()
	}
	opts := Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: time.Hour, Now: now, Durable: DurableOptions{MaintenanceInterval: -1}}
	e, err := Open(dir, opts)
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "all", Purpose: "ads"}))
	return e, func(f func()) { armed.Store(&f) }, func() *Engine {
		opts.Now = nil
		f, err := Open(dir, opts)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
}

// The batches in flight are the cap name's, not a definition's: a
// redefinition that keeps the counts (same window) keeps them in flight,
// so that a withdrawal after it still finds them (it used to find a new,
// empty flight: live 0, replay 3).
func TestCapFlightRedefineInFlight(t *testing.T) {
	e, arm, reopen := inFlightEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	recordN(t, e, p, "c", 3)
	arm(func() {
		require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount - 1, Window: Window{Kind: Lifetime}}))
		require.NoError(t, e.SetConsent(person(1), "ads", false))
		require.NoError(t, e.SetConsent(person(1), "ads", true))
	})
	assert.Equal(t, 3, flushAndReplay(t, e, reopen, person(1), "c"), "withdrawn and given again in flight: counted as the replay counts them")
}

// A redefinition with another window starts the counts afresh, but a batch
// in flight lands after it under the same name and a replay counts it
// into the new counters: this engine redoes it the same way (it used to
// count nothing: live 0, replay 3).
func TestCapFlightRedefineWindowInFlight(t *testing.T) {
	e, arm, reopen := inFlightEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	recordN(t, e, p, "c", 3)
	arm(func() {
		require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
	})
	assert.Equal(t, 3, flushAndReplay(t, e, reopen, person(1), "c"), "counted into the new counters, as the replay counts them")
}

// After a LoadSnapshot whose compaction failed (needSnapshot set), a
// flush's own commit compacts first, and the batch is logged after that
// snapshot: the snapshot leaves the batch in flight out of the counts, as
// it does the impressions waiting (a replay counted it twice: 6 for 3).
func TestCapFlightNeedSnapshotCountsOnce(t *testing.T) {
	e, _, reopen := inFlightEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	recordN(t, e, p, "c", 3)
	e.store.needSnapshot = errors.New("simulated: LoadSnapshot's compaction failed")
	assert.Equal(t, 3, flushAndReplay(t, e, reopen, person(1), "c"), "each impression once")
}

// A flush whose commit fails still takes everything that waited: under a
// lasting failure the impressions waiting do not pile up (a version that
// took one batch per flush left 172,320 after five failed flushes).
func TestCapFlightFailingCommitTakesAll(t *testing.T) {
	e, _, _ := inFlightEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p, err := e.Pseudonym(person(1))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := e.capList()[0]
	for tick := range 5 {
		for range 100_000 {
			e.Record(p, "c")
		}
		require.Error(t, e.FlushCounts(ctx))
		t.Logf("after failing flush %d: pending %d", tick, c.counts.pending.Load())
	}
	assert.Zero(t, c.counts.pending.Load(), "pending stays bounded when flushes fail")
}

// Every flush logs every impression that waited when it started, whatever
// the other shards receive meanwhile (a version that took a count of
// impressions from shard 0 on left a quiet person's impression waiting
// through five flushes).
func TestCapFlightNoShardStarves(t *testing.T) {
	e, arm, _ := inFlightEngine(t)
	ids := people(0, 300)
	require.NoError(t, e.Add("all", ids...))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	pa, err := e.Pseudonym(ids[0])
	require.NoError(t, err)
	pb, err := e.Pseudonym(ids[299])
	require.NoError(t, err)
	c := e.capList()[0]
	shardOf := func(p anonymize.Pseudonym) int {
		e.mu.RLock()
		defer e.mu.RUnlock()
		ord, _, ok := e.resolveLocked(p)
		require.True(t, ok)
		return int(ord>>capPageBits) % capShards
	}
	require.Less(t, shardOf(pa), shardOf(pb))
	require.True(t, e.Record(pb, "c")) // counted before every flush below
	for flush := range 5 {
		for range maxImpressionsPerChange {
			e.Record(pa, "c") // a busy person in an earlier shard
		}
		arm(func() { e.Record(pa, "c") }) // one more while the first batch commits
		require.NoError(t, e.FlushCounts(context.Background()))
		sh := &c.counts.shards[shardOf(pb)]
		sh.mu.Lock()
		waiting := len(sh.pending)
		sh.mu.Unlock()
		t.Logf("after flush %d: B's impression still waiting: %v", flush, waiting == 1)
	}
	sh := &c.counts.shards[shardOf(pb)]
	assert.Empty(t, sh.pending, "an impression counted before five flushes has been logged")
}

// LoadSnapshot waits for a flush under way: a batch of the old state
// logged after the loaded one's snapshot would be counted into it by a
// replay and not by this engine.
func TestCapFlightLoadSnapshotWaitsForTheFlush(t *testing.T) {
	e, arm, reopen := inFlightEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	var snap bytes.Buffer
	_, err := e.WriteSnapshot(&snap)
	require.NoError(t, err)
	p := e.mustPseudonym(t, person(1))
	recordN(t, e, p, "c", 3)
	loaded := make(chan error, 1)
	arm(func() {
		go func() { loaded <- e.LoadSnapshot(bytes.NewReader(snap.Bytes())) }()
		select {
		case err := <-loaded:
			t.Errorf("LoadSnapshot returned (%v) while a batch was in flight", err)
			loaded <- err
		case <-time.After(100 * time.Millisecond):
		}
	})
	require.NoError(t, e.FlushCounts(context.Background()))
	require.NoError(t, <-loaded)
	assert.Equal(t, 0, flushAndReplay(t, e, reopen, person(1), "c"), "the loaded state, taken before the impressions")
}

// A cap dropped and defined again while a batch is in flight: the batch
// lands under the name, so a replay counts it into the new cap, and so
// does this engine.
func TestCapFlightDropAndDefineAgain(t *testing.T) {
	e, arm, reopen := inFlightEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	c := Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}
	require.NoError(t, e.DefineCap(c))
	p := e.mustPseudonym(t, person(1))
	recordN(t, e, p, "c", 3)
	arm(func() {
		require.NoError(t, e.DropCap("c"))
		require.NoError(t, e.DefineCap(c))
	})
	assert.Equal(t, 3, flushAndReplay(t, e, reopen, person(1), "c"), "counted again, as the replay counts them")
}

// recordN records n impressions of cap for p, each counted.
func recordN(t *testing.T, e *Engine, p anonymize.Pseudonym, cap string, n int) {
	t.Helper()
	for range n {
		require.True(t, e.Record(p, cap))
	}
}

// flushAndReplay flushes e, closes it and replays its directory (reopen),
// asserts that person id's count of cap is the same live and replayed,
// and returns it.
func flushAndReplay(t *testing.T, e *Engine, reopen func() *Engine, id anonymize.Identifier, cap string) int {
	t.Helper()
	require.NoError(t, e.FlushCounts(context.Background()))
	live := capCountOf(t, e, id, cap)
	require.NoError(t, e.Close())
	assert.Equal(t, live, capCountOf(t, reopen(), id, cap), "replay agrees with the live engine")
	return live
}
