package index

import (
	"encoding/binary"
	"sync/atomic"
)

// Arena holds the per-person records of the lookup index: immutable byte
// strings, appended into 1 MiB chunks and addressed by a 32-bit reference
// (chunk << 20 | offset) that the Directory keeps in each slot's aux word.
//
// A record never changes once written: a write appends a new record and
// swaps the slot's aux atomically, so readers need no lock, and the bytes a
// reader can reach were written before the reference to them was published.
// Replaced records are garbage until compaction copies the live ones into a
// fresh Arena (see Engine.compactLocked).
//
// The chunk directory has a fixed capacity, so readers index it without any
// slice header that a writer could be growing: at most 4096 chunks, 4 GiB of
// records, about 3 billion memberships.
type Arena struct {
	chunks [MaxChunks]atomic.Pointer[[]byte]

	// Writer-only.
	Cur, Off int   // the chunk being filled and the next free byte in it
	Used     int64 // bytes in records, live or not
	Garbage  int64 // bytes in replaced records
}

const (
	ChunkBits = 20
	ChunkSize = 1 << ChunkBits
	ChunkMask = ChunkSize - 1
	MaxChunks = 1 << (32 - ChunkBits)
	// BigRecord is the size past which a record gets a chunk of its own (a
	// person in tens of thousands of segments).
	BigRecord = ChunkSize / 4
)

// NewArena returns an empty arena.
func NewArena() *Arena {
	a := &Arena{}
	c := make([]byte, ChunkSize)
	a.chunks[0].Store(&c)
	return a
}

// record returns the bytes from ref to the end of its chunk; a record
// decoder reads only its own. Safe for concurrent use with the writer.
func (a *Arena) Record(ref uint32) []byte {
	return (*a.chunks[ref>>ChunkBits].Load())[ref&ChunkMask:]
}

// full reports whether the Arena could not take a record of n bytes.
func (a *Arena) Full(n int) bool {
	return a.Off+n > ChunkSize && a.Cur+1 >= MaxChunks
}

// add appends a record and returns its reference. The caller checks full
// first. Writer-only.
func (a *Arena) Add(rec []byte) uint32 {
	if a.Off+len(rec) > ChunkSize || len(rec) > BigRecord {
		size := ChunkSize
		if len(rec) > BigRecord {
			size = len(rec)
		}
		c := make([]byte, size)
		a.Cur++
		a.chunks[a.Cur].Store(&c)
		a.Off = 0
	}
	c := *a.chunks[a.Cur].Load()
	copy(c[a.Off:], rec)
	ref := uint32(a.Cur)<<ChunkBits | uint32(a.Off)
	a.Off += len(rec)
	if len(rec) > BigRecord {
		a.Off = ChunkSize // nothing shares a big record's chunk
	}
	a.Used += int64(len(rec))
	return ref
}

// sizeBytes is the memory the arena's chunks take.
func (a *Arena) SizeBytes() uint64 {
	var n uint64
	for i := 0; i <= a.Cur; i++ {
		n += uint64(cap(*a.chunks[i].Load()))
	}
	return n + uint64(len(a.chunks))*8
}

// An overflow record, for a person whose segment ids do not fit inline in
// their Directory slot (or whose privacy state id is too large), is
// Uvarint(state), Uvarint(n), then the n segment ids in increasing order as
// Uvarint deltas (the first from 0).

// RecordView decodes a record lazily.
type RecordView struct {
	Rest  []byte // the ids
	State uint32
	N     int
}

// ViewRecord reads the header of the record at the start of b.
func ViewRecord(b []byte) RecordView {
	state, k := Uvarint(b)
	n, k2 := Uvarint(b[k:])
	return RecordView{Rest: b[k+k2:], State: uint32(state), N: int(n)}
}

// Has reports whether the record holds segment id.
func (r RecordView) Has(id uint32) bool {
	b, cur := r.Rest, uint64(0)
	for range r.N {
		d, k := Uvarint(b)
		b = b[k:]
		if cur += d; cur >= uint64(id) {
			return cur == uint64(id)
		}
	}
	return false
}

// appendIDs appends the record's segment ids to dst.
func (r RecordView) AppendIDs(dst []uint32) []uint32 {
	b, cur := r.Rest, uint64(0)
	for range r.N {
		d, k := Uvarint(b)
		b = b[k:]
		cur += d
		dst = append(dst, uint32(cur))
	}
	return dst
}

// EncodeRecord appends the encoding of a record to dst; ids must be sorted.
func EncodeRecord(dst []byte, state uint32, ids []uint32) []byte {
	dst = binary.AppendUvarint(dst, uint64(state))
	dst = binary.AppendUvarint(dst, uint64(len(ids)))
	return appendDeltas(dst, ids)
}

// appendDeltas appends sorted ids as Uvarint deltas.
func appendDeltas(dst []byte, ids []uint32) []byte {
	prev := uint32(0)
	for _, id := range ids {
		dst = binary.AppendUvarint(dst, uint64(id-prev))
		prev = id
	}
	return dst
}

// RecordLen returns the length of the record at the start of b.
func RecordLen(b []byte) int {
	r := ViewRecord(b)
	n := len(b) - len(r.Rest)
	for range r.N {
		_, k := Uvarint(b[n:])
		n += k
	}
	return n
}

// Uvarint decodes a Uvarint, with a fast path for the one-byte case, the
// common one in records.
func Uvarint(b []byte) (uint64, int) {
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

// Inline lanes: a lane code c gives lanes of LaneWidth[c] bits,
// LanesPer[c] to a 64-bit word. LaneLow[c] has the lowest bit of every lane
// set, LaneHigh[c] the highest; an unused lane is all ones, so the largest
// id a code can hold is LaneMax[c].
// The tables have 8 entries, one per 3-bit lane code, so that indexing
// them with a code needs no bounds check; codes 5-7 are never used.
var (
	LaneWidth = [8]uint{10, 12, 16, 21, 32, 32, 32, 32}
	LanesPer  [8]int
	LaneLow   [8]uint64
	LaneHigh  [8]uint64
	LaneMax   [8]uint64
	LaneEmpty [8]uint64 // a word of unused lanes
)

// LaneCodes is the number of lane codes in use.
const LaneCodes = 5

func init() {
	for c, w := range LaneWidth {
		LanesPer[c] = 64 / int(w)
		LaneMax[c] = 1<<w - 2
		for k := range LanesPer[c] {
			LaneLow[c] |= 1 << (uint(k) * w)
			LaneHigh[c] |= 1 << (uint(k)*w + w - 1)
			LaneEmpty[c] |= (1<<w - 1) << (uint(k) * w)
		}
	}
}

// PackLanes packs sorted ids into two words with the narrowest lane code
// that holds them, and reports false if none does.
func PackLanes(ids []uint32) (lo, hi uint64, code int, ok bool) {
	top := uint64(0)
	if len(ids) > 0 {
		top = uint64(ids[len(ids)-1])
	}
	for c, w := range LaneWidth[:LaneCodes] {
		if top > LaneMax[c] || len(ids) > 2*LanesPer[c] {
			continue
		}
		words := [2]uint64{LaneEmpty[c], LaneEmpty[c]}
		for k, id := range ids {
			i, shift := k/LanesPer[c], uint(k%LanesPer[c])*w
			words[i] = words[i]&^((1<<w-1)<<shift) | uint64(id)<<shift
		}
		return words[0], words[1], c, true
	}
	return 0, 0, 0, false
}

// LaneMatch reports whether any lane of lo and hi (lane code c) holds the
// id whose lanes pattern repeats; fits is all ones if the id fits the
// code's lanes, else zero. The zero-lane test (x-low) &^ x & high is exact
// for "some lane is zero": the lowest zero lane borrows and sets its high
// bit; a non-zero lane never does.
func LaneMatch(lo, hi uint64, c int, pattern, fits uint64) bool {
	x0, x1 := lo^pattern, hi^pattern
	return ((x0-LaneLow[c])&^x0|(x1-LaneLow[c])&^x1)&LaneHigh[c]&fits != 0
}

// LaneID returns inline id number k of an entry with lane code c.
func LaneID(lo, hi uint64, c, k int) uint32 {
	w := lo
	if k >= LanesPer[c] {
		w, k = hi, k-LanesPer[c]
	}
	return uint32(w >> (uint(k) * LaneWidth[c]) & (1<<LaneWidth[c] - 1))
}

// Bloom96 is a 96-bit Bloom filter of segment ids, 3 bits each, kept inline
// for overflow entries: about a 5% false-positive rate at 15 segments.
type Bloom96 struct {
	A uint32
	B uint64
}

// SegmentBloom96 returns the filter bits of segment id: three of 96.
func SegmentBloom96(id uint32) Bloom96 {
	h := uint64(id)*0x9E3779B97F4A7C15 ^ uint64(id)>>7
	var f Bloom96
	for j := range 3 {
		pos := (h >> (20 * j) & 0xfffff) * 96 >> 20
		if pos < 32 {
			f.A |= 1 << pos
		} else {
			f.B |= 1 << (pos - 32)
		}
	}
	return f
}

// Or returns the union of two filters.
func (f Bloom96) Or(g Bloom96) Bloom96 { return Bloom96{f.A | g.A, f.B | g.B} }

// Covers reports whether every bit of g is set in f.
func (f Bloom96) Covers(g Bloom96) bool { return f.A&g.A == g.A && f.B&g.B == g.B }
