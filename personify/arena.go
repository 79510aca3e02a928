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

// An overflow record, for a person whose segment ids do not fit inline in
// their directory slot (or whose privacy state id is too large), is
// uvarint(state), uvarint(n), then the n segment ids in increasing order as
// uvarint deltas (the first from 0).

// recordView decodes a record lazily.
type recordView struct {
	rest  []byte // the ids
	state uint32
	n     int
}

func viewRecord(b []byte) recordView {
	state, k := uvarint(b)
	n, k2 := uvarint(b[k:])
	return recordView{rest: b[k+k2:], state: uint32(state), n: int(n)}
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
func encodeRecord(dst []byte, state uint32, ids []uint32) []byte {
	dst = binary.AppendUvarint(dst, uint64(state))
	dst = binary.AppendUvarint(dst, uint64(len(ids)))
	return appendDeltas(dst, ids)
}

// appendDeltas appends sorted ids as uvarint deltas.
func appendDeltas(dst []byte, ids []uint32) []byte {
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

// Inline lanes: a lane code c gives lanes of laneWidth[c] bits,
// lanesPer[c] to a 64-bit word. laneLow[c] has the lowest bit of every lane
// set, laneHigh[c] the highest; an unused lane is all ones, so the largest
// id a code can hold is laneMax[c].
// The tables have 8 entries, one per 3-bit lane code, so that indexing
// them with a code needs no bounds check; codes 5-7 are never used.
var (
	laneWidth = [8]uint{10, 12, 16, 21, 32, 32, 32, 32}
	lanesPer  [8]int
	laneLow   [8]uint64
	laneHigh  [8]uint64
	laneMax   [8]uint64
	laneEmpty [8]uint64 // a word of unused lanes
)

// laneCodes is the number of lane codes in use.
const laneCodes = 5

func init() {
	for c, w := range laneWidth {
		lanesPer[c] = 64 / int(w)
		laneMax[c] = 1<<w - 2
		for k := range lanesPer[c] {
			laneLow[c] |= 1 << (uint(k) * w)
			laneHigh[c] |= 1 << (uint(k)*w + w - 1)
			laneEmpty[c] |= (1<<w - 1) << (uint(k) * w)
		}
	}
}

// packLanes packs sorted ids into two words with the narrowest lane code
// that holds them, and reports false if none does.
func packLanes(ids []uint32) (lo, hi uint64, code int, ok bool) {
	top := uint64(0)
	if len(ids) > 0 {
		top = uint64(ids[len(ids)-1])
	}
	for c, w := range laneWidth[:laneCodes] {
		if top > laneMax[c] || len(ids) > 2*lanesPer[c] {
			continue
		}
		words := [2]uint64{laneEmpty[c], laneEmpty[c]}
		for k, id := range ids {
			i, shift := k/lanesPer[c], uint(k%lanesPer[c])*w
			words[i] = words[i]&^((1<<w-1)<<shift) | uint64(id)<<shift
		}
		return words[0], words[1], c, true
	}
	return 0, 0, 0, false
}

// laneMatch reports whether any lane of lo and hi (lane code c) holds the
// id whose lanes pattern repeats; fits is all ones if the id fits the
// code's lanes, else zero. The zero-lane test (x-low) &^ x & high is exact
// for "some lane is zero": the lowest zero lane borrows and sets its high
// bit; a non-zero lane never does.
func laneMatch(lo, hi uint64, c int, pattern, fits uint64) bool {
	x0, x1 := lo^pattern, hi^pattern
	return ((x0-laneLow[c])&^x0|(x1-laneLow[c])&^x1)&laneHigh[c]&fits != 0
}

// laneID returns inline id number k of an entry with lane code c.
func laneID(lo, hi uint64, c, k int) uint32 {
	w := lo
	if k >= lanesPer[c] {
		w, k = hi, k-lanesPer[c]
	}
	return uint32(w >> (uint(k) * laneWidth[c]) & (1<<laneWidth[c] - 1))
}

// bloom96 is a 96-bit Bloom filter of segment ids, 3 bits each, kept inline
// for overflow entries: about a 5% false-positive rate at 15 segments.
type bloom96 struct {
	a uint32
	b uint64
}

func segmentBloom96(id uint32) bloom96 {
	h := uint64(id)*0x9E3779B97F4A7C15 ^ uint64(id)>>7
	var f bloom96
	for j := range 3 {
		pos := (h >> (20 * j) & 0xfffff) * 96 >> 20
		if pos < 32 {
			f.a |= 1 << pos
		} else {
			f.b |= 1 << (pos - 32)
		}
	}
	return f
}

func (f bloom96) or(g bloom96) bloom96 { return bloom96{f.a | g.a, f.b | g.b} }

func (f bloom96) covers(g bloom96) bool { return f.a&g.a == g.a && f.b&g.b == g.b }
