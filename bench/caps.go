package bench

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/bench/internal/redisbench"
	"github.com/personify-go/personify/personify"
)

// CapName is the frequency cap the cap benchmarks use: 63 impressions a
// rolling day, of the workload's purpose.
const CapName = "freq"

// capWindow is the cap's window, and the Redis baseline's EXPIRE.
const capWindow = 24 * time.Hour

// CapMemory is what counting cost: the people counted once each (every
// person the probes name: about 10% of the 10M workload's people) and the
// growth of the live heap it took.
type CapMemory struct {
	Pairs     int
	HeapBytes uint64
}

// Capped defines the cap on the suite's engine, once, and counts one
// impression for every person the probes name, measuring the heap that
// takes: the memory per counted (person, cap).
func (s *Suite) Capped() (CapMemory, error) {
	s.capOnce.Do(func() {
		e, err := s.Engine()
		if err != nil {
			s.capErr = err
			return
		}
		if s.capErr = e.Value.DefineCap(personify.Cap{Name: CapName, Purpose: Purpose, Max: personify.MaxCapCount,
			Window: personify.Window{Kind: personify.Rolling, Length: capWindow}}); s.capErr != nil {
			return
		}
		firsts := s.probedPeople() // built apart, so that its scratch is garbage before the heap is measured
		b, _ := measure(func() (int, error) {
			n := 0
			for _, p := range firsts {
				if e.Value.Record(p, CapName) {
					n++
				}
			}
			return n, nil
		})
		runtime.KeepAlive(firsts) // live through both measurements: the growth is the counters'
		s.capMem = CapMemory{Pairs: b.Value, HeapBytes: b.HeapBytes}
	})
	return s.capMem, s.capErr
}

// probedPeople is one pseudonym of each person the probes name.
func (s *Suite) probedPeople() []anonymize.Pseudonym {
	seen := make([]bool, s.W.People)
	var firsts []anonymize.Pseudonym
	for _, pr := range s.W.Probes {
		if !seen[pr.Person] {
			seen[pr.Person] = true
			firsts = append(firsts, pr.P)
		}
	}
	return firsts
}

// Allow measures Engine.Allow(p, cap) on the probes: the counting call of
// a frequency cap on the request path.
func (s *Suite) Allow(b *testing.B) {
	e, w := s.mustEngine(b), s.W
	if _, err := s.Capped(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := range b.N {
		if e.Allow(w.Probes[i&probeMask].P, CapName) {
			n++
		}
	}
	sink.Add(int64(n))
}

// redisCapKeys are the Redis baseline's counter keys, one per probe:
// "cap:<pseudonym>:freq", the key shape server-side teams use.
func (s *Suite) redisCapKeys() [][]byte {
	s.redisCapOnce.Do(func() {
		s.redisCap = make([][]byte, NumProbes)
		for i, pr := range s.W.Probes {
			s.redisCap[i] = []byte("cap:" + pr.P.String() + ":" + CapName)
		}
	})
	return s.redisCap
}

// redisCounters is a Redis server of its own for the counter baselines:
// empty, so that measuring them does not need the segments loaded.
func (s *Suite) redisCounters(b *testing.B) *redisbench.Conn {
	s.redisCtrOnce.Do(func() {
		srv, err := redisbench.Start()
		if err != nil {
			s.redisCtrErr = err
			return
		}
		c, err := redisbench.Dial(srv.Addr())
		if err != nil {
			s.redisCtrErr = errors.Join(err, srv.Close())
			return
		}
		s.redisCtrSrv, s.redisCtr = srv, c
	})
	if errors.Is(s.redisCtrErr, redisbench.ErrNotInstalled) {
		b.Skipf("Redis baseline skipped: %v", s.redisCtrErr)
	}
	if s.redisCtrErr != nil {
		b.Fatal(s.redisCtrErr)
	}
	return s.redisCtr
}

// RedisIncrExpire measures the usual server-side frequency counter, INCR
// then EXPIRE on one connection (one round trip for the pair).
func (s *Suite) RedisIncrExpire(b *testing.B) {
	conn := s.redisCounters(b)
	keys := s.redisCapKeys()
	b.ReportAllocs()
	b.ResetTimer()
	var n int64
	for i := range b.N {
		c, err := conn.IncrExpire(keys[i&probeMask], int(capWindow/time.Second))
		if err != nil {
			b.Fatal(err)
		}
		n += c
	}
	sink.Add(n)
}

// RedisIncrExpirePipelined is RedisIncrExpire pipelined 16 pairs deep;
// ns/op is per pair.
func (s *Suite) RedisIncrExpirePipelined(b *testing.B) {
	conn := s.redisCounters(b)
	keys := s.redisCapKeys()
	const depth = 16
	out := make([]int64, depth)
	b.ReportAllocs()
	b.ResetTimer()
	var n int64
	for i := 0; i < b.N; i += depth {
		j := i & probeMask &^ (depth - 1)
		k := min(depth, b.N-i)
		if err := conn.IncrExpirePipelined(keys[j:j+k], int(capWindow/time.Second), out[:k]); err != nil {
			b.Fatal(err)
		}
		n += out[0]
	}
	sink.Add(n)
}
