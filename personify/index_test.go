package personify

import (
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIndexMatchesRoaring drives an engine with random interleaved writes
// (adds by identifier and by pseudonym, removals, consent, suppression,
// Forget with and without do-not-re-add, Expire with the clock moving,
// redefinitions, drops, key rotation) and checks after every step that the
// lock-free index answers In and Segments exactly as the segment bitmaps do
// (the reference answers inLocked and segmentsLocked), for every person,
// segment and purpose. Compaction runs often.
func TestIndexMatchesRoaring(t *testing.T) {
	defer func(v int64) { compactMinGarbage = v }(compactMinGarbage)
	compactMinGarbage = 0
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			checkIndexAgainstRoaring(t, seed, 400, 6)
		})
	}
}

// The same with 40 segments and bigger batches, so that people hold more
// ids than lanes do (Elias-Fano inline entries) and more than those hold
// (overflow records), and move between the three as ids come and go.
func TestIndexMatchesRoaringManySegments(t *testing.T) {
	defer func(v int64) { compactMinGarbage = v }(compactMinGarbage)
	compactMinGarbage = 0
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			checkIndexAgainstRoaring(t, seed, 300, 40)
		})
	}
}

func checkIndexAgainstRoaring(t *testing.T, seed uint64, steps, segments int) {
	rng := mrand.New(mrand.NewPCG(seed, 42))
	te := newTestEngine(t, func(o *Options) { o.K = 4 })
	purposes := []string{"ads", "email"}
	names := make([]string, segments)
	for i := range names {
		names[i] = fmt.Sprint("s", i)
	}
	define := func(name string) {
		te.define(Segment{Name: name, Purpose: purposes[rng.IntN(2)], Sensitive: rng.IntN(5) == 0,
			Retention: []time.Duration{0, 32 * time.Hour, 64 * time.Hour}[rng.IntN(3)], MinSize: rng.IntN(8)})
	}
	for _, n := range names {
		define(n)
	}
	// Prepared once, before the drops, redefinitions and snapshot loads
	// below: they follow the names.
	prepSegs := make([]*PreparedSegment, len(names))
	for i, n := range names {
		var err error
		prepSegs[i], err = te.PrepareSegment(n)
		require.NoError(t, err)
	}
	prepPurposes := make([]*PreparedPurpose, len(purposes))
	for i, pu := range purposes {
		var err error
		prepPurposes[i], err = te.PreparePurpose(pu)
		require.NoError(t, err)
	}
	population := 60
	if segments > 16 {
		population = 16 // fewer people, so that each is in many segments
	}
	id := func() anonymize.Identifier { return person(rng.IntN(population)) }
	var handles []anonymize.Pseudonym // pseudonyms sessions may hold, old keys included
	for i := range population {
		handles = append(handles, te.pseudonym(person(i)))
	}
	var sawEF, sawOverflow bool
	if segments > 16 {
		defer func() {
			assert.True(t, sawEF, "some entry was Elias-Fano coded")
			assert.True(t, sawOverflow, "some entry overflowed")
		}()
	}
	for step := range steps {
		name := names[rng.IntN(len(names))]
		var err error
		switch op := rng.IntN(100); {
		case op < 30:
			ids := make([]anonymize.Identifier, 1+rng.IntN(8+segments/2))
			for i := range ids {
				ids[i] = id()
			}
			err = te.Add(name, ids...)
		case op < 40:
			ps := make([]anonymize.Pseudonym, 1+rng.IntN(8))
			for i := range ps {
				ps[i] = handles[rng.IntN(len(handles))]
			}
			err = te.AddPseudonyms(name, ps)
		case op < 52:
			err = te.Remove(name, id())
		case op < 62:
			err = te.SetConsent(id(), purposes[rng.IntN(2)], rng.IntN(3) > 0)
		case op < 68:
			if rng.IntN(2) == 0 {
				err = te.Suppress(id(), purposes[rng.IntN(2)])
			} else {
				err = te.Suppress(id())
			}
		case op < 74:
			err = te.Unsuppress(id(), purposes[:rng.IntN(2)]...)
		case op < 79:
			_, err = te.ForgetWith(id(), ForgetOptions{DoNotReAdd: rng.IntN(3) == 0})
		case op < 86:
			te.clock.Advance(time.Duration(rng.IntN(20)) * time.Hour)
			if rng.IntN(2) == 0 {
				_, err = te.Expire(te.clock.Now())
			}
		case op < 90:
			define(name)
		case op < 92:
			err = te.Drop(name)
			define(name)
		case op < 93:
			err = te.RotateKey(anonymize.GenerateKey(), time.Duration(rng.IntN(48))*time.Hour)
			for i := range population {
				handles = append(handles, te.pseudonym(person(i)))
			}
		case op < 94:
			var buf bytes.Buffer
			if _, err = te.WriteSnapshot(&buf); err == nil {
				err = te.LoadSnapshot(&buf)
			}
		default:
			te.mu.Lock()
			te.compactLocked()
			te.mu.Unlock()
		}
		require.NoError(t, err, "step %d", step)
		te.mu.RLock()
		te.dir.Tab.Load().Each(func(_ anonymize.Pseudonym, en index.Entry) {
			sawEF = sawEF || !en.Overflow() && en.Code() == index.CodeEF
			sawOverflow = sawOverflow || en.Overflow()
		})
		te.mu.RUnlock()
		for _, h := range handles {
			for i, n := range names {
				want := te.inLocked(h, n)
				require.Equal(t, want, te.In(h, n), "step %d: In(%v, %s)", step, h, n)
				require.Equal(t, want, prepSegs[i].In(h), "step %d: PreparedSegment(%s).In(%v)", step, n, h)
			}
			for i, pu := range purposes {
				want := te.segmentsLocked(nil, h, pu)
				got := te.Segments(nil, h, pu)
				require.True(t, slices.Equal(want, got), "step %d: Segments(%v, %s) = %v, want %v", step, h, pu, got, want)
				got = prepPurposes[i].Segments(nil, h)
				require.True(t, slices.Equal(want, got), "step %d: PreparedPurpose(%s).Segments(%v) = %v, want %v", step, pu, h, got, want)
			}
		}
	}
}

func TestSegmentsAllocatesNothing(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.define(Segment{Name: "recent", Purpose: "ads", Retention: 32 * time.Hour})
	te.add("runners", people(0, 10)...)
	te.add("recent", people(0, 10)...)
	p := te.pseudonym(person(3))
	dst := make([]string, 0, 8)
	allocs := testing.AllocsPerRun(1000, func() {
		dst = te.Segments(dst[:0], p, "ads")
		if !te.In(p, "runners") {
			panic("lost membership")
		}
	})
	require.Zero(t, allocs)
	require.Equal(t, []string{"runners", "recent"}, dst)
}
