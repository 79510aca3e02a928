package bench

import (
	"fmt"
	"math"
	mrand "math/rand/v2"
	"runtime"
	"strconv"
	"sync"

	"github.com/personify-go/personify/anonymize"
)

// Workload is the benchmark population of the performance targets: People distinct
// identities, Segments segments, each person in each segment with
// probability 1%, built deterministically from a seed. "10M x 1000" (100M
// memberships) is the reference; "1M x 1000" is the quick variant for CI.
type Workload struct {
	Name     string
	People   int
	Segments int
	Seed     uint64

	Key        anonymize.Key
	Emails     []string              // normalized emails: the raw identifiers the naive baseline keeps
	Pseudonyms []anonymize.Pseudonym // SipHash pseudonyms of Emails under Key
	SegNames   []string              // "seg0000", ...
	Members    [][]uint32            // per segment, the member person indices, ascending (random pseudonym order)
	Probes     []Probe               // random (person, segment) pairs, shared by every benchmark

	memberships int
	segPsOnce   sync.Once
	segPs       [][]anonymize.Pseudonym
}

// Probe is one lookup: is person Person in segment Segment? It carries the
// person's pseudonym and email, so that benchmarks read their input
// sequentially and measure the lookup alone.
type Probe struct {
	P       anonymize.Pseudonym
	Email   string
	Person  uint32
	Segment uint32
}

// NumProbes is the number of precomputed probes; benchmarks cycle through
// them with i & (NumProbes-1).
const NumProbes = 1 << 20

// Share is the probability that a person is in a segment.
const Share = 0.01

// Purpose is the one purpose of the workload's segments.
const Purpose = "personalization"

// Sizes are the named workloads.
var Sizes = map[string][2]int{
	"1M":   {1_000_000, 1000},
	"10M":  {10_000_000, 1000},
	"tiny": {20_000, 100}, // for tests
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*Workload{}
)

// Load returns the named workload ("1M", "10M", "tiny"), generating it on
// first use: a benchmark process builds it once.
func Load(name string) (*Workload, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if w, ok := cache[name]; ok {
		return w, nil
	}
	size, ok := Sizes[name]
	if !ok {
		return nil, fmt.Errorf("bench: unknown workload %q (want 1M, 10M or tiny)", name)
	}
	w := Generate(name, size[0], size[1], 1)
	cache[name] = w
	return w, nil
}

// Generate builds a workload deterministically from seed.
func Generate(name string, people, segments int, seed uint64) *Workload {
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		panic(err)
	}
	w := &Workload{Name: name, People: people, Segments: segments, Seed: seed, Key: key}
	w.makeEmails()
	w.makePseudonyms()
	w.SegNames = make([]string, segments)
	for s := range w.SegNames {
		w.SegNames[s] = fmt.Sprintf("seg%04d", s)
	}
	w.makeMembers()
	rng := mrand.New(mrand.NewPCG(seed, 0x9E3779B97F4A7C15))
	// The probes' emails are copied into one string in probe order, so
	// that reading a probe's email is sequential, as a request's input is
	// in cache: benchmarks measure the lookup, not a miss on their input.
	w.Probes = make([]Probe, NumProbes)
	var emails []byte
	for i := range w.Probes {
		person := rng.IntN(people)
		w.Probes[i] = Probe{P: w.Pseudonyms[person], Person: uint32(person), Segment: uint32(rng.IntN(segments))}
		emails = append(emails, w.Emails[person]...)
	}
	all, off := string(emails), 0
	for i := range w.Probes {
		n := len(w.Emails[w.Probes[i].Person])
		w.Probes[i].Email = all[off : off+n]
		off += n
	}
	return w
}

// makeEmails writes every email into one string, so that 10M of them cost
// their bytes plus a string header each.
func (w *Workload) makeEmails() {
	const suffix = "@example.com"
	buf := make([]byte, 0, w.People*(len("member")+9+len(suffix)))
	ends := make([]int, w.People)
	for i := range w.People {
		buf = append(buf, "member"...)
		buf = strconv.AppendUint(buf, uint64(w.Seed)*1e9+uint64(i), 10)
		buf = append(buf, suffix...)
		ends[i] = len(buf)
	}
	all := string(buf)
	w.Emails = make([]string, w.People)
	start := 0
	for i, end := range ends {
		w.Emails[i] = all[start:end]
		start = end
	}
}

func (w *Workload) makePseudonyms() {
	h := anonymize.SipHash(w.Key)
	w.Pseudonyms = make([]anonymize.Pseudonym, w.People)
	parallel(w.People, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p, err := h.Pseudonym(anonymize.Email(w.Emails[i]))
			if err != nil {
				panic(err)
			}
			w.Pseudonyms[i] = p
		}
	})
}

// makeMembers draws each segment's members by geometric skips (each person
// independently with probability Share), in O(members) per segment.
func (w *Workload) makeMembers() {
	w.Members = make([][]uint32, w.Segments)
	logQ := math.Log1p(-Share)
	parallel(w.Segments, func(lo, hi int) {
		for s := lo; s < hi; s++ {
			rng := mrand.New(mrand.NewPCG(w.Seed, uint64(s)+1))
			m := make([]uint32, 0, int(float64(w.People)*Share*1.1))
			for i := -1; ; {
				u := (float64(rng.Uint64()>>11) + 1) / (1 << 53)
				i += 1 + int(math.Log(u)/logQ)
				if i >= w.People {
					break
				}
				m = append(m, uint32(i))
			}
			w.Members[s] = m
		}
	})
	for _, m := range w.Members {
		w.memberships += len(m)
	}
}

// Memberships returns the number of (person, segment) memberships.
func (w *Workload) Memberships() int { return w.memberships }

// PseudonymsOf returns the pseudonyms of a segment's members, in person
// order (random pseudonym order). They are computed once, so that loading
// benchmarks time the load, not the making of its input.
func (w *Workload) PseudonymsOf(segment int) []anonymize.Pseudonym {
	w.segPsOnce.Do(func() {
		w.segPs = make([][]anonymize.Pseudonym, w.Segments)
		all := make([]anonymize.Pseudonym, w.memberships)
		parallel(w.Segments, func(lo, hi int) {
			off := 0
			for s := range lo {
				off += len(w.Members[s])
			}
			for s := lo; s < hi; s++ {
				ps := all[off : off+len(w.Members[s]) : off+len(w.Members[s])]
				for i, person := range w.Members[s] {
					ps[i] = w.Pseudonyms[person]
				}
				w.segPs[s] = ps
				off += len(ps)
			}
		})
	})
	return w.segPs[segment]
}

// parallel runs fn over [0, n) split across the CPUs.
func parallel(n int, fn func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for k := range workers {
		lo, hi := n*k/workers, n*(k+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}
