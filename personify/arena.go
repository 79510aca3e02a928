package personify

import (
	"encoding/binary"
	"sync/atomic"
)

// arena holds the per-person records of the lookup index: immutable byte
// strings, appended into 1 MiB chunks and addressed by a 32-bit reference
// (chunk << 20 | offset) that the directory keeps in each slot's aux word.
//
// A record never changes once written: a write appends a new record and
// swaps the slot's aux atomically, so readers need no lock, and the bytes a
// reader can reach were written before the reference to them was published.
// Replaced records are garbage until compaction copies the live ones into a
// fresh arena (see Engine.compactLocked).
//
// The chunk directory has a fixed capacity, so readers index it without any
// slice header that a writer could be growing: at most 4096 chunks, 4 GiB of
// records, about 3 billion memberships.
type arena struct {
	chunks [maxChunks]atomic.Pointer[[]byte]

	// Writer-only.
	cur, off int   // the chunk being filled and the next free byte in it
	used     int64 // bytes in records, live or not
	garbage  int64 // bytes in replaced records
}

const (
	chunkBits = 20
	chunkSize = 1 << chunkBits
	chunkMask = chunkSize - 1
	maxChunks = 1 << (32 - chunkBits)
	// bigRecord is the size past which a record gets a chunk of its own (a
	// person in tens of thousands of segments).
	bigRecord = chunkSize / 4
)

func newArena() *arena {
	a := &arena{}
	c := make([]byte, chunkSize)
	a.chunks[0].Store(&c)
	return a
}

// record returns the bytes from ref to the end of its chunk; a record
// decoder reads only its own. Safe for concurrent use with the writer.
func (a *arena) record(ref uint32) []byte {
	return (*a.chunks[ref>>chunkBits].Load())[ref&chunkMask:]
}

// full reports whether the arena could not take a record of n bytes.
func (a *arena) full(n int) bool {
	return a.off+n > chunkSize && a.cur+1 >= maxChunks
}

// add appends a record and returns its reference. The caller checks full
// first. Writer-only.
func (a *arena) add(rec []byte) uint32 {
	if a.off+len(rec) > chunkSize || len(rec) > bigRecord {
		size := chunkSize
		if len(rec) > bigRecord {
			size = len(rec)
		}
		c := make([]byte, size)
		a.cur++
		a.chunks[a.cur].Store(&c)
		a.off = 0
	}
	c := *a.chunks[a.cur].Load()
	copy(c[a.off:], rec)
	ref := uint32(a.cur)<<chunkBits | uint32(a.off)
	a.off += len(rec)
	if len(rec) > bigRecord {
		a.off = chunkSize // nothing shares a big record's chunk
	}
	a.used += int64(len(rec))
	return ref
}

// sizeBytes is the memory the arena's chunks take.
func (a *arena) sizeBytes() uint64 {
	var n uint64
	for i := 0; i <= a.cur; i++ {
		n += uint64(cap(*a.chunks[i].Load()))
	}
	return n + uint64(len(a.chunks))*8
}

// A record is uvarint(ordinal), uvarint(state), uvarint(n), then the n
// segment ids in increasing order as uvarint deltas (the first from 0).
// With 1,000 segments and 10 per person the deltas average 100: 1.3 bytes a
// membership, plus about 5 bytes a person.

// recordView decodes a record lazily.
type recordView struct {
	rest  []byte // the ids
	ord   uint32
	state uint32
	n     int
}

func viewRecord(b []byte) recordView {
	ord, k := uvarint(b)
	state, k2 := uvarint(b[k:])
	n, k3 := uvarint(b[k+k2:])
	return recordView{rest: b[k+k2+k3:], ord: uint32(ord), state: uint32(state), n: int(n)}
}

// has reports whether the record holds segment id.
func (r recordView) has(id uint32) bool {
	b, cur := r.rest, uint64(0)
	for range r.n {
		d, k := uvarint(b)
		b = b[k:]
		if cur += d; cur >= uint64(id) {
			return cur == uint64(id)
		}
	}
	return false
}

// appendIDs appends the record's segment ids to dst.
func (r recordView) appendIDs(dst []uint32) []uint32 {
	b, cur := r.rest, uint64(0)
	for range r.n {
		d, k := uvarint(b)
		b = b[k:]
		cur += d
		dst = append(dst, uint32(cur))
	}
	return dst
}

// encodeRecord appends the encoding of a record to dst; ids must be sorted.
func encodeRecord(dst []byte, ord, state uint32, ids []uint32) []byte {
	dst = binary.AppendUvarint(dst, uint64(ord))
	dst = binary.AppendUvarint(dst, uint64(state))
	dst = binary.AppendUvarint(dst, uint64(len(ids)))
	prev := uint32(0)
	for _, id := range ids {
		dst = binary.AppendUvarint(dst, uint64(id-prev))
		prev = id
	}
	return dst
}

// recordLen returns the length of the record at the start of b.
func recordLen(b []byte) int {
	r := viewRecord(b)
	n := len(b) - len(r.rest)
	for range r.n {
		_, k := uvarint(b[n:])
		n += k
	}
	return n
}

// uvarint decodes a uvarint, with a fast path for the one-byte case, the
// common one in records.
func uvarint(b []byte) (uint64, int) {
	if b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	var x uint64
	var s uint
	for i, c := range b {
		if c < 0x80 {
			return x | uint64(c)<<s, i + 1
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, len(b)
}

// segmentBloom returns the two bits segment id sets in a person's 32-bit
// segment filter. With 10 segments a person, a segment they are not in
// passes the filter about one time in five.
func segmentBloom(id uint32) uint32 {
	h := id * 0x9E3779B1
	return 1<<(h>>27) | 1<<(h>>22&31)
}

// bloomOf returns the filter of a list of segment ids.
func bloomOf(ids []uint32) uint32 {
	var b uint32
	for _, id := range ids {
		b |= segmentBloom(id)
	}
	return b
}
