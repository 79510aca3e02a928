package personify

import (
	mrand "math/rand/v2"
	"slices"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/require"
)

func TestSortPseudonyms(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 1))
	var tmp []anonymize.Pseudonym
	for _, n := range []int{0, 1, 63, 64, 65, 1000, 4096} {
		ps := make([]anonymize.Pseudonym, n)
		for i := range ps {
			ps[i] = anonymize.Pseudonym(rng.Uint64())
			if i%10 == 0 && i > 0 {
				ps[i] = ps[i-1] // duplicates
			}
		}
		want := slices.Clone(ps)
		slices.Sort(want)
		got := slices.Clone(sortPseudonyms(slices.Clone(ps), &tmp))
		require.True(t, slices.IsSortedFunc(got, func(a, b anonymize.Pseudonym) int { return int(a>>40) - int(b>>40) }),
			"n=%d: ordered by the top 24 bits", n)
		slices.Sort(got)
		require.Equal(t, want, got, "n=%d: a permutation of the input", n)
	}
}
