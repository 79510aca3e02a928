package personify

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A rolling cap must never let more than Max through within any window of
// Length (README: "the cap is never exceeded within any window of that
// length"). An impression at the end of its sub-window is dropped when the
// clock enters the sub-window 8 later, only 7/8 Length + epsilon later.
func TestCapAttackRollingExceededWithinWindow(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "promo", Purpose: "ads", Max: 1, Window: Window{Kind: Rolling, Length: 8 * time.Hour}}))
	p := e.mustPseudonym(t, person(1))
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // a sub-window (1 h) start
	first := base.Add(59 * time.Minute)
	second := base.Add(8*time.Hour + time.Minute) // 7h02m after the first
	e.clock.t = second                            // AllowAt's times are not ahead of the clock
	require.True(t, e.AllowAt(p, "promo", first))
	require.Less(t, second.Sub(first), 8*time.Hour)
	assert.False(t, e.AllowAt(p, "promo", second), "two impressions within %v of an 8h window", second.Sub(first))

	// windowEnd claims the impression counts until sub end + Length = 9h after base.
	q := e.mustPseudonym(t, person(2))
	require.True(t, e.AllowAt(q, "promo", first))
	e.clock.t = first
	rep, err := e.Explain(person(2))
	require.NoError(t, err)
	require.Len(t, rep.Caps, 1)
	end := rep.Caps[0].WindowEnd
	// Just before the reported end, the cap must still hold.
	e.clock.t = end.Add(-time.Minute)
	assert.False(t, e.AllowAt(q, "promo", end.Add(-time.Minute)), "Explain says the impression counts until %v", end)
	// and just after it, it lets the next one through
	e.clock.t = end.Add(time.Minute)
	assert.True(t, e.AllowAt(q, "promo", end.Add(time.Minute)), "Explain says the impression counts until %v", end)
}

// Merging two stored people (Link of two emails each stored on its own)
// releases the source ordinal but leaves its counters: the merged person
// loses them (cap exceeded) and the next new person given that ordinal
// inherits them.
func TestCapAttackLinkMergeLeaksCounters(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "once", Purpose: "ads", Max: 1, Window: Window{Kind: Lifetime}}))
	p1, p2 := e.mustPseudonym(t, person(1)), e.mustPseudonym(t, person(2))
	require.True(t, e.Allow(p1, "once"))
	require.True(t, e.Allow(p2, "once"))
	require.NoError(t, e.Link(person(1), person(2)))
	assert.Equal(t, 1, capWords(e.Engine, "once"), "one person now: one counter")
	// a new person, who was never shown anything
	require.NoError(t, e.Add("runners", person(100)))
	p100 := e.mustPseudonym(t, person(100))
	assert.True(t, e.Allow(p100, "once"), "a new person inherits the counter of a merged-away ordinal")
}

// A calendar day cap in a zone west of UTC at the earliest time AllowAt
// takes (the Unix epoch, 1969-12-31 there): the period index wraps to
// 2^32-1, the fresh word's last 0 is "newer", and add counts nothing:
// Allow says yes forever.
func TestCapAttackCalendarBeforeLocalEpoch(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "daily", Purpose: "ads", Max: 1, Window: Window{Kind: Calendar, Period: Day, TimeZone: "America/New_York"}}))
	p := e.mustPseudonym(t, person(1))
	at := time.Unix(3600, 0)
	n := 0
	for range 5 {
		if e.AllowAt(p, "daily", at) {
			n++
		}
	}
	assert.Equal(t, 1, n, "Max 1 per day")
}

// A day whose midnight does not exist (America/Havana springs forward at
// 00:00): windowEnd is computed from the normalized 01:00 start plus a day,
// one hour past the day's real end.
func TestCapAttackCalendarWindowEndMissingMidnight(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "daily", Purpose: "ads", Max: 1, Window: Window{Kind: Calendar, Period: Day, TimeZone: "America/Havana"}}))
	loc, err := time.LoadLocation("America/Havana")
	require.NoError(t, err)
	at := time.Date(2024, 3, 10, 12, 0, 0, 0, loc) // DST began 2024-03-10 00:00 -> 01:00
	e.clock.t = at
	p := e.mustPseudonym(t, person(1))
	require.True(t, e.Allow(p, "daily"))
	rep, err := e.Explain(person(1))
	require.NoError(t, err)
	require.Len(t, rep.Caps, 1)
	want := time.Date(2024, 3, 11, 0, 0, 0, 0, loc)
	assert.True(t, want.Equal(rep.Caps[0].WindowEnd), "window end %v, want %v", rep.Caps[0].WindowEnd.In(loc), want)
	// and the cap itself: at 00:30 on the 11th it's a new day
	e.clock.t = time.Date(2024, 3, 11, 0, 30, 0, 0, loc)
	assert.True(t, e.AllowAt(p, "daily", e.clock.t))
}

// After a merge the released ordinal's counter is still in the table; a
// snapshot writes it and buildCaps refuses counters of an ordinal that is
// not live: the engine's own snapshot does not load.
func TestCapAttackLinkMergeSnapshotUnloadable(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "once", Purpose: "ads", Max: 1, Window: Window{Kind: Lifetime}}))
	require.True(t, e.Allow(e.mustPseudonym(t, person(1)), "once"))
	require.True(t, e.Allow(e.mustPseudonym(t, person(2)), "once"))
	require.NoError(t, e.Link(person(1), person(2)))
	var buf bytes.Buffer
	_, err := e.WriteSnapshot(&buf)
	require.NoError(t, err)
	f := newTestEngine(t)
	require.NoError(t, f.LoadSnapshot(bytes.NewReader(buf.Bytes())), "an engine's own snapshot must load")
}

// Durable: the same merge, then Compact and reopen.
func TestCapAttackLinkMergeDurableReopen(t *testing.T) {
	d := newDurableEnv(t)
	d.opts.CapFlush = time.Hour
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(1, 4)...))
	require.NoError(t, e.DefineCap(Cap{Name: "once", Purpose: "ads", Max: 1, Window: Window{Kind: Lifetime}}))
	require.True(t, e.Allow(e.mustPseudonym(t, person(1)), "once"))
	require.True(t, e.Allow(e.mustPseudonym(t, person(2)), "once"))
	require.NoError(t, e.FlushCounts(context.Background()))
	require.NoError(t, e.Link(person(1), person(2)))
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	e2, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err, "reopen after a merge and Compact")
	e2.Close()
}

// gatedFollow is memJournal.follow that delivers only up to *limit.
func gatedFollow(t *testing.T, j *memJournal, e *Engine, limit *atomic.Uint64, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		j.mu.Lock()
		n := uint64(len(j.log))
		j.mu.Unlock()
		if n <= e.Applied() || e.Applied() >= limit.Load() {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		next := e.Applied() + 1
		j.mu.Lock()
		change := j.log[next-1]
		j.mu.Unlock()
		if err := e.Apply(next, change); err != nil {
			t.Error(err)
			return
		}
	}
}

// Replica a counts p, b forgets p and re-adds them, and a's batch (taken
// before a read the Forget) lands after both: b counts a pre-Forget
// impression for the re-added person, a does not. The forgotten person's
// impression resurrects, and the replicas diverge.
func TestCapAttackReplicaForgetThenReaddResurrects(t *testing.T) {
	j := newMemJournal()
	clock := &fakeClock{t: t0}
	stop := make(chan struct{})
	var done sync.WaitGroup
	var limit atomic.Uint64
	limit.Store(1 << 62)
	a, err := NewReplica(Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now, CapFlush: time.Hour}, j, ReplicaOptions{})
	require.NoError(t, err)
	b, err := NewReplica(Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now, CapFlush: time.Hour}, j, ReplicaOptions{})
	require.NoError(t, err)
	done.Go(func() { gatedFollow(t, j, a, &limit, stop) })
	done.Go(func() { j.follow(t, b, stop) })
	defer func() { close(stop); done.Wait() }()
	require.NoError(t, a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, a.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, a.Add("runners", people(1, 4)...))
	require.NoError(t, a.DefineCap(Cap{Name: "once", Purpose: "ads", Max: 1, Window: Window{Kind: Lifetime}}))
	caughtUp := func() {
		last := uint64(len(j.log))
		require.Eventually(t, func() bool { return a.Applied() == last && b.Applied() == last }, 5*time.Second, time.Millisecond)
	}
	caughtUp()
	p := a.mustPseudonym(t, person(1))
	require.True(t, a.Allow(p, "once"))
	limit.Store(a.Applied()) // a reads nothing more for now
	_, err = b.Forget(person(1))
	require.NoError(t, err)
	require.NoError(t, b.Add("runners", person(1)))
	flushed := make(chan error, 1)
	go func() { flushed <- a.FlushCounts(context.Background()) }()
	require.Eventually(t, func() bool { j.mu.Lock(); defer j.mu.Unlock(); return len(j.log) == int(a.Applied())+3 }, 5*time.Second, time.Millisecond)
	limit.Store(1 << 62)
	require.NoError(t, <-flushed)
	caughtUp()
	assert.Equal(t, a.CanShow(p, "once"), b.CanShow(p, "once"), "replicas disagree on the re-added person's counter")
	// The documented limit (README, "Frequency caps"): an impression in
	// flight across a Forget can count for a person re-added within one
	// CapFlush; what matters here is that every replica agrees.
	assert.Equal(t, stateDump(t, a), stateDump(t, b))
}

// A purpose redefined from opt-out to opt-in: the lock-free callers' cap
// copies keep optIn false (publishCapsLocked runs on DefineCap, not on
// DefinePurpose), so Allow counts a person who never consented.
func TestCapAttackPurposeRedefinedToOptInNotRepublished(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 3, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptIn, Description: "now opt-in"}))
	assert.False(t, e.Allow(p, "c"), "opt-in without consent: nothing shown, nothing counted")
	assert.Zero(t, capWords(e.Engine, "c"))
}

// TimeZone "localtime" is not "Local" but is the machine's zone
// (/usr/share/zoneinfo/localtime -> /etc/localtime on Debian): replicas on
// machines in different zones count different days; on a machine without
// the file (embedded tzdata only) the change is refused.
func TestCapAttackMachineDependentTimeZone(t *testing.T) {
	for _, tz := range []string{"localtime", "posixrules"} {
		if _, err := time.LoadLocation(tz); err != nil {
			continue
		}
		_, err := checkCap(Cap{Name: "c", Purpose: "ads", Max: 1, Window: Window{Kind: Calendar, Period: Day, TimeZone: tz}})
		assert.Error(t, err, "TimeZone %q depends on the machine", tz)
	}
}

// Allow from many goroutines while the caps, the people and the files
// change underneath (run with -race); then a restart must agree with the
// live engine.
func TestCapAttackConcurrentChurnDurable(t *testing.T) {
	d := newDurableEnv(t)
	d.opts.CapFlush = 5 * time.Millisecond
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(1, 40)...))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 5, Window: Window{Kind: Rolling, Length: time.Hour}}))
	require.NoError(t, e.DefineCap(Cap{Name: "d", Purpose: "ads", Max: 5, Window: Window{Kind: Calendar, Period: Week, TimeZone: "Asia/Kathmandu"}}))
	ps := make([]anonymize.Pseudonym, 40)
	for i := range ps {
		ps[i] = e.mustPseudonym(t, person(i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				e.Allow(ps[(i*7+g)%40], []string{"c", "d"}[i%2])
				e.CanShow(ps[i%40], "d")
			}
		})
	}
	for i := range 30 {
		switch i % 6 {
		case 0:
			require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 3 + i%3, Window: Window{Kind: Rolling, Length: time.Hour}}))
		case 1:
			_, err := e.Forget(person(i % 40))
			require.NoError(t, err)
			require.NoError(t, e.Add("runners", person(i%40)))
		case 2:
			require.NoError(t, e.SetConsent(person(i%40), "ads", i%4 == 0))
		case 3:
			require.NoError(t, e.Compact())
		case 4:
			require.NoError(t, e.FlushCounts(context.Background()))
		case 5:
			var buf bytes.Buffer
			_, err := e.WriteSnapshot(&buf)
			require.NoError(t, err)
			require.NoError(t, e.DropCap("d"))
			require.NoError(t, e.DefineCap(Cap{Name: "d", Purpose: "ads", Max: 5, Window: Window{Kind: Calendar, Period: Week, TimeZone: "Asia/Kathmandu"}}))
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	require.NoError(t, e.FlushCounts(context.Background()))
	want := stateDump(t, e)
	require.NoError(t, e.Close())
	e2 := d.open(t)
	defer e2.Close()
	assert.Equal(t, want, stateDump(t, e2), "a restart counts what the live engine counted")
}

// A far-future time (a client's clock gone wrong) moves that person's
// window only: the people stored next to them keep their counts and go
// on counting; the person is held back until the clock gets there, on
// every replica and after a replay alike.
func TestCapAttackFutureTimeMovesOnlyThatPerson(t *testing.T) {
	for _, w := range []Window{{Kind: Rolling, Length: time.Hour}, {Kind: Calendar, Period: Day, TimeZone: "Europe/Berlin"}} {
		t.Run(w.Kind.String(), func(t *testing.T) {
			e := capEngine(t)
			require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 2, Window: w}))
			p1, p2, p3 := e.mustPseudonym(t, person(1)), e.mustPseudonym(t, person(2)), e.mustPseudonym(t, person(3))
			require.Equal(t, 2, allowN(e.Engine, p1, "c", 5))
			future := e.clock.Now().AddDate(150, 0, 0)
			assert.True(t, e.AllowAt(p2, "c", future))
			assert.False(t, e.Allow(p1, "c"), "the neighbour's counts are where they were")
			assert.Equal(t, 2, allowN(e.Engine, p3, "c", 5), "a neighbour's impressions count")
			assert.Zero(t, allowN(e.Engine, p2, "c", 5), "held back, never let through uncounted")

			o := &op{kind: opImpressions, at: e.clock.Now(), name: "c", imps: []impression{{p: e.mustPseudonym(t, person(4)), at: future.UnixNano()}}}
			_, err := e.applyImpressions(o)
			require.NoError(t, err)
			assert.Zero(t, allowN(e.Engine, e.mustPseudonym(t, person(4)), "c", 5), "counted where it fell, as by the engine that counted it: held back")
			assert.Equal(t, 2, allowN(e.Engine, e.mustPseudonym(t, person(5)), "c", 5), "and nobody else")
		})
	}
}

// A late time (a request's time older than the person's newest
// impression's window; a zone whose local date goes back, as St. John's
// did at 00:01 on 2010-11-07) must not let anyone through uncounted:
// Allow answers true only when it counted.
func TestCapAttackLateTimeNeverPassesUncounted(t *testing.T) {
	loc, err := time.LoadLocation("America/St_Johns")
	require.NoError(t, err)
	for _, w := range []Window{{Kind: Rolling, Length: time.Hour}, {Kind: Calendar, Period: Day, TimeZone: "America/St_Johns"}} {
		t.Run(w.Kind.String(), func(t *testing.T) {
			e := capEngine(t)
			require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 2, Window: w}))
			p := e.mustPseudonym(t, person(1))
			e.clock.t = time.Date(2010, 11, 7, 0, 0, 30, 0, loc)
			require.True(t, e.Allow(p, "c"))
			n := 0
			for range 20 {
				if e.AllowAt(p, "c", e.clock.t.Add(-3*time.Hour)) {
					n++
				}
			}
			assert.LessOrEqual(t, n, 1, "at most Max through, late times included")
			assert.Equal(t, 1+n < 2, e.CanShow(p, "c"), "CanShow says whether Allow would count now")
			e.clock.Advance(10 * time.Minute) // 23:10 on the 6th there
			assert.LessOrEqual(t, allowN(e.Engine, p, "c", 10), 2-1-n)
		})
	}
}

// A count that does not fit four bits, for the first person of a page,
// makes a wide page: in a snapshot, in a Link that empties a page first.
func TestCapAttackWideWordIntoEmptyPage(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 20, Window: Window{Kind: Rolling, Length: time.Hour}}))
	require.Equal(t, 16, allowN(e.Engine, e.mustPseudonym(t, person(1)), "c", 16))
	var buf bytes.Buffer
	_, err := e.WriteSnapshot(&buf)
	require.NoError(t, err)
	f := newTestEngine(t)
	require.NotPanics(t, func() { require.NoError(t, f.LoadSnapshot(bytes.NewReader(buf.Bytes()))) })
	r, err := f.Explain(person(1))
	require.NoError(t, err)
	require.Len(t, r.Caps, 1)
	assert.Equal(t, 16, r.Caps[0].Count)
	require.NotPanics(t, func() { require.NoError(t, e.Link(person(2), person(1))) })
	assert.Equal(t, 4, allowN(e.Engine, e.mustPseudonym(t, person(2)), "c", 10), "16 of 20 carried over")
}

// A snapshot taken while impressions are counted keeps every impression
// once: it reads each shard's counters and its impressions not logged yet
// at one moment.
func TestCapAttackSnapshotWhileCounting(t *testing.T) {
	e, reopen := durableCapEngine(t)
	const people = 4096
	ps := make([]anonymize.Pseudonym, people)
	for i := range people {
		require.NoError(t, e.Add("all", person(i)))
		ps[i] = e.mustPseudonym(t, person(i))
	}
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	var counted atomic.Int64
	for _, p := range ps { // logged: the snapshot's counts hold them, and then some not logged yet
		require.True(t, e.Record(p, "c"))
		counted.Add(1)
	}
	require.NoError(t, e.FlushCounts(context.Background()))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; ; i += 7 {
				select {
				case <-stop:
					return
				default:
				}
				if e.Record(ps[i%people], "c") {
					counted.Add(1)
				}
			}
		})
	}
	for range 3 {
		_, err := e.WriteSnapshot(io.Discard)
		require.NoError(t, err)
		require.NoError(t, e.Compact())
	}
	close(stop)
	wg.Wait()
	require.NoError(t, e.Close())
	f := reopen()
	total := 0
	f.mu.RLock()
	c := f.caps["c"]
	c.counts.eachWord(c, func(_ uint32, w capWord) { total += int(w.counts) })
	f.mu.RUnlock()
	assert.EqualValues(t, counted.Load(), total, "every impression once, after snapshots taken while counting")
}

// An Allow racing an erasure, a withdrawal or a suppression leaves no
// counter: the writer publishes the change, then drops the counters
// under the shard lock the Allow counts under, and the Allow reads the
// person's entry again under it.
func TestCapAttackAllowRacingErasure(t *testing.T) {
	for _, how := range []string{"forget", "withdraw", "suppress"} {
		t.Run(how, func(t *testing.T) {
			e := capEngine(t)
			require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
			for round := range 200 {
				id := person(1000 + round)
				require.NoError(t, e.Add("runners", id))
				recordsWhile(e.Engine, e.mustPseudonym(t, id), "c", func() {
					switch how {
					case "forget":
						_, err := e.Forget(id)
						require.NoError(t, err)
					case "withdraw":
						require.NoError(t, e.SetConsent(id, "ads", false))
					case "suppress":
						require.NoError(t, e.Suppress(id, "ads"))
					}
				})
				require.Zero(t, capWords(e.Engine, "c"), "round %d: a counter outlived the %s", round, how)
				if how == "forget" {
					var buf bytes.Buffer
					_, err := e.WriteSnapshot(&buf)
					require.NoError(t, err)
					require.NoError(t, newTestEngine(t).LoadSnapshot(bytes.NewReader(buf.Bytes())))
				}
			}
		})
	}
}

// recordsWhile counts how many of Record(p)'s calls, spun from three
// goroutines while f runs, answered true.
func recordsWhile(e *Engine, p anonymize.Pseudonym, cap string, f func()) int64 {
	var passed atomic.Int64
	record := func() {
		if e.Record(p, cap) {
			passed.Add(1)
		}
	}
	whileRunning(func() {
		time.Sleep(10 * time.Microsecond)
		f()
		time.Sleep(10 * time.Microsecond)
	}, record, record, record)
	return passed.Load()
}

// whileRunning runs f while each of loops runs again and again, each in
// a goroutine of its own, and returns once they have stopped.
func whileRunning(f func(), loops ...func()) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, loop := range loops {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					loop()
				}
			}
		})
	}
	defer wg.Wait()
	defer close(stop) // also when f fails the test
	f()
}

// A new slot (a device linked to a suppressed person) is found by
// lock-free readers as soon as it is inserted: it must say what the
// person's entry says from the start, not "no restriction".
func TestCapAttackLinkedSlotStartsRestricted(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	for i := range 150 {
		id := person(1000 + i)
		require.NoError(t, e.Add("runners", id))
		require.NoError(t, e.Suppress(id, "ads"))
		q := e.mustPseudonym(t, device(i))
		n := recordsWhile(e.Engine, q, "c", func() { require.NoError(t, e.Link(id, device(i))) })
		require.Zero(t, n, "round %d: a suppressed person's device counted", i)
		require.Zero(t, capWords(e.Engine, "c"), "round %d", i)
	}
}

// Merging people, or a device bringing its withdrawal along, restricts
// the person: the counters the restriction forbids go with the Link.
func TestCapAttackLinkRestrictionDropsCounters(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	require.True(t, e.Allow(e.mustPseudonym(t, person(2)), "c"))
	require.NoError(t, e.Suppress(person(1), "ads"))
	require.NoError(t, e.Link(person(1), person(2)))
	assert.Zero(t, capWords(e.Engine, "c"), "merged into a suppressed person")

	require.True(t, e.Allow(e.mustPseudonym(t, person(3)), "c"))
	require.NoError(t, e.SetConsent(device(3), "ads", false))
	require.NoError(t, e.Link(person(3), device(3)))
	assert.Zero(t, capWords(e.Engine, "c"), "a device brought its withdrawal")
}

// A removed directory slot is empty (ordinal 0, no restriction) for a
// moment under a key a reader may still have matched: the reader must not
// take it for the person at ordinal 0's entry.
func TestCapAttackRemovedSlotIsNotOrdinalZero(t *testing.T) {
	e := newTestEngine(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	for i := range 150 {
		require.NoError(t, e.Add("runners", person(1)))
		require.NoError(t, e.Suppress(person(1), "ads"))
		p := e.mustPseudonym(t, person(1))
		n := recordsWhile(e.Engine, p, "c", func() {
			_, err := e.Forget(person(1))
			require.NoError(t, err)
		})
		require.Zero(t, n, "round %d: a suppressed person counted while erased", i)
	}
}

// An impression not logged yet stays the person's when the pseudonym it
// was counted by leaves them (Unlink): a restart counts it for them.
func TestCapAttackUnlinkKeepsUnloggedImpressions(t *testing.T) {
	e, reopen := durableCapEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 10, Window: Window{Kind: Lifetime}}))
	require.NoError(t, e.Link(person(1), device(1)))
	require.Equal(t, 2, allowN(e, e.mustPseudonym(t, device(1)), "c", 2))
	require.NoError(t, e.Unlink(device(1)))
	require.Equal(t, 2, capCount(t, e, person(1)))
	require.NoError(t, e.Close())
	f := reopen()
	assert.Equal(t, 2, capCount(t, f, person(1)), "the restart counts them for the person they were counted for")
}

// Once logged, an erased person's impressions leave nothing in the
// memory of the lists that held them.
func TestCapAttackFlushedImpressionsLeaveNoPseudonym(t *testing.T) {
	e, _ := durableCapEngine(t)
	defer e.Close()
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: 10, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	require.Equal(t, 3, allowN(e, p, "c", 3))
	require.NoError(t, e.FlushCounts(context.Background()))
	_, err := e.Forget(person(1))
	require.NoError(t, err)
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, c := range e.caps {
		for i := range c.counts.shards {
			sh := &c.counts.shards[i]
			sh.mu.Lock()
			for _, im := range sh.pending[:cap(sh.pending)] {
				assert.NotEqual(t, p, im.p, "an erased pseudonym in a pending list's memory")
			}
			sh.mu.Unlock()
		}
	}
}

// A person left with nothing but counts is released at Expire, counts and
// all, the same way on every engine: counts reach the log in batches, so
// "held by a count" would differ between the live engine and its replay.
// (A lifetime cap starts again if they come back: README.)
func TestCapCountsDoNotHoldAPerson(t *testing.T) {
	e, reopen := durableCapEngine(t)
	require.NoError(t, e.Add("all", person(1), person(2)))
	require.NoError(t, e.DefineCap(Cap{Name: "once", Purpose: "ads", Max: 1, Window: Window{Kind: Lifetime}}))
	require.True(t, e.Allow(e.mustPseudonym(t, person(1)), "once"))
	require.NoError(t, e.Remove("all", person(1)))
	_, err := e.Expire(time.Now())
	require.NoError(t, err)
	live := e.Stats()
	require.NoError(t, e.Close())
	f := reopen()
	after := f.Stats()
	assert.Equal(t, live.People, after.People, "a restart stores the same people")
	assert.Equal(t, live.CapCounters, after.CapCounters, "and the same counters")
	assert.Equal(t, 1, after.People)
}

// A device that brings its own suppression to a Link is never served as
// the unrestricted person in the meantime: its new slot says "suppressed"
// (and sends readers to the locked path) until the person's entry is
// rebuilt.
func TestCapAttackDeviceBringsItsRestrictionToLink(t *testing.T) {
	e := capEngine(t)
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	var served atomic.Int64
	for i := range 120 {
		dv, owner := device(100+i), person(1+i%5)
		require.NoError(t, e.Suppress(dv, "ads"))
		q := e.mustPseudonym(t, dv)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			var buf []string
			for {
				select {
				case <-stop:
					return
				default:
					if buf = e.Segments(buf[:0], q, "ads"); len(buf) > 0 {
						served.Add(1)
					}
				}
			}
		})
		n := recordsWhile(e.Engine, q, "c", func() { require.NoError(t, e.Link(owner, dv)) })
		close(stop)
		wg.Wait()
		require.Zero(t, n, "round %d: counted through a device that brought a suppression", i)
		require.Zero(t, served.Load(), "round %d: segments served through it", i)
		require.NoError(t, e.Unlink(dv))
		require.NoError(t, e.Unsuppress(owner, "ads"))
	}
}

// durableCapEngine opens a durable engine in a new directory, with
// purpose "ads" and segment "all" defined and counts batched hourly (so
// that they are logged on Close, or by FlushCounts); reopen opens the
// directory again once the engine is closed, closing it at the end.
func durableCapEngine(t *testing.T) (*Engine, func() *Engine) {
	dir := t.TempDir()
	opts := Options{Key: mustKey(t, testKeyHex), K: 1, CapFlush: time.Hour, Durable: DurableOptions{MaintenanceInterval: -1}}
	e, err := Open(dir, opts)
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "all", Purpose: "ads"}))
	return e, func() *Engine {
		f, err := Open(dir, opts)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
}

// capCount is the count of the person's first counter in Explain, 0 if
// they have none.
func capCount(t *testing.T, e *Engine, id anonymize.Identifier) int {
	r, err := e.Explain(id)
	require.NoError(t, err)
	if len(r.Caps) == 0 {
		return 0
	}
	return r.Caps[0].Count
}

// Impressions a flush has taken from the shards are in flight from that
// moment: a withdrawal between the taking and the logging moves them to
// redo, so that this engine counts them as a replay does (consent given
// again before they land: counted). They used to be in neither place for
// a moment, and the live engine then held fewer than its replay.
func TestCapAttackFlushTakesImpressionsIntoFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("a race, run for a while")
	}
	e, reopen := durableCapEngine(t)
	require.NoError(t, e.Add("all", person(1)))
	require.NoError(t, e.DefineCap(Cap{Name: "c", Purpose: "ads", Max: MaxCapCount, Window: Window{Kind: Lifetime}}))
	p := e.mustPseudonym(t, person(1))
	whileRunning(func() {
		for range 1000 {
			require.NoError(t, e.SetConsent(person(1), "ads", false))
			require.NoError(t, e.SetConsent(person(1), "ads", true))
		}
	}, func() { e.Record(p, "c") }, func() { _ = e.FlushCounts(context.Background()) })
	flushAndReplay(t, e, reopen, person(1), "c")
}
