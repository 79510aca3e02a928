package main

import (
	"fmt"
	"io"
	"math"

	"github.com/personify-go/personify/bench"
)

// target is one of the project's performance targets and what this run measured.
type target struct {
	path, want, measured string
	met                  bool
	known                bool // false: a benchmark it needs did not run
}

// targets evaluates the table of performance targets on this run. Ratios compare
// benchmarks of the same run.
func targets(w *bench.Workload, m memory, r map[string]*result) []target {
	ns := func(name string) float64 {
		if x := r[name]; x != nil {
			return x.nsOp
		}
		return math.NaN()
	}
	allocs := func(name string) int64 {
		if x := r[name]; x != nil {
			return x.allocs
		}
		return -1
	}
	has := func(names ...string) bool {
		for _, n := range names {
			if r[n] == nil {
				return false
			}
		}
		return true
	}
	memberships := float64(w.Memberships())
	var ts []target
	add := func(t target) { ts = append(ts, t) }

	in, seg, mp := ns("In"), ns("Segments"), ns("MapUint64")
	inP, segP, fair := ns("In/prepared"), ns("Segments/prepared"), ns("SegmentsFair")
	add(target{"prepared In: PreparedSegment.In(p)", "<= 1.2x map lookup, 0 allocs",
		fmt.Sprintf("%.2fx (%s vs %s), %d allocs", inP/mp, formatNs(inP), formatNs(mp), allocs("In/prepared")),
		inP/mp <= 1.2 && allocs("In/prepared") == 0, has("In/prepared", "MapUint64")})
	add(target{"by-name In(p, seg)", "<= 1.5x map lookup, 0 allocs",
		fmt.Sprintf("%.2fx (%s vs %s), %d allocs", in/mp, formatNs(in), formatNs(mp), allocs("In")),
		in/mp <= 1.5 && allocs("In") == 0, has("In", "MapUint64")})
	add(target{"prepared Segments: PreparedPurpose.Segments(dst, p), 1,000 segments", "<= 3x map lookup, faster than the fair baseline, 0 allocs",
		fmt.Sprintf("%.2fx map (%s); the fair baseline %.2fx slower (%s); %d allocs", segP/mp, formatNs(segP), fair/segP, formatNs(fair), allocs("Segments/prepared")),
		segP/mp <= 3 && fair > segP && allocs("Segments/prepared") == 0, has("Segments/prepared", "MapUint64", "SegmentsFair")})
	loop := ns("RoaringLoop")
	add(target{"by-name Segments(dst, p, purpose), 1,000 segments", "<= 3x map lookup; faster than the fair baseline; >= 500x faster than looping roaring.Contains; 0 allocs",
		fmt.Sprintf("%.2fx map (%s); the fair baseline %.2fx slower (%s); %.0fx faster than the loop (%s); %d allocs",
			seg/mp, formatNs(seg), fair/seg, formatNs(fair), loop/seg, formatNs(loop), allocs("Segments")),
		seg/mp <= 3 && fair > seg && loop/seg >= 500 && allocs("Segments") == 0, has("Segments", "MapUint64", "RoaringLoop", "SegmentsFair")})
	inL, segL := ns("In/linked"), ns("Segments/linked")
	add(target{"In and Segments by a linked pseudonym", "<= 1.2x by the person's own, 0 allocs",
		fmt.Sprintf("In %.2fx (%s), Segments %.2fx (%s); %d and %d allocs", inL/in, formatNs(inL), segL/seg, formatNs(segL),
			allocs("In/linked"), allocs("Segments/linked")),
		inL/in <= 1.2 && segL/seg <= 1.2 && allocs("In/linked") == 0 && allocs("Segments/linked") == 0,
		has("In", "In/linked", "Segments", "Segments/linked")})
	al, ri, rp := ns("Allow"), ns("Redis/INCR+EXPIRE"), ns("Redis/INCR+EXPIRE-pipelined=16")
	perPair := float64(m.capHeap) / float64(max(m.capPairs, 1))
	add(target{"frequency cap Allow(p, cap), counting", "<= 2x map lookup, 0 allocs; faster than Redis INCR+EXPIRE",
		fmt.Sprintf("%.2fx map (%s), %d allocs; Redis INCR+EXPIRE %.0fx slower (%s), pipelined %.0fx (%s); %.1f B per counted (person, cap) over %d",
			al/mp, formatNs(al), allocs("Allow"), ri/al, formatNs(ri), rp/al, formatNs(rp), perPair, m.capPairs),
		al/mp <= 2 && allocs("Allow") == 0 && ri > al && rp > al, has("Allow", "MapUint64", "Redis/INCR+EXPIRE", "Redis/INCR+EXPIRE-pipelined=16")})
	ps := ns("Pseudonym/engine")
	add(target{"Pseudonym(Email), default hasher", "<= 60 ns including normalization, 0 allocs",
		fmt.Sprintf("%s, %d allocs", formatNs(ps), allocs("Pseudonym/engine")), ps <= 60 && allocs("Pseudonym/engine") == 0,
		has("Pseudonym/engine")})
	perM := float64(m.engineHeap) / memberships
	add(target{"memory, whole engine", "<= 6 bytes per membership (raw email map > 100)",
		fmt.Sprintf("%.2f B/membership (live heap; Stats says %.2f); raw email map %.1f", perM,
			float64(m.engineStats)/memberships, float64(m.emailHeap)/memberships), perM <= 6, m.engineHeap > 0})
	if x := r["Ingest"]; x != nil {
		rate := x.extra["memberships/s"]
		add(target{"bulk ingest (AddPseudonyms, any order), one core", ">= 10M memberships/s",
			fmt.Sprintf("%.1fM memberships/s", rate/1e6), rate >= 10e6, true})
	} else {
		add(target{path: "bulk ingest (AddPseudonyms, any order), one core", want: ">= 10M memberships/s"})
	}
	wr, op := r["WriteSnapshot"], r["Open"]
	if wr != nil && op != nil {
		wmb, omb := wr.extra["MB/s"], op.extra["MB/s"]
		add(target{"snapshot write / open", ">= 1 GB/s; open does not re-insert value by value",
			fmt.Sprintf("write %.0f MB/s (%s), open %.0f MB/s (%s) of a %.0f MB snapshot, index loaded as stored",
				wmb, formatNs(wr.nsOp), omb, formatNs(op.nsOp), float64(op.runs[0].Bytes)/1e6), wmb >= 1000 && omb >= 1000, true})
	} else {
		add(target{path: "snapshot write / open", want: ">= 1 GB/s; open does not re-insert value by value"})
	}
	one, two := ns("InReaders/readers=1/writer=true"), ns("InReaders/readers=2/writer=true")
	// The writer's rate counts too: readers that starve it are not a pass.
	rate := math.Inf(1)
	for _, name := range []string{"InReaders/readers=1/writer=true", "InReaders/readers=2/writer=true"} {
		if x := r[name]; x != nil {
			rate = min(rate, x.extra["writes/s"])
		}
	}
	add(target{"concurrent readers", "2 readers >= 1.8x one, with a writer adding 100K memberships/s",
		fmt.Sprintf("%.2fx (%s and %s per lookup, wall time), the writer at %.0fK memberships/s", one/two, formatNs(one), formatNs(two), rate/1e3),
		one/two >= 1.8 && rate >= 0.95*bench.WriterRate,
		has("InReaders/readers=1/writer=true", "InReaders/readers=2/writer=true")})
	single, piped := ns("Redis/SISMEMBER"), ns("Redis/SISMEMBER-pipelined=16")
	redisMem := float64(m.redis) / memberships
	add(target{"against Redis SISMEMBER (loopback)", ">= 500x one connection, >= 20x pipelined, <= 1/10 of its memory",
		fmt.Sprintf("%.0fx one connection (%s), %.0fx pipelined (%s), memory %.2f vs %.1f B/membership (1/%.0f)",
			single/in, formatNs(single), piped/in, formatNs(piped), perM, redisMem, redisMem/perM),
		single/in >= 500 && piped/in >= 20 && redisMem/perM >= 10, has("In", "Redis/SISMEMBER", "Redis/SISMEMBER-pipelined=16") && m.redis > 0})
	return ts
}

func (t target) status() string {
	switch {
	case !t.known:
		return "not measured"
	case t.met:
		return "met"
	}
	return "NOT MET"
}

func printTargets(w io.Writer, ts []target) {
	fmt.Fprintln(w, "Performance targets:")
	for _, t := range ts {
		fmt.Fprintf(w, "  %-13s %s: %s\n                target %s\n", "["+t.status()+"]", t.path, t.measured, t.want)
	}
}
