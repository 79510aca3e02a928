package personify

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Preparing an undefined name fails the way In's callers need to know at
// start-up, with the name meant; a closed engine refuses.
func TestPrepareRefusesUnknownNames(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	_, err := te.PrepareSegment("runers")
	require.ErrorIs(t, err, ErrUnknownSegment)
	assert.Contains(t, err.Error(), `"runners"`, "suggests the name meant")
	_, err = te.PreparePurpose("add")
	require.ErrorIs(t, err, ErrUnknownPurpose)
	assert.Contains(t, err.Error(), `"ads"`)

	seg, err := te.PrepareSegment("runners")
	require.NoError(t, err)
	pu, err := te.PreparePurpose("ads")
	require.NoError(t, err)
	assert.Equal(t, "runners", seg.Name())
	assert.Equal(t, "ads", pu.String())
	te.add("runners", people(0, 5)...)
	p := te.pseudonym(person(1))
	require.True(t, seg.In(p))
	require.Equal(t, []string{"runners"}, pu.Segments(nil, p))

	require.NoError(t, te.Close())
	_, err = te.PrepareSegment("runners")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = te.PreparePurpose("ads")
	assert.ErrorIs(t, err, ErrClosed)
	assert.False(t, seg.In(p), "a closed engine answers nothing")
	assert.Empty(t, pu.Segments(nil, p))
}

// A prepared segment follows its name: dropped, it answers false; defined
// again, it answers for the new segment; the same for a purpose's
// segments.
func TestPreparedFollowsTheName(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.define(Segment{Name: "swimmers", Purpose: "ads"})
	te.add("runners", people(0, 5)...)
	te.add("swimmers", people(0, 5)...)
	seg, err := te.PrepareSegment("runners")
	require.NoError(t, err)
	pu, err := te.PreparePurpose("ads")
	require.NoError(t, err)
	p := te.pseudonym(person(2))
	require.True(t, seg.In(p))
	require.Equal(t, []string{"runners", "swimmers"}, pu.Segments(nil, p))

	require.NoError(t, te.Drop("runners"))
	assert.False(t, seg.In(p), "dropped")
	assert.Equal(t, []string{"swimmers"}, pu.Segments(nil, p))

	te.define(Segment{Name: "runners", Purpose: "ads"})
	assert.False(t, seg.In(p), "defined again, with no members yet")
	te.add("runners", people(2, 7)...)
	assert.True(t, seg.In(p), "a member of the new segment")
	assert.Equal(t, []string{"swimmers", "runners"}, pu.Segments(nil, p), "in order of definition")
	assert.False(t, seg.In(te.pseudonym(person(0))), "not a member of the new one")
}

// A snapshot loaded into an engine renumbers its segments; handles
// prepared before the load answer from the loaded state.
func TestPreparedAcrossLoadSnapshot(t *testing.T) {
	dst, snap := renumberingSnapshot(t)
	seg, err := dst.PrepareSegment("runners")
	require.NoError(t, err)
	pu, err := dst.PreparePurpose("ads")
	require.NoError(t, err)
	in, out := dst.pseudonym(person(1)), dst.pseudonym(person(6))
	require.False(t, seg.In(in))
	require.True(t, seg.In(out))

	require.NoError(t, dst.LoadSnapshot(snap))
	assert.True(t, seg.In(in), "the snapshot's member")
	assert.False(t, seg.In(out), "no longer a member")
	assert.Equal(t, []string{"a"}, pu.Segments(nil, out))
	assert.Equal(t, []string{"runners"}, pu.Segments(nil, in))
}

func TestPreparedAllocatesNothing(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.define(Segment{Name: "big", Purpose: "ads"})
	te.add("runners", people(0, 10)...)
	for i := range 40 { // an overflow entry
		n := "s" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		te.define(Segment{Name: n, Purpose: "ads"})
		te.add(n, people(0, 10)...)
	}
	seg, err := te.PrepareSegment("runners")
	require.NoError(t, err)
	pu, err := te.PreparePurpose("ads")
	require.NoError(t, err)
	p, q := te.pseudonym(person(3)), te.pseudonym(person(30))
	dst := make([]string, 0, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		dst = pu.Segments(dst[:0], p)
		if !seg.In(p) || seg.In(q) {
			panic("wrong answer")
		}
	})
	require.Zero(t, allocs)
	require.Len(t, dst, 41)
}

// Readers holding prepared handles while a writer drops, redefines and
// loads snapshots (run with -race): every answer is one the reference
// gives at some moment, and once the writer stops they agree exactly.
func TestPreparedConcurrentWithDefinitions(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("runners", people(0, 20)...)
	seg, err := te.PrepareSegment("runners")
	require.NoError(t, err)
	pu, err := te.PreparePurpose("ads")
	require.NoError(t, err)
	ps := make([]anonymize.Pseudonym, 0, 40)
	for i := range 40 {
		ps = append(ps, te.pseudonym(person(i)))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad error
	var badOnce sync.Once
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]string, 0, 4)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := ps[i%len(ps)]
				seg.In(p) // under -race: no data race with the writer
				dst = pu.Segments(dst[:0], p)
				for _, n := range dst {
					if n != "runners" && n != "other" {
						badOnce.Do(func() { bad = errors.New("Segments served " + n) })
					}
				}
			}
		}()
	}
	for i := range 200 {
		switch i % 4 {
		case 0:
			require.NoError(t, te.Drop("runners"))
		case 1:
			te.define(Segment{Name: "runners", Purpose: "ads"})
			te.add("runners", people(i%20, 20+i%20)...)
		case 2:
			te.define(Segment{Name: "other", Purpose: "ads"})
			te.add("other", people(0, 10)...)
		case 3:
			var buf bytes.Buffer
			_, err := te.WriteSnapshot(&buf)
			require.NoError(t, err)
			require.NoError(t, te.LoadSnapshot(&buf))
			require.NoError(t, te.Drop("other"))
		}
	}
	close(stop)
	wg.Wait()
	require.NoError(t, bad)
	for _, p := range ps {
		assert.Equal(t, te.inLocked(p, "runners"), seg.In(p))
		assert.Equal(t, te.segmentsLocked(nil, p, "ads"), pu.Segments(nil, p))
	}
}

// A person in 14 segments is Elias-Fano coded inline; the lookups still
// allocate nothing.
func TestEliasFanoLookupsAllocateNothing(t *testing.T) {
	te := newTestEngine(t)
	var names []string
	for i := range 14 {
		n := "seg" + string(rune('a'+i))
		names = append(names, n)
		te.define(Segment{Name: n, Purpose: "ads"})
		te.add(n, people(0, 5)...)
	}
	p := te.pseudonym(person(2))
	seg, err := te.PrepareSegment("segm")
	require.NoError(t, err)
	pu, err := te.PreparePurpose("ads")
	require.NoError(t, err)
	dst := make([]string, 0, 16)
	allocs := testing.AllocsPerRun(1000, func() {
		dst = pu.Segments(dst[:0], p)
		if !seg.In(p) || !te.In(p, "sega") || te.In(p, "nope") {
			panic("wrong answer")
		}
	})
	require.Zero(t, allocs)
	require.Equal(t, names, dst)
	en, ok := te.dir.Get(p)
	require.True(t, ok)
	require.Equal(t, index.CodeEF, en.Code(), "inline, Elias-Fano coded")
	require.False(t, en.Overflow())
}

// A reader that loaded the read table just before a whole LoadSnapshot
// (which renumbers segments) ran does not answer from the old table's ids
// against the new directory: the gen it read before the table sends it to
// the locked path. (Found by review: gen was read after the table.)
func TestStaleReadTableAcrossLoadSnapshot(t *testing.T) {
	dst, snap := renumberingSnapshot(t)
	out := dst.pseudonym(person(6))

	g := dst.gen.Load() // the reader, up to its read of the table
	rt := dst.rt.Load()
	id, known := rt.byName.Get("runners")
	pu := rt.purposes["ads"]
	require.NoError(t, dst.LoadSnapshot(snap)) // a whole load meanwhile
	assert.False(t, dst.inLocked(out, "runners"))
	assert.False(t, dst.inID(g, out, rt, id, known, "runners"))
	assert.Equal(t, []string{"a"}, dst.segmentsLocked(nil, out, "ads"))
	assert.Equal(t, []string{"a"}, dst.segmentsOf(g, nil, out, rt, pu, "ads"))
}

// renumberingSnapshot returns an engine whose "runners" (id 0, people 5
// to 9) and a snapshot in which "runners" is id 2 (people 0 to 4) and id 0
// is "a" (people 5 to 9): loading it renumbers the segments.
func renumberingSnapshot(t *testing.T) (*testEngine, *bytes.Buffer) {
	src := newTestEngine(t)
	for _, n := range []string{"a", "b", "runners"} {
		src.define(Segment{Name: n, Purpose: "ads"})
	}
	src.add("runners", people(0, 5)...)
	src.add("a", people(5, 10)...)
	var snap bytes.Buffer
	_, err := src.WriteSnapshot(&snap)
	require.NoError(t, err)
	dst := newTestEngine(t)
	dst.define(Segment{Name: "runners", Purpose: "ads"})
	dst.add("runners", people(5, 10)...)
	return dst, &snap
}
