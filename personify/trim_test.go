package personify

import (
	"math/rand/v2"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A bulk load leaves no spare capacity in the segment's set: the set is
// copied (segment.Set.Optimize, whose saving the segment package's tests
// measure) after a batch of at least writeChunk, once it has grown by an
// eighth since its last copy, so copying costs O(1) a membership.
func TestBulkLoadTrimsTheSet(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "some", Purpose: "ads"})
	rng := rand.New(rand.NewPCG(1, 2))
	batch := func(n int) []anonymize.Pseudonym {
		ps := make([]anonymize.Pseudonym, n)
		for i := range ps {
			ps[i] = anonymize.Pseudonym(rng.Uint64() | 2)
		}
		return ps
	}
	st := te.Engine.segs["some"]
	require.NoError(t, te.AddPseudonyms("some", batch(3*writeChunk)))
	assert.Equal(t, 3*writeChunk, st.trimmed, "trimmed after a bulk load")
	require.NoError(t, te.AddPseudonyms("some", batch(100)))
	assert.Equal(t, 3*writeChunk, st.trimmed, "a small batch does not copy the set")
	require.NoError(t, te.AddPseudonyms("some", batch(writeChunk)))
	assert.Equal(t, 4*writeChunk+100, st.trimmed, "grown by writeChunk, more than an eighth")
	big := 16 * writeChunk
	require.NoError(t, te.AddPseudonyms("some", batch(big)))
	require.Equal(t, 20*writeChunk+100, st.trimmed)
	require.NoError(t, te.AddPseudonyms("some", batch(writeChunk)))
	assert.Equal(t, 20*writeChunk+100, st.trimmed, "grown by less than an eighth: not copied again")
	assert.Equal(t, 21*writeChunk+100, st.set.Len())
}

// IndexStats measures what lookups read: one person in ten is in more
// segments than fit their slot, and the shares bound each other as their
// definitions say.
func TestIndexStats(t *testing.T) {
	te := newTestEngine(t)
	empty := te.IndexStats()
	assert.Zero(t, empty.Keys)
	assert.Zero(t, empty.SegmentsSecondLine)
	for i := range 20 {
		n := "s" + string(rune('a'+i))
		te.define(Segment{Name: n, Purpose: "ads"})
		te.add(n, people(0, 10)...) // 10 people in 20 segments: overflow
	}
	te.add("sa", people(10, 100)...) // 90 in one: inline
	s := te.IndexStats()
	assert.Equal(t, 100, s.Keys)
	assert.InDelta(t, float64(s.Keys)/float64(s.Slots), s.Load, 1e-9)
	assert.InDelta(t, 0.1, s.Overflow, 1e-9)
	assert.GreaterOrEqual(t, s.ProbeLines, 1.0)
	assert.GreaterOrEqual(t, s.SegmentsSecondLine, max(s.Overflow, s.OffHomeLine))
	assert.LessOrEqual(t, s.SegmentsSecondLine, s.Overflow+s.OffHomeLine+1e-9)
	assert.GreaterOrEqual(t, s.InSecondLine, s.OffHomeLine)
	assert.LessOrEqual(t, s.InSecondLine, s.SegmentsSecondLine+1e-9)
	assert.Greater(t, s.ArenaBytes, uint64(0))
	require.NoError(t, te.Close())
	assert.Zero(t, te.IndexStats())
}

// A bulk load that stops adding people leaves the table 0.82 full, not
// wherever Reserve's 1.5x growth left it, and every member is still found;
// a batch of mostly new people leaves it for the next growth.
func TestBulkLoadFitsTheTable(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "a", Purpose: "ads"})
	te.define(Segment{Name: "b", Purpose: "ads"})
	ps := randomPseudonyms(rand.New(rand.NewPCG(5, 6)), 70_000)
	require.NoError(t, te.AddPseudonyms("a", ps))
	before := te.IndexStats()
	require.Less(t, before.Load, 0.75, "a batch of new people leaves the room for the next (Reserve grows 1.5x)")
	require.NoError(t, te.AddPseudonyms("b", ps[:60_000])) // nobody new
	after := te.IndexStats()
	assert.Equal(t, index.TableSize(after.Keys+writeChunk), after.Slots, "at load 0.82 with a write chunk of room")
	assert.Greater(t, after.Load, 0.75)
	for _, p := range ps {
		require.True(t, te.In(p, "a"))
	}
	for i, p := range ps {
		require.Equal(t, i < 60_000, te.In(p, "b"))
	}
	n, err := te.Len("b")
	require.NoError(t, err)
	assert.Equal(t, 60_000, n)
}

// Batches of known people never grow a fitted table again (Fit builds no
// table under fitMinSlots, room for more than a chunk, and leaves a chunk
// of headroom besides), whatever the population: here, around sizes where
// a table fitted to exactly 0.82 from over fitMinSlots had room for less
// than a chunk and every such batch grew it 1.5x and fitted it back.
func TestFittedTableStaysPut(t *testing.T) {
	for _, n := range []int{36_000, 41_450, 41_800, 60_000} {
		te := newTestEngine(t)
		te.define(Segment{Name: "a", Purpose: "ads"})
		te.define(Segment{Name: "b", Purpose: "ads"})
		rng := rand.New(rand.NewPCG(uint64(n), 7))
		ps := make([]anonymize.Pseudonym, n)
		for i := range ps {
			ps[i] = anonymize.Pseudonym(rng.Uint64() | 2)
		}
		require.NoError(t, te.AddPseudonyms("a", ps))
		require.NoError(t, te.AddPseudonyms("b", ps[:writeChunk])) // may fit it
		tab := te.dir.Tab.Load()
		for i := range 8 {
			require.NoError(t, te.AddPseudonyms("b", ps[i*writeChunk/2:i*writeChunk/2+writeChunk]))
			require.Same(t, tab, te.dir.Tab.Load(), "n=%d: batch %d of known people rebuilt the table", n, i)
		}
	}
}

// Fit follows the bulk adds that bring at most 1 new person in 64: one
// more, and the table keeps the room for the people still coming.
func TestFitThreshold(t *testing.T) {
	for _, fresh := range []int{64, 65} {
		te := newTestEngine(t)
		te.define(Segment{Name: "a", Purpose: "ads"})
		te.define(Segment{Name: "b", Purpose: "ads"})
		ps := randomPseudonyms(rand.New(rand.NewPCG(9, 10)), 70_000)
		require.NoError(t, te.AddPseudonyms("a", ps[:70_000-fresh]))
		before := te.IndexStats()
		require.Less(t, before.Load, 0.75)
		batch := ps[70_000-64*64 : 70_000] // 4096 memberships, the last `fresh` of them new people
		require.Len(t, batch, 64*64)
		if fresh == 65 {
			batch = append([]anonymize.Pseudonym{ps[0]}, batch...) // 4097: 65 > 4097/64
		}
		require.NoError(t, te.AddPseudonyms("b", batch))
		after := te.IndexStats()
		if fresh == 64 {
			assert.Equal(t, index.TableSize(after.Keys+writeChunk), after.Slots, "fitted")
		} else {
			assert.Equal(t, before.Slots, after.Slots, "not fitted")
		}
	}
}

// randomPseudonyms returns n random pseudonyms, none of them a reserved
// slot value.
func randomPseudonyms(rng *rand.Rand, n int) []anonymize.Pseudonym {
	ps := make([]anonymize.Pseudonym, n)
	for i := range ps {
		ps[i] = anonymize.Pseudonym(rng.Uint64() | 2)
	}
	return ps
}
