package anonymize

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Key sizes in bytes.
const (
	MinKeyLen = 16 // 128 bits, SipHash's key size
	MaxKeyLen = 64 // one SHA-256 block: longer HMAC keys are hashed first anyway
)

// ErrInvalidKey is returned when key material is too short, too long or not
// valid hex.
var ErrInvalidKey = errors.New("anonymize: invalid key")

// ErrKeyDestroyed is returned, wrapped with the key's fingerprint, by every
// [Hasher] made from a key once that key has been destroyed ([Key.Destroy],
// [Keyring.Prune]): a destroyed key computes no more pseudonyms.
var ErrKeyDestroyed = errors.New("anonymize: key destroyed")

// Key is the secret from which pseudonyms are computed. Whoever holds it can
// test whether a given person is in the data, so it must live in a secret
// store, never next to the data.
//
// A Key never prints: String, GoString, Format (every verb), MarshalText,
// MarshalJSON and LogValue write "anonymize.Key([redacted] <fingerprint>)".
// Where fmt cannot call those methods (a Key in an unexported struct field,
// which it prints by reflection) the material is out of its reach, two
// pointers away. Use [Key.Fingerprint] to name a key in logs and files, and
// [Key.Bytes] for the one purpose of storing it.
//
// Copies of a Key share its material, so that [Key.Destroy] reaches them
// all; [Key.Clone] makes an independent one. The zero Key is invalid:
// hashers refuse it. A Key is safe for concurrent use, Destroy included.
type Key struct {
	r *keyRef
}

// keyRef is the first of the two pointers between a Key and its material.
// fmt follows at most two pointers along any chain: a pointer it is given,
// then one pointer that a verb bad for pointers (%s, %q, ...) makes it
// dereference; after that it prints pointers as addresses. A Key's fields
// print by reflection when the Key sits in an unexported field, so the
// material must be two pointers from the Key: Key.r, then keyRef.m.
type keyRef struct{ m *keyMaterial }

// keyMaterial is a key's secret and the subkeys derived from it for the
// hashers, which point at it directly (the pointer to the hasher is their
// first hop, this their second).
type keyMaterial struct {
	destroyed atomic.Bool // set by Destroy before it zeroes anything
	fp        Fingerprint // public: computed at creation, kept after Destroy

	mu      sync.Mutex // serializes Destroy with reading b and deriving subkeys
	b       []byte     // the key; guarded by mu
	derived uint8      // the derive* bits of the subkeys below that are set; guarded by mu

	// The hashers' subkeys, derived on first use. Hashers read them with
	// atomic loads and then check destroyed: Destroy sets destroyed before
	// it zeroes them, so a hasher that finds destroyed unset has loaded the
	// subkey itself, and one that loaded a zeroed word finds it set.
	sip  [2]atomic.Uint64 // SipHash k0, k1
	salt [4]atomic.Uint64 // the xxHash salt, as little-endian words
	hmac [2]hmacKey       // HMAC-SHA256 under HMACSubkey(b), and under b itself
}

// Bits of keyMaterial.derived.
const (
	deriveSip      = 1 << iota // sip
	deriveSalt                 // salt
	deriveHMAC                 // hmac[0]
	deriveHMACSelf             // hmac[1]
)

// The labels of the subkeys this package derives (see [Key.Subkey]).
const (
	fingerprintLabel = "personify/v1/fingerprint"
	sipLabel         = "personify/v1/siphash-2-4"
	saltLabel        = "personify/v1/xxhash64-salt"
	hmacLabel        = "personify/v1/hmac-sha256"
)

// newKey returns a Key that owns b.
func newKey(b []byte) Key {
	m := &keyMaterial{b: b}
	copy(m.fp[:], hmacSHA256(b, fingerprintLabel))
	return Key{&keyRef{m}}
}

// GenerateKey returns a new random 256-bit key from crypto/rand.
func GenerateKey() Key {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return newKey(b)
}

// KeyFromBytes returns a key holding a copy of b, which must be between
// [MinKeyLen] and [MaxKeyLen] bytes long and should be uniformly random.
func KeyFromBytes(b []byte) (Key, error) {
	if len(b) < MinKeyLen || len(b) > MaxKeyLen {
		return Key{}, fmt.Errorf("%w: %d bytes, want %d to %d", ErrInvalidKey, len(b), MinKeyLen, MaxKeyLen)
	}
	return newKey(bytes.Clone(b)), nil
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

// material returns k's material, nil for the zero Key.
func (k Key) material() *keyMaterial {
	if k.r == nil {
		return nil
	}
	return k.r.m
}

// IsZero reports whether k is the zero Key or a destroyed one.
func (k Key) IsZero() bool {
	m := k.material()
	return m == nil || m.destroyed.Load()
}

// Fingerprint returns a public name for the key: the first 8 bytes of
// HMAC-SHA256(key, "personify/v1/fingerprint"). It reveals nothing about the
// key and is safe to store and print; snapshots carry it so that data is
// never read with the wrong key. The zero Key's fingerprint is zero; a
// destroyed key keeps the fingerprint it had, so that logs and receipts can
// still name the key that was shredded.
func (k Key) Fingerprint() Fingerprint {
	if m := k.material(); m != nil {
		return m.fp
	}
	return Fingerprint{}
}

// Equal reports whether k and o hold the same key material, in constant
// time. Zero and destroyed Keys are equal to each other only.
func (k Key) Equal(o Key) bool {
	a, b := k.material().bytes(), o.material().bytes()
	defer clear(a)
	defer clear(b)
	if a == nil || b == nil {
		return (a == nil) == (b == nil)
	}
	return subtle.ConstantTimeCompare(a, b) == 1
}

// Clone returns an independent copy of k: destroying either leaves the other
// working, whereas plain copies of a Key share one material. The clone of the
// zero Key or of a destroyed one is the zero Key.
func (k Key) Clone() Key {
	b := k.material().bytes()
	if b == nil {
		return Key{}
	}
	return newKey(b)
}

// Subkey returns the key derived from k for the purpose that label names:
// HMAC-SHA256(k, label), a 32-byte Key. Keys under distinct labels are
// unrelated, and none reveals k or another subkey, so each purpose (a
// hasher, a signature, a MAC) can have its own and its holder nothing more.
// Labels beginning with "personify/" are reserved for this module; the
// hashers use "personify/v1/siphash-2-4" (the first 16 bytes are SipHash's
// key), "personify/v1/xxhash64-salt" and "personify/v1/hmac-sha256" (see
// [HMACSubkey]).
//
// The subkey is a Key of its own: destroying k does not destroy it.
// Subkey returns an error wrapping [ErrKeyDestroyed] if k has been
// destroyed (possibly by another goroutine, a moment ago) and
// [ErrInvalidKey] if k is the zero Key: never a subkey of no key.
func (k Key) Subkey(label string) (Key, error) {
	m := k.material()
	if m == nil {
		return Key{}, fmt.Errorf("%w: Subkey of the zero Key", ErrInvalidKey)
	}
	b := m.bytes()
	if b == nil {
		return Key{}, fmt.Errorf("%w: key %s", ErrKeyDestroyed, m.fp)
	}
	defer clear(b)
	return newKey(hmacSHA256(b, label)), nil
}

// Bytes returns a copy of the key material: the one way the secret leaves a
// Key, for writing it to a secret store or handing a subkey to a warehouse
// (see [HMACSubkey]); never log it, and clear the copy when done. It panics
// if k is the zero Key or has been destroyed, for the reason [Key.Subkey]
// does.
func (k Key) Bytes() []byte {
	b := k.material().bytes()
	if b == nil {
		panic(errZeroKey)
	}
	return b
}

// Destroy overwrites the key material with zeros (crypto-shredding): the key
// and every copy of it become zero Keys, and the subkeys derived from it for
// hashers are zeroed too, so that every [Hasher] made from it returns an
// error wrapping [ErrKeyDestroyed] from then on, never a pseudonym. Keys
// made with [Key.Clone] or [Key.Subkey], and bytes returned by [Key.Bytes],
// are independent of it: destroy or clear them too. [Key.Fingerprint] still
// names the key.
//
// Destroy may be called concurrently with anything, hashing included, and
// more than once.
func (k Key) Destroy() {
	m := k.material()
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.destroyed.Store(true) // first: see keyMaterial
	clear(m.b)
	for i := range m.sip {
		m.sip[i].Store(0)
	}
	for i := range m.salt {
		m.salt[i].Store(0)
	}
	for i := range m.hmac {
		m.hmac[i].zero()
	}
}

// bytes returns a copy of the key, nil if m is nil or destroyed.
func (m *keyMaterial) bytes() []byte {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.destroyed.Load() {
		return nil
	}
	return bytes.Clone(m.b)
}

// derive derives, the first time it is asked for, the subkey named by the
// derive* bit what. It reports false if m is nil or destroyed.
func (m *keyMaterial) derive(what uint8) bool {
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.destroyed.Load() {
		return false
	}
	if m.derived&what != 0 {
		return true
	}
	switch what {
	case deriveSip:
		sub := hmacSHA256(m.b, sipLabel)
		m.sip[0].Store(binary.LittleEndian.Uint64(sub[0:]))
		m.sip[1].Store(binary.LittleEndian.Uint64(sub[8:]))
		clear(sub)
	case deriveSalt:
		sub := hmacSHA256(m.b, saltLabel)
		for i := range m.salt {
			m.salt[i].Store(binary.LittleEndian.Uint64(sub[8*i:]))
		}
		clear(sub)
	case deriveHMAC:
		sub := hmacSHA256(m.b, hmacLabel)
		m.hmac[0].set(sub)
		clear(sub)
	case deriveHMACSelf:
		m.hmac[1].set(m.b)
	}
	m.derived |= what
	return true
}

// hmacSHA256 returns HMAC-SHA256(key, label): the derivation of every
// subkey, so that no two purposes ever share key material.
func hmacSHA256(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
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

// Fingerprint is the public name of a [Key]; see [Key.Fingerprint]. The zero
// Fingerprint is the zero Key's; a Fingerprint is a plain value, safe for
// concurrent use.
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
