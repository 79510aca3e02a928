package redisbench

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSAddSIsMember(t *testing.T) {
	c := testConn(t)
	key := testKey(t, "set")

	n, err := c.SAdd(key, members("m", 0, 3))
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	n, err = c.SAdd(key, members("m", 2, 2)) // m2 is already there, m3 is new
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	for _, tc := range []struct {
		name   string
		key    []byte
		member string
		want   bool
	}{
		{"first", key, "m0", true},
		{"added-later", key, "m3", true},
		{"absent", key, "m4", false},
		{"empty-member", key, "", false},
		{"missing-key", testKey(t, "missing"), "m0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.SIsMember(tc.key, []byte(tc.member))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestSAddBinaryMembers(t *testing.T) {
	c := testConn(t)
	key := testKey(t, "set")
	odd := [][]byte{[]byte("a\r\nb"), {0, 0xff, '$', '*'}, []byte("-ERR not an error")}
	n, err := c.SAdd(key, odd)
	require.NoError(t, err)
	assert.Equal(t, len(odd), n)
	for _, m := range odd {
		ok, err := c.SIsMember(key, m)
		require.NoError(t, err)
		assert.True(t, ok, "%q", m)
	}
}

func TestSIsMemberPipelined(t *testing.T) {
	c := testConn(t)
	keys := [][]byte{testKey(t, "a"), testKey(t, "b"), testKey(t, "c"), testKey(t, "missing")}
	for i, k := range keys[:3] {
		_, err := c.SAdd(k, members("m", i*200, 500)) // overlapping ranges
		require.NoError(t, err)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	const probes = 1000
	pk, pm := make([][]byte, probes), make([][]byte, probes)
	want := make([]bool, probes)
	for i := range probes {
		pk[i] = keys[rng.IntN(len(keys))]
		pm[i] = members("m", rng.IntN(1200), 1)[0]
		ok, err := c.SIsMember(pk[i], pm[i])
		require.NoError(t, err)
		want[i] = ok
	}
	got := make([]bool, probes)
	require.NoError(t, c.SIsMemberPipelined(pk, pm, got))
	assert.Equal(t, want, got)
	assert.Contains(t, got, true)
	assert.Contains(t, got, false)

	require.NoError(t, c.SIsMemberPipelined(nil, nil, nil), "an empty batch is a no-op")
	assert.Panics(t, func() { c.SIsMemberPipelined(pk, pm[:1], got) })
}

func TestErrorReply(t *testing.T) {
	c := testConn(t)
	str, set := testKey(t, "string"), testKey(t, "set")
	require.Equal(t, "+OK\r\n", do(t, c, "SET", string(str), "v"))
	_, err := c.SAdd(set, members("m", 0, 2))
	require.NoError(t, err)

	t.Run("single", func(t *testing.T) {
		_, err := c.SIsMember(str, []byte("v"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "WRONGTYPE")
		assert.Contains(t, err.Error(), "redisbench: SISMEMBER: ")
	})
	t.Run("pipelined", func(t *testing.T) {
		out := make([]bool, 3)
		err := c.SIsMemberPipelined([][]byte{set, str, set}, members("m", 0, 3), out)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "WRONGTYPE")
		assert.Equal(t, []bool{true, false, false}, out, "replies after the error are still read")
	})
	t.Run("sadd-no-members", func(t *testing.T) {
		_, err := c.SAdd(set, nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "wrong number of arguments")
	})
	// An error reply leaves the stream in sync.
	require.NoError(t, c.Ping())
	ok, err := c.SIsMember(set, []byte("m1"))
	require.NoError(t, err)
	assert.True(t, ok)
}

func TestUsedMemory(t *testing.T) {
	c := testConn(t)
	before, err := c.UsedMemory()
	require.NoError(t, err)
	assert.Positive(t, before)

	key := testKey(t, "big")
	for i := 0; i < 100_000; i += 1000 {
		n, err := c.SAdd(key, members("member-", i, 1000))
		require.NoError(t, err)
		require.Equal(t, 1000, n)
	}
	after, err := c.UsedMemory()
	require.NoError(t, err)
	// 100k hashtable entries with their sds strings take several MiB.
	assert.Greater(t, after, before+(1<<20), "before %d, after %d", before, after)
}

func TestDBSizeFlushAll(t *testing.T) {
	c := testConn(t)
	_, err := c.SAdd(testKey(t, "a"), members("m", 0, 1))
	require.NoError(t, err)
	_, err = c.SAdd(testKey(t, "b"), members("m", 0, 1))
	require.NoError(t, err)
	n, err := c.DBSize()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, n, int64(2))

	require.NoError(t, c.FlushAll())
	n, err = c.DBSize()
	require.NoError(t, err)
	assert.Zero(t, n)
}

func TestAllocs(t *testing.T) {
	c := testConn(t)
	key := testKey(t, "set")
	_, err := c.SAdd(key, members("m", 0, 100))
	require.NoError(t, err)
	hit, miss := []byte("m7"), []byte("x7")

	t.Run("single", func(t *testing.T) {
		allocs := testing.AllocsPerRun(500, func() {
			if ok, err := c.SIsMember(key, hit); err != nil || !ok {
				t.Fatal(ok, err)
			}
			if ok, err := c.SIsMember(key, miss); err != nil || ok {
				t.Fatal(ok, err)
			}
		})
		assert.Zero(t, allocs)
	})
	t.Run("pipelined", func(t *testing.T) {
		keys, probes := make([][]byte, 16), make([][]byte, 16)
		for i := range keys {
			keys[i], probes[i] = key, hit
			if i%2 == 1 {
				probes[i] = miss
			}
		}
		out := make([]bool, 16)
		allocs := testing.AllocsPerRun(200, func() {
			if err := c.SIsMemberPipelined(keys, probes, out); err != nil {
				t.Fatal(err)
			}
		})
		assert.Zero(t, allocs)
		assert.Equal(t, []bool{true, false}, out[:2])
	})
}

func TestConnClose(t *testing.T) {
	c, err := Dial(testServer(t).Addr())
	require.NoError(t, err)
	require.NoError(t, c.Ping())
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")

	_, err = c.SIsMember([]byte("k"), []byte("m"))
	assert.ErrorIs(t, err, errClosed)
	assert.ErrorIs(t, c.Ping(), errClosed)
}

func TestDialRefused(t *testing.T) {
	_, err := Dial("127.0.0.1:1")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "redisbench: dial: ")
}

func TestIncrExpire(t *testing.T) {
	c := testConn(t)
	key, other := testKey(t, "cap-p"), testKey(t, "cap-q")
	for want := int64(1); want <= 3; want++ {
		n, err := c.IncrExpire(key, 86400)
		require.NoError(t, err)
		require.Equal(t, want, n)
	}
	out := make([]int64, 3)
	require.NoError(t, c.IncrExpirePipelined([][]byte{key, other, key}, 60, out))
	require.Equal(t, []int64{4, 1, 5}, out)
	assert.Equal(t, ":60\r\n", do(t, c, "TTL", string(key)))
}
