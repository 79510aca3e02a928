package personify

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// capCountOf is person id's count in cap name (Explain), 0 if none.
func capCountOf(t *testing.T, e *Engine, id anonymize.Identifier, name string) int {
	t.Helper()
	r, err := e.Explain(id)
	require.NoError(t, err)
	for _, c := range r.Caps {
		if c.Cap == name {
			return c.Count
		}
	}
	return 0
}

// A flush takes each cap's impressions from its definition as it is when
// it gets there: a cap "b" dropped and defined again while an earlier cap
// ("a") is in flight starts afresh, and the impressions its old counters
// held are neither logged nor counted (a flush that went by the list it
// started with logged them under the new "b": live 0, replay 3).
func TestCapFlightDefinitionAsItIsNowDropDefine(t *testing.T) {
	e, arm, reopen := inFlightEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	a := Cap{Name: "a", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}
	b := Cap{Name: "b", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}
	require.NoError(t, e.DefineCap(a))
	require.NoError(t, e.DefineCap(b))
	p := e.mustPseudonym(t, person(1))
	require.True(t, e.Record(p, "a"))
	recordN(t, e, p, "b", 3)
	arm(func() { // while "a"'s batch is in flight
		require.NoError(t, e.DropCap("b"))
		require.NoError(t, e.DefineCap(b))
	})
	assert.Equal(t, 0, flushAndReplay(t, e, reopen, person(1), "b"), "the old definition's impressions are neither logged nor counted")
}

// The same with "b" redefined with another window.
func TestCapFlightDefinitionAsItIsNowRedefineWindow(t *testing.T) {
	e, arm, reopen := inFlightEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "a", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	require.NoError(t, e.DefineCap(Cap{Name: "b", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	require.True(t, e.Record(p, "a"))
	recordN(t, e, p, "b", 3)
	arm(func() {
		require.NoError(t, e.DefineCap(Cap{Name: "b", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
	})
	assert.Equal(t, 0, flushAndReplay(t, e, reopen, person(1), "b"), "the old window's impressions are neither logged nor counted")
}

// A redefinition for another purpose starts the counts afresh (counts kept
// for one purpose are not used for another), and the batch in flight is
// counted as a replay counts it, under the new purpose's rule (the counts
// used to be kept: live 3, replay 0 for a person without the consent).
func TestCapFlightRedefinePurposeInFlight(t *testing.T) {
	e, arm, reopen := inFlightEngine(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "email", Model: OptIn}))
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	recordN(t, e, p, "c", 3)
	arm(func() {
		require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "email", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	})
	assert.Equal(t, 0, flushAndReplay(t, e, reopen, person(1), "c"), "the new purpose needs a consent the person has not given")
}

// The same with the impressions waiting, nothing in flight.
func TestCapFlightRedefinePurposeWaiting(t *testing.T) {
	e, _, reopen := inFlightEngine(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "email", Model: OptIn}))
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	recordN(t, e, p, "c", 3)
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "email", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	assert.Equal(t, 0, flushAndReplay(t, e, reopen, person(1), "c"), "the new purpose needs a consent the person has not given")
}

// gatedFleet is replica A (a clock hook, like inFlightEngine's) and
// replica B on a memJournal; A's reader applies the journal only while the
// gate is open (checked under j.mu), so that A's own change can be held
// back past its WriteTimeout.
type gatedFleet struct {
	j    *memJournal
	a, b *Engine
	open atomic.Bool
	arm  func(func())
	stop chan struct{}
	wg   sync.WaitGroup
}

func newGatedFleet(t *testing.T, timeout time.Duration) *gatedFleet {
	f := &gatedFleet{j: newMemJournal(), stop: make(chan struct{})}
	var armed atomic.Pointer[func()]
	now := func() time.Time {
		if h := armed.Swap(nil); h != nil {
			(*h)()
		}
		return time.Now()
	}
	f.arm = func(h func()) { armed.Store(&h) }
	var err error
	f.a, err = NewReplica(Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: time.Hour, Now: now}, f.j, ReplicaOptions{WriteTimeout: timeout})
	require.NoError(t, err)
	f.b, err = NewReplica(Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: time.Hour}, f.j, ReplicaOptions{WriteTimeout: 5 * time.Second})
	require.NoError(t, err)
	f.open.Store(true)
	f.wg.Go(func() { f.j.follow(t, f.b, f.stop) })
	f.wg.Go(func() {
		for {
			select {
			case <-f.stop:
				return
			default:
			}
			f.j.mu.Lock()
			if !f.open.Load() || uint64(len(f.j.log)) <= f.a.Applied() {
				f.j.mu.Unlock()
				time.Sleep(time.Millisecond)
				continue
			}
			next := f.a.Applied() + 1
			change := f.j.log[next-1]
			f.j.mu.Unlock()
			if err := f.a.Apply(next, change); err != nil {
				t.Error(err)
				return
			}
		}
	})
	t.Cleanup(func() { close(f.stop); f.wg.Wait() })
	require.NoError(t, f.a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, f.a.Define(Segment{Name: "all", Purpose: "ads"}))
	return f
}

func (f *gatedFleet) gate(open bool) {
	f.j.mu.Lock()
	f.open.Store(open)
	f.j.mu.Unlock()
}

func (f *gatedFleet) settle(t *testing.T) { settleAll(t, f.j, f.a, f.b) }

// A batch whose append times out (ErrNotApplied: it may yet land) stays in
// flight until it lands: its redo (here the whole batch, after a
// redefinition with another window) is counted then, as B counts it (it
// used to leave the flight: A 0, B 3).
func TestCapFlightReplicaTimedOutBatchStaysInFlight(t *testing.T) {
	f := newGatedFleet(t, 200*time.Millisecond)
	require.NoError(t, f.a.Add("all", person(1)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := f.a.mustPseudonym(t, person(1))
	for range 3 {
		require.True(t, f.a.Record(p, "c"))
	}
	f.arm(func() {
		require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
		f.gate(false) // A's reader is slow: the batch is not back within the timeout
	})
	err := f.a.FlushCounts(context.Background())
	t.Logf("flush: %v", err)
	require.ErrorIs(t, err, ErrNotAppliedForTests)
	f.gate(true)
	f.settle(t)
	la, lb := capCountOf(t, f.a, person(1), "c"), capCountOf(t, f.b, person(1), "c")
	t.Logf("c: A %d, B %d", la, lb)
	assert.Equal(t, lb, la, "replicas agree")
}

// A batch coming back is known by what it holds: the late batch of a
// timed-out flush takes itself out of the flight, not the next flush's
// batch (which a redefinition then found missing: A 0, B 3).
func TestCapFlightReplicaLateBatchTakesItself(t *testing.T) {
	f := newGatedFleet(t, 200*time.Millisecond)
	require.NoError(t, f.a.Add("all", person(1), person(2)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p1, p2 := f.a.mustPseudonym(t, person(1)), f.a.mustPseudonym(t, person(2))
	require.True(t, f.a.Record(p1, "c"))
	f.arm(func() { f.gate(false) })
	require.ErrorIs(t, f.a.FlushCounts(context.Background()), ErrNotAppliedForTests) // batch L (p1) in the journal, not back
	for range 3 {
		require.True(t, f.a.Record(p2, "c"))
	}
	f.arm(func() { // batch M (p2) in flight on A
		f.gate(true)
		require.Eventually(t, func() bool { return f.a.Applied() == uint64(len(f.j.log)) }, 5*time.Second, time.Millisecond) // L lands: pops M
		f.a.mu.RLock()
		t.Logf("after L landed, batches in flight for c: %d", func() int {
			if fl := f.a.flights["c"]; fl != nil {
				return len(fl.batches)
			}
			return 0
		}())
		f.a.mu.RUnlock()
		require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
	})
	require.NoError(t, f.a.FlushCounts(context.Background()))
	f.settle(t)
	la, lb := capCountOf(t, f.a, person(2), "c"), capCountOf(t, f.b, person(2), "c")
	t.Logf("c, person 2: A %d, B %d", la, lb)
	assert.Equal(t, lb, la, "replicas agree")
}

// A replica that loads a snapshot taken before its batch in flight (a gap,
// a lagging reader) counts the batch when it lands, as every replica does:
// the loaded state lacks it (it used to count nothing: A 0, B 3).
func TestCapFlightReplicaSnapshotBeforeBatchInFlight(t *testing.T) {
	f := newGatedFleet(t, 5*time.Second)
	require.NoError(t, f.a.Add("all", person(1)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	f.settle(t)
	var snap bytes.Buffer
	seq, _, err := f.b.WriteReplicaSnapshot(&snap)
	require.NoError(t, err)
	tag := f.b.SnapshotTag(seq, snap.Bytes())
	p := f.a.mustPseudonym(t, person(1))
	for range 3 {
		require.True(t, f.a.Record(p, "c"))
	}
	f.arm(func() {
		f.gate(false)
		go func() {
			require.Eventually(t, func() bool { f.j.mu.Lock(); defer f.j.mu.Unlock(); return uint64(len(f.j.log)) == seq+1 }, 5*time.Second, time.Millisecond)
			assert.NoError(t, f.a.LoadReplicaSnapshot(seq, snap.Bytes(), tag)) // what A's reader does on a gap
			f.gate(true)
		}()
	})
	require.NoError(t, f.a.FlushCounts(context.Background()))
	f.settle(t)
	la, lb := capCountOf(t, f.a, person(1), "c"), capCountOf(t, f.b, person(1), "c")
	t.Logf("c: A %d, B %d", la, lb)
	assert.Equal(t, lb, la, "replicas agree")
}

// A snapshot A writes while its timed-out batch has not come back leaves
// the batch out of the counts, as any batch in flight: a replica started
// from it counts the batch once, from the journal (it counted it twice).
func TestCapFlightReplicaTimedOutBatchInSnapshotOnce(t *testing.T) {
	f := newGatedFleet(t, 200*time.Millisecond)
	require.NoError(t, f.a.Add("all", person(1)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := f.a.mustPseudonym(t, person(1))
	for range 3 {
		require.True(t, f.a.Record(p, "c"))
	}
	f.arm(func() { f.gate(false) })
	require.ErrorIs(t, f.a.FlushCounts(context.Background()), ErrNotAppliedForTests)
	var snap bytes.Buffer
	seq, _, err := f.a.WriteReplicaSnapshot(&snap)
	require.NoError(t, err)
	f.gate(true)
	f.settle(t)
	c, err := NewReplica(Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: time.Hour}, f.j, ReplicaOptions{})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.LoadReplicaSnapshot(seq, snap.Bytes(), f.a.SnapshotTag(seq, snap.Bytes())))
	f.j.mu.Lock()
	rest := append([][]byte(nil), f.j.log[seq:]...)
	f.j.mu.Unlock()
	for k, ch := range rest {
		require.NoError(t, c.Apply(seq+1+uint64(k), ch))
	}
	la, lb, lc := capCountOf(t, f.a, person(1), "c"), capCountOf(t, f.b, person(1), "c"), capCountOf(t, c, person(1), "c")
	t.Logf("c: A %d, B %d, C (from A's snapshot) %d", la, lb, lc)
	assert.Equal(t, lb, lc, "a replica started from A's snapshot agrees")
}

// A batch in the journal whose wait for this replica timed out (its place
// known) is known by its place when it lands, not by what it holds: a twin
// with the same impressions being appended meanwhile stays in flight, so a
// redefinition between them still redoes it (the twin was taken for it:
// A 0, B 1).
func TestCapFlightStoredBatchIsKnownByItsPlace(t *testing.T) {
	f := newGatedFleet(t, 200*time.Millisecond)
	require.NoError(t, f.a.Add("all", person(1)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	f.settle(t)
	p := f.a.mustPseudonym(t, person(1))
	T := time.Now().Truncate(time.Second)
	require.True(t, f.a.AllowAt(p, "c", T))
	f.arm(func() { f.gate(false) })
	require.ErrorIs(t, f.a.FlushCounts(context.Background()), ErrNotAppliedForTests) // A1 in the journal, not back
	require.True(t, f.a.AllowAt(p, "c", T))
	f.arm(func() { // A2 in flight, not yet appended
		require.NoError(t, f.b.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
		f.gate(true)
		require.Eventually(t, func() bool { return f.a.Applied() == uint64(len(f.j.log)) }, 5*time.Second, time.Millisecond)
	})
	require.NoError(t, f.a.FlushCounts(context.Background()))
	f.settle(t)
	la, lb := capCountOf(t, f.a, person(1), "c"), capCountOf(t, f.b, person(1), "c")
	t.Logf("c: A %d, B %d", la, lb)
	assert.Equal(t, lb, la, "replicas agree")
}

// A batch in the journal whose wait timed out is certain to land: it stays
// in flight past unsureFor, and its redo is counted when it does (it was
// dropped: A 0, B 1).
func TestCapFlightStoredBatchWaitsPastUnsureFor(t *testing.T) {
	old := unsureFor
	unsureFor = 50 * time.Millisecond
	t.Cleanup(func() { unsureFor = old })
	f := newGatedFleet(t, 200*time.Millisecond)
	require.NoError(t, f.a.Add("all", person(1)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	f.settle(t)
	p := f.a.mustPseudonym(t, person(1))
	require.True(t, f.a.Record(p, "c"))
	f.arm(func() { // A1 in flight: a redefinition lands before it in the journal
		f.gate(false)
		require.NoError(t, f.b.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
	})
	require.ErrorIs(t, f.a.FlushCounts(context.Background()), ErrNotAppliedForTests)
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, f.a.FlushCounts(context.Background())) // expires A1, still unapplied in the journal
	f.gate(true)
	f.settle(t)
	la, lb := capCountOf(t, f.a, person(1), "c"), capCountOf(t, f.b, person(1), "c")
	t.Logf("c: A %d, B %d", la, lb)
	assert.Equal(t, lb, la, "replicas agree")
}

func TestCapFlightStoredBatchDistinctTimes(t *testing.T) {
	f := newGatedFleet(t, 200*time.Millisecond)
	require.NoError(t, f.a.Add("all", person(1)))
	require.NoError(t, f.a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	f.settle(t)
	p := f.a.mustPseudonym(t, person(1))
	T := time.Now().Truncate(time.Second)
	require.True(t, f.a.AllowAt(p, "c", T))
	f.arm(func() { f.gate(false) })
	require.ErrorIs(t, f.a.FlushCounts(context.Background()), ErrNotAppliedForTests) // A1 in the journal, not back
	require.True(t, f.a.AllowAt(p, "c", T.Add(time.Nanosecond)))
	f.arm(func() { // A2 in flight, not yet appended
		require.NoError(t, f.b.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
		f.gate(true)
		require.Eventually(t, func() bool { return f.a.Applied() == uint64(len(f.j.log)) }, 5*time.Second, time.Millisecond)
	})
	require.NoError(t, f.a.FlushCounts(context.Background()))
	f.settle(t)
	la, lb := capCountOf(t, f.a, person(1), "c"), capCountOf(t, f.b, person(1), "c")
	t.Logf("c: A %d, B %d", la, lb)
	assert.Equal(t, lb, la, "replicas agree")
}
