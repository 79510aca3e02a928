package personify

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The counter table against the plainest model of it: a map of one word
// per person, advanced and added to by the same rules. With time moving
// forward (as it does for one engine's clock), every person's count in
// the window must agree at every step, through pages that widen past 15
// impressions in a sub-window and narrow again, people leaving and
// joining pages, merges, erasures and expiry.
func TestCapTableAgreesWithPerPersonWords(t *testing.T) {
	for _, w := range []Window{
		{Kind: Rolling, Length: time.Hour},
		{Kind: Calendar, Period: Day, TimeZone: "Europe/Berlin"},
		{Kind: Lifetime},
	} {
		t.Run(w.Kind.String(), func(t *testing.T) {
			c := &capState{Cap: Cap{Name: "c", Purpose: "p", Max: MaxCapCount, Window: w}, counts: newCapTable()}
			if w.Kind == Rolling {
				c.sub = rollingSub(w.Length)
			}
			if w.Kind == Calendar {
				c.loc, _ = time.LoadLocation(w.TimeZone)
			}
			rng := rand.New(rand.NewPCG(1, uint64(w.Kind)))
			model := map[uint32]capWord{}
			// People in a few pages, two chunks apart, so that pages fill,
			// empty and share their window.
			ords := []uint32{}
			for _, base := range []uint32{0, 256, 1 << 17} {
				for range 40 {
					ords = append(ords, base+uint32(rng.IntN(256)))
				}
			}
			at := time.Date(2026, 3, 28, 20, 0, 0, 0, time.UTC).UnixNano() // the night Berlin's clocks go forward
			t0 := at
			for step := range 6000 {
				at += int64(rng.IntN(int(3 * time.Minute)))
				if rng.IntN(10) == 0 { // a late request: each person keeps their own window
					at -= int64(rng.IntN(int(30 * time.Minute)))
				}
				ord := ords[rng.IntN(len(ords))]
				sh := c.counts.shard(ord)
				switch op := rng.IntN(100); {
				case op < 80: // an impression
					sh.mu.Lock() // in place, as the request path does
					got, ref := c.counts.find(c, ord)
					got = c.advance(got, at)
					c.counts.replace(c, ord, ref, c.add(got, at))
					sh.mu.Unlock()
					mw := c.add(c.advance(model[ord], at), at)
					model[ord] = mw
				case op < 90: // a burst past 15 in one sub-window: the page widens
					for range 20 {
						sh.mu.Lock()
						got, ref := c.counts.find(c, ord)
						c.counts.replace(c, ord, ref, c.add(c.advance(got, at), at))
						sh.mu.Unlock()
						model[ord] = c.add(c.advance(model[ord], at), at)
					}
				case op < 94: // erased
					sh.mu.Lock()
					c.counts.del(ord)
					sh.mu.Unlock()
					delete(model, ord)
				case op < 97: // linked into another
					dst := ords[rng.IntN(len(ords))]
					if dst == ord {
						continue
					}
					a, b := c.counts.shard(dst), sh
					a.mu.Lock()
					if a != b {
						b.mu.Lock()
					}
					if ws, ok := c.counts.get(c, ord); ok {
						if wd, ok := c.counts.get(c, dst); ok {
							ws = c.combine(wd, ws)
						}
						c.counts.del(ord)
						c.counts.put(c, dst, ws)
					}
					if a != b {
						b.mu.Unlock()
					}
					a.mu.Unlock()
					if ws, ok := model[ord]; ok {
						if wd, ok := model[dst]; ok {
							ws = c.combine(wd, ws)
						}
						delete(model, ord)
						model[dst] = ws
					}
				default: // expiry
					e := &Engine{caps: map[string]*capState{"c": c}}
					e.expireCountsLocked(time.Unix(0, at))
					for o, mw := range model {
						if c.advance(mw, at).counts == 0 {
							delete(model, o)
						}
					}
				}
				held := 0
				for _, o := range ords {
					sh := c.counts.shard(o)
					sh.mu.Lock()
					got, ok := c.counts.get(c, o)
					sh.mu.Unlock()
					mw, mok := model[o]
					if c.Window.Kind == Lifetime {
						mw.last = 0
					}
					require.Equal(t, mok, ok, "step %d, ord %d: stored", step, o)
					require.Equal(t, mw, got, "step %d, ord %d, %v in", step, o, time.Duration(at-t0))
				}
				c.counts.eachWord(c, func(uint32, capWord) { held++ })
				require.EqualValues(t, held, c.counts.words.Load(), "step %d: the word count is the pages'", step)
			}
		})
	}
}

// A page holds a rolling or calendar person in 8 bytes while narrow (their
// window and their counts), a lifetime one in 4, plus a share of the
// header and the bitmap: at one person in ten, about 11 and 6 bytes a
// counted person. The kept count of memory is what the pages and their
// directory hold, and an erased person's words are zeroed.
func TestCapTableMemory(t *testing.T) {
	for _, tc := range []struct {
		w   Window
		max float64
	}{{Window{Kind: Rolling, Length: 24 * time.Hour}, 12}, {Window{Kind: Lifetime}, 7}} {
		c := &capState{Cap: Cap{Name: "c", Purpose: "p", Max: 15, Window: tc.w}, counts: newCapTable()}
		if tc.w.Kind == Rolling {
			c.sub = rollingSub(c.Window.Length)
		}
		at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano()
		n := 0
		for ord := uint32(0); ord < 1<<20; ord += 10 {
			c.counts.put(c, ord, c.add(c.advance(capWord{}, at), at))
			n++
		}
		walk := func() int64 {
			var walked int64
			for s := range capShards {
				c.counts.shardPages(s, func(pp *pageRef, _ uint32) { walked += int64(cap(pp.get())) * 4 })
			}
			d := *c.counts.dir.Load()
			walked += int64(cap(d)) * 8
			for _, ch := range d {
				if ch != nil {
					walked += int64(len(ch)) * 16
				}
			}
			return walked
		}
		require.Equal(t, walk(), c.counts.bytes())
		per := float64(c.counts.bytes()) / float64(n)
		t.Logf("%v: %.2f bytes per counted person at 1 in 10", tc.w.Kind, per)
		require.Less(t, per, tc.max)
		require.EqualValues(t, n, c.counts.words.Load())

		// Erase every other person: their words leave no bytes behind,
		// in the page or past its end.
		for ord := uint32(0); ord < 1<<20; ord += 20 {
			c.counts.del(ord)
		}
		require.Equal(t, walk(), c.counts.bytes())
		pp := c.counts.page(10, false)
		pg := pp.get()
		full := pg[:cap(pg)]
		require.Len(t, pg, pgCells+c.units(false)*13, "13 of 26 left in page 0") // 10, 30, ..., 250
		for i := len(pg); i < len(full); i++ {
			require.Zero(t, full[i], "a removed word's memory is zeroed")
		}
	}
}
