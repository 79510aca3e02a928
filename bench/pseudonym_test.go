package bench

import (
	"crypto/hmac"
	"crypto/sha256"
	"testing"

	"github.com/personify-go/personify/anonymize"
)

// BenchmarkPseudonymPeers compares the default hasher (normalization
// included) with the naive ways of keying an email that services often
// write by hand: a fresh HMAC-SHA256 per call and an unkeyed SHA-256.
func BenchmarkPseudonymPeers(b *testing.B) {
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		b.Fatal(err)
	}
	const email = "Jane.Doe.1984@Example.com"
	b.Run("personify=siphash", func(b *testing.B) {
		h := anonymize.SipHash(key)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := h.Pseudonym(anonymize.Email(email)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("peer=hmac-new-per-call", func(b *testing.B) {
		raw := []byte("0123456789abcdef0123456789abcdef")
		b.ReportAllocs()
		for b.Loop() {
			m := hmac.New(sha256.New, raw)
			m.Write([]byte(email))
			_ = m.Sum(nil)
		}
	})
	b.Run("peer=sha256-unkeyed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = sha256.Sum256([]byte(email))
		}
	})
}
