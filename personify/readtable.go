package personify

import (
	"math"
	"sync/atomic"
	"unsafe"
)

// readTable is the segment and purpose metadata that lookups read,
// published as a whole whenever a definition changes, and laid out for the
// per-id loop of Segments: dense arrays and bitsets indexed by segment id,
// so that checking one of a person's segments costs a few bit tests, not
// pointer chases (every instruction that waits for the person's entry
// delays the next lookup's cache miss).
type readTable struct {
	segs     []readSeg // by segment id
	names    []string  // by segment id; "" once dropped
	byName   nameTable
	purposes map[string]*readPurpose
	timed    []uint64 // segments with a retention, whose memberships can expire
	anyTimed bool     // whether timed has any bit
}

// readSeg is what In needs of a segment.
type readSeg struct {
	bloom bloom96   // segmentBloom96(id)
	st    *segState // nil once dropped; for the slow path, under the read lock
}

type readPurpose struct {
	bit   uint8
	optIn bool
	timed bool // some segment of the purpose has a retention
	// servable and servableSensitive have the bits of the segments of this
	// purpose, not sensitive and sensitive, that have at least
	// max(K, MinSize) members: Segments' whole per-segment test is one or
	// two of these bits. Writers update the current table's words
	// atomically when a size crosses the bound; a new table starts from
	// the sizes.
	servable, servableSensitive []atomic.Uint64
}

// segLive holds a segment's expiry deadline, which changes with writes and
// which lookups read for segments with a retention.
type segLive struct {
	deadline atomic.Int64 // Unix ns when the oldest membership expires; MaxInt64: never
}

func hasBit(set []uint64, id uint32) bool {
	w := id >> 6
	return w < uint32(len(set)) && set[w]>>(id&63)&1 != 0
}

func setBit(set []uint64, id uint32) { set[id>>6] |= 1 << (id & 63) }

// publishLocked publishes a new read table from the definitions.
func (e *Engine) publishLocked() {
	n := e.nextSegID
	words := (n + 63) / 64
	rt := &readTable{segs: make([]readSeg, n), names: make([]string, n),
		timed: make([]uint64, words), purposes: make(map[string]*readPurpose, len(e.purposes))}
	for name, ps := range e.purposes {
		rt.purposes[name] = &readPurpose{bit: ps.bit, optIn: ps.Model == OptIn,
			servable: make([]atomic.Uint64, words), servableSensitive: make([]atomic.Uint64, words)}
	}
	ids := make(map[string]uint32, len(e.segs))
	for name, st := range e.segs {
		rs := &rt.segs[st.id]
		rs.bloom, rs.st = segmentBloom96(st.id), st
		rt.names[st.id] = name
		ids[name] = st.id
		if st.timed != nil {
			setBit(rt.timed, st.id)
			rt.purposes[st.Purpose].timed = true
			rt.anyTimed = true
		}
		rt.setServable(st, st.len() >= e.minSize(st))
	}
	rt.byName = newNameTable(ids)
	e.rt.Store(rt)
}

// setServable sets or clears a segment's bits in the size-dependent sets.
func (rt *readTable) setServable(st *segState, big bool) {
	if st.id >= uint32(len(rt.segs)) {
		return
	}
	pu := rt.purposes[st.Purpose]
	if pu == nil {
		return
	}
	w, bit := st.id>>6, uint64(1)<<(st.id&63)
	x := &pu.servable[w]
	if st.Sensitive {
		x = &pu.servableSensitive[w]
	}
	if big {
		x.Or(bit)
	} else {
		x.And(^bit)
	}
}

// refreshLocked updates what lookups read of a segment after a write: its
// size against the minimum, and its expiry deadline.
func (e *Engine) refreshLocked(st *segState) {
	e.rt.Load().setServable(st, st.len() >= e.minSize(st))
	deadline := int64(math.MaxInt64)
	if st.timed != nil {
		if oldest, ok := st.timed.Oldest(); ok {
			deadline = oldest.Add(st.Retention).UnixNano()
		}
	}
	st.live.deadline.Store(deadline)
}

// nameTable maps segment names to ids, for In's segment argument: Go's
// map with string keys spent about 30 ns a lookup here (generic hashing and
// a memequal call), a third of In. Names are keyed by two 8-byte words
// (their first and last 8 bytes, overlapping, or the bytes themselves when
// shorter) and their length: hashing is a multiply, comparing two words,
// exact for names up to 16 bytes; longer names also compare the string.
// Open addressing over a power-of-two table a third full. Immutable.
type nameTable struct {
	slots []nameSlot
	shift uint
}

type nameSlot struct {
	a, b uint64
	n    int
	id   uint32
	name string
}

// nameKey returns the two words and the length that key a name.
func nameKey(s string) (a, b uint64, n int) {
	n = len(s)
	p := unsafe.Pointer(unsafe.StringData(s))
	switch {
	case n >= 8: // first and last 8 bytes, overlapping
		return *(*uint64)(p), *(*uint64)(unsafe.Add(p, n-8)), n
	case n >= 4: // first and last 4 bytes, overlapping
		return uint64(*(*uint32)(p)) | uint64(*(*uint32)(unsafe.Add(p, n-4)))<<32, 0, n
	}
	for i := n - 1; i >= 0; i-- {
		a = a<<8 | uint64(s[i])
	}
	return a, 0, n
}

func (t *nameTable) home(a, b uint64, n int) uint64 {
	return ((a^uint64(n))*0x9E3779B97F4A7C15 ^ b*0xC2B2AE3D27D4EB4F) >> t.shift
}

func newNameTable(ids map[string]uint32) nameTable {
	size, shift := 8, uint(61)
	for size < 3*len(ids) {
		size, shift = size*2, shift-1
	}
	t := nameTable{slots: make([]nameSlot, size), shift: shift}
	for name, id := range ids {
		a, b, n := nameKey(name)
		i := t.home(a, b, n)
		for t.slots[i].n != 0 {
			i = (i + 1) & uint64(size-1)
		}
		t.slots[i] = nameSlot{a, b, n, id, name}
	}
	return t
}

// get returns the id of a segment name. Names are never empty.
func (t *nameTable) get(name string) (uint32, bool) {
	a, b, n := nameKey(name)
	mask := uint64(len(t.slots) - 1)
	for i := t.home(a, b, n) & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		// Up to 16 bytes the two words are the whole name; longer names
		// that share their first and last 8 bytes are told apart by
		// comparing them, and the probe goes on past a mismatch.
		if s.a == a && s.b == b && s.n == n && n != 0 && (n <= 16 || s.name == name) {
			return s.id, true
		}
		if s.n == 0 {
			return 0, false
		}
	}
}
