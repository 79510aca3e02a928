package anonymize

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// Key sizes in bytes.
const (
	MinKeyLen = 16 // 128 bits, SipHash's key size
	MaxKeyLen = 64 // one SHA-256 block: longer HMAC keys are hashed first anyway
)

// ErrInvalidKey is returned when key material is too short, too long or not
// valid hex.
var ErrInvalidKey = errors.New("anonymize: invalid key")

// Key is the secret from which pseudonyms are computed. Whoever holds it can
// test whether a given person is in the data, so it must live in a secret
// store, never next to the data.
//
// A Key never prints: String, GoString, Format (every verb), MarshalText,
// MarshalJSON and LogValue write "anonymize.Key([redacted] <fingerprint>)".
// Use [Key.Fingerprint] to name a key in logs and files.
//
// The zero Key is invalid (hashers refuse it). A Key is safe for concurrent
// use, except that [Key.Destroy] must not race with its other methods.
type Key struct {
	b *[]byte // behind a pointer so that copies share Destroy
}

// GenerateKey returns a new random 256-bit key from crypto/rand.
func GenerateKey() Key {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return Key{&b}
}

// KeyFromBytes returns a key holding a copy of b, which must be between
// [MinKeyLen] and [MaxKeyLen] bytes long and should be uniformly random.
func KeyFromBytes(b []byte) (Key, error) {
	if len(b) < MinKeyLen || len(b) > MaxKeyLen {
		return Key{}, fmt.Errorf("%w: %d bytes, want %d to %d", ErrInvalidKey, len(b), MinKeyLen, MaxKeyLen)
	}
	c := append([]byte(nil), b...)
	return Key{&c}, nil
}

// KeyFromHex returns the key whose hex encoding is s (for example from an
// environment variable or a secret store).
func KeyFromHex(s string) (Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		// The message never repeats s: it is a secret.
		return Key{}, fmt.Errorf("%w: not hex (%d characters)", ErrInvalidKey, len(s))
	}
	defer clear(b)
	return KeyFromBytes(b)
}

// IsZero reports whether k is the zero Key or a destroyed one.
func (k Key) IsZero() bool { return k.b == nil || len(*k.b) == 0 }

// Fingerprint returns a public name for the key: the first 8 bytes of
// HMAC-SHA256(key, "personify/v1/fingerprint"). It reveals nothing about the
// key and is safe to store and print; snapshots carry it so that data is
// never read with the wrong key. The zero Key's fingerprint is zero.
func (k Key) Fingerprint() Fingerprint {
	var f Fingerprint
	if k.IsZero() {
		return f
	}
	copy(f[:], k.derive("personify/v1/fingerprint"))
	return f
}

// Equal reports whether k and o hold the same key material, in constant
// time.
func (k Key) Equal(o Key) bool {
	if k.IsZero() || o.IsZero() {
		return k.IsZero() == o.IsZero()
	}
	return subtle.ConstantTimeCompare(*k.b, *o.b) == 1
}

// Destroy overwrites the key material with zeros (crypto-shredding): the key
// and every copy of it become the zero Key. Hashers made from it keep what
// they computed from it (SipHash and XXHash a derived subkey, HMACSHA256
// the HMAC pads of the key itself) until they are garbage: drop them too,
// as Keyring.Prune does.
func (k Key) Destroy() {
	if k.b != nil {
		clear(*k.b)
		*k.b = (*k.b)[:0]
	}
}

// derive returns HMAC-SHA256(key, label): a subkey for one purpose, so that
// no two hashers ever share key material.
func (k Key) derive(label string) []byte {
	m := hmac.New(sha256.New, *k.b)
	m.Write([]byte(label))
	return m.Sum(nil)
}

func (k Key) redacted() string { return "anonymize.Key([redacted] " + k.Fingerprint().String() + ")" }

// String returns a redacted form that shows only the fingerprint.
func (k Key) String() string { return k.redacted() }

// GoString returns a redacted form that shows only the fingerprint.
func (k Key) GoString() string { return k.redacted() }

// Format writes the redacted form for every verb and flag.
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.redacted())) }

// MarshalText returns the redacted form: a key is never serialized.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.redacted()), nil }

// MarshalJSON returns the redacted form as a JSON string.
func (k Key) MarshalJSON() ([]byte, error) { return []byte(`"` + k.redacted() + `"`), nil }

// LogValue returns the redacted form for log/slog.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.redacted()) }

// Fingerprint is the public name of a [Key]; see [Key.Fingerprint].
type Fingerprint [8]byte

// String returns the fingerprint as 16 lowercase hex digits.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// IsZero reports whether f is the zero Fingerprint.
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// MarshalText encodes the fingerprint as hex.
func (f Fingerprint) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText decodes a fingerprint from 16 hex digits.
func (f *Fingerprint) UnmarshalText(b []byte) error {
	if len(b) != 2*len(f) {
		return fmt.Errorf("anonymize: fingerprint: want %d hex digits, got %d", 2*len(f), len(b))
	}
	if _, err := hex.Decode(f[:], b); err != nil {
		return fmt.Errorf("anonymize: fingerprint: %w", err)
	}
	return nil
}
