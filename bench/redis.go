package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/personify-go/personify/bench/internal/redisbench"
)

// RedisBaseline is the Redis peer: a real redis-server on loopback, loaded
// with every segment as a set of 8-byte pseudonyms ("seg0042" -> members),
// and one connection to it.
type RedisBaseline struct {
	Server     *redisbench.Server
	Conn       *redisbench.Conn
	UsedMemory int64 // Redis's own used_memory after the load, minus before
}

// Redis returns the Redis baseline, starting and loading the server once.
// It returns an error wrapping redisbench.ErrNotInstalled where there is no
// redis-server; callers skip then.
func (s *Suite) Redis() (*RedisBaseline, error) {
	s.redisOnce.Do(func() { s.redis, s.redisErr = startRedis(s.W) })
	return s.redis, s.redisErr
}

// Close stops what the suite started (the Redis server).
func (s *Suite) Close() error {
	if s.snapDir != "" {
		os.RemoveAll(s.snapDir)
	}
	var err error
	if s.redisCtr != nil {
		s.redisCtr.Close()
		err = s.redisCtrSrv.Close()
	}
	if s.redis != nil {
		s.redis.Conn.Close()
		err = errors.Join(err, s.redis.Server.Close())
	}
	return err
}

func startRedis(w *Workload) (*RedisBaseline, error) {
	srv, err := redisbench.Start()
	if err != nil {
		return nil, err
	}
	c, err := redisbench.Dial(srv.Addr())
	if err != nil {
		srv.Close()
		return nil, err
	}
	before, err := c.UsedMemory()
	if err != nil {
		return nil, errors.Join(err, srv.Close())
	}
	const batch = 1000
	buf := make([]byte, 8*batch)
	members := make([][]byte, batch)
	for seg, name := range w.SegNames {
		for start := 0; start < len(w.Members[seg]); start += batch {
			chunk := w.Members[seg][start:min(start+batch, len(w.Members[seg]))]
			for i, person := range chunk {
				members[i] = binary.BigEndian.AppendUint64(buf[8*i:8*i], uint64(w.Pseudonyms[person]))
			}
			if _, err := c.SAdd([]byte(name), members[:len(chunk)]); err != nil {
				return nil, errors.Join(fmt.Errorf("bench: loading redis: %w", err), srv.Close())
			}
		}
	}
	after, err := c.UsedMemory()
	if err != nil {
		return nil, errors.Join(err, srv.Close())
	}
	return &RedisBaseline{Server: srv, Conn: c, UsedMemory: after - before}, nil
}

func (s *Suite) mustRedis(b *testing.B) *RedisBaseline {
	r, err := s.Redis()
	if errors.Is(err, redisbench.ErrNotInstalled) {
		b.Skipf("Redis baseline skipped: %v", err)
	}
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// RedisSIsMember measures SISMEMBER over one loopback connection, one
// round trip per probe: the In question asked of a Redis set.
func (s *Suite) RedisSIsMember(b *testing.B) {
	r := s.mustRedis(b)
	keys, members := s.redisProbes()
	b.ReportAllocs()
	b.ResetTimer()
	hits := 0
	for i := range b.N {
		ok, err := r.Conn.SIsMember(keys[i&probeMask], members[i&probeMask])
		if err != nil {
			b.Fatal(err)
		}
		if ok {
			hits++
		}
	}
	sink.Add(int64(hits))
}

// RedisPipelined measures SISMEMBER pipelined 16 deep on one connection;
// ns/op is per probe.
func (s *Suite) RedisPipelined(b *testing.B) {
	r := s.mustRedis(b)
	keys, members := s.redisProbes()
	const depth = 16
	out := make([]bool, depth)
	b.ReportAllocs()
	b.ResetTimer()
	hits := 0
	// b.N probes in all, in pipelines of depth; the last may be shorter, so
	// that ns/op is per probe.
	for i := 0; i < b.N; i += depth {
		j := i & probeMask &^ (depth - 1)
		n := min(depth, b.N-i)
		out := out[:n]
		if err := r.Conn.SIsMemberPipelined(keys[j:j+n], members[j:j+n], out); err != nil {
			b.Fatal(err)
		}
		for _, ok := range out {
			if ok {
				hits++
			}
		}
	}
	sink.Add(int64(hits))
}

// redisProbes returns the probes as Redis keys and members, built once.
func (s *Suite) redisProbes() (keys, members [][]byte) {
	s.redisProbesOnce.Do(func() {
		s.redisKeys = make([][]byte, NumProbes)
		s.redisMembers = make([][]byte, NumProbes)
		names := make([][]byte, len(s.W.SegNames))
		for i, n := range s.W.SegNames {
			names[i] = []byte(n)
		}
		buf := make([]byte, 8*NumProbes)
		for i, pr := range s.W.Probes {
			s.redisKeys[i] = names[pr.Segment]
			s.redisMembers[i] = binary.BigEndian.AppendUint64(buf[8*i:8*i], uint64(pr.P))
		}
	})
	return s.redisKeys, s.redisMembers
}
