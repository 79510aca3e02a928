package personify

import (
	"math"
	"sync/atomic"

	"github.com/personify-go/personify/personify/internal/index"
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
	byName   index.Names
	purposes map[string]*readPurpose
	timed    []uint64 // segments with a retention, whose memberships can expire
	anyTimed bool     // whether timed has any bit
}

// readSeg is what In needs of a segment.
type readSeg struct {
	bloom index.Bloom96 // index.SegmentBloom96(id)
	st    *segState     // nil once dropped; for the slow path, under the read lock
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
		rs.bloom, rs.st = index.SegmentBloom96(st.id), st
		rt.names[st.id] = name
		ids[name] = st.id
		if st.timed != nil {
			setBit(rt.timed, st.id)
			rt.purposes[st.Purpose].timed = true
			rt.anyTimed = true
		}
		rt.setServable(st, st.len() >= e.minSize(st))
	}
	rt.byName = index.NewNames(ids)
	e.rt.Store(rt)
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
