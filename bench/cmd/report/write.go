package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/personify-go/personify/bench"
	"github.com/personify-go/personify/bench/internal/chart"
)

// write writes REPORT.md, latency.svg and bench.txt into dir.
func write(dir string, w *bench.Workload, count int, m memory, r map[string]*result, ts []target, raw string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var svg bytes.Buffer
	if err := chart.SVG(&svg, fmt.Sprintf("Lookup latency, %s x %d workload (median of %d runs)", w.Name, w.Segments, count), "ns", bars(r)); err != nil {
		return err
	}
	files := map[string][]byte{
		"latency.svg": svg.Bytes(),
		"bench.txt":   []byte(machineHeader() + raw),
		"REPORT.md":   []byte(markdown(w, count, m, r, ts)),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// bars are the chart's rows: personify's lookups and the baselines.
func bars(r map[string]*result) []chart.Bar {
	var out []chart.Bar
	for _, b := range []struct{ name, label, group string }{
		{"In", "personify In(p, segment)", "personify"},
		{"Segments", "personify Segments(p, purpose)", "personify"},
		{"Pseudonym/engine", "personify Pseudonym(Email)", "personify"},
		{"MapUint64", "map[uint64]struct{} lookup", "baseline"},
		{"RawEmailMap", "map[email][]segment (keeps PII)", "baseline"},
		{"Redis/SISMEMBER-pipelined=16", "Redis SISMEMBER, pipelined x16", "baseline"},
		{"Redis/SISMEMBER", "Redis SISMEMBER, one connection", "baseline"},
		{"RoaringLoop", "Contains on 1,000 Roaring bitmaps of hashed IDs", "baseline"},
	} {
		if x := r[b.name]; x != nil {
			out = append(out, chart.Bar{Label: b.label, Value: x.nsOp, Group: b.group})
		}
	}
	return out
}

func markdown(w *bench.Workload, count int, m memory, r map[string]*result, ts []target) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmark report: %s x %d\n\n", w.Name, w.Segments)
	fmt.Fprintf(&b, "%d people, %d segments, %d memberships (each person in each segment with probability 1%%), "+
		"probes drawn at random from all people and segments (about 1%% hits). Every figure is the median of %d runs "+
		"in one process, on the same data and probes; ratios compare benchmarks of the same run.\n\n",
		w.People, w.Segments, w.Memberships(), count)
	fmt.Fprintf(&b, "Reproduce: `go run ./bench/cmd/report -workload %s -count %d` (from the repository root).\n\n", w.Name, count)
	b.WriteString("## Machine\n\n```\n" + machineHeader() + "```\n\n")
	b.WriteString("## Performance targets\n\n| path | target | measured | |\n|---|---|---|---|\n")
	for _, t := range ts {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.path, t.want, orDash(t.measured), t.status())
	}
	b.WriteString("\n![latency chart](latency.svg)\n\n## Benchmarks (medians)\n\n| benchmark | time/op | allocs/op | other |\n|---|---:|---:|---|\n")
	for _, bm := range benchmarkOrder(r) {
		x := r[bm]
		fmt.Fprintf(&b, "| %s | %s | %d | %s |\n", bm, formatNs(x.nsOp), x.allocs, strings.TrimSpace(x.extraString()))
	}
	members := float64(w.Memberships())
	b.WriteString("\n## Memory (live heap after building, per membership)\n\n| structure | bytes per membership |\n|---|---:|\n")
	fmt.Fprintf(&b, "| personify engine (directory, index, segment bitmaps, consent) | %.2f |\n", float64(m.engineHeap)/members)
	fmt.Fprintf(&b, "| personify engine, by its own Stats().MemoryBytes | %.2f |\n", float64(m.engineStats)/members)
	for _, row := range []struct {
		name string
		v    float64
	}{
		{"map[uint64]struct{} of the pseudonyms (no segments at all)", float64(m.mapHeap)},
		{"map[email][]segment name (raw emails: keeps PII)", float64(m.emailHeap)},
		{"map[uint64][]uint16 of segment ids per pseudonym, plus consent and suppression maps (the fair Segments baseline)", float64(m.fairHeap)},
		{"1,000 Roaring bitmaps of 32-bit hashed IDs", float64(m.roaringHeap)},
		{"Redis 7 sets of 8-byte pseudonyms (used_memory)", float64(m.redis)},
	} {
		if row.v > 0 {
			fmt.Fprintf(&b, "| %s | %.2f |\n", row.name, row.v/members)
		}
	}
	fmt.Fprintf(&b, "\nEngine build (define 1,000 segments, AddPseudonyms each): %.1fs.\n", m.engineBuild.Seconds())
	x := m.index
	b.WriteString("\n## Second misses (the lookup index's layout, Engine.IndexStats)\n\n")
	b.WriteString("What a lookup of a uniformly drawn person reads beyond one 64-byte cache line, each line one more potential cache miss:\n\n")
	b.WriteString("| measure | value |\n|---|---:|\n")
	fmt.Fprintf(&b, "| table load (keys per slot; %d keys, %d slots) | %.3f |\n", x.Keys, x.Slots, x.Load)
	fmt.Fprintf(&b, "| keys off their home slot's line (the probe reads a second line) | %.1f%% |\n", 100*x.OffHomeLine)
	fmt.Fprintf(&b, "| lines a probe reads, mean | %.3f |\n", x.ProbeLines)
	fmt.Fprintf(&b, "| entries with an overflow record (ids not inline) | %.1f%% |\n", 100*x.Overflow)
	fmt.Fprintf(&b, "| **Segments lookups reading a second line** (off home, or overflow) | **%.1f%%** |\n", 100*x.SegmentsSecondLine)
	fmt.Fprintf(&b, "| **In lookups reading a second line** (off home, or overflow and the filter passes) | **%.1f%%** |\n", 100*x.InSecondLine)
	fmt.Fprintf(&b, "| overflow arena: bytes, of which replaced records (garbage) | %.0f MB, %.0f MB |\n", float64(x.ArenaBytes)/1e6, float64(x.ArenaGarbage)/1e6)
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// benchmarkOrder lists the results in the suite's order.
func benchmarkOrder(r map[string]*result) []string {
	var out []string
	for _, bm := range benchmarks(new(bench.Suite)) { // names only
		if r[bm.name] != nil {
			out = append(out, bm.name)
		}
	}
	return out
}

// machineHeader describes the machine in benchstat's header format.
func machineHeader() string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			mem = strings.Join(strings.Fields(line)[1:], " ")
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("goos: %s\ngoarch: %s\ncpu: %s\ncores: %d\nmemory: %s\nkernel: %s\ngo: %s\ndate: %s\n",
		runtime.GOOS, runtime.GOARCH, cpu, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)),
		runtime.Version(), time.Now().UTC().Format(time.DateOnly))
}
