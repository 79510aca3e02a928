package anonymize

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

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
	raw := hex.EncodeToString(*k.b)
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
	cp := k // copies share the material
	inner := *k.b
	k.Destroy()
	assert.True(t, k.IsZero())
	assert.True(t, cp.IsZero())
	assert.Equal(t, make([]byte, len(inner)), inner[:cap(inner)][:len(inner)], "material overwritten")
	assert.True(t, k.Fingerprint().IsZero())
	assert.Panics(t, func() { SipHash(cp) })
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
