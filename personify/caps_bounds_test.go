package personify

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The bounds the README quotes, measured on the real clock: a crash loses
// at most the impressions of the last CapFlush (plus the fsync in
// flight), and another replica counts an impression within CapFlush plus
// the journal's delivery.

func TestCapsCrashLosesAtMostOneFlush(t *testing.T) {
	if testing.Short() {
		t.Skip("runs on the real clock for about two seconds")
	}
	const flush = 200 * time.Millisecond
	dir := t.TempDir()
	opts := Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: flush, Durable: DurableOptions{MaintenanceInterval: -1}}
	e, err := Open(dir, opts)
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "all", Purpose: "ads"}))
	require.NoError(t, e.Add("all", people(0, 100)...))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	times := make([]time.Time, 0, 1<<16)
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if e.Record(e.mustPseudonym(t, person(i%100)), "c") {
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
			}
			time.Sleep(50 * time.Microsecond)
		}
	})
	time.Sleep(1500 * time.Millisecond)
	close(stop) // the crash: nothing counted after this moment
	wg.Wait()
	at := time.Now()
	crashed := t.TempDir()
	copyDir(t, dir, crashed) // the files as the crash leaves them
	c, err := Open(crashed, Options{Key: opts.Key, K: 1, Durable: opts.Durable})
	require.NoError(t, err)
	recovered := 0
	for i := range 100 {
		r, err := c.Explain(person(i))
		require.NoError(t, err)
		for _, cr := range r.Caps {
			recovered += cr.Count
		}
	}
	require.NoError(t, c.Close())
	require.NoError(t, e.Close())
	mu.Lock()
	before := 0
	for _, ti := range times {
		if ti.Before(at) {
			before++
		}
	}
	// The impressions lost are the newest before the copy; the oldest of
	// them is how far back the loss reaches.
	lost := before - recovered
	require.GreaterOrEqual(t, lost, 0, "recovered more than was counted")
	reach := time.Duration(0)
	if lost > 0 {
		reach = at.Sub(times[before-lost])
	}
	mu.Unlock()
	t.Logf("CapFlush %v: %d impressions counted before the crash, %d recovered, %d lost, reaching back %v", flush, before, recovered, lost, reach)
	// One flush plus its fsync; the slack is for a loaded machine (-race,
	// other tests), where the ticker and the fsync can run late.
	require.LessOrEqual(t, reach, flush+2*time.Second, "the loss reaches past one flush")
}

func TestCapsReplicaSeesImpressionsWithinTheBound(t *testing.T) {
	if testing.Short() {
		t.Skip("runs on the real clock")
	}
	const flush = 200 * time.Millisecond
	j := newMemJournal()
	rs := followedReplicas(t, j, 2, Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: flush})
	a, b := rs[0], rs[1]
	require.NoError(t, a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, a.Define(Segment{Name: "all", Purpose: "ads"}))
	require.NoError(t, a.Add("all", people(0, 10)...))
	require.NoError(t, a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 1, Window: Window{Kind: Lifetime}}))
	require.Eventually(t, func() bool { return b.Applied() == a.Applied() }, 5*time.Second, time.Millisecond)
	var worst time.Duration
	for i := range 5 {
		p := a.mustPseudonym(t, person(i))
		require.True(t, a.Allow(p, "c"))
		start := time.Now()
		require.Eventually(t, func() bool { return !b.CanShow(p, "c") }, 5*time.Second, time.Millisecond)
		worst = max(worst, time.Since(start))
	}
	t.Logf("CapFlush %v: the other replica counted an impression within %v (worst of 5)", flush, worst)
	require.LessOrEqual(t, worst, flush+3*time.Second, "past one flush and the journal's delivery (slack for a loaded machine)")
}
