package personify

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// capEngine has the people 1..5 stored (in "runners", ads, opt-out) and
// the purpose "email" (opt-in).
func capEngine(t *testing.T) *testEngine {
	e := newTestEngine(t)
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(1, 6)...))
	return e
}

func allowN(e *Engine, p anonymize.Pseudonym, cap string, n int) int {
	ok := 0
	for range n {
		if e.Allow(p, cap) {
			ok++
		}
	}
	return ok
}

func TestCapRollingWindowAtItsEdges(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "promo", Purpose: "ads", Max: 3, Window: Window{Kind: Rolling, Length: 7 * time.Hour}}))
	p := e.mustPseudonym(t, person(1))
	assert.True(t, e.CanShow(p, "promo"))
	assert.Equal(t, 3, allowN(e.Engine, p, "promo", 5), "at most Max per window")
	assert.False(t, e.CanShow(p, "promo"))
	assert.True(t, e.Allow(e.mustPseudonym(t, person(2)), "promo"), "per person")

	// 7 hours after: not yet (an impression counts until seven full
	// one-hour sub-windows after its own have passed), never early.
	e.clock.Advance(7*time.Hour - time.Nanosecond)
	assert.False(t, e.Allow(p, "promo"), "never exceeded within any 7 hours")
	e.clock.Advance(time.Hour + time.Nanosecond) // 8/7 of the window
	assert.Equal(t, 3, allowN(e.Engine, p, "promo", 4))

	// A sliding window: impressions spread out leave one by one.
	q := e.mustPseudonym(t, person(3))
	for range 3 {
		require.True(t, e.Allow(q, "promo"))
		e.clock.Advance(2 * time.Hour)
	}
	assert.False(t, e.Allow(q, "promo"))
	e.clock.Advance(3 * time.Hour) // the first is 9 hours old, the others 7 and 5
	assert.True(t, e.Allow(q, "promo"))
	assert.False(t, e.Allow(q, "promo"))

	// Record counts an impression decided elsewhere, even past Max.
	r := e.mustPseudonym(t, person(4))
	for range 5 {
		assert.True(t, e.Record(r, "promo"))
	}
	rep, err := e.Explain(person(4))
	require.NoError(t, err)
	require.Len(t, rep.Caps, 1)
	assert.Equal(t, CapReport{Cap: "promo", Purpose: "ads", Count: 5, Max: 3, WindowEnd: e.clock.Now().Truncate(time.Hour).Add(8 * time.Hour)}, rep.Caps[0])
}

func TestCapCalendarDayAcrossDST(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "daily", Purpose: "ads", Max: 2, Window: Window{Kind: Calendar, Period: Day, TimeZone: "Europe/Berlin"}}))
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	p := e.mustPseudonym(t, person(1))
	// 2026-03-29: clocks go from 02:00 to 03:00, a 23-hour day.
	e.clock.t = time.Date(2026, 3, 29, 0, 30, 0, 0, berlin)
	assert.Equal(t, 2, allowN(e.Engine, p, "daily", 3))
	e.clock.t = time.Date(2026, 3, 29, 23, 59, 59, 0, berlin) // 22.5 hours later, the same day
	assert.False(t, e.Allow(p, "daily"))
	rep, err := e.Explain(person(1))
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 3, 30, 0, 0, 0, 0, berlin).UTC(), rep.Caps[0].WindowEnd)
	e.clock.t = time.Date(2026, 3, 30, 0, 0, 0, 0, berlin) // midnight there, not 24 hours after
	assert.True(t, e.Allow(p, "daily"))

	// 2026-10-25: a 25-hour day, 01:00 UTC to 23:00 UTC.
	e.clock.t = time.Date(2026, 10, 25, 0, 10, 0, 0, berlin)
	assert.Equal(t, 2, allowN(e.Engine, p, "daily", 3))
	e.clock.t = time.Date(2026, 10, 25, 23, 50, 0, 0, berlin) // 24h40m later, the same day
	assert.False(t, e.Allow(p, "daily"))
	e.clock.t = time.Date(2026, 10, 26, 0, 0, 1, 0, berlin)
	assert.True(t, e.Allow(p, "daily"))

	// A week from Monday, a month by the calendar.
	require.NoError(t, e.DefineCap(Cap{Name: "weekly", Purpose: "ads", Max: 1, Window: Window{Kind: Calendar, Period: Week, TimeZone: "America/New_York"}}))
	ny, _ := time.LoadLocation("America/New_York")
	e.clock.t = time.Date(2026, 11, 29, 23, 59, 0, 0, ny) // a Sunday
	assert.True(t, e.Allow(p, "weekly"))
	assert.False(t, e.Allow(p, "weekly"))
	e.clock.t = time.Date(2026, 11, 30, 0, 0, 0, 0, ny) // Monday
	assert.True(t, e.Allow(p, "weekly"))
	require.NoError(t, e.DefineCap(Cap{Name: "monthly", Purpose: "ads", Max: 1, Window: Window{Kind: Calendar, Period: Month}}))
	e.clock.t = time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC)
	assert.True(t, e.Allow(p, "monthly"))
	assert.False(t, e.Allow(p, "monthly"))
	e.clock.t = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	assert.True(t, e.Allow(p, "monthly"))
}

func TestCapLifetimeAndDefinitions(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "once", Purpose: "ads", Max: 1, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	assert.True(t, e.Allow(p, "once"))
	e.clock.Advance(10 * 365 * 24 * time.Hour)
	assert.False(t, e.Allow(p, "once"))
	// A new Max applies at once; another window starts afresh.
	require.NoError(t, e.DefineCap(Cap{Name: "once", Purpose: "ads", Max: 2, Window: Window{Kind: Lifetime}}))
	assert.True(t, e.Allow(p, "once"))
	assert.False(t, e.Allow(p, "once"))
	require.NoError(t, e.DefineCap(Cap{Name: "once", Purpose: "ads", Max: 2, Window: Window{Kind: Rolling, Length: time.Hour}}))
	assert.True(t, e.Allow(p, "once"))
	require.NoError(t, e.DropCap("once"))
	assert.False(t, e.Allow(p, "once"), "an undefined cap allows nothing")
	require.ErrorIs(t, e.DropCap("once"), ErrUnknownCap)

	for _, bad := range []Cap{
		{Name: "x", Purpose: "ads", Max: 0, Window: Window{Kind: Lifetime}},
		{Name: "x", Purpose: "ads", Max: MaxCapCount + 1, Window: Window{Kind: Lifetime}},
		{Name: "x", Purpose: "ads", Max: 1, Window: Window{Kind: Rolling, Length: time.Second}},
		{Name: "x", Purpose: "ads", Max: 1, Window: Window{Kind: Rolling, Length: 91 * 24 * time.Hour}},
		{Name: "x", Purpose: "ads", Max: 1, Window: Window{Kind: Calendar, Period: Day, TimeZone: "Mars/Olympus"}},
		{Name: "x", Purpose: "ads", Max: 1, Window: Window{Kind: Calendar, Period: 9}},
		{Name: "x", Purpose: "ads", Max: 1},
	} {
		require.ErrorIs(t, e.DefineCap(bad), ErrInvalidDefinition, "%+v", bad)
	}
	require.ErrorIs(t, e.DefineCap(Cap{Name: "a b", Purpose: "ads", Max: 1, Window: Window{Kind: Lifetime}}), ErrInvalidName)
	require.ErrorIs(t, e.DefineCap(Cap{Name: "x", Purpose: "nope", Max: 1, Window: Window{Kind: Lifetime}}), ErrUnknownPurpose)
	assert.Empty(t, e.Caps())
}

func TestCapConcurrentCallersNeverExceedIt(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 50, Window: Window{Kind: Rolling, Length: time.Hour}}))
	p := e.mustPseudonym(t, person(1))
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 100 {
				if e.Allow(p, "c") {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(50), ok.Load())
	assert.False(t, e.AllowAt(p, "c", e.clock.Now()))
	assert.True(t, e.AllowAt(p, "c", e.clock.Now().Add(2*time.Hour)), "AllowAt counts at the time given")
	assert.False(t, e.AllowAt(p, "c", e.clock.Now()), "a time older than the person's window: never through uncounted")
	assert.Zero(t, testing.AllocsPerRun(200, func() { e.Allow(p, "c") }))
}

func TestCapPrivacy(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "ads-cap", Purpose: "ads", Max: 5, Window: Window{Kind: Lifetime}}))
	require.NoError(t, e.DefineCap(Cap{Name: "news-cap", Purpose: "email", Max: 5, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	stored := func(id anonymize.Identifier) int {
		r, err := e.Explain(id)
		require.NoError(t, err)
		n := 0
		for _, c := range r.Caps {
			n += c.Count
		}
		return n
	}
	// Opt-in without consent: nothing shown, nothing counted.
	assert.False(t, e.Allow(p, "news-cap"))
	assert.False(t, e.Record(p, "news-cap"))
	assert.Zero(t, stored(person(1)))
	require.NoError(t, e.SetConsent(person(1), "email", true))
	assert.True(t, e.Allow(p, "news-cap"))
	assert.True(t, e.Allow(p, "ads-cap"))
	assert.Equal(t, 2, stored(person(1)))
	// Withdrawal drops the purpose's counters; suppression wins.
	require.NoError(t, e.SetConsent(person(1), "email", false))
	assert.Equal(t, 1, stored(person(1)))
	require.NoError(t, e.Suppress(person(1), "ads"))
	assert.Zero(t, stored(person(1)))
	assert.False(t, e.Allow(p, "ads-cap"))
	// A person the engine does not store is not counted.
	assert.False(t, e.Allow(e.mustPseudonym(t, person(99)), "ads-cap"))
	// Linked identifiers share the person's counters.
	require.NoError(t, e.Link(person(2), device(2)))
	assert.True(t, e.Allow(e.mustPseudonym(t, device(2)), "ads-cap"))
	assert.Equal(t, 1, stored(person(2)))

	// Forget erases them, and the receipt says so.
	r, err := e.Forget(device(2))
	require.NoError(t, err)
	assert.Equal(t, 1, r.Counters)
	require.NoError(t, e.VerifyReceipt(r))
	forged := r
	forged.Counters = 0
	require.ErrorIs(t, e.VerifyReceipt(forged), ErrBadReceipt)
}

func TestCapCountersExpireWithTheirWindow(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 5, Window: Window{Kind: Rolling, Length: time.Hour}}))
	for i := 1; i <= 5; i++ {
		require.True(t, e.Allow(e.mustPseudonym(t, person(i)), "c"))
	}
	assert.Equal(t, 5, capWords(e.Engine, "c"))
	before := e.Stats()
	assert.Equal(t, 5, before.CapCounters, "Stats counts the counters")
	e.clock.Advance(2 * time.Hour)
	_, err := e.Expire(e.clock.Now())
	require.NoError(t, err)
	assert.Zero(t, capWords(e.Engine, "c"), "no trace after the window")
	after := e.Stats()
	assert.Zero(t, after.CapCounters)
	assert.Less(t, after.MemoryBytes, before.MemoryBytes, "the counters' pages are given back")
}

func capWords(e *Engine, name string) int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	c := e.caps[name]
	n := 0
	c.counts.eachWord(c, func(uint32, capWord) { n++ })
	if int64(n) != c.counts.words.Load() {
		panic(fmt.Sprintf("cap %q: %d words in the pages, %d counted", name, n, c.counts.words.Load()))
	}
	return n
}

func TestCapsDurableWithinTheFlushBound(t *testing.T) {
	d := newDurableEnv(t)
	d.opts.CapFlush = time.Hour // flushed by hand here
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(1, 4)...))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 10, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}))
	p := e.mustPseudonym(t, person(1))
	require.Equal(t, 2, allowN(e, p, "c", 2))
	require.NoError(t, e.Compact()) // a snapshot with two impressions not logged yet
	require.NoError(t, e.FlushCounts(context.Background()))
	require.Equal(t, 1, allowN(e, p, "c", 1)) // not flushed: a crash loses it

	// A crash: the files as they are now.
	crashed := t.TempDir()
	copyDir(t, d.dir, crashed)
	c, err := Open(crashed, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	r, err := c.Explain(person(1))
	require.NoError(t, err)
	require.Len(t, r.Caps, 1)
	assert.Equal(t, 2, r.Caps[0].Count, "the flushed impressions, each once; the unflushed one lost")
	require.NoError(t, c.Close())

	// A clean Close logs the rest.
	require.NoError(t, e.Close())
	e = d.open(t)
	r, err = e.Explain(person(1))
	require.NoError(t, err)
	assert.Equal(t, 3, r.Caps[0].Count)
	want := stateDump(t, e)
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	e = d.open(t)
	r, err = e.Explain(person(1))
	require.NoError(t, err)
	assert.Equal(t, 3, r.Caps[0].Count, "from the snapshot")
	assert.Equal(t, want, stateDump(t, e))

	// Forget: after the purge, no file holds the person's pseudonym (the
	// logged impressions named it) or a counter.
	_, err = e.Forget(person(1))
	require.NoError(t, err)
	require.NoError(t, e.Compact())
	var le [8]byte
	binary.LittleEndian.PutUint64(le[:], uint64(p))
	assert.False(t, dirHolds(t, d.dir, le[:]), "a file holds the forgotten person's pseudonym")
	assert.Zero(t, capWords(e, "c"))
	require.NoError(t, e.Close())
}

func copyDir(t *testing.T, from, to string) {
	entries, err := os.ReadDir(from)
	require.NoError(t, err)
	for _, en := range entries {
		if en.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, en.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(to, en.Name()), b, 0o600))
	}
}

func TestCapsReplicasConvergeWithinTheFlushBound(t *testing.T) {
	j := newMemJournal()
	clock := &fakeClock{t: t0}
	rs := followedReplicas(t, j, 2, Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now, CapFlush: time.Hour})
	a, b := rs[0], rs[1]
	require.NoError(t, a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, a.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, a.Add("runners", people(1, 4)...))
	require.NoError(t, a.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 3, Window: Window{Kind: Rolling, Length: time.Hour}}))
	p := a.mustPseudonym(t, person(1))
	caughtUp := func() {
		last := uint64(len(j.log))
		require.Eventually(t, func() bool { return a.Applied() == last && b.Applied() == last }, 5*time.Second, time.Millisecond)
	}
	caughtUp()
	require.Equal(t, 2, allowN(a, p, "c", 2))
	// Before a flush, b does not know: the bound is what the fleet shows
	// within one CapFlush.
	assert.True(t, b.CanShow(p, "c"))
	require.NoError(t, a.FlushCounts(context.Background()))
	caughtUp()
	require.Equal(t, 1, allowN(b, p, "c", 2), "b counts a's two")
	require.NoError(t, b.FlushCounts(context.Background()))
	caughtUp()
	assert.False(t, a.CanShow(p, "c"), "and a counts b's, its own once")
	assert.Equal(t, stateDump(t, a), stateDump(t, b))
	ra, err := a.Explain(person(1))
	require.NoError(t, err)
	rb, err := b.Explain(person(1))
	require.NoError(t, err)
	assert.Equal(t, ra.Caps, rb.Caps)
	assert.Equal(t, 3, ra.Caps[0].Count)
}

// Counters are the person's: a rotation that re-keys the person keeps
// them (the ordinal stays), across a restart too; a person the old key's
// end shreds takes their counters along, and nothing of them is left in
// the snapshot.
func TestCapsAcrossKeyRotationAndRestart(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", person(1), person(2)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 5, Window: Window{Kind: Lifetime}}))
	require.Equal(t, 2, allowN(e, e.mustPseudonym(t, person(1)), "c", 2))
	require.Equal(t, 1, allowN(e, e.mustPseudonym(t, person(2)), "c", 1))
	require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), time.Hour))
	require.NoError(t, e.Add("runners", person(1))) // re-keyed: same ordinal, same counters
	p1 := e.mustPseudonym(t, person(1))
	require.True(t, e.Allow(p1, "c"))
	require.NoError(t, e.Close()) // the batch is logged on Close
	d.opts.PreviousKeys = []PreviousKey{{Key: mustKey(t, testKeyHex), Until: d.clock.Now().Add(time.Hour)}}
	d.opts.Key = mustKey(t, fuzzKey2)
	e = d.open(t)
	count := func(id anonymize.Identifier) int { return capCount(t, e, id) }
	assert.Equal(t, 3, count(person(1)), "the re-keyed person's counters survive the rotation and the restart")
	assert.Equal(t, 1, count(person(2)))
	d.clock.Advance(2 * time.Hour)
	_, err := e.Expire(d.clock.Now()) // person 2 was never re-keyed: shredded with the old key
	require.NoError(t, err)
	assert.Equal(t, 1, capWords(e, "c"), "the shredded person's counter went with them")
	assert.Equal(t, 3, count(person(1)))
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	d.opts.PreviousKeys = nil
	e = d.open(t)
	assert.Equal(t, 3, count(person(1)))
	assert.Equal(t, 1, capWords(e, "c"))
	require.NoError(t, e.Close())
}

// An impression counted through an alias (the old key's pseudonym of a
// linked device, during a rotation's grace) and not logged yet stays the
// person's when the device is unlinked: a restart counts it for them.
func TestCapsAliasImpressionSurvivesUnlink(t *testing.T) {
	d := newDurableEnv(t)
	d.opts.CapFlush = time.Hour
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", person(1)))
	require.NoError(t, e.Link(person(1), device(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 10, Window: Window{Kind: Lifetime}}))
	q := e.mustPseudonym(t, device(1)) // under the first key
	require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), time.Hour))
	require.NoError(t, e.Link(person(1), device(1))) // re-keyed: q is now an alias
	require.True(t, e.Allow(q, "c"))
	require.NoError(t, e.Unlink(device(1)))
	require.NoError(t, e.Close())
	d.opts.PreviousKeys = []PreviousKey{{Key: mustKey(t, testKeyHex), Until: d.clock.Now().Add(time.Hour)}}
	d.opts.Key = mustKey(t, fuzzKey2)
	e = d.open(t)
	assert.Equal(t, 1, capCount(t, e, person(1)), "the impression is the person's after the restart")
}
