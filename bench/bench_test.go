package bench

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/personify-go/personify/anonymize"
)

var workloadFlag = flag.String("workload", "", `workload: "1M" (default), "10M", or "tiny" (default with -short)`)

var (
	suiteOnce sync.Once
	suite     *Suite
	suiteErr  error
)

// theSuite returns the process's suite, building the workload once.
func theSuite(b *testing.B) *Suite {
	suiteOnce.Do(func() {
		name := *workloadFlag
		if name == "" {
			name = "1M"
			if testing.Short() {
				name = "tiny"
			}
		}
		var w *Workload
		w, suiteErr = Load(name)
		suite = NewSuite(w)
	})
	if suiteErr != nil {
		b.Fatal(suiteErr)
	}
	return suite
}

func BenchmarkIn(b *testing.B) { theSuite(b).In(b) }

// BenchmarkInLinked and BenchmarkSegmentsLinked are the report's
// In/linked and Segments/linked.
func BenchmarkInLinked(b *testing.B)       { theSuite(b).InLinked(b) }
func BenchmarkSegmentsLinked(b *testing.B) { theSuite(b).SegmentsLinked(b) }
func BenchmarkAllow(b *testing.B)          { theSuite(b).Allow(b) }
func BenchmarkSegments(b *testing.B)       { theSuite(b).Segments(b) }
func BenchmarkInPrepared(b *testing.B)     { theSuite(b).InPrepared(b) }
func BenchmarkSegmentsPrepared(b *testing.B) {
	theSuite(b).SegmentsPrepared(b)
}
func BenchmarkSegmentsFair(b *testing.B) { theSuite(b).SegmentsFair(b) }
func BenchmarkMapUint64(b *testing.B)    { theSuite(b).MapUint64(b) }
func BenchmarkRoaringLoop(b *testing.B)  { theSuite(b).RoaringLoop(b) }
func BenchmarkRawEmailMap(b *testing.B)  { theSuite(b).RawEmailMap(b) }
func BenchmarkIngest(b *testing.B)       { theSuite(b).Ingest(b) }

func BenchmarkWriteSnapshot(b *testing.B) { theSuite(b).WriteSnapshot(b) }
func BenchmarkOpen(b *testing.B)          { theSuite(b).Open(b) }

func BenchmarkDurableAdd(b *testing.B) {
	s := theSuite(b)
	for _, w := range []int{1, 8} {
		b.Run(fmt.Sprintf("writers=%d", w), s.DurableAdd(w))
	}
}

func BenchmarkPseudonym(b *testing.B) {
	s := theSuite(b)
	b.Run("engine", s.Pseudonym)
	for _, h := range []struct {
		name string
		new  func(anonymize.Key) anonymize.Hasher
	}{{"siphash", anonymize.SipHash}, {"xxhash", anonymize.XXHash}, {"hmac-sha256", anonymize.HMACSHA256}} {
		b.Run("hasher="+h.name, s.Hasher(h.new))
	}
}

func BenchmarkRedis(b *testing.B) {
	s := theSuite(b)
	b.Run("SISMEMBER", s.RedisSIsMember)
	b.Run("SISMEMBER-pipelined=16", s.RedisPipelined)
	b.Run("INCR+EXPIRE", s.RedisIncrExpire)
	b.Run("INCR+EXPIRE-pipelined=16", s.RedisIncrExpirePipelined)
}

// TestMain stops the Redis servers and the sidecar the benchmarks may
// have started.
func TestMain(m *testing.M) {
	code := m.Run()
	if suite != nil {
		suite.Close()
	}
	if err := closeSidecar(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func BenchmarkInParallel(b *testing.B) {
	s := theSuite(b)
	b.Run("writer=off", s.InParallel(false))
	b.Run("writer=on", s.InParallel(true))
}

func BenchmarkInReaders(b *testing.B) {
	s := theSuite(b)
	for _, writer := range []bool{false, true} {
		for _, readers := range []int{1, 2} {
			b.Run(fmt.Sprintf("readers=%d/writer=%v", readers, writer), s.InReaders(readers, writer))
		}
	}
}
