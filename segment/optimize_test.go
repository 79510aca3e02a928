package segment

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// Optimize gives back the spare capacity that merging batches into array
// containers leaves (Roaring grows them twice over): a set of sparse
// ordinals loaded in batches keeps about the 2 bytes a member its arrays
// need, and SizeBytes then agrees with the heap within 10%.
func TestOptimizeReleasesSpareCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap of a 400K-member set")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	xs := make([]uint32, 0, 400_000)
	for x := range uint32(40_000_000) { // 1% of 40M ordinals: array containers
		if rng.IntN(100) == 0 {
			xs = append(xs, x)
		}
	}
	rng.Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
	load := func() *Set {
		s := New()
		for b := range slices.Chunk(xs, 4096) {
			s.AddMany(b)
		}
		return s
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	h0 := heap()
	s := load()
	h1 := heap()
	loaded := float64(int64(h1)-int64(h0)) / float64(len(xs))
	s.Optimize()
	h2 := heap()
	trimmed := float64(int64(h2)-int64(h0)) / float64(len(xs))
	t.Logf("%d members: %.2f B a member as loaded, %.2f after Optimize, SizeBytes %.2f",
		len(xs), loaded, trimmed, float64(s.SizeBytes())/float64(len(xs)))
	require.Equal(t, len(xs), s.Len())
	require.Less(t, trimmed, 2.2, "spare capacity left")
	require.Greater(t, loaded, trimmed*1.2, "the test loads as the engine does, leaving spare capacity")
	require.InDelta(t, trimmed, float64(s.SizeBytes())/float64(len(xs)), 0.1*trimmed, "SizeBytes within 10%%")
	runtime.KeepAlive(s)
	runtime.KeepAlive(xs)
}
