package personify

import (
	"slices"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/segment"
)

// The lookup index serves In and Segments without a lock, from structures
// derived from the segment bitmaps (which stay the source of truth):
//
//   - the directory (directory.go): per person one 32-byte slot with the
//     pseudonym, ordinal, privacy-state id and, for about three people in
//     four, their segment ids inline, delta-varint coded;
//   - overflow records (arena.go) for the others, with a 96-bit Bloom
//     filter of their segments inline so that In rarely reads them;
//   - the privacy states: the distinct combinations of consent and
//     suppression bits (one bit per purpose), interned, so an entry names
//     one with a small integer;
//   - the read table: per segment id its name, purpose bit, minimum size,
//     sensitivity and live counters (member count, expiry deadline).
//
// A lookup is one probe of the directory, one cache miss for most people;
// everything else it touches is small and cached. What was measured on
// "1M x 1000" (2-core EPYC; the map baseline, 50 ns, is L3-resident there)
// before this layout:
//
//   - a slot {pseudonym, reference} pointing at the person's record: In
//     290 ns, Segments 360 ns (two dependent misses);
//   - the same with a 32-bit Bloom filter of the person's segments in the
//     slot: In 110 ns. The filter passes about one non-member in five (32
//     bits cannot do better for 10 segments), and each pass costs a
//     dependent miss and a mispredicted branch; Segments still needs the
//     record.
//   - as first designed: Contains on Roaring bitmaps of hashed IDs, about 700
//     ns each and 445 us for 1,000 segments; on bitmaps of ordinals,
//     several dependent misses (binary searches in 1.3 KB containers).
//
// The price of co-location is memory: 32 bytes a slot (about 40 bytes a
// person at the table's load factor) where the two-miss layout had 16 plus
// a 15-byte record. Writes rewrite the person's entry under the slot's
// sequence lock; replaced overflow records are garbage that compaction
// reclaims, without blocking readers, once it is over half the arena.

// privState is a person's consent and suppression: one bit per purpose.
type privState struct {
	granted, denied, suppressed uint64
	all                         bool // suppressed for every purpose
}

// initIndexLocked sets up the index of an empty engine.
func (e *Engine) initIndexLocked() {
	e.stateIDs = map[privState]uint32{{}: 0}
	states := []privState{{}}
	e.states.Store(&states)
	e.publishLocked()
}

// stateID interns a privacy state. Writer-only.
func (e *Engine) stateID(s privState) uint32 {
	if id, ok := e.stateIDs[s]; ok {
		return id
	}
	states := append(*e.states.Load(), s) // readers never read past their own length
	id := uint32(len(states) - 1)
	e.states.Store(&states)
	e.stateIDs[s] = id
	return id
}

// changeLocked edits the entry of the person stored under primary
// pseudonym p: it adds segment id add and removes segment id remove (either
// may be index.NoID), and applies state to their privacy state (nil: unchanged).
// A linked person's change is made to each of their slots alike.
func (e *Engine) changeLocked(p anonymize.Pseudonym, add, remove uint32, state func(*privState)) {
	s := e.dir.Tab.Load().Slot(uint64(p))
	if s == nil {
		return
	}
	if len(e.links) > 0 {
		if l, ok := e.links[s.Entry().Ord()]; ok {
			for _, q := range l {
				if qs := e.dir.Tab.Load().Slot(uint64(q.Pseudonym)); qs != nil {
					e.changeSlotLocked(qs, q.Pseudonym, add, remove, state)
				}
			}
			return
		}
	}
	e.changeSlotLocked(s, p, add, remove, state)
}

// changeSlotLocked is changeLocked for p's slot s in the current table.
func (e *Engine) changeSlotLocked(s *index.Slot, p anonymize.Pseudonym, add, remove uint32, state func(*privState)) {
	old := s.Entry()
	if state == nil && !old.Overflow() {
		if en, ok := index.ChangeInline(old, add, remove); ok {
			if en != old {
				index.SetSlot(s, en)
			}
			return
		}
	}
	t := e.dir.Tab.Load()
	stateID, ids := t.DecodeEntry(e.idBuf[:0], old)
	n := len(ids)
	if add != index.NoID {
		if i, found := slices.BinarySearch(ids, add); !found {
			ids = slices.Insert(ids, i, add)
		}
	}
	if remove != index.NoID {
		if i, found := slices.BinarySearch(ids, remove); found {
			ids = slices.Delete(ids, i, i+1)
		}
	}
	newID := stateID
	if state != nil {
		ps := (*e.states.Load())[stateID]
		state(&ps)
		newID = e.stateID(ps)
	}
	e.idBuf = ids[:0]
	if newID == stateID && len(ids) == n && (add == index.NoID || remove == index.NoID) {
		return // nothing added, nothing removed, same state
	}
	if e.makeRoomLocked(index.RecordMax(len(ids))) {
		t = e.dir.Tab.Load()
		s = t.Slot(uint64(p))
		old = s.Entry()
	}
	var en index.Entry
	var known *index.Bloom96
	if old.Overflow() && remove == index.NoID { // a filter only ever gains bits here
		f := index.Bloom96{A: uint32(old.Lo >> 32), B: old.Hi}
		if add != index.NoID {
			f = f.Or(index.SegmentBloom96(add))
		}
		known = &f
	}
	en, e.recBuf = index.MakeEntryFilter(t.Arena, e.recBuf, old.Ord(), newID, ids, known)
	if old.Overflow() {
		t.Arena.Garbage += int64(index.RecordLen(t.Arena.Record(old.Ref())))
	}
	index.SetSlot(s, en)
}

// addIDLocked records that p is in segment id.
func (e *Engine) addIDLocked(p anonymize.Pseudonym, id uint32) {
	e.changeLocked(p, id, index.NoID, nil)
}

// removeIDLocked records that p left segment id.
func (e *Engine) removeIDLocked(p anonymize.Pseudonym, id uint32) {
	e.changeLocked(p, index.NoID, id, nil)
}

// setStateLocked applies change to p's privacy state.
func (e *Engine) setStateLocked(p anonymize.Pseudonym, change func(*privState)) {
	e.changeLocked(p, index.NoID, index.NoID, change)
}

// forgetRecordLocked counts p's overflow record, if any, as garbage before
// p's entry goes.
func (e *Engine) forgetRecordLocked(p anonymize.Pseudonym) {
	t := e.dir.Tab.Load()
	if en, ok := t.Get(p); ok && en.Overflow() {
		t.Arena.Garbage += int64(index.RecordLen(t.Arena.Record(en.Ref())))
	}
}

// compactMinGarbage is the garbage below which compaction is not worth a
// copy of the records (tests lower it).
var compactMinGarbage int64 = 1 << 20

// maybeCompactLocked compacts once the garbage is worth rebuilding the
// index for: over a quarter of the index (table and records), so that the
// garbage costs at most that much memory and each compaction, which copies
// the whole table, is paid for by at least as much reclaimed.
func (e *Engine) maybeCompactLocked() {
	t := e.dir.Tab.Load()
	if g := t.Arena.Garbage; g > compactMinGarbage && 4*g > int64(len(t.Slots))*32+t.Arena.Used {
		e.compactLocked()
	}
}

// compactLocked re-encodes the index without the ids of dropped segments
// (index.Directory.Compact); readers on the old table finish undisturbed.
func (e *Engine) compactLocked() {
	rt := e.rt.Load()
	e.dir.Compact(func(id uint32) bool { return int(id) < len(rt.names) && rt.names[id] != "" })
}

// dropIDsLocked removes, for every person, the segment ids whose removed
// set holds their ordinal (after Expire). It scans the directory once.
func (e *Engine) dropIDsLocked(removed map[uint32]*segment.Set) {
	if len(removed) == 0 {
		return
	}
	sets := make([]*segment.Set, 0, len(removed))
	for _, s := range removed {
		sets = append(sets, s)
	}
	for _, tp := range e.peopleInLocked(segment.Or(sets...)) {
		for id, r := range removed {
			if r.Contains(tp.ord) {
				e.removeIDLocked(tp.p, id)
			}
		}
	}
}

// stillHolds is the slow path of a lookup in a segment that holds expired
// memberships Expire has not dropped yet: it asks the segment's timed set,
// under the read lock.
func (e *Engine) stillHolds(st *segState, ord uint32, now time.Time) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return st.holds(ord, now)
}

// makeRoomLocked compacts if the arena cannot take n more bytes, and
// reports whether it did.
func (e *Engine) makeRoomLocked(n int) bool {
	if !e.dir.Tab.Load().Arena.Full(n) {
		return false
	}
	e.compactLocked()
	if e.dir.Tab.Load().Arena.Full(n) {
		panic("personify: the lookup index needs more than 4 GiB of overflow records")
	}
	return true
}
