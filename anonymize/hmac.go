package anonymize

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"hash"
	"sync"
	"sync/atomic"
)

// HMACSubkey returns the key [HMACSHA256] computes under:
// k.Subkey("personify/v1/hmac-sha256"), that is
// HMAC-SHA256(k, "personify/v1/hmac-sha256"), 32 bytes. It is what to hand
// a process that must compute HMAC pseudonyms without holding k, such as a
// data warehouse (see HMACSHA256): its holder can compute HMACSHA256
// pseudonyms, and so test whether a given person is among them, and nothing
// else. It panics if k is the zero Key or destroyed, as the hashers'
// constructors do.
func HMACSubkey(k Key) Key {
	sub, err := k.Subkey(hmacLabel)
	if err != nil {
		panic(err)
	}
	return sub
}

// HMACSHA256 returns a hasher that any SQL engine can reproduce, so that
// segments built in a data warehouse join the ones built here. It computes
// under a subkey, [HMACSubkey](k), never under k itself, so that the
// warehouse holds what it needs and no more. The pseudonym is the first 8
// bytes, big-endian, of
//
//	HMAC-SHA256(HMACSubkey(k) bytes, tag || ':' || normalized identifier)
//
// with the tags "email", "phone", "user" and "device". In PostgreSQL
// (pgcrypto), for an already normalized email:
//
//	SELECT encode(substring(hmac(convert_to('email:' || normalized_email, 'UTF8'),
//	                             decode(:hmac_subkey_hex, 'hex'), 'sha256') FROM 1 FOR 8), 'hex')
//
// gives the same 16 hex digits as [Pseudonym.String]; ParsePseudonym reads
// them. Hand the warehouse the subkey and only it:
//
//	hmacSubkeyHex := hex.EncodeToString(anonymize.HMACSubkey(k).Bytes())
//
// It lets its holder compute these HMAC pseudonyms and nothing else: not k,
// not SipHash or XXHash pseudonyms, not personify's receipts or journal
// MACs, which all use other subkeys of k. A Go process that was handed only
// the subkey uses [HMACSHA256FromSubkey].
//
// It is a PRF like [SipHash] but about 4 times slower. It panics if k is
// the zero Key or destroyed.
func HMACSHA256(k Key) Hasher {
	m, err := hasherKey(k, deriveHMAC)
	return &hmacHasher{m: m, key: &m.hmac[0], fp: m.fp, err: err, name: "HMAC-SHA256(key "}
}

// HMACSHA256FromSubkey returns the hasher of [HMACSHA256] for a process that
// holds only the subkey: given sub = [HMACSubkey](k), for example read with
// [KeyFromHex] from the hex that k's owner handed over, it computes the same
// pseudonyms as HMACSHA256(k). It names sub's fingerprint, not k's. It
// panics if sub is the zero Key or destroyed.
//
// Given a key rather than its subkey it computes HMAC-SHA256 under that key
// itself, which is what HMACSHA256 computed before it used a subkey:
// HMACSHA256FromSubkey(k) recomputes the pseudonyms those versions stored,
// for migrating them.
func HMACSHA256FromSubkey(sub Key) Hasher {
	m, err := hasherKey(sub, deriveHMACSelf)
	return &hmacHasher{m: m, key: &m.hmac[1], fp: m.fp, err: err, name: "HMAC-SHA256(subkey "}
}

// hmacHasher reads its HMAC key from the key's material, as sipHasher
// does: the pointer to the hasher is the first hop, m and key the second.
type hmacHasher struct {
	m    *keyMaterial
	key  *hmacKey // in m
	fp   Fingerprint
	err  error  // wraps ErrKeyDestroyed
	name string // how String starts
}

func (h *hmacHasher) String() string { return h.name + h.fp.String() + ")" }

// hmacKey is an HMAC-SHA256 key in the form the hasher computes with: the
// SHA-256 states after the inner and after the outer pad, as words.
// Restoring them saves hashing the pads on every call, as crypto/hmac does;
// keeping them in the key's material lets Destroy zero them, which it could
// not do to a crypto/hmac state sitting in a sync.Pool.
type hmacKey struct {
	inner, outer [sha256.Size / 8]atomic.Uint64
}

// A marshaled SHA-256 state is "sha\x03", the eight 32-bit state words, the
// block buffer and the length (a format the hash package keeps stable).
// After exactly one block, the pad, only the state words depend on the key:
// hmacKey keeps those, and sha256Template is the rest.
const sha256StateOff = 4

var sha256Template = func() []byte {
	var st [2][]byte
	for i, b := range []byte{0x36, 0x5c} {
		d := sha256.New()
		d.Write(bytes.Repeat([]byte{b}, sha256.BlockSize))
		st[i], _ = d.(encoding.BinaryMarshaler).MarshalBinary()
	}
	end := sha256StateOff + sha256.Size
	if len(st[0]) < end || !bytes.Equal(st[0][:sha256StateOff], []byte("sha\x03")) || !bytes.Equal(st[0][end:], st[1][end:]) {
		panic("anonymize: unexpected SHA-256 state encoding")
	}
	clear(st[0][sha256StateOff:end])
	return st[0]
}()

// A key of up to one block is padded, not hashed first.
var _ [sha256.BlockSize - MaxKeyLen]struct{}

// set computes the pad states for key, at most MaxKeyLen bytes long.
func (k *hmacKey) set(key []byte) {
	for _, p := range []struct {
		state *[sha256.Size / 8]atomic.Uint64
		pad   byte
	}{{&k.inner, 0x36}, {&k.outer, 0x5c}} {
		var block [sha256.BlockSize]byte
		copy(block[:], key)
		for i := range block {
			block[i] ^= p.pad
		}
		d := sha256.New()
		d.Write(block[:])
		st, err := d.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			panic(err)
		}
		for i := range p.state {
			p.state[i].Store(binary.LittleEndian.Uint64(st[sha256StateOff+8*i:]))
		}
		d.Reset()
		clear(block[:])
		clear(st)
	}
}

func (k *hmacKey) zero() {
	for i := range k.inner {
		k.inner[i].Store(0)
		k.outer[i].Store(0)
	}
}

// hmacState is the scratch space of one HMAC computation. It holds no key
// material between calls (the digests are reset, the state words cleared),
// so one pool serves every HMAC hasher and keeps them allocation-free.
type hmacState struct {
	inner, outer sha256Digest
	st           []byte // a marshaled state, sha256Template with the state words filled in
	in           [maxHashInput]byte
	sum          [sha256.Size]byte
}

type sha256Digest interface {
	hash.Hash
	encoding.BinaryUnmarshaler
}

var hmacStates = sync.Pool{New: func() any {
	return &hmacState{inner: sha256.New().(sha256Digest), outer: sha256.New().(sha256Digest), st: bytes.Clone(sha256Template)}
}}

// restore loads the state words into d.
func (s *hmacState) restore(d sha256Digest, words *[sha256.Size / 8]atomic.Uint64) error {
	w := s.st[sha256StateOff : sha256StateOff+sha256.Size]
	for i := range words {
		binary.LittleEndian.PutUint64(w[8*i:], words[i].Load())
	}
	err := d.UnmarshalBinary(s.st)
	clear(w)
	return err
}

func (h *hmacHasher) Pseudonym(id Identifier) (Pseudonym, error) {
	s := hmacStates.Get().(*hmacState)
	defer hmacStates.Put(s)
	defer s.outer.Reset()
	defer s.inner.Reset()
	ierr := s.restore(s.inner, &h.key.inner)
	oerr := s.restore(s.outer, &h.key.outer)
	if h.m.destroyed.Load() { // after the loads: see keyMaterial
		return 0, h.err
	}
	if ierr != nil || oerr != nil {
		panic(errors.Join(ierr, oerr)) // not destroyed, so set wrote the states whole
	}
	b, err := id.appendHashInput(s.in[:0])
	if err != nil {
		return 0, err
	}
	s.inner.Write(b)
	sum := s.inner.Sum(s.sum[:0])
	s.outer.Write(sum)
	return Pseudonym(binary.BigEndian.Uint64(s.outer.Sum(s.sum[:0]))), nil
}
