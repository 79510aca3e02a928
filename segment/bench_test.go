package segment

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
)

// benchSizes is the one size table every benchmark sweeps. Density is
// members / value range: 50% is a segment of half the people in a dense
// directory, 1% a small segment of it.
var benchSizes = []struct {
	members int
	density float64 // percent
}{
	{1_000_000, 1},
	{1_000_000, 50},
	{10_000_000, 1},
	{10_000_000, 50},
}

// benchData is built once per size and shared by the benchmarks.
type benchData struct {
	members  []uint32 // ascending
	shuffled []uint32
	set      *Set
	hits     []uint32 // probes, probeMask+1 of each
	misses   []uint32
}

const probeMask = 1<<16 - 1

var (
	benchMu    sync.Mutex
	benchCache = map[string]*benchData{}
	tenCache   = map[string][]*Set{}
)

// sizeName names a size: members=1M/density=1%.
func sizeName(members int, density float64) string {
	m := fmt.Sprint(members)
	if members%1_000_000 == 0 {
		m = fmt.Sprintf("%dM", members/1_000_000)
	}
	return fmt.Sprintf("members=%s/density=%g%%", m, density)
}

// randomMembers returns n ascending distinct values with the given density,
// drawn with independent random gaps.
func randomMembers(seed uint64, n int, density float64) []uint32 {
	r := rand.New(rand.NewPCG(seed, 99))
	meanGap := 100 / density
	maxGap := uint32(2*meanGap - 1) // uniform in [1, maxGap], mean meanGap
	xs := make([]uint32, n)
	x := uint32(0)
	for i := range xs {
		x += 1 + r.Uint32N(maxGap)
		xs[i] = x
	}
	return xs
}

func loadBench(b *testing.B, members int, density float64) *benchData {
	b.Helper()
	if members > 1_000_000 && testing.Short() {
		b.Skip("10M sizes skipped in -short mode")
	}
	benchMu.Lock()
	defer benchMu.Unlock()
	key := sizeName(members, density)
	if d, ok := benchCache[key]; ok {
		return d
	}
	d := &benchData{members: randomMembers(1, members, density)}
	d.set = New(d.members...)
	d.set.Optimize()
	r := rand.New(rand.NewPCG(2, 2))
	d.shuffled = slices.Clone(d.members)
	r.Shuffle(len(d.shuffled), func(i, j int) { d.shuffled[i], d.shuffled[j] = d.shuffled[j], d.shuffled[i] })
	limit := d.members[len(d.members)-1] + 1
	for len(d.hits) <= probeMask {
		d.hits = append(d.hits, d.members[r.IntN(len(d.members))])
	}
	for len(d.misses) <= probeMask {
		if x := r.Uint32N(limit); !d.set.Contains(x) {
			d.misses = append(d.misses, x)
		}
	}
	benchCache[key] = d
	return d
}

var sink int

func BenchmarkContains(b *testing.B) {
	for _, size := range benchSizes {
		for _, probe := range []string{"hit", "miss"} {
			b.Run(sizeName(size.members, size.density)+"/"+probe, func(b *testing.B) {
				d := loadBench(b, size.members, size.density)
				probes := d.hits
				if probe == "miss" {
					probes = d.misses
				}
				b.ReportAllocs()
				n, i := 0, 0
				for b.Loop() {
					if d.set.Contains(probes[i&probeMask]) {
						n++
					}
					i++
				}
				sink = n
			})
		}
	}
}

// BenchmarkTimedContains compares Timed.Contains with Set.Contains on the
// same members, spread over 30 daily epochs.
func BenchmarkTimedContains(b *testing.B) {
	for _, size := range benchSizes[:2] {
		name := sizeName(size.members, size.density)
		d := loadBench(b, size.members, size.density)
		tm := NewTimed(24 * time.Hour)
		for day := range 30 {
			tm.AddMany(d.shuffled[day*len(d.shuffled)/30:(day+1)*len(d.shuffled)/30], t0.Add(time.Duration(day)*24*time.Hour))
		}
		tm.Members().Optimize()
		contains := map[string]func(uint32) bool{"set": d.set.Contains, "timed": tm.Contains}
		for _, kind := range []string{"set", "timed"} {
			b.Run(name+"/"+kind+"/hit", func(b *testing.B) {
				b.ReportAllocs()
				has := contains[kind]
				n, i := 0, 0
				for b.Loop() {
					if has(d.hits[i&probeMask]) {
						n++
					}
					i++
				}
				sink = n
			})
		}
	}
}

// BenchmarkAddMany builds a set from shuffled members, against roaring's
// AddMany on the same input as the baseline. The baseline runs at 1M members
// only, and not in -short mode: at 10M it takes seconds per call.
func BenchmarkAddMany(b *testing.B) {
	for _, size := range benchSizes {
		for _, impl := range []string{"segment", "roaring"} {
			if impl == "roaring" && (size.members > 1_000_000 || testing.Short()) {
				continue
			}
			b.Run(sizeName(size.members, size.density)+"/"+impl, func(b *testing.B) {
				d := loadBench(b, size.members, size.density)
				b.ReportAllocs()
				for b.Loop() {
					if impl == "segment" {
						New(d.shuffled...)
					} else {
						roaring.New().AddMany(d.shuffled)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(d.shuffled)), "ns/member")
			})
		}
	}
}

// tenSets returns ten sets of the given size, each with its own members.
func tenSets(b *testing.B, members int, density float64) []*Set {
	d := loadBench(b, members, density)
	benchMu.Lock()
	defer benchMu.Unlock()
	key := sizeName(members, density)
	if sets, ok := tenCache[key]; ok {
		return sets
	}
	sets := []*Set{d.set}
	for seed := range uint64(9) {
		s := New(randomMembers(seed+10, members, density)...)
		s.Optimize()
		sets = append(sets, s)
	}
	tenCache[key] = sets
	return sets
}

func BenchmarkAlgebra(b *testing.B) {
	for _, size := range benchSizes {
		for _, op := range []string{"And", "Or"} {
			b.Run(op+"/sets=10/"+sizeName(size.members, size.density), func(b *testing.B) {
				sets := tenSets(b, size.members, size.density)
				f := And
				if op == "Or" {
					f = Or
				}
				b.ReportAllocs()
				for b.Loop() {
					sink = f(sets...).Len()
				}
			})
		}
	}
}

// BenchmarkSnapshot writes and reads a one-set snapshot, against roaring's
// own WriteTo and ReadFrom as the baseline.
func BenchmarkSnapshot(b *testing.B) {
	for _, size := range benchSizes {
		name := sizeName(size.members, size.density)
		b.Run("write/"+name, func(b *testing.B) {
			d := loadBench(b, size.members, size.density)
			var buf bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				w, _ := NewWriter(&buf)
				_ = w.Set("segment", d.set)
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(buf.Len()))
		})
		b.Run("read/"+name, func(b *testing.B) {
			d := loadBench(b, size.members, size.density)
			var buf bytes.Buffer
			if _, err := WriteSets(&buf, map[string]*Set{"segment": d.set}); err != nil {
				b.Fatal(err)
			}
			data := buf.Bytes()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				r, _ := NewReader(bytes.NewReader(data))
				sec, err := r.Next()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.Next(); err != io.EOF {
					b.Fatal(err)
				}
				sink = len(sec.Name)
			}
		})
		b.Run("roaring-read/"+name, func(b *testing.B) {
			d := loadBench(b, size.members, size.density)
			data, _ := d.set.MarshalBinary()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				bm := roaring.New()
				if _, err := bm.ReadFrom(bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBytesPerMember reports the in-memory estimate and the serialized
// size of each benchmark set per member.
func BenchmarkBytesPerMember(b *testing.B) {
	for _, size := range benchSizes {
		for _, what := range []string{"heap", "serialized"} {
			b.Run(sizeName(size.members, size.density)+"/"+what, func(b *testing.B) {
				d := loadBench(b, size.members, size.density)
				b.ReportAllocs()
				var bytes uint64
				for b.Loop() {
					if what == "heap" {
						bytes = d.set.SizeBytes()
					} else {
						bytes = d.set.SerializedSize()
					}
				}
				b.ReportMetric(float64(bytes)/float64(d.set.Len()), "B/member")
			})
		}
	}
}

func BenchmarkEval(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size.members, size.density), func(b *testing.B) {
			sets := tenSets(b, size.members, size.density)
			names := map[string]*Set{"a": sets[0], "b": sets[1], "c": sets[2], "d": sets[3]}
			e, err := Parse("a & (b | c) & !d")
			if err != nil {
				b.Fatal(err)
			}
			resolve := func(name string) (*Set, error) { return names[name], nil }
			b.ReportAllocs()
			for b.Loop() {
				s, err := e.Eval(resolve, nil)
				if err != nil {
					b.Fatal(err)
				}
				sink = s.Len()
			}
		})
	}
}
