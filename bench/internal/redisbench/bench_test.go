package redisbench

import (
	"fmt"
	"testing"
)

// BenchmarkSIsMember measures one SISMEMBER round trip over loopback, alone
// and in pipelined batches; ns/probe divides a batch's time by its size.
func BenchmarkSIsMember(b *testing.B) {
	c := testConn(b)
	key := testKey(b, "set")
	for i := 0; i < 10_000; i += 1000 {
		if _, err := c.SAdd(key, members("m", i, 1000)); err != nil {
			b.Fatal(err)
		}
	}
	probes := members("m", 5000, 64) // half hit, half miss
	for i := 1; i < len(probes); i += 2 {
		probes[i] = fmt.Appendf(nil, "x%d", i)
	}

	b.Run("mode=single", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := c.SIsMember(key, probes[i%len(probes)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	for _, depth := range []int{16} {
		b.Run(fmt.Sprintf("mode=pipelined/depth=%d", depth), func(b *testing.B) {
			keys, out := make([][]byte, depth), make([]bool, depth)
			for i := range keys {
				keys[i] = key
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := c.SIsMemberPipelined(keys, probes[:depth], out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*depth), "ns/probe")
		})
	}
}
