package index

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNameTable(t *testing.T) {
	ids := map[string]uint32{}
	for i := range 2000 {
		ids[fmt.Sprintf("seg%04d", i)] = uint32(i)
	}
	for i, n := range []string{"a", "ab", "abcdefg", "abcdefgh", "abcdefghi", "abcdefghijklmnop", "abcdefghijklmnopq",
		// Longer than 16 bytes, same first and last 8 bytes and length:
		// the same key words, told apart only by the whole name.
		"category_shoes_buyers", "category_boots_buyers", "category_socks_buyers",
		strings.Repeat("x", 100), strings.Repeat("x", 99) + "y", "y" + strings.Repeat("x", 99), "a.b:c-d_e"} {
		ids[n] = uint32(5000 + i)
	}
	nt := NewNames(ids)
	for name, id := range ids {
		got, ok := nt.Get(name)
		require.True(t, ok, name)
		require.Equal(t, id, got, name)
	}
	// Names that share words or lengths with stored ones, and absent ones.
	for _, name := range []string{"", "b", "abcdefgX", "abcdefghX", "Xbcdefghijklmnopq", "abcdefghijklmnopQ",
		strings.Repeat("x", 98) + "yx", strings.Repeat("x", 101), "seg2000", "seg000", "seg00000"} {
		_, ok := nt.Get(name)
		require.False(t, ok, "%q", name)
	}
	empty := NewNames(nil)
	_, ok := empty.Get("x")
	require.False(t, ok)
}

// TestNameKeyDistinguishes checks that names of every length up to 16
// that differ in any one byte get different keys, so the table's word
// compare is exact up to 16 bytes; past 16 bytes a middle byte is not in
// the key, and the table compares the whole name (TestNameTable).
func TestNameKeyDistinguishes(t *testing.T) {
	for n := 1; n <= 24; n++ {
		base := []byte("abcdefghijklmnopqrstuvwxyz"[:n])
		ka, kb, kn := nameKey(string(base))
		for i := range n {
			other := append([]byte(nil), base...)
			other[i] ^= 0x20
			oa, ob, on := nameKey(string(other))
			same := ka == oa && kb == ob && kn == on
			if n <= 16 {
				require.False(t, same, "n=%d, byte %d", n, i)
			} else if i >= 8 && i < n-8 {
				require.True(t, same, "n=%d, byte %d: a middle byte is outside the key", n, i)
			}
		}
	}
}
