package anonymize

import (
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCollisionRateValues(t *testing.T) {
	assert.InDelta(t, 0.0230, CollisionRate(100_000_000, 32), 0.0005)
	assert.InDelta(t, 5.42e-12, CollisionRate(100_000_000, 64), 0.01e-12)
	assert.InDelta(t, 1.164e6, CollisionPairs(100_000_000, 32), 0.001e6)
	assert.InDelta(t, 2.71e-4, CollisionPairs(100_000_000, 64), 0.01e-4)
	assert.Zero(t, CollisionRate(1, 32))
	assert.Zero(t, CollisionRate(0, 64))
	assert.Equal(t, 1.0, CollisionRate(2, 0))
	assert.InDelta(t, 0.5, CollisionRate(2, 1), 1e-12)
	assert.Zero(t, CollisionPairs(1, 8))
}

// TestCollisionRateEmpirical hashes a few million synthetic identities,
// truncates the pseudonyms to 32 bits (what would happen if they were
// stored that narrow) and counts the share that collide.
func TestCollisionRateEmpirical(t *testing.T) {
	n := 4_000_000
	if testing.Short() {
		n = 1_000_000
	}
	h := SipHash(testKey(t))
	vals := make([]uint32, n)
	for i := range vals {
		p, err := h.Pseudonym(UserID(fmt.Sprintf("user-%d", i)))
		require.NoError(t, err)
		vals[i] = uint32(p)
	}
	slices.Sort(vals)
	colliding := 0
	for i := 0; i < n; {
		j := i + 1
		for j < n && vals[j] == vals[i] {
			j++
		}
		if j-i > 1 {
			colliding += j - i
		}
		i = j
	}
	got := float64(colliding) / float64(n)
	want := CollisionRate(n, 32)
	// The count is roughly Poisson: allow 5 standard deviations.
	tol := 5 * math.Sqrt(want*float64(n)) / float64(n)
	t.Logf("n=%d: %d identities (%.4f%%) share a 32-bit value; CollisionRate says %.4f%%", n, colliding, 100*got, 100*want)
	assert.InDelta(t, want, got, tol)
}

// TestNoisyCountDistribution compares the empirical noise distribution with
// the two-sided geometric P(k) = (1-a)/(1+a) a^|k|, a = exp(-epsilon).
func TestNoisyCountDistribution(t *testing.T) {
	for _, eps := range []float64{0.1, 0.5, 1, 2} {
		t.Run(fmt.Sprintf("epsilon=%v", eps), func(t *testing.T) {
			src := mrand.NewPCG(1, uint64(eps*1000))
			const draws, n = 200_000, 10_000
			hist := map[int]int{}
			var sum, sumSq float64
			for range draws {
				k := NoisyCountSource(src, n, eps) - n
				hist[k]++
				sum += float64(k)
				sumSq += float64(k) * float64(k)
			}
			a := math.Exp(-eps)
			mean := sum / draws
			variance := sumSq/draws - mean*mean
			wantVar := 2 * a / ((1 - a) * (1 - a))
			sd := math.Sqrt(wantVar)
			assert.InDelta(t, 0, mean, 5*sd/math.Sqrt(draws), "mean")
			assert.InDelta(t, wantVar, variance, 0.05*wantVar, "variance")
			// Chi-square over the central bins, the tails pooled.
			limit := int(3*sd) + 1
			chi2, bins := 0.0, 0
			inner := 0.0
			for k := -limit; k <= limit; k++ {
				p := (1 - a) / (1 + a) * math.Pow(a, math.Abs(float64(k)))
				inner += p
				exp := p * draws
				d := float64(hist[k]) - exp
				chi2 += d * d / exp
				bins++
			}
			tail := 0
			for k, c := range hist {
				if k < -limit || k > limit {
					tail += c
				}
			}
			expTail := (1 - inner) * draws
			chi2 += (float64(tail) - expTail) * (float64(tail) - expTail) / expTail
			bins++
			// The 99.9% quantile of chi-square is below dof + 4.5*sqrt(2*dof) for these sizes.
			dof := float64(bins - 1)
			assert.Less(t, chi2, dof+4.5*math.Sqrt(2*dof), "chi-square over %d bins", bins)
		})
	}
}

// fixedSource returns its values in turn.
type fixedSource []uint64

func (f *fixedSource) Uint64() uint64 {
	v := (*f)[0]
	*f = (*f)[1:]
	return v
}

func TestNoisyCount(t *testing.T) {
	// Noise is the difference of two geometric draws: a first draw of 0
	// (u = 1) and a large second one (u tiny) make it strongly negative.
	negative := func() *fixedSource { return &fixedSource{math.MaxUint64, 0} }
	assert.Equal(t, 0, NoisyCountSource(negative(), 10, 0.01), "clamped at zero")
	assert.Less(t, NoisyCountSource(negative(), 1_000_000, 0.01), 1_000_000-1000, "the same noise, unclamped")
	var diff int
	for range 100 {
		if NoisyCount(1000, 1) != 1000 {
			diff++
		}
	}
	assert.Positive(t, diff, "crypto noise is applied")
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		assert.Panics(t, func() { NoisyCount(10, bad) }, "epsilon %v", bad)
	}
}
