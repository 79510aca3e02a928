package anonymize

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	mrand "math/rand/v2"
)

// CollisionRate returns the expected share of n identities that share their
// pseudonym with at least one other identity when pseudonyms are bits wide
// and uniformly distributed: 1 - (1 - 2^-bits)^(n-1).
//
// At 100 million identities it is about 2.3% at 32 bits and 5.4e-12 at 64
// bits: truncating pseudonyms to 32 bits would merge millions of people,
// which is why personify keeps 64.
func CollisionRate(n int, bits int) float64 {
	if n < 2 || bits <= 0 {
		if n >= 2 { // a zero-width value: everyone collides
			return 1
		}
		return 0
	}
	p := math.Ldexp(1, -bits)
	return -math.Expm1(float64(n-1) * math.Log1p(-p))
}

// CollisionPairs returns the expected number of pairs among n identities
// whose bits-wide pseudonyms are equal: n(n-1)/2 / 2^bits.
func CollisionPairs(n int, bits int) float64 {
	if n < 2 {
		return 0
	}
	return float64(n) * float64(n-1) / 2 * math.Ldexp(1, -bits)
}

// NoisyCount returns n plus noise from the two-sided geometric distribution
// (the discrete Laplace mechanism) with P(noise = k) proportional to
// exp(-epsilon*|k|), clamped at zero. Releasing it is epsilon-differentially
// private for counts that one person changes by at most 1 (sensitivity 1):
// smaller epsilon, more noise, more privacy. The standard deviation is
// sqrt(2a)/(1-a) with a = exp(-epsilon): about 1.4 at epsilon 1, 14 at 0.1.
//
// Randomness comes from crypto/rand. It panics if epsilon is not a positive
// finite number.
func NoisyCount(n int, epsilon float64) int {
	return NoisyCountSource(cryptoSource{}, n, epsilon)
}

// NoisyCountSource is [NoisyCount] with the randomness taken from src, for
// reproducible tests and simulations. Do not use a predictable source for
// counts that are released: whoever can predict the noise can remove it.
func NoisyCountSource(src mrand.Source, n int, epsilon float64) int {
	v := n + geometricNoise(src, epsilon)
	if v < 0 {
		return 0
	}
	return v
}

// geometricNoise returns G1 - G2 for two independent geometric variables
// with success probability 1 - exp(-epsilon), which is two-sided geometric.
func geometricNoise(src mrand.Source, epsilon float64) int {
	if !(epsilon > 0) || math.IsInf(epsilon, 1) {
		panic(fmt.Sprintf("anonymize: NoisyCount: epsilon must be a positive finite number, got %v", epsilon))
	}
	logA := -epsilon // ln(a), a = exp(-epsilon)
	g1 := geometric(src, logA)
	g2 := geometric(src, logA)
	return g1 - g2
}

// geometric draws from P(G = k) = (1-a) a^k, k >= 0, by inversion:
// floor(ln U / ln a) for U uniform in (0, 1].
func geometric(src mrand.Source, logA float64) int {
	u := (float64(src.Uint64()>>11) + 1) / (1 << 53)
	g := math.Floor(math.Log(u) / logA)
	if g > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(g)
}

// cryptoSource is a math/rand/v2 Source backed by crypto/rand.
type cryptoSource struct{}

func (cryptoSource) Uint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return binary.LittleEndian.Uint64(b[:])
}
