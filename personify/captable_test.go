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
				ord := ords[rng.IntN(len(ords))]
				sh := c.counts.shard(ord)
				switch op := rng.IntN(100); {
				case op < 80: // an impression
					sh.mu.Lock()
					got, _ := c.counts.get(c, ord)
					got = c.advance(got, at)
					c.counts.put(c, ord, c.add(got, at))
					sh.mu.Unlock()
					mw := c.add(c.advance(model[ord], at), at)
					model[ord] = mw
				case op < 90: // a burst past 15 in one sub-window: the page widens
					for range 20 {
						sh.mu.Lock()
						got, _ := c.counts.get(c, ord)
						c.counts.put(c, ord, c.add(c.advance(got, at), at))
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
					want := c.total(c.advance(mw, at))
					require.Equal(t, want, c.total(c.advance(got, at)), "step %d, ord %d, %v in", step, o, time.Duration(at-t0))
					if ok {
						require.NotZero(t, got.counts, "step %d: a stored word holds a count", step)
					}
					_ = mok
				}
				c.counts.eachWord(c, func(uint32, capWord) { held++ })
				require.EqualValues(t, held, c.counts.words.Load(), "step %d: the word count is the pages'", step)
			}
		})
	}
}

// A page holds its people in about 4 bytes each once it is narrow, plus
// its share of the header and the bitmap: at one person in ten, about 6-7
// bytes a counted person; a wide page twice the counts.
func TestCapTableMemory(t *testing.T) {
	c := &capState{Cap: Cap{Name: "c", Purpose: "p", Max: 15, Window: Window{Kind: Rolling, Length: 24 * time.Hour}}, counts: newCapTable()}
	c.sub = rollingSub(c.Window.Length)
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	n := 0
	for ord := uint32(0); ord < 1<<20; ord += 10 {
		c.counts.put(c, ord, c.add(c.advance(capWord{}, at), at))
		n++
	}
	// The kept count of memory is what the pages and their directory hold.
	var walked int64
	c.counts.each(func(pp *[]uint32, _ uint32) { walked += int64(cap(*pp)) * 4 })
	d := *c.counts.dir.Load()
	walked += int64(cap(d)) * 8
	for _, ch := range d {
		if ch != nil {
			walked += int64(len(ch)) * 24
		}
	}
	require.Equal(t, walked, c.counts.bytes())
	per := float64(c.counts.bytes()) / float64(n)
	t.Logf("%.2f bytes per counted person at 1 in 10", per)
	require.Less(t, per, 8.0)
	require.EqualValues(t, n, c.counts.words.Load())
}
