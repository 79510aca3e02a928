package bench

import (
	"math/rand/v2"
	"testing"

	"github.com/personify-go/personify/anonymize"
)

// FairBaseline is what a user would write for "which segments may this
// person be served" without this library, given the same pseudonyms: a
// map[uint64][]uint16 of each person's segment ids, translated to names,
// with the privacy checks Segments makes done the plain way: the person
// neither suppressed nor opted out of the purpose (a map each), and each
// segment of the purpose and at least k members (arrays by segment id).
// Its answers are Segments' on this workload: the suppression and
// opt-out maps hold other people's pseudonyms (as many as 1% of the
// people), so that they cost a real lookup and exclude no one probed.
type FairBaseline struct {
	segs       map[uint64][]uint16
	names      []string
	size       []int32 // members of each segment
	purposeOf  []uint8 // each segment's purpose
	suppressed map[uint64]struct{}
	optedOut   map[uint64]struct{} // of the workload's purpose
	k          int32
}

// fairPurpose is the workload purpose's number in FairBaseline.purposeOf.
const fairPurpose = 0

// BuildFairBaseline builds the fair Segments baseline for w, with the
// engine's k (50, the default).
func BuildFairBaseline(w *Workload) Built[*FairBaseline] {
	b, _ := measure(func() (*FairBaseline, error) {
		f := &FairBaseline{segs: make(map[uint64][]uint16, w.People), names: w.SegNames,
			size: make([]int32, w.Segments), purposeOf: make([]uint8, w.Segments), k: 50}
		counts := make([]uint16, w.People)
		for s := range w.Segments {
			for _, person := range w.Members[s] {
				counts[person]++
			}
			f.size[s] = int32(len(w.Members[s]))
		}
		ids := make([][]uint16, w.People)
		for person, c := range counts {
			if c > 0 {
				ids[person] = make([]uint16, 0, c)
			}
		}
		for s := range w.Segments { // ascending ids, as Segments answers in order of definition
			for _, person := range w.Members[s] {
				ids[person] = append(ids[person], uint16(s))
			}
		}
		for person, v := range ids {
			if v != nil {
				f.segs[uint64(w.Pseudonyms[person])] = v
			}
		}
		rng := rand.New(rand.NewPCG(w.Seed, 0xfa1))
		others := max(w.People/100, 1)
		f.suppressed = make(map[uint64]struct{}, others)
		f.optedOut = make(map[uint64]struct{}, others)
		for range others {
			f.suppressed[rng.Uint64()] = struct{}{}
			f.optedOut[rng.Uint64()] = struct{}{}
		}
		return f, nil
	})
	return b
}

// Segments appends the names of the segments the person with pseudonym p
// may be served for the workload's purpose.
func (f *FairBaseline) Segments(dst []string, p anonymize.Pseudonym) []string {
	if _, ok := f.suppressed[uint64(p)]; ok {
		return dst
	}
	if _, ok := f.optedOut[uint64(p)]; ok {
		return dst
	}
	for _, id := range f.segs[uint64(p)] {
		if f.purposeOf[id] == fairPurpose && f.size[id] >= f.k {
			dst = append(dst, f.names[id])
		}
	}
	return dst
}

// Fair returns the fair Segments baseline, building it once.
func (s *Suite) Fair() Built[*FairBaseline] {
	s.fairOnce.Do(func() { s.fair = BuildFairBaseline(s.W) })
	return s.fair
}

// SegmentsFair measures FairBaseline.Segments on the same probes as
// Segments: the fair baseline Segments must beat.
func (s *Suite) SegmentsFair(b *testing.B) {
	f, w := s.Fair().Value, s.W
	dst := make([]string, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := range b.N {
		dst = f.Segments(dst[:0], w.Probes[i&probeMask].P)
		n += len(dst)
	}
	sink.Add(int64(n))
}
