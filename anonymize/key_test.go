package anonymize

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/dchest/siphash"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyConstructors(t *testing.T) {
	for _, n := range []int{0, 15, 65} {
		_, err := KeyFromBytes(make([]byte, n))
		assert.ErrorIs(t, err, ErrInvalidKey, "%d bytes", n)
	}
	for _, n := range []int{16, 32, 64} {
		k, err := KeyFromBytes(bytes.Repeat([]byte{7}, n))
		require.NoError(t, err)
		assert.False(t, k.IsZero())
	}
	_, err := KeyFromHex("zz" + strings.Repeat("00", 16))
	require.ErrorIs(t, err, ErrInvalidKey)
	assert.NotContains(t, err.Error(), "zz", "a bad key is never echoed")

	b := bytes.Repeat([]byte{1}, 16)
	k, err := KeyFromBytes(b)
	require.NoError(t, err)
	b[0] = 2
	k2, _ := KeyFromBytes(bytes.Repeat([]byte{1}, 16))
	assert.True(t, k.Equal(k2), "KeyFromBytes must copy its input")

	g1, g2 := GenerateKey(), GenerateKey()
	assert.False(t, g1.Equal(g2))
	assert.NotEqual(t, g1.Fingerprint(), g2.Fingerprint())
	assert.Equal(t, g1.Fingerprint(), g1.Fingerprint())
}

func TestKeyNeverPrints(t *testing.T) {
	k := GenerateKey()
	raw := hex.EncodeToString(k.Bytes())
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("rotated", "key", k)
	js, err := json.Marshal(map[string]any{"key": k})
	require.NoError(t, err)
	text, err := k.MarshalText()
	require.NoError(t, err)
	for _, out := range []string{
		k.String(), k.GoString(), string(js), string(text), logs.String(),
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q %x %X %d", k, k, k, k, k, k, k, k),
		fmt.Sprintf("%+v", struct{ K Key }{k}),
	} {
		assert.NotContains(t, out, raw[:12], out)
		assert.NotContains(t, strings.ToLower(out), raw[4:16], out)
		assert.Contains(t, out, "[redacted]")
	}
	assert.Equal(t, "anonymize.Key([redacted] "+k.Fingerprint().String()+")", k.String())
}

func TestKeyDestroy(t *testing.T) {
	k := GenerateKey()
	fp := k.Fingerprint()
	cp := k // copies share the material
	inner := k.material().b
	h := SipHash(k)
	k.Destroy()
	k.Destroy() // twice is fine
	assert.True(t, k.IsZero())
	assert.True(t, cp.IsZero())
	assert.Equal(t, make([]byte, len(inner)), inner, "material overwritten")
	m := k.material()
	for i := range m.sip {
		assert.Zero(t, m.sip[i].Load(), "subkey overwritten")
	}
	assert.Equal(t, fp, cp.Fingerprint(), "a destroyed key keeps its name")
	assert.Contains(t, cp.String(), fp.String())
	assert.True(t, k.Equal(Key{}), "a destroyed key is a zero Key")
	assert.False(t, k.Equal(GenerateKey()))
	assert.True(t, k.Clone().IsZero())
	assert.Panics(t, func() { SipHash(cp) })
	_, err := cp.Subkey("x")
	assert.ErrorIs(t, err, ErrKeyDestroyed)
	assert.Panics(t, func() { cp.Bytes() })
	_, err = h.Pseudonym(Email("jane@example.com"))
	assert.ErrorIs(t, err, ErrKeyDestroyed)

	var zero Key
	zero.Destroy()
	assert.True(t, zero.Fingerprint().IsZero())
	assert.True(t, zero.Clone().IsZero())
	_, err = zero.Subkey("x")
	assert.ErrorIs(t, err, ErrInvalidKey)
	assert.Panics(t, func() { zero.Bytes() })
}

func TestKeyClone(t *testing.T) {
	for _, destroy := range []string{"original", "clone"} {
		t.Run("destroy "+destroy, func(t *testing.T) {
			k := GenerateKey()
			c := k.Clone()
			require.True(t, c.Equal(k))
			require.Equal(t, k.Fingerprint(), c.Fingerprint())
			want, err := SipHash(k).Pseudonym(Email("jane@example.com"))
			require.NoError(t, err)
			gone, kept := k, c
			if destroy == "clone" {
				gone, kept = c, k
			}
			hashers := map[string]Hasher{}
			for name, ctor := range hasherConstructors {
				hashers[name] = ctor(kept)
			}
			gone.Destroy()
			assert.True(t, gone.IsZero())
			assert.False(t, kept.IsZero(), "the other one keeps working")
			got, err := SipHash(kept).Pseudonym(Email("jane@example.com"))
			require.NoError(t, err)
			assert.Equal(t, want, got)
			for name, h := range hashers {
				_, err := h.Pseudonym(Email("jane@example.com"))
				assert.NoError(t, err, name)
			}
		})
	}
}

func TestKeySubkey(t *testing.T) {
	k := vectorKey(t)
	master := vectorKeyBytes(t)
	sub := func(k Key, label string) Key {
		t.Helper()
		s, err := k.Subkey(label)
		require.NoError(t, err)
		return s
	}
	a, b := sub(k, "example/v1/a"), sub(k, "example/v1/b")
	assert.True(t, a.Equal(sub(k, "example/v1/a")), "deterministic")
	assert.False(t, a.Equal(b), "distinct labels, distinct subkeys")
	assert.False(t, a.Equal(k))
	assert.NotEqual(t, a.Fingerprint(), b.Fingerprint())
	assert.Equal(t, hmacSum(master, "example/v1/a"), a.Bytes(), "HMAC-SHA256(key, label)")
	assert.Len(t, a.Bytes(), 32)
	assert.True(t, HMACSubkey(k).Equal(sub(k, "personify/v1/hmac-sha256")))

	// The hashers' derivations are the subkeys of their labels, as the
	// docs say: computing SipHash and xxHash from them by hand gives the
	// hashers' pseudonyms.
	id := Email("Jane.Doe@Example.com")
	in := []byte("email:jane.doe@example.com")
	sip := sub(k, "personify/v1/siphash-2-4").Bytes()
	want, err := SipHash(k).Pseudonym(id)
	require.NoError(t, err)
	assert.Equal(t, want, Pseudonym(siphash.Hash(binary.LittleEndian.Uint64(sip), binary.LittleEndian.Uint64(sip[8:]), in)))
	salt := sub(k, "personify/v1/xxhash64-salt").Bytes()
	want, err = XXHash(k).Pseudonym(id)
	require.NoError(t, err)
	assert.Equal(t, want, Pseudonym(xxhash.Sum64(append(salt, in...))))

	// A subkey is a key of its own.
	k2 := k.Clone()
	s := sub(k2, "example/v1/a")
	k2.Destroy()
	assert.False(t, s.IsZero(), "destroying the key leaves its subkeys")
	assert.True(t, s.Equal(a))
}

func TestKeyBytes(t *testing.T) {
	k := vectorKey(t)
	b := k.Bytes()
	assert.Equal(t, vectorKeyBytes(t), b)
	clear(b)
	assert.Equal(t, vectorKeyBytes(t), k.Bytes(), "Bytes returns a copy")
	k2, err := KeyFromBytes(k.Bytes())
	require.NoError(t, err)
	assert.True(t, k2.Equal(k))
	assert.Equal(t, k.Fingerprint(), k2.Fingerprint())
}

func TestFingerprintText(t *testing.T) {
	f := testKey(t).Fingerprint()
	b, err := f.MarshalText()
	require.NoError(t, err)
	var g Fingerprint
	require.NoError(t, g.UnmarshalText(b))
	assert.Equal(t, f, g)
	assert.Error(t, g.UnmarshalText([]byte("abc")))
	assert.Error(t, g.UnmarshalText([]byte("zzzzzzzzzzzzzzzz")))
}
