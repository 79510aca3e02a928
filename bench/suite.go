package bench

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/bench/internal/redisbench"
	"github.com/personify-go/personify/personify"
)

// Suite holds one workload and what the benchmarks build from it, each
// built once, on first use, and shared by every benchmark of the process:
// same data, same probes.
type Suite struct {
	W *Workload

	engineOnce, mapOnce, roaringOnce, emailOnce, floorOnce sync.Once
	engine                                                 Built[*personify.Engine]
	engineErr                                              error
	mapU64                                                 Built[map[uint64]struct{}]
	roaringHashed                                          Built[[]*roaring.Bitmap]
	rawEmail                                               Built[map[string][]string]
	floor                                                  Built[*FloorTable]

	redisOnce, redisProbesOnce sync.Once
	redis                      *RedisBaseline
	redisErr                   error
	redisKeys, redisMembers    [][]byte

	writerOnce sync.Once
	writerErr  error

	capOnce, redisCapOnce, redisCtrOnce sync.Once
	redisCtrSrv                         *redisbench.Server
	redisCtr                            *redisbench.Conn
	redisCtrErr                         error
	capMem                              CapMemory
	capErr                              error
	redisCap                            [][]byte

	fairOnce sync.Once
	fair     Built[*FairBaseline]

	preparedOnce sync.Once
	preparedSegs []*personify.PreparedSegment // by segment index
	preparedPu   *personify.PreparedPurpose
	preparedErr  error

	linkOnce sync.Once
	linked   []anonymize.Pseudonym
	linkErr  error

	snapOnce sync.Once
	snapDir  string
	snapSize int64
	snapErr  error
}

// NewSuite returns a suite over w.
func NewSuite(w *Workload) *Suite { return &Suite{W: w} }

// Engine returns the engine loaded with the workload, building it once.
func (s *Suite) Engine() (Built[*personify.Engine], error) {
	s.engineOnce.Do(func() { s.engine, s.engineErr = BuildEngine(s.W) })
	return s.engine, s.engineErr
}

// MapBaseline returns the map baseline.
func (s *Suite) MapBaseline() Built[map[uint64]struct{}] {
	s.mapOnce.Do(func() { s.mapU64 = BuildMapUint64(s.W) })
	return s.mapU64
}

// RoaringBaseline returns the Roaring-of-hashed-IDs baseline.
func (s *Suite) RoaringBaseline() Built[[]*roaring.Bitmap] {
	s.roaringOnce.Do(func() { s.roaringHashed = BuildRoaringHashed(s.W) })
	return s.roaringHashed
}

// EmailBaseline returns the raw-email map baseline.
func (s *Suite) EmailBaseline() Built[map[string][]string] {
	s.emailOnce.Do(func() { s.rawEmail = BuildRawEmailMap(s.W) })
	return s.rawEmail
}

func (s *Suite) mustEngine(b *testing.B) *personify.Engine {
	e, err := s.Engine()
	if err != nil {
		b.Fatal(err)
	}
	return e.Value
}

var sink atomic.Int64 // keeps results alive

const probeMask = NumProbes - 1

// In measures Engine.In(p, segment) on random probes (about 1% hits).
func (s *Suite) In(b *testing.B) {
	e, w := s.mustEngine(b), s.W
	b.ReportAllocs()
	b.ResetTimer()
	hits := 0
	for i := range b.N {
		pr := &w.Probes[i&probeMask]
		if e.In(pr.P, w.SegNames[pr.Segment]) {
			hits++
		}
	}
	sink.Add(int64(hits))
}

// Prepared returns the engine's prepared segments (by segment index) and
// purpose, preparing them once.
func (s *Suite) Prepared() ([]*personify.PreparedSegment, *personify.PreparedPurpose, error) {
	built, err := s.Engine()
	if err != nil {
		return nil, nil, err
	}
	e := built.Value
	s.preparedOnce.Do(func() {
		s.preparedSegs = make([]*personify.PreparedSegment, len(s.W.SegNames))
		for i, name := range s.W.SegNames {
			if s.preparedSegs[i], s.preparedErr = e.PrepareSegment(name); s.preparedErr != nil {
				return
			}
		}
		s.preparedPu, s.preparedErr = e.PreparePurpose(Purpose)
	})
	return s.preparedSegs, s.preparedPu, s.preparedErr
}

func (s *Suite) prepared(b *testing.B) ([]*personify.PreparedSegment, *personify.PreparedPurpose) {
	segs, pu, err := s.Prepared()
	if err != nil {
		b.Fatal(err)
	}
	return segs, pu
}

// InPrepared measures PreparedSegment.In(p) on In's probes: the segment
// resolved once, as a request path holds it.
func (s *Suite) InPrepared(b *testing.B) {
	segs, _ := s.prepared(b)
	w := s.W
	b.ReportAllocs()
	b.ResetTimer()
	hits := 0
	for i := range b.N {
		pr := &w.Probes[i&probeMask]
		if segs[pr.Segment].In(pr.P) {
			hits++
		}
	}
	sink.Add(int64(hits))
}

// SegmentsPrepared measures PreparedPurpose.Segments(dst, p) on
// Segments' probes.
func (s *Suite) SegmentsPrepared(b *testing.B) {
	_, pu := s.prepared(b)
	w := s.W
	dst := make([]string, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := range b.N {
		dst = pu.Segments(dst[:0], w.Probes[i&probeMask].P)
		n += len(dst)
	}
	sink.Add(int64(n))
}

// Segments measures Engine.Segments(dst, p, purpose): which of the 1,000
// segments may be used for the person.
func (s *Suite) Segments(b *testing.B) {
	e, w := s.mustEngine(b), s.W
	dst := make([]string, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := range b.N {
		dst = e.Segments(dst[:0], w.Probes[i&probeMask].P, Purpose)
		n += len(dst)
	}
	sink.Add(int64(n))
}

// MapUint64 measures one lookup in a map[uint64]struct{} of every
// pseudonym: the yardstick of the targets.
func (s *Suite) MapUint64(b *testing.B) {
	m, w := s.MapBaseline().Value, s.W
	b.ReportAllocs()
	b.ResetTimer()
	hits := 0
	for i := range b.N {
		if _, ok := m[uint64(w.Probes[i&probeMask].P)]; ok {
			hits++
		}
	}
	sink.Add(int64(hits))
}

// RoaringLoop measures "which segments is this person in" the naive way:
// Contains of the person's 32-bit hash on each of the 1,000 bitmaps.
func (s *Suite) RoaringLoop(b *testing.B) {
	bms, w := s.RoaringBaseline().Value, s.W
	dst := make([]string, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := range b.N {
		h := uint32(w.Probes[i&probeMask].P)
		dst = dst[:0]
		for seg, bm := range bms {
			if bm.Contains(h) {
				dst = append(dst, w.SegNames[seg])
			}
		}
		n += len(dst)
	}
	sink.Add(int64(n))
}

// RawEmailMap measures the naive approach that keeps PII: the person's
// segment names from a map keyed by their email.
func (s *Suite) RawEmailMap(b *testing.B) {
	m, w := s.EmailBaseline().Value, s.W
	dst := make([]string, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := range b.N {
		dst = append(dst[:0], m[w.Probes[i&probeMask].Email]...)
		n += len(dst)
	}
	sink.Add(int64(n))
}

// Pseudonym measures Engine.Pseudonym on the workload's emails:
// normalization and the default hasher.
func (s *Suite) Pseudonym(b *testing.B) {
	e, w := s.mustEngine(b), s.W
	b.ReportAllocs()
	b.ResetTimer()
	var x anonymize.Pseudonym
	for i := range b.N {
		p, err := e.Pseudonym(anonymize.Email(w.Probes[i&probeMask].Email))
		if err != nil {
			b.Fatal(err)
		}
		x ^= p
	}
	sink.Add(int64(x))
}

// Hasher returns a benchmark of one hasher on the workload's emails.
func (s *Suite) Hasher(newHasher func(anonymize.Key) anonymize.Hasher) func(*testing.B) {
	return func(b *testing.B) {
		h, w := newHasher(s.W.Key), s.W
		b.ReportAllocs()
		b.ResetTimer()
		var x anonymize.Pseudonym
		for i := range b.N {
			p, err := h.Pseudonym(anonymize.Email(w.Probes[i&probeMask].Email))
			if err != nil {
				b.Fatal(err)
			}
			x ^= p
		}
		sink.Add(int64(x))
	}
}

// WriterRate is the concurrent writer's rate in the parallel benchmarks:
// 100K memberships a second, in batches of 1,000 every 10 ms.
const WriterRate = 100_000

// startWriter changes WriterRate memberships a second until stopped, and
// returns how many it changed. It adds a batch of the probes' people to a
// segment of its own purpose, then removes the same batch, and so on: the
// entries of people that lookups probe are rewritten under them, while the
// engine the other benchmarks measure keeps its size and its answers (no
// probe asks about the writer's segment or purpose).
func (s *Suite) startWriter(e *personify.Engine) (stop func() int) {
	w := s.W
	s.writerOnce.Do(func() {
		s.writerErr = e.DefinePurpose(personify.Purpose{Name: writerPurpose, Model: personify.OptOut})
		if s.writerErr == nil {
			s.writerErr = e.Define(personify.Segment{Name: writerSegment, Purpose: writerPurpose})
		}
	})
	if s.writerErr != nil {
		panic(s.writerErr)
	}
	done := make(chan struct{})
	var changed atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		batch := make([]anonymize.Pseudonym, WriterRate/100)
		for k := 0; ; k++ {
			select {
			case <-done:
				if k%2 == 1 { // leave the engine as it was
					_ = e.RemovePseudonyms(writerSegment, batch)
				}
				return
			case <-tick.C:
			}
			var err error
			if k%2 == 0 {
				for i := range batch {
					batch[i] = w.Probes[(k*len(batch)+i*7919)&probeMask].P
				}
				err = e.AddPseudonyms(writerSegment, batch)
			} else {
				err = e.RemovePseudonyms(writerSegment, batch)
			}
			if err != nil {
				panic(err)
			}
			changed.Add(int64(len(batch)))
		}
	})
	return func() int {
		close(done)
		wg.Wait()
		return int(changed.Load())
	}
}

// The concurrent writer's segment and purpose, outside the workload's.
const (
	writerSegment = "bench-writer"
	writerPurpose = "bench-writer"
)

// InReaders measures In with the given number of reader goroutines, with
// or without the concurrent writer; ns/op is wall time per lookup across
// all readers, so its inverse is the throughput. GOMAXPROCS is left as
// it is: on a 2-core machine the writer and the readers share 2 cores.
func (s *Suite) InReaders(readers int, writer bool) func(*testing.B) {
	return func(b *testing.B) {
		e, w := s.mustEngine(b), s.W
		b.ReportAllocs()
		var stop func() int
		if writer {
			stop = s.startWriter(e)
		}
		b.ResetTimer()
		var wg sync.WaitGroup
		for r := range readers {
			lo, hi := b.N*r/readers, b.N*(r+1)/readers
			wg.Go(func() {
				hits := 0
				for i := lo; i < hi; i++ {
					pr := &w.Probes[(i*(r+1))&probeMask]
					if e.In(pr.P, w.SegNames[pr.Segment]) {
						hits++
					}
				}
				sink.Add(int64(hits))
			})
		}
		wg.Wait()
		b.StopTimer()
		if stop != nil {
			b.ReportMetric(float64(stop())/b.Elapsed().Seconds(), "writes/s")
		}
	}
}

// InParallel is In under b.RunParallel (GOMAXPROCS goroutines), with or
// without the concurrent writer.
func (s *Suite) InParallel(writer bool) func(*testing.B) {
	return func(b *testing.B) {
		e, w := s.mustEngine(b), s.W
		b.ReportAllocs()
		var stop func() int
		if writer {
			stop = s.startWriter(e)
		}
		var next atomic.Uint64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i, hits := int(next.Add(1)*104729), 0
			for pb.Next() {
				pr := &w.Probes[i&probeMask]
				if e.In(pr.P, w.SegNames[pr.Segment]) {
					hits++
				}
				i++
			}
			sink.Add(int64(hits))
		})
		b.StopTimer()
		if stop != nil {
			b.ReportMetric(float64(stop())/b.Elapsed().Seconds(), "writes/s")
		}
	}
}

// Ingest measures bulk loading: each iteration defines the segments in a
// fresh engine and loads the whole workload with AddPseudonyms, on one
// core (GOMAXPROCS 1), and reports memberships per second.
func (s *Suite) Ingest(b *testing.B) {
	w := s.W
	w.PseudonymsOf(0) // the input, built once per workload, outside the timing
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		e, err := NewEngine(w)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		b.StartTimer()
		if err := Ingest(e, w); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		e.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(w.Memberships())*float64(b.N)/b.Elapsed().Seconds(), "memberships/s")
}
