package segment

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC) // an epoch start for hours and days

func TestNewTimedPanics(t *testing.T) {
	for _, epoch := range []time.Duration{0, -time.Hour, maxEpoch + 1} {
		require.Panics(t, func() { NewTimed(epoch) }, "epoch %v", epoch)
	}
	require.NotPanics(t, func() { NewTimed(maxEpoch) })
	var zero Timed
	require.PanicsWithValue(t, "segment: Timed used without NewTimed", func() { zero.Add(1, t0) })
}

// requireTimed checks the invariants of t and that it matches m, which maps
// members to their recorded time.
func requireTimed(t *testing.T, m map[uint32]time.Time, tm *Timed) {
	t.Helper()
	require.Equal(t, len(m), tm.Len())
	union := New()
	var prev time.Time
	n := 0
	for start, s := range tm.Epochs() {
		require.False(t, s.IsEmpty(), "empty bucket at %v", start)
		if n > 0 {
			require.True(t, start.After(prev), "buckets out of order")
		}
		require.False(t, union.Intersects(s), "buckets overlap")
		e := tm.Epoch().Nanoseconds()
		require.Zero(t, (start.UnixNano()%e+e)%e, "bucket %v does not start on an epoch boundary", start)
		union.Or(s)
		prev = start
		n++
	}
	require.True(t, union.Equal(tm.Members()), "members are not the union of the buckets")
	for x, at := range m {
		require.True(t, tm.Contains(x))
		got, ok := tm.AddedAt(x)
		require.True(t, ok)
		require.True(t, at.Equal(got), "member %d: recorded %v, want %v", x, got, at)
	}
	oldest, ok := tm.Oldest()
	require.Equal(t, len(m) > 0, ok)
	for _, at := range m {
		require.False(t, at.Before(oldest))
	}
}

func TestTimedBoundaries(t *testing.T) {
	tm := NewTimed(time.Hour)
	tm.Add(1, t0.Add(30*time.Minute)) // recorded at t0
	tm.Add(2, t0.Add(-time.Nanosecond))
	tm.Add(3, t0.Add(-time.Hour)) // recorded an epoch before t0
	at, _ := tm.AddedAt(1)
	require.Equal(t, t0, at)
	at, _ = tm.AddedAt(2)
	require.Equal(t, t0.Add(-time.Hour), at)

	gone := tm.ExpireBefore(t0) // recorded == cutoff stays, one epoch earlier goes
	require.Equal(t, []uint32{2, 3}, gone.AppendTo(nil))
	require.True(t, tm.Contains(1))
	require.False(t, tm.Contains(2))

	gone = tm.ExpireBefore(t0) // nothing left to expire
	require.NotNil(t, gone)
	require.True(t, gone.IsEmpty())
	require.Equal(t, 1, tm.Len())

	gone = tm.ExpireBefore(t0.Add(time.Nanosecond))
	require.Equal(t, []uint32{1}, gone.AppendTo(nil))
	require.Zero(t, tm.Len())
	_, ok := tm.Oldest()
	require.False(t, ok)
	require.True(t, NewTimed(time.Hour).ExpireBefore(t0).IsEmpty())
}

func TestTimedRefresh(t *testing.T) {
	tm := NewTimed(time.Hour)
	tm.Add(7, t0)
	tm.Add(7, t0.Add(2*time.Hour+time.Minute)) // refresh: moves to the newer epoch
	at, _ := tm.AddedAt(7)
	require.Equal(t, t0.Add(2*time.Hour), at)
	tm.Add(7, t0.Add(time.Hour)) // older: keeps the newer record
	tm.AddMany([]uint32{7, 8}, t0)
	tm.AddSet(New(7, 9), t0.Add(-time.Hour))
	at, _ = tm.AddedAt(7)
	require.Equal(t, t0.Add(2*time.Hour), at)

	var starts []time.Time
	for start := range tm.Epochs() {
		starts = append(starts, start)
	}
	require.Equal(t, []time.Time{t0.Add(-time.Hour), t0, t0.Add(2 * time.Hour)}, starts) // gaps allowed
	oldest, _ := tm.Oldest()
	require.Equal(t, t0.Add(-time.Hour), oldest)

	tm.AddMany([]uint32{8, 9}, t0.Add(5*time.Hour)) // both move, their buckets empty out
	requireTimed(t, map[uint32]time.Time{7: t0.Add(2 * time.Hour), 8: t0.Add(5 * time.Hour), 9: t0.Add(5 * time.Hour)}, tm)
}

func TestTimedRemove(t *testing.T) {
	tm := NewTimed(24 * time.Hour)
	tm.AddMany([]uint32{1, 2, 3}, t0)
	tm.AddMany([]uint32{4, 5}, t0.Add(48*time.Hour))
	require.True(t, tm.Remove(4))
	require.False(t, tm.Remove(4))
	require.False(t, tm.Remove(99))
	require.True(t, tm.Remove(5)) // empties the newer bucket
	requireTimed(t, map[uint32]time.Time{1: t0, 2: t0, 3: t0}, tm)
	n := 0
	for range tm.Epochs() {
		n++
	}
	require.Equal(t, 1, n)
	tm.RemoveMany([]uint32{1, 2, 3, 99})
	requireTimed(t, map[uint32]time.Time{}, tm)
}

func TestTimedExtremeTimes(t *testing.T) {
	tm := NewTimed(time.Hour)
	before1970 := time.Date(1969, 12, 31, 23, 30, 0, 0, time.UTC)
	tm.Add(1, before1970)
	at, _ := tm.AddedAt(1)
	require.Equal(t, time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC), at, "floor, not truncation toward zero")
	tm.Add(2, time.Unix(-1, 0))
	at, _ = tm.AddedAt(2)
	require.Equal(t, time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC), at)

	tm.Add(3, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)) // clamped to 1823
	tm.Add(4, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	at, _ = tm.AddedAt(3)
	require.Equal(t, 1823, at.Year())
	at, _ = tm.AddedAt(4)
	require.Equal(t, 2116, at.Year())
	require.Equal(t, []uint32{3}, tm.ExpireBefore(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)).AppendTo(nil))

	odd := NewTimed(7 * time.Minute)
	odd.Add(1, time.Unix(0, -1))
	at, _ = odd.AddedAt(1)
	require.Equal(t, time.Unix(-7*60, 0).UTC(), at)
}

func TestTimedAgainstModel(t *testing.T) {
	for _, epoch := range []time.Duration{time.Hour, 7 * time.Minute} {
		t.Run(epoch.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(30, uint64(epoch)))
			tm := NewTimed(epoch)
			m := map[uint32]time.Time{}
			record := func(x uint32, at time.Time) {
				start := time.Unix(0, floorDiv(at.UnixNano(), int64(epoch))*int64(epoch)).UTC()
				if cur, ok := m[x]; !ok || start.After(cur) {
					m[x] = start
				}
			}
			randTime := func() time.Time { // around 1970 and around t0
				base := []time.Time{time.Unix(0, 0), t0}[r.IntN(2)]
				return base.Add(time.Duration(r.Int64N(int64(48*time.Hour))) - 24*time.Hour)
			}
			const limit = 5000
			for step := range 2000 {
				switch op := r.IntN(20); {
				case op < 8:
					x, at := r.Uint32N(limit), randTime()
					tm.Add(x, at)
					record(x, at)
				case op < 10:
					xs, at := randomValues(r, r.IntN(300), limit), randTime()
					tm.AddMany(xs, at)
					for _, x := range xs {
						record(x, at)
					}
				case op < 11:
					xs, at := randomValues(r, r.IntN(300), limit), randTime()
					s := New(xs...)
					tm.AddSet(s, at)
					require.Equal(t, modelOf(xs...).sorted(), s.AppendTo(nil), "AddSet modified its argument")
					for _, x := range xs {
						record(x, at)
					}
				case op < 15:
					x := r.Uint32N(limit)
					_, had := m[x]
					require.Equal(t, had, tm.Remove(x))
					delete(m, x)
				case op < 16:
					xs := randomValues(r, r.IntN(300), limit)
					tm.RemoveMany(xs)
					for _, x := range xs {
						delete(m, x)
					}
				case op < 17:
					cutoff := randTime()
					want := model{}
					for x, at := range m {
						if at.Before(cutoff) {
							want[x] = struct{}{}
							delete(m, x)
						}
					}
					requireMatches(t, want, tm.ExpireBefore(cutoff))
				default:
					x := r.Uint32N(limit)
					at, ok := tm.AddedAt(x)
					want, had := m[x]
					require.Equal(t, had, ok)
					require.Equal(t, had, tm.Contains(x))
					require.True(t, want.Equal(at))
				}
				if step%100 == 0 {
					requireTimed(t, m, tm)
				}
			}
			requireTimed(t, m, tm)
		})
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

func TestTimedClone(t *testing.T) {
	tm := NewTimed(time.Hour)
	tm.AddMany([]uint32{1, 2, 3}, t0)
	c := tm.Clone()
	c.Add(4, t0.Add(time.Hour))
	c.Remove(1)
	c.ExpireBefore(t0.Add(time.Hour))
	requireTimed(t, map[uint32]time.Time{1: t0, 2: t0, 3: t0}, tm)
	requireTimed(t, map[uint32]time.Time{4: t0.Add(time.Hour)}, c)
	assert.Equal(t, time.Hour, c.Epoch())
}

func TestTimedContainsAllocs(t *testing.T) {
	tm := NewTimed(time.Hour)
	tm.AddMany(randomValues(rand.New(rand.NewPCG(31, 31)), 10_000, 1<<20), t0)
	require.Zero(t, testing.AllocsPerRun(100, func() { tm.Contains(77) }))
}
