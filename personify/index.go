package personify

import (
	"encoding/binary"
	"math"
	"slices"
	"time"

	"github.com/personify-go/personify/anonymize"
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
//   - per DESIGN.md: Contains on Roaring bitmaps of hashed IDs, about 700
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

// decodeEntry returns an entry's privacy state id and appends its segment
// ids to dst.
func (t *dirTable) decodeEntry(dst []uint32, en entry) (uint32, []uint32) {
	if en.overflow() {
		r := viewRecord(t.arena.record(en.ref()))
		return r.state, r.appendIDs(dst)
	}
	for k := range en.count() {
		dst = append(dst, laneID(en.lo, en.hi, en.code(), k))
	}
	return en.state(), dst
}

// makeEntry encodes an entry: inline when the ids fit in the lanes and the
// state id in 8 bits, otherwise with an overflow record appended to a.
func makeEntry(a *arena, buf []byte, ord, state uint32, ids []uint32) (entry, []byte) {
	return makeEntryFilter(a, buf, ord, state, ids, nil)
}

// makeEntryFilter is makeEntry with the overflow filter already known (nil:
// compute it from the ids).
func makeEntryFilter(a *arena, buf []byte, ord, state uint32, ids []uint32, known *bloom96) (entry, []byte) {
	if state < stateOverflow {
		if lo, hi, code, ok := packLanes(ids); ok {
			return entry{makeMeta(ord, state, len(ids)) | uint64(code)<<codeShift, lo, hi}, buf
		}
	}
	buf = encodeRecord(buf[:0], state, ids)
	var f bloom96
	if known != nil {
		f = *known
	} else {
		for _, id := range ids {
			f = f.or(segmentBloom96(id))
		}
	}
	ref := a.add(buf)
	return entry{makeMeta(ord, stateOverflow, 0) | overflowBit, uint64(ref) | uint64(f.a)<<32, f.b}, buf
}

// noID stands for "no segment id" in changeLocked.
const noID = math.MaxUint32

// changeLocked edits the entry of the person stored under primary
// pseudonym p: it adds segment id add and removes segment id remove (either
// may be noID), and applies state to their privacy state (nil: unchanged).
func (e *Engine) changeLocked(p anonymize.Pseudonym, add, remove uint32, state func(*privState)) {
	if s := e.dir.tab.Load().slot(uint64(p)); s != nil {
		e.changeSlotLocked(s, p, add, remove, state)
	}
}

// changeSlotLocked is changeLocked for p's slot s in the current table.
func (e *Engine) changeSlotLocked(s *dirSlot, p anonymize.Pseudonym, add, remove uint32, state func(*privState)) {
	old := entry{s.meta, s.lo, s.hi}
	if state == nil && !old.overflow() {
		if en, ok := changeInline(old, add, remove); ok {
			if en != old {
				setSlot(s, en)
			}
			return
		}
	}
	t := e.dir.tab.Load()
	stateID, ids := t.decodeEntry(e.idBuf[:0], old)
	n := len(ids)
	if add != noID {
		if i, found := slices.BinarySearch(ids, add); !found {
			ids = slices.Insert(ids, i, add)
		}
	}
	if remove != noID {
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
	if newID == stateID && len(ids) == n && (add == noID || remove == noID) {
		return // nothing added, nothing removed, same state
	}
	if e.makeRoomLocked(recordMax(len(ids))) {
		t = e.dir.tab.Load()
		s = t.slot(uint64(p))
		old = entry{s.meta, s.lo, s.hi}
	}
	var en entry
	var known *bloom96
	if old.overflow() && remove == noID { // a filter only ever gains bits here
		f := bloom96{uint32(old.lo >> 32), old.hi}
		if add != noID {
			f = f.or(segmentBloom96(add))
		}
		known = &f
	}
	en, e.recBuf = makeEntryFilter(t.arena, e.recBuf, old.ord(), newID, ids, known)
	if old.overflow() {
		t.arena.garbage += int64(recordLen(t.arena.record(old.ref())))
	}
	setSlot(s, en)
}

// changeInline adds and removes an id of an inline entry without leaving
// the registers; ok is false if the result does not fit inline.
func changeInline(en entry, add, remove uint32) (entry, bool) {
	n, c := en.count(), en.code()
	// Bulk loads add segments in increasing id order: appending to the
	// lanes is one shift and one or.
	if remove == noID && add != noID && uint64(add) <= laneMax[c] && n < 2*lanesPer[c] &&
		(n == 0 || laneID(en.lo, en.hi, c, n-1) < add) {
		w, k := &en.lo, n
		if k >= lanesPer[c] {
			w, k = &en.hi, k-lanesPer[c]
		}
		shift := uint(k) * laneWidth[c]
		*w = *w&^((1<<laneWidth[c]-1)<<shift) | uint64(add)<<shift
		en.meta = en.meta&^(0xf<<countShift) | uint64(n+1)<<countShift
		return en, true
	}
	var buf [12]uint32
	ids := buf[:n]
	for k := range ids {
		ids[k] = laneID(en.lo, en.hi, c, k)
	}
	changed := false
	if add != noID {
		if i, found := slices.BinarySearch(ids, add); !found {
			if n == len(buf) {
				return en, false
			}
			ids, changed = slices.Insert(ids, i, add), true
		}
	}
	if remove != noID {
		if i, found := slices.BinarySearch(ids, remove); found {
			ids, changed = slices.Delete(ids, i, i+1), true
		}
	}
	if !changed {
		return en, true
	}
	lo, hi, code, ok := packLanes(ids)
	if !ok {
		return en, false
	}
	return entry{makeMeta(en.ord(), en.state(), len(ids)) | uint64(code)<<codeShift, lo, hi}, true
}

// addIDLocked records that p is in segment id.
func (e *Engine) addIDLocked(p anonymize.Pseudonym, id uint32) { e.changeLocked(p, id, noID, nil) }

// removeIDLocked records that p left segment id.
func (e *Engine) removeIDLocked(p anonymize.Pseudonym, id uint32) { e.changeLocked(p, noID, id, nil) }

// setStateLocked applies change to p's privacy state.
func (e *Engine) setStateLocked(p anonymize.Pseudonym, change func(*privState)) {
	e.changeLocked(p, noID, noID, change)
}

// forgetRecordLocked counts p's overflow record, if any, as garbage before
// p's entry goes.
func (e *Engine) forgetRecordLocked(p anonymize.Pseudonym) {
	t := e.dir.tab.Load()
	if en, ok := t.get(p); ok && en.overflow() {
		t.arena.garbage += int64(recordLen(t.arena.record(en.ref())))
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
	t := e.dir.tab.Load()
	if g := t.arena.garbage; g > compactMinGarbage && 4*g > int64(len(t.slots))*32+t.arena.used {
		e.compactLocked()
	}
}

// compactLocked re-encodes every live entry, without the ids of dropped
// segments, into a fresh table and arena, and publishes them with one
// atomic store: readers on the old table finish undisturbed.
func (e *Engine) compactLocked() {
	old := e.dir.tab.Load()
	rt := e.rt.Load()
	t := &dirTable{slots: newSlots(tableSize(e.dir.live + 1)), arena: newArena()}
	var ids []uint32
	var buf []byte
	old.each(func(p anonymize.Pseudonym, en entry) {
		var state uint32
		state, ids = old.decodeEntry(ids[:0], en)
		ids = slices.DeleteFunc(ids, func(id uint32) bool { return rt.names[id] == "" })
		en, buf = makeEntry(t.arena, buf, en.ord(), state, ids)
		t.put(uint64(p), en)
	})
	e.dir.tab.Store(t)
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

// recordMax bounds the size of an overflow record of n ids.
func recordMax(n int) int { return (2 + n) * binary.MaxVarintLen32 }

// makeRoomLocked compacts if the arena cannot take n more bytes, and
// reports whether it did.
func (e *Engine) makeRoomLocked(n int) bool {
	if !e.dir.tab.Load().arena.full(n) {
		return false
	}
	e.compactLocked()
	if e.dir.tab.Load().arena.full(n) {
		panic("personify: the lookup index needs more than 4 GiB of overflow records")
	}
	return true
}
