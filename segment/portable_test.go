package segment

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sampleSets covers every container kind and the empty set.
func sampleSets(t *testing.T) map[string]*Set {
	t.Helper()
	r := rand.New(rand.NewPCG(10, 10))
	run := New()
	run.AddRange(100, 200_000)
	run.Add(1 << 30)
	run.Optimize()
	many := New()
	for i := range uint32(40) { // over noOffsetThreshold containers, with runs
		many.AddRange(i<<16, i<<16+uint32(i)+1)
	}
	many.Optimize()
	return map[string]*Set{
		"empty":  New(),
		"one":    New(42),
		"max":    New(0, 1<<32-1),
		"dense":  New(randomValues(r, 50_000, 100_000)...),
		"sparse": New(randomValues(r, 5000, 1<<31)...),
		"run":    run,
		"many":   many,
	}
}

func TestSetEncodingRoundTrip(t *testing.T) {
	for name, s := range sampleSets(t) {
		t.Run(name, func(t *testing.T) {
			want, err := s.bitmap().ToBytes() // roaring's own serialization
			require.NoError(t, err)

			data, err := s.MarshalBinary()
			require.NoError(t, err)
			require.Equal(t, want, data, "not roaring's portable bytes")
			require.Equal(t, uint64(len(data)), s.SerializedSize())

			var viaWriter bytes.Buffer
			n, err := s.WriteTo(struct{ io.Writer }{&viaWriter}) // unbuffered path
			require.NoError(t, err)
			require.Equal(t, int64(len(data)), n)
			require.Equal(t, data, viaWriter.Bytes())

			got := New(1, 2, 3) // replaced, not merged
			require.NoError(t, got.UnmarshalBinary(data))
			require.True(t, s.Equal(got))

			// ReadFrom reads exactly one bitmap, even byte by byte.
			stream := append(append(bytes.Clone(data), data...), "tail"...)
			r := iotest.OneByteReader(bytes.NewReader(stream))
			for range 2 {
				got := New(9)
				n, err := got.ReadFrom(r)
				require.NoError(t, err)
				require.Equal(t, int64(len(data)), n)
				require.True(t, s.Equal(got))
			}
			rest, _ := io.ReadAll(r)
			require.Equal(t, "tail", string(rest))

			// The decoded set owns its memory.
			clear(data)
			require.True(t, s.Equal(got))
			got.Add(77)
			got.Remove(42)
			require.True(t, got.Contains(77))
			require.False(t, got.Contains(42))
		})
	}
}

// enc builds encodings by hand, little-endian.
type enc []byte

func (e enc) u16(vs ...uint16) enc {
	for _, v := range vs {
		e = binary.LittleEndian.AppendUint16(e, v)
	}
	return e
}

func (e enc) u32(vs ...uint32) enc {
	for _, v := range vs {
		e = binary.LittleEndian.AppendUint32(e, v)
	}
	return e
}

func (e enc) raw(b ...byte) enc { return append(e, b...) }

// runsHeader starts a run-cookie bitmap of n containers with the given run
// flags and (key, card-1) pairs.
func runsHeader(n int, flags byte, keycards ...uint16) enc {
	return enc{}.u32(cookieRuns | uint32(n-1)<<16).raw(flags).u16(keycards...)
}

func TestUnmarshalRejects(t *testing.T) {
	bitmapOf := func(n int) enc { // bitmap container with n bits set
		b := make(enc, bitmapBytes)
		for i := range n {
			b[i/8] |= 1 << (i % 8)
		}
		return b
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty input", "", "unexpected end of data"},
		{"short cookie", string(enc{}.u16(cookieRuns)), "unexpected end of data"},
		{"unknown cookie", string(enc{}.u32(12345, 0)), "unknown cookie"},
		{"too many containers", string(enc{}.u32(cookieNoRuns, maxContainers+1)), "over the maximum"},
		{"missing header", string(enc{}.u32(cookieNoRuns, 3)), "unexpected end of data"},
		{"keys out of order", string(enc{}.u32(cookieNoRuns, 2).u16(5, 0, 5, 0).u32(0, 0).u16(1, 2)), "not above the previous key"},
		{"array unsorted", string(enc{}.u32(cookieNoRuns, 1).u16(0, 2).u32(0).u16(3, 1, 2)), "array values not strictly increasing"},
		{"array repeat", string(enc{}.u32(cookieNoRuns, 1).u16(0, 1).u32(0).u16(3, 3)), "array values not strictly increasing"},
		{"array short", string(enc{}.u32(cookieNoRuns, 1).u16(0, 9).u32(0).u16(3, 4)), "unexpected end of data"},
		{"bitmap cardinality", string(append(enc{}.u32(cookieNoRuns, 1).u16(0, 4999).u32(0), bitmapOf(4999)...)), "bitmap holds 4999 values, header says 5000"},
		{"no runs", string(runsHeader(1, 1, 0, 0).u16(0)), "run container without runs"},
		{"run past end", string(runsHeader(1, 1, 0, 0).u16(1, 0xfff0, 0x20)), "passes the container end"},
		{"runs overlap", string(runsHeader(1, 1, 0, 0).u16(2, 10, 5, 12, 1)), "overlaps or touches"},
		{"runs touch", string(runsHeader(1, 1, 0, 0).u16(2, 10, 5, 16, 1)), "overlaps or touches"},
		{"runs unsorted", string(runsHeader(1, 1, 0, 0).u16(2, 20, 1, 10, 1)), "overlaps or touches"},
		{"runs short", string(runsHeader(1, 1, 0, 0).u16(0xffff, 1, 2)), "unexpected end of data"},
		{"trailing bytes", string(enc{}.u32(cookieNoRuns, 0).raw(0)), "1 bytes after the bitmap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(1, 2)
			err := s.UnmarshalBinary([]byte(tc.data))
			require.ErrorIs(t, err, ErrCorrupt)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, []uint32{1, 2}, s.AppendTo(nil), "set changed on error")
			if tc.name != "trailing bytes" {
				_, err = s.ReadFrom(bytes.NewReader([]byte(tc.data)))
				require.ErrorIs(t, err, ErrCorrupt)
			}
		})
	}
}

func TestUnmarshalEveryPrefix(t *testing.T) {
	for name, s := range sampleSets(t) {
		data, err := s.MarshalBinary()
		require.NoError(t, err)
		for cut := range len(data) {
			if cut > 200 && cut < len(data)-200 && cut%97 != 0 {
				continue // the middle of large encodings: sample it
			}
			err := new(Set).UnmarshalBinary(data[:cut])
			require.ErrorIs(t, err, ErrCorrupt, "%s cut at %d", name, cut)
			_, err = new(Set).ReadFrom(bytes.NewReader(data[:cut]))
			require.ErrorIs(t, err, io.ErrUnexpectedEOF, "%s cut at %d", name, cut)
		}
	}
}

// TestDecodeAllocatesLittle feeds short inputs that claim large contents and
// checks that decoding allocates about what arrived, not what was claimed.
func TestDecodeAllocatesLittle(t *testing.T) {
	for _, tc := range []struct {
		name string
		data enc
	}{
		{"65536 containers", enc{}.u32(cookieNoRuns, maxContainers)},
		{"65535 runs", runsHeader(1, 1, 0, 0).u16(0xffff, 1, 2)},
		{"65536 run containers", runsHeader(maxContainers, 0xff)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range 10 {
				_, err := new(Set).ReadFrom(bytes.NewReader(tc.data))
				require.ErrorIs(t, err, ErrCorrupt)
				require.ErrorIs(t, new(Set).UnmarshalBinary(tc.data), ErrCorrupt)
			}
			runtime.ReadMemStats(&after)
			perCall := (after.TotalAlloc - before.TotalAlloc) / 10
			assert.Less(t, perCall, uint64(32<<10), "bytes allocated per decode")
		})
	}
}

func TestReadFromReportsIOErrors(t *testing.T) {
	data, err := New(1, 2, 3).MarshalBinary()
	require.NoError(t, err)
	r := io.MultiReader(bytes.NewReader(data[:5]), iotest.ErrReader(io.ErrClosedPipe))
	_, err = new(Set).ReadFrom(r)
	require.ErrorIs(t, err, io.ErrClosedPipe)
	require.NotErrorIs(t, err, ErrCorrupt)
}

// TestRoaringReadsOurBytes checks the other direction of interoperability:
// roaring decodes what Set writes to an equal bitmap.
func TestRoaringReadsOurBytes(t *testing.T) {
	for name, s := range sampleSets(t) {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := s.WriteTo(&buf)
			require.NoError(t, err)
			bm := roaring.New()
			_, err = bm.ReadFrom(&buf)
			require.NoError(t, err)
			require.NoError(t, bm.Validate())
			require.True(t, bm.Equals(s.bitmap()))
		})
	}
}

func TestCheckArray(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	for n := range 40 {
		vals := New(randomValues(r, n, 1<<16)...).AppendTo(nil)
		var b enc
		for _, v := range vals {
			b = b.u16(uint16(v))
		}
		require.Empty(t, checkArray(b), "sorted %v", vals)
		for i := range len(vals) { // break the order at every position
			bad := append(enc{}, b...)
			binary.LittleEndian.PutUint16(bad[2*i:], uint16(vals[max(i-1, 0)]))
			if i == 0 && len(vals) > 1 {
				binary.LittleEndian.PutUint16(bad, uint16(vals[1]))
			}
			if len(vals) > 1 {
				require.NotEmpty(t, checkArray(bad), "unsorted at %d: %v", i, vals)
			}
		}
	}
}
