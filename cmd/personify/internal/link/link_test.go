package link

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const keyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func signer(t testing.TB, hexKey string, now *time.Time) *Signer {
	k, err := anonymize.KeyFromHex(hexKey)
	require.NoError(t, err)
	s, err := New(k, func() time.Time { return *now })
	require.NoError(t, err)
	return s
}

func TestLinkRoundTripAndRefusals(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := signer(t, keyHex, &now)
	p := personify.Person{Kind: anonymize.KindEmail, Pseudonyms: []anonymize.KeyedPseudonym{{Pseudonym: 42, Key: anonymize.Fingerprint{1, 2}}}}
	tok, exp, err := s.Sign(p, 0)
	require.NoError(t, err)
	assert.Equal(t, now.Add(DefaultTTL), exp)
	got, gotExp, err := s.Verify(tok)
	require.NoError(t, err)
	assert.Equal(t, p, got)
	assert.True(t, exp.Equal(gotExp))

	// Another replica with the same key accepts it; another key does not.
	assert.NoError(t, func() error { _, _, err := signer(t, keyHex, &now).Verify(tok); return err }())
	_, _, err = signer(t, strings.Repeat("ab", 32), &now).Verify(tok)
	assert.ErrorIs(t, err, ErrInvalid)

	// Every changed byte is refused.
	for i := range tok {
		b := []byte(tok)
		b[i] ^= 1
		_, _, err := s.Verify(string(b))
		assert.ErrorIs(t, err, ErrInvalid, "byte %d", i)
	}
	for _, bad := range []string{"", ".", "abc", tok + ".x", strings.Repeat("a", maxToken+1)} {
		_, _, err := s.Verify(bad)
		assert.ErrorIs(t, err, ErrInvalid, "%q", bad)
	}

	now = exp
	_, _, err = s.Verify(tok)
	assert.ErrorIs(t, err, ErrExpired)

	_, _, err = s.Sign(p, MaxTTL+time.Second)
	assert.Error(t, err)
	_, _, err = s.Sign(p, -time.Second)
	assert.Error(t, err)
}

func TestSignerNeverPrintsItsKey(t *testing.T) {
	now := time.Now()
	s := signer(t, keyHex, &now)
	k, _ := anonymize.KeyFromHex(keyHex)
	sub, _ := k.Subkey("personify/preference-link/v1")
	secret := fmt.Sprintf("%x", sub.Bytes())
	holder := struct {
		s  Signer
		sp *Signer
	}{*s, s}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %x", *s, *s, *s, s, s), fmt.Sprintf("%+v %#v", holder, holder)} {
		assert.NotContains(t, out, secret)
		assert.NotContains(t, out, secret[:16])
	}
}

func FuzzVerify(f *testing.F) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := signer(f, keyHex, &now)
	tok, _, _ := s.Sign(personify.Person{Kind: anonymize.KindEmail, Pseudonyms: []anonymize.KeyedPseudonym{{Pseudonym: 1, Key: anonymize.Fingerprint{1}}}}, 0)
	f.Add(tok)
	f.Add("x.y")
	f.Fuzz(func(t *testing.T, tok string) {
		p, _, err := s.Verify(tok)
		if err == nil && len(p.Pseudonyms) == 0 && p.Kind == 0 {
			// a valid signature over an empty person can only come from Sign
			t.Log("empty person verified")
		}
	})
}
