package anonymize

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/cespare/xxhash/v2"
	"github.com/dchest/siphash"
)

// Pseudonym is the 64-bit keyed hash of a normalized identifier: what
// personify stores instead of the identifier. Without the key it cannot be
// linked back to a person or recomputed from a guess; with 64 bits two people
// share one with negligible probability (see [CollisionRate]).
//
// It prints as 16 lowercase hex digits, the first 8 bytes of the hash in
// big-endian order. The zero Pseudonym is a valid value like any other (the
// hashers return it alongside errors); a Pseudonym is a plain value, safe
// for concurrent use.
type Pseudonym uint64

// String returns p as 16 lowercase hex digits.
func (p Pseudonym) String() string {
	var b [16]byte
	return string(p.appendHex(b[:0]))
}

func (p Pseudonym) appendHex(b []byte) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[p>>uint(shift)&0xf])
	}
	return b
}

// MarshalText encodes p as 16 hex digits (JSON numbers would lose bits).
func (p Pseudonym) MarshalText() ([]byte, error) { return p.appendHex(make([]byte, 0, 16)), nil }

// UnmarshalText decodes p from 16 hex digits.
func (p *Pseudonym) UnmarshalText(b []byte) error {
	v, err := ParsePseudonym(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// ParsePseudonym parses 16 hex digits, as written by [Pseudonym.String] or
// by a SQL engine (see [HMACSHA256]).
func ParsePseudonym(s string) (Pseudonym, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("anonymize: pseudonym: want 16 hex digits, got %d characters", len(s))
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("anonymize: pseudonym: not hex")
	}
	return Pseudonym(v), nil
}

// Hasher turns identifiers into pseudonyms. Implementations normalize the
// identifier (see [Identifier.Normalize]), hash the kind's tag, ':' and the
// normalized form under a secret key, and allocate nothing for the common
// identifiers: ASCII email addresses, phone numbers in E.164 (with or
// without separators) that phonenumbers leaves as they are, user and
// device IDs. An internationalized domain (IDNA) or a phone number that
// needs phonenumbers' full parse (a national number, a national prefix
// after the country code, an invalid number) allocates. They are safe
// for concurrent use, with each other and with [Key.Destroy]. A Hasher
// never prints its key or subkey: its String, GoString and Format name the
// algorithm and the key's fingerprint, and by reflection fmt finds the
// secret two pointers away, out of its reach (see [Key]).
//
// The zero value of the interface is nil, which no function accepts in place
// of a Hasher.
type Hasher interface {
	// Pseudonym returns the pseudonym of id, or an error wrapping
	// ErrInvalidIdentifier if id cannot be normalized, or, once the key
	// has been destroyed, an error wrapping ErrKeyDestroyed.
	Pseudonym(id Identifier) (Pseudonym, error)
}

var errZeroKey = errors.New("anonymize: zero or destroyed key")

func mustKey(k Key) {
	if k.IsZero() {
		panic(errZeroKey)
	}
}

// hasherKey returns k's material with the subkey named by the derive* bit
// what derived, and the error the hasher returns once k is destroyed. It
// panics if k is the zero Key or destroyed.
func hasherKey(k Key, what uint8) (*keyMaterial, error) {
	m := k.material()
	if !m.derive(what) {
		panic(errZeroKey)
	}
	return m, fmt.Errorf("%w: %s", ErrKeyDestroyed, m.fp)
}

// SipHash returns the default hasher: SipHash-2-4, a pseudorandom function
// with a 128-bit key, about as fast as a non-cryptographic hash on short
// inputs. Knowing any number of (identifier, pseudonym) pairs does not help
// to compute the pseudonym of another identifier or to recover the key.
//
// The 128-bit SipHash key is the first 16 bytes of
// HMAC-SHA256(k, "personify/v1/siphash-2-4") (k.Subkey of that label), read
// as two little-endian uint64s, so that it shares no material with the
// other hashers. The pseudonym is SipHash-2-4 of tag ":" normalized, e.g.
// "email:jane@example.com".
//
// It panics if k is the zero Key or destroyed.
func SipHash(k Key) Hasher {
	m, err := hasherKey(k, deriveSip)
	return &sipHasher{m: m, fp: m.fp, err: err}
}

// sipHasher reads its subkey from the key's material: the pointer to the
// hasher is the first hop from any value that holds it, m the second.
type sipHasher struct {
	m   *keyMaterial
	fp  Fingerprint
	err error // wraps ErrKeyDestroyed
}

func (h *sipHasher) Pseudonym(id Identifier) (Pseudonym, error) {
	k0, k1 := h.m.sip[0].Load(), h.m.sip[1].Load()
	if h.m.destroyed.Load() { // after the loads: see keyMaterial
		return 0, h.err
	}
	var buf [maxHashInput]byte
	b, err := id.appendHashInput(buf[:0])
	if err != nil {
		return 0, err
	}
	return Pseudonym(siphash.Hash(k0, k1, b)), nil
}

func (h *sipHasher) String() string { return "SipHash-2-4(key " + h.fp.String() + ")" }

// GoString and Format print String for every verb.
func (h *sipHasher) GoString() string            { return h.String() }
func (h *sipHasher) Format(f fmt.State, _ rune)  { _, _ = f.Write([]byte(h.String())) }
func (h *hmacHasher) GoString() string           { return h.String() }
func (h *hmacHasher) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(h.String())) }
func (h *xxHasher) GoString() string             { return h.String() }
func (h *xxHasher) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(h.String())) }

// XXHash returns the fastest hasher: xxHash64 of a 32-byte secret salt
// followed by tag ":" normalized. The salt is the first 32 bytes of
// HMAC-SHA256(k, "personify/v1/xxhash64-salt").
//
// It is NOT a pseudorandom function: from two known (identifier, pseudonym)
// pairs and about 2^32 work, an attacker recovers state equivalent to the
// salt and can then pseudonymize any guess. Use it only for pseudonyms that
// never leave the process, and never for data at rest; [SipHash] is as fast
// on short identifiers. It panics if k is the zero Key or destroyed.
func XXHash(k Key) Hasher {
	m, err := hasherKey(k, deriveSalt)
	return &xxHasher{m: m, fp: m.fp, err: err}
}

// xxHasher reads its salt from the key's material, as sipHasher does.
type xxHasher struct {
	m   *keyMaterial
	fp  Fingerprint
	err error // wraps ErrKeyDestroyed
}

const saltLen = len(keyMaterial{}.salt) * 8

func (h *xxHasher) Pseudonym(id Identifier) (Pseudonym, error) {
	var buf [saltLen + maxHashInput]byte
	for i := range h.m.salt {
		binary.LittleEndian.PutUint64(buf[8*i:], h.m.salt[i].Load())
	}
	if h.m.destroyed.Load() { // after the loads: see keyMaterial
		return 0, h.err
	}
	b, err := id.appendHashInput(buf[:saltLen])
	if err != nil {
		return 0, err
	}
	return Pseudonym(xxhash.Sum64(b)), nil
}

func (h *xxHasher) String() string { return "XXHash64-salted(key " + h.fp.String() + ", not a PRF)" }
