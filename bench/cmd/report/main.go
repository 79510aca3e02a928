// Command report runs personify's benchmark suite on one workload, prints
// the medians and the performance targets (met or not), and writes the same as
// Markdown with a latency chart (SVG) and the raw benchmark lines
// (benchstat reads them).
//
//	go run ./bench/cmd/report                         # 10M x 1000, 5 runs each, writes bench/results
//	go run ./bench/cmd/report -workload 1M -count 3   # quicker
//	go run ./bench/cmd/report -workload 10M -count 9 -benchtime 300ms -check -only '^(In|In/prepared|Segments|Segments/prepared|SegmentsFair|MapUint64)$' -out ''
//
// -check is the CI gate: it exits 1 when In or Segments, by name or
// prepared, is slower than its limit (gates) times one map[uint64]struct{}
// lookup, or prepared Segments is not faster than the fair baseline, ratios
// from the same rounds of the same run, or when one allocates.
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/bench"
	"github.com/personify-go/personify/bench/internal/chart"
	"github.com/personify-go/personify/personify"
)

func main() {
	testing.Init()
	workload := flag.String("workload", "10M", "workload: 10M, 1M or tiny")
	count := flag.Int("count", 5, "runs of each benchmark; the report uses the median")
	benchtime := flag.String("benchtime", "1s", "time (or Nx iterations) per run")
	out := flag.String("out", defaultOut(), "directory for REPORT.md, latency.svg and bench.txt; empty: write nothing")
	only := flag.String("only", "", "run only benchmarks whose name matches this regexp")
	check := flag.Bool("check", false, "exit 1 if In or Segments (by name or prepared) is over its limit times the map lookup or the fair baseline, or allocates (the CI gate)")
	flag.Parse()
	if err := flag.Set("test.benchtime", *benchtime); err != nil {
		fail(err)
	}
	var filter *regexp.Regexp
	if *only != "" {
		filter = regexp.MustCompile(*only)
	}
	if err := run(*workload, *count, *out, filter, *check); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "report:", err)
	os.Exit(1)
}

// defaultOut is bench/results from the repository root, results from the
// bench module.
func defaultOut() string {
	if _, err := os.Stat(filepath.Join("bench", "go.mod")); err == nil {
		return filepath.Join("bench", "results")
	}
	return "results"
}

// result is the median of a benchmark's runs.
type result struct {
	name   string
	nsOp   float64
	allocs int64
	extra  map[string]float64
	runs   []testing.BenchmarkResult
}

func run(name string, count int, out string, filter *regexp.Regexp, check bool) error {
	start := time.Now()
	fmt.Printf("workload %s: generating... ", name)
	w, err := bench.Load(name)
	if err != nil {
		return err
	}
	fmt.Printf("%d people, %d segments, %d memberships (%.0fs)\n", w.People, w.Segments, w.Memberships(), time.Since(start).Seconds())
	s := bench.NewSuite(w)
	defer s.Close()

	mem := buildAll(s, filter)
	results := map[string]*result{}
	var raw strings.Builder
	// Rounds: every benchmark once per round, count rounds, so that a
	// benchmark and the baseline it is compared with see the machine in the
	// same state (load drifts; ratios of interleaved runs drift less).
	var selected []benchmark
	for _, bm := range benchmarks(s) {
		if filter == nil || filter.MatchString(bm.name) {
			selected = append(selected, bm)
			results[bm.name] = &result{name: bm.name, extra: map[string]float64{}}
		}
	}
	skipped := map[string]bool{}
	var failures []string
	for round := range count {
		for _, bm := range selected {
			if skipped[bm.name] {
				continue
			}
			var didFail bool
			br := testing.Benchmark(func(b *testing.B) {
				defer func() { didFail = didFail || b.Failed() }() // runs after Fatal too
				bm.fn(b)
			})
			if didFail {
				failures = append(failures, bm.name)
				skipped[bm.name] = true
				continue
			}
			if br.N == 0 { // skipped (no redis-server)
				skipped[bm.name] = true
				continue
			}
			r := results[bm.name]
			r.runs = append(r.runs, br)
			fmt.Fprintf(&raw, "Benchmark%s-%d\t%s\n", bm.name, runtime.GOMAXPROCS(0), br.String()+"\t"+br.MemString())
			if round == count-1 {
				r.summarize()
				fmt.Printf("%-40s %12s  %d allocs/op%s\n", bm.name, formatNs(r.nsOp), r.allocs, r.extraString())
			}
		}
	}
	for _, bm := range selected {
		if r := results[bm.name]; len(r.runs) == 0 {
			if slices.Contains(failures, bm.name) {
				fmt.Printf("%-40s FAILED\n", bm.name)
			} else {
				fmt.Printf("%-40s skipped\n", bm.name)
			}
			delete(results, bm.name)
		} else if len(r.runs) < count {
			r.summarize()
		}
	}
	ts := targets(w, mem, results)
	fmt.Println()
	printTargets(os.Stdout, ts)
	if out != "" {
		if err := write(out, w, count, mem, results, ts, raw.String()); err != nil {
			return err
		}
		fmt.Printf("\nwrote %s (%.0fs in all)\n", out, time.Since(start).Seconds())
	}
	if len(failures) > 0 {
		return fmt.Errorf("benchmarks failed: %s", strings.Join(failures, ", "))
	}
	if check {
		return gate(results)
	}
	return nil
}

// summarize takes the median of each measure over the runs.
func (r *result) summarize() {
	ns := make([]float64, len(r.runs))
	allocs := make([]float64, len(r.runs))
	for i, br := range r.runs {
		ns[i] = float64(br.T.Nanoseconds()) / float64(br.N)
		allocs[i] = float64(br.AllocsPerOp())
	}
	r.nsOp, r.allocs = median(ns), int64(median(allocs))
	if b := r.runs[0].Bytes; b > 0 {
		r.extra["MB/s"] = float64(b) * 1e3 / r.nsOp
	}
	for k := range r.runs[0].Extra {
		vals := make([]float64, len(r.runs))
		for i, br := range r.runs {
			vals[i] = br.Extra[k]
		}
		r.extra[k] = median(vals)
	}
}

func (r *result) extraString() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(r.extra)) {
		fmt.Fprintf(&b, "  %.3g %s", r.extra[k], k)
	}
	return b.String()
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type benchmark struct {
	name string
	fn   func(*testing.B)
}

// benchmarks lists the suite, named as `go test -bench` names them.
func benchmarks(s *bench.Suite) []benchmark {
	return []benchmark{
		{"In", s.In},
		{"In/linked", s.InLinked},
		{"In/prepared", s.InPrepared},
		{"Segments", s.Segments},
		{"Segments/prepared", s.SegmentsPrepared},
		{"SegmentsFair", s.SegmentsFair},
		{"Segments/linked", s.SegmentsLinked},
		{"MapUint64", s.MapUint64},
		{"ProbeFloor", s.ProbeFloor},
		{"RawEmailMap", s.RawEmailMap},
		{"RoaringLoop", s.RoaringLoop},
		{"Redis/SISMEMBER", s.RedisSIsMember},
		{"Redis/SISMEMBER-pipelined=16", s.RedisPipelined},
		{"Allow", s.Allow},
		{"Redis/INCR+EXPIRE", s.RedisIncrExpire},
		{"Redis/INCR+EXPIRE-pipelined=16", s.RedisIncrExpirePipelined},
		{"Pseudonym/engine", s.Pseudonym},
		{"Pseudonym/hasher=siphash", s.Hasher(anonymize.SipHash)},
		{"Pseudonym/hasher=xxhash", s.Hasher(anonymize.XXHash)},
		{"Pseudonym/hasher=hmac-sha256", s.Hasher(anonymize.HMACSHA256)},
		{"InParallel/writer=off", s.InParallel(false)},
		{"InParallel/writer=on", s.InParallel(true)},
		{"InReaders/readers=1/writer=true", s.InReaders(1, true)},
		{"InReaders/readers=2/writer=true", s.InReaders(2, true)},
		{"Ingest", s.Ingest},
		{"WriteSnapshot", s.WriteSnapshot},
		{"Open", s.Open},
		{"DurableAdd/writers=1", s.DurableAdd(1)},
		{"DurableAdd/writers=8", s.DurableAdd(8)},
	}
}

// memory is what building each component cost.
type memory struct {
	engineHeap, engineStats, mapHeap, emailHeap, roaringHeap uint64
	fairHeap                                                 uint64
	index                                                    personify.IndexStats
	redis                                                    int64
	engineBuild                                              time.Duration
	capPairs                                                 int
	capHeap                                                  uint64
}

// buildAll builds the components the selected benchmarks need, one at a
// time, measuring each one's live heap.
func buildAll(s *bench.Suite, filter *regexp.Regexp) memory {
	var m memory
	want := func(name string) bool { return filter == nil || filter.MatchString(name) }
	fmt.Print("building: engine")
	e, err := s.Engine()
	if err != nil {
		fail(err)
	}
	m.engineHeap, m.engineStats, m.engineBuild = e.HeapBytes, e.Value.Stats().MemoryBytes, e.Took
	m.index = e.Value.IndexStats()
	if want("Allow") {
		fmt.Print(", a frequency cap (one impression for each probed person)")
		c, err := s.Capped()
		if err != nil {
			fail(err)
		}
		m.capPairs, m.capHeap = c.Pairs, c.HeapBytes
	}
	if want("In/linked") || want("Segments/linked") {
		fmt.Print(", links (a device ID for each probed person)")
		if _, err := s.Linked(); err != nil {
			fail(err)
		}
	}
	if want("MapUint64") {
		fmt.Print(", map")
		m.mapHeap = s.MapBaseline().HeapBytes
	}
	if want("SegmentsFair") {
		fmt.Print(", fair Segments baseline")
		m.fairHeap = s.Fair().HeapBytes
	}
	if want("ProbeFloor") {
		fmt.Print(", floor table")
		s.Floor()
	}
	if want("RawEmailMap") {
		fmt.Print(", raw email map")
		m.emailHeap = s.EmailBaseline().HeapBytes
	}
	if want("RoaringLoop") {
		fmt.Print(", roaring of hashed IDs")
		m.roaringHeap = s.RoaringBaseline().HeapBytes
	}
	if want("Redis") {
		fmt.Print(", redis")
		if r, err := s.Redis(); err == nil {
			m.redis = r.UsedMemory
		} else {
			fmt.Printf(" (skipped: %v)", err)
		}
	}
	fmt.Println()
	return m
}

func formatNs(ns float64) string { return chart.FormatValue(ns, "ns") }

// The CI gate runs on the 10M x 1000 workload, where neither the engine's
// directory (about 390 MB) nor the map (about 300 MB) fits any host's
// last-level cache, so that the ratio measures the engine's work rather
// than the host's cache size (at 1M the map fits a 32-48 MB cache and the
// directory does not, and the ratio swung with the host). Its limits apply
// to the median over rounds of each round's ratio to one
// map[uint64]struct{} lookup, and sit above what a correct build measured
// on the project's machines with margin for the spread between hosts and
// runs (medians: by-name In 1.11x-1.27x on the Intel host, 1.26x-1.93x on
// the AMD one; prepared In 0.92x-1.53x; Segments, either form, 2.4x-3.0x and
// 2.8x-5.6x), and below what the regressions the gate exists for cost: a
// second dependent miss per lookup (In one map lookup more, 2.1x-2.7x; the
// prepared form, which does no name hashing, has the tighter limit) or
// Segments losing its one-probe index (hundreds of times the map).
// Prepared Segments must also beat the fair baseline (SegmentsFair, a
// map[uint64][]uint16 with the privacy checks done plainly; 1.7x-2.7x
// slower when measured). A lookup that allocates fails it too.
var gates = []struct {
	name, baseline string
	limit          float64
}{
	{"In", "MapUint64", 2.2},
	{"In/prepared", "MapUint64", 2.0},
	{"Segments", "MapUint64", 7.0},
	{"Segments/prepared", "MapUint64", 7.0},
	{"Segments/prepared", "SegmentsFair", 1.0},
}

// gateOnly is the -only pattern that runs what the gate needs.
const gateOnly = "^(In|In/prepared|Segments|Segments/prepared|SegmentsFair|MapUint64)$"

// gate is the CI check: ratios from this run, never absolute times.
func gate(results map[string]*result) error {
	var failed, passed, detail []string
	for _, g := range gates {
		r, base := results[g.name], results[g.baseline]
		if r == nil || base == nil {
			return fmt.Errorf("-check needs %s and %s (run with -only '%s')", g.name, g.baseline, gateOnly)
		}
		ratio := roundRatio(r, base)
		line := fmt.Sprintf("%s %.2fx %s", g.name, ratio, g.baseline)
		if ratio > g.limit {
			failed = append(failed, fmt.Sprintf("%s is %.2fx %s (gate: %gx)", g.name, ratio, g.baseline, g.limit))
		} else {
			passed = append(passed, line)
		}
		detail = append(detail, fmt.Sprintf("%s/%s by round: %s", g.name, g.baseline, roundRatios(r, base)))
	}
	for _, name := range []string{"In", "In/prepared", "Segments", "Segments/prepared"} {
		if r := results[name]; r.allocs != 0 {
			failed = append(failed, fmt.Sprintf("%s allocates %d times per call (gate: 0)", r.name, r.allocs))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("ratio gate failed: %s (%s)", strings.Join(failed, "; "), strings.Join(detail, "; "))
	}
	fmt.Printf("ratio gate passed: %s, 0 allocs (medians of per-round ratios; %s)\n", strings.Join(passed, ", "), strings.Join(detail, "; "))
	return nil
}

// roundRatio is the median over rounds of a's time over b's time in the
// same round: the benchmarks of a round ran back to back, so their ratio
// is steadier than the ratio of medians when the machine's load drifts.
func roundRatio(a, b *result) float64 {
	n := min(len(a.runs), len(b.runs))
	rs := make([]float64, n)
	for i := range n {
		rs[i] = (float64(a.runs[i].T.Nanoseconds()) / float64(a.runs[i].N)) /
			(float64(b.runs[i].T.Nanoseconds()) / float64(b.runs[i].N))
	}
	return median(rs)
}

// roundRatios lists a's time over b's round by round.
func roundRatios(a, b *result) string {
	var parts []string
	for i := range min(len(a.runs), len(b.runs)) {
		ra := float64(a.runs[i].T.Nanoseconds()) / float64(a.runs[i].N)
		rb := float64(b.runs[i].T.Nanoseconds()) / float64(b.runs[i].N)
		parts = append(parts, fmt.Sprintf("%.2f", ra/rb))
	}
	return strings.Join(parts, " ")
}
