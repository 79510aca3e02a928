package anonymize

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/dchest/siphash"
)

// Pseudonym is the 64-bit keyed hash of a normalized identifier: what
// personify stores instead of the identifier. Without the key it cannot be
// linked back to a person or recomputed from a guess; with 64 bits two people
// share one with negligible probability (see [CollisionRate]).
//
// It prints as 16 lowercase hex digits, the first 8 bytes of the hash in
// big-endian order.
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
// normalized form under a secret key, and allocate nothing. They are safe
// for concurrent use.
type Hasher interface {
	// Pseudonym returns the pseudonym of id, or an error wrapping
	// ErrInvalidIdentifier if id cannot be normalized.
	Pseudonym(id Identifier) (Pseudonym, error)
}

var errZeroKey = errors.New("anonymize: zero or destroyed key")

func mustKey(k Key) {
	if k.IsZero() {
		panic(errZeroKey)
	}
}

// SipHash returns the default hasher: SipHash-2-4, a pseudorandom function
// with a 128-bit key, about as fast as a non-cryptographic hash on short
// inputs. Knowing any number of (identifier, pseudonym) pairs does not help
// to compute the pseudonym of another identifier or to recover the key.
//
// The 128-bit SipHash key is the first 16 bytes of
// HMAC-SHA256(k, "personify/v1/siphash-2-4"), read as two little-endian
// uint64s, so that it shares no material with the other hashers. The
// pseudonym is SipHash-2-4 of tag ":" normalized, e.g. "email:jane@example.com".
//
// It panics if k is the zero Key.
func SipHash(k Key) Hasher {
	mustKey(k)
	sub := k.derive("personify/v1/siphash-2-4")
	return &sipHasher{binary.LittleEndian.Uint64(sub[0:]), binary.LittleEndian.Uint64(sub[8:]), k.Fingerprint()}
}

type sipHasher struct {
	k0, k1 uint64
	fp     Fingerprint
}

func (h *sipHasher) Pseudonym(id Identifier) (Pseudonym, error) {
	var buf [maxHashInput]byte
	b, err := id.appendHashInput(buf[:0])
	if err != nil {
		return 0, err
	}
	return Pseudonym(siphash.Hash(h.k0, h.k1, b)), nil
}

func (h *sipHasher) String() string { return "SipHash-2-4(key " + h.fp.String() + ")" }

// GoString and Format print String for every verb: a hasher holds key
// material (a derived subkey or the key itself) and never prints it.
func (h *sipHasher) GoString() string            { return h.String() }
func (h *sipHasher) Format(f fmt.State, _ rune)  { _, _ = f.Write([]byte(h.String())) }
func (h *hmacHasher) GoString() string           { return h.String() }
func (h *hmacHasher) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(h.String())) }
func (h *xxHasher) GoString() string             { return h.String() }
func (h *xxHasher) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(h.String())) }

// HMACSHA256 returns a hasher that any SQL engine can reproduce, so that
// segments built in a data warehouse join the ones built here. The
// pseudonym is the first 8 bytes, big-endian, of
//
//	HMAC-SHA256(key bytes, tag || ':' || normalized identifier)
//
// with the tags "email", "phone", "user" and "device". In PostgreSQL
// (pgcrypto), for an already normalized email:
//
//	SELECT encode(substring(hmac(convert_to('email:' || normalized_email, 'UTF8'),
//	                             decode(:key_hex, 'hex'), 'sha256') FROM 1 FOR 8), 'hex')
//
// gives the same 16 hex digits as [Pseudonym.String]; ParsePseudonym reads
// them. It is a PRF like [SipHash] but about 8 times slower. It panics if k
// is the zero Key.
func HMACSHA256(k Key) Hasher {
	mustKey(k)
	key := *k.b // the key's own material: Destroy zeroes it, and new states fail to compute
	h := &hmacHasher{fp: k.Fingerprint()}
	h.pool.New = func() any {
		return &hmacState{mac: hmac.New(sha256.New, key)}
	}
	return h
}

type hmacHasher struct {
	pool sync.Pool
	fp   Fingerprint
}

// hmacState is one reusable HMAC with its scratch space; a pool of them
// keeps the hasher allocation-free and safe for concurrent use.
type hmacState struct {
	mac hash.Hash
	in  [maxHashInput]byte
	sum [sha256.Size]byte
}

func (h *hmacHasher) Pseudonym(id Identifier) (Pseudonym, error) {
	s := h.pool.Get().(*hmacState)
	defer h.pool.Put(s)
	b, err := id.appendHashInput(s.in[:0])
	if err != nil {
		return 0, err
	}
	s.mac.Reset()
	s.mac.Write(b)
	return Pseudonym(binary.BigEndian.Uint64(s.mac.Sum(s.sum[:0]))), nil
}

func (h *hmacHasher) String() string { return "HMAC-SHA256(key " + h.fp.String() + ")" }

// XXHash returns the fastest hasher: xxHash64 of a 32-byte secret salt
// followed by tag ":" normalized. The salt is the first 32 bytes of
// HMAC-SHA256(k, "personify/v1/xxhash64-salt").
//
// It is NOT a pseudorandom function: from two known (identifier, pseudonym)
// pairs and about 2^32 work, an attacker recovers state equivalent to the
// salt and can then pseudonymize any guess. Use it only for pseudonyms that
// never leave the process, and never for data at rest; [SipHash] is as fast
// on short identifiers. It panics if k is the zero Key.
func XXHash(k Key) Hasher {
	mustKey(k)
	h := &xxHasher{fp: k.Fingerprint()}
	copy(h.salt[:], k.derive("personify/v1/xxhash64-salt"))
	return h
}

type xxHasher struct {
	salt [32]byte
	fp   Fingerprint
}

func (h *xxHasher) Pseudonym(id Identifier) (Pseudonym, error) {
	var buf [len(xxHasher{}.salt) + maxHashInput]byte
	copy(buf[:], h.salt[:])
	b, err := id.appendHashInput(buf[:len(h.salt)])
	if err != nil {
		return 0, err
	}
	return Pseudonym(xxhash.Sum64(b)), nil
}

func (h *xxHasher) String() string { return "XXHash64-salted(key " + h.fp.String() + ", not a PRF)" }
