package personify

import (
	"math/rand/v2"
	"testing"

	"github.com/personify-go/personify/anonymize"
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
