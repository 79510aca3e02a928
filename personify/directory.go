package personify

import (
	"math"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/personify-go/personify/anonymize"
)

// directory is the lookup index's table: for each pseudonym, one 32-byte
// slot (half a cache line) holding the person's entry: their dense member
// ordinal (assigned on first use and stable), their privacy state and their
// segment ids, inline when they fit in 16 bytes (about three people in four
// at 10 segments each), otherwise in an overflow record with an inline
// Bloom filter. In and Segments therefore cost one cache miss for most
// people. See index.go for why, and what was measured.
//
// Open addressing with linear probing; the home slot of a pseudonym is
// mulhi(p, len(slots)), monotone in p, so a batch sorted by pseudonym walks
// the table front to back. Load factor between 0.7 and 0.85.
//
// Readers never lock and never write. The one writer (the engine holds its
// mutex) publishes a new key only after its entry is written, deletes by
// turning the key into a tombstone, never moves a key or reuses a slot
// within a table, and updates an entry under a per-slot sequence lock: the
// sequence number in the meta word is odd while the entry's words change,
// and a reader takes a snapshot only when the meta word reads the same,
// even, before and after. Growing (which also drops tombstones) copies the
// entries into a new table and publishes it with one atomic pointer store.
//
// An ordinal is released only by [directory.release], which the engine calls
// after clearing the ordinal from every set; released ordinals are reused
// first, so the ordinal space stays dense.
type directory struct {
	tab atomic.Pointer[dirTable]

	// Writer-only state, guarded by the engine's mutex.
	next uint32   // one past the highest ordinal ever assigned
	free []uint32 // released ordinals, reused last-in first-out
	live int
}

// Slot key values with a meaning of their own. Pseudonyms that are equal to
// them (a chance of 2^-63 per person, or a deliberate bulk load) live in
// dirTable.special instead, where key 1 means present.
const (
	slotEmpty     = 0
	slotTombstone = 1
)

// dirSlot is one person's entry; every word is read and written
// atomically.
type dirSlot struct {
	key  uint64 // slotEmpty, slotTombstone or the pseudonym
	meta uint64 // see entry
	lo   uint64 // inline ids (bytes 0-7) or overflow reference and filter
	hi   uint64 // inline ids (bytes 8-15) or filter
}

// entry is a consistent snapshot of a slot's meta, lo and hi words.
//
// meta: bits 0-31 ordinal; 32-47 sequence (odd while the entry changes);
// 48-55 privacy state id (stateOverflow: in the overflow record); 56-59
// number of inline segment ids; 60-62 lane code; 63 overflow.
//
// Inline, lo and hi hold the sorted segment ids as fixed-width lanes (the
// lane code picks 6 lanes of 10 bits per word, 5 of 12, 4 of 16, 3 of 21
// or 2 of 32), unused lanes all ones: In tests every lane at once with a
// SWAR zero-lane test, a dozen instructions and no branch. Overflow: lo's
// low 32 bits are the record's reference in the arena; lo's high 32 bits
// and hi are a 96-bit Bloom filter of the ids.
type entry struct{ meta, lo, hi uint64 }

const (
	seqOne        = 1 << 32
	seqMask       = 0xffff << 32
	stateShift    = 48
	countShift    = 56
	codeShift     = 60
	overflowBit   = 1 << 63
	stateOverflow = 0xff
)

func (e entry) ord() uint32    { return uint32(e.meta) }
func (e entry) state() uint32  { return uint32(e.meta >> stateShift & 0xff) }
func (e entry) count() int     { return int(e.meta >> countShift & 0xf) }
func (e entry) code() int      { return int(e.meta >> codeShift & 0x7) }
func (e entry) overflow() bool { return e.meta&overflowBit != 0 }
func (e entry) ref() uint32    { return uint32(e.lo) }
func (e entry) withSeq(m uint64) entry {
	e.meta = e.meta&^seqMask | m&seqMask
	return e
}

func makeMeta(ord, state uint32, count int) uint64 {
	return uint64(ord) | uint64(state)<<stateShift | uint64(count)<<countShift
}

type dirTable struct {
	slots   []dirSlot
	arena   *arena // the overflow records
	used    int    // live keys plus tombstones; writer-only
	special [2]dirSlot
}

const (
	dirMinSlots = 64
	dirMaxLoad  = 0.9  // grow past this share of used slots
	dirLoad     = 0.82 // load factor right after growing
	maxSpins    = 64   // reads retried while a writer is mid-update, then the caller falls back to the lock
)

func newDirectory() *directory {
	d := &directory{}
	d.tab.Store(&dirTable{slots: make([]dirSlot, dirMinSlots), arena: newArena()})
	return d
}

// home returns p's home slot in a table of n slots.
func home(p uint64, n int) int {
	hi, _ := bits.Mul64(p, uint64(n))
	return int(hi)
}

// slot returns p's slot, or nil. Readers and the writer.
func (t *dirTable) slot(p uint64) *dirSlot {
	if p <= slotTombstone {
		if s := &t.special[p]; atomic.LoadUint64(&s.key) == 1 {
			return s
		}
		return nil
	}
	slots := t.slots
	for i := home(p, len(slots)); ; {
		s := &slots[i]
		switch atomic.LoadUint64(&s.key) {
		case p:
			return s
		case slotEmpty:
			return nil
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

// read returns a consistent snapshot of p's entry. ok is false if p is
// absent; stuck is true if a writer stayed mid-update for maxSpins reads (it
// was descheduled), and the caller must fall back to the engine's lock.
func (t *dirTable) read(p uint64) (e entry, ok, stuck bool) {
	s := t.slot(p)
	if s == nil {
		return entry{}, false, false
	}
	for range maxSpins {
		m := atomic.LoadUint64(&s.meta)
		lo := atomic.LoadUint64(&s.lo)
		hi := atomic.LoadUint64(&s.hi)
		if m&seqOne == 0 && atomic.LoadUint64(&s.meta) == m {
			return entry{m, lo, hi}, true, false
		}
	}
	return entry{}, true, true
}

// get returns p's entry. Writer-only: nothing changes it meanwhile.
func (t *dirTable) get(p anonymize.Pseudonym) (entry, bool) {
	s := t.slot(uint64(p))
	if s == nil {
		return entry{}, false
	}
	return entry{s.meta, s.lo, s.hi}, true
}

// get returns p's entry in the current table. Writer-only.
func (d *directory) get(p anonymize.Pseudonym) (entry, bool) { return d.tab.Load().get(p) }

// set replaces p's entry under the slot's sequence lock; p must be present.
// Writer-only.
func (d *directory) set(p anonymize.Pseudonym, e entry) { setSlot(d.tab.Load().slot(uint64(p)), e) }

// setSlot replaces a slot's entry under its sequence lock. Writer-only.
func setSlot(s *dirSlot, e entry) {
	seq := (s.meta&seqMask + seqOne) & seqMask // odd; wraps within its 16 bits
	atomic.StoreUint64(&s.meta, s.meta&^seqMask|seq)
	atomic.StoreUint64(&s.lo, e.lo)
	atomic.StoreUint64(&s.hi, e.hi)
	atomic.StoreUint64(&s.meta, e.withSeq((seq+seqOne)&seqMask).meta) // even again
}

// assign returns p's ordinal, giving p the next free ordinal and an empty
// entry if it has none. Writer-only.
func (d *directory) assign(p anonymize.Pseudonym) (ord uint32, added bool) {
	if e, ok := d.get(p); ok {
		return e.ord(), false
	}
	ord = d.newOrdinal()
	d.insert(p, emptyEntry(ord))
	return ord, true
}

// emptyEntry is the entry of a person with no segment and no privacy
// state: every lane unused (all ones), as the SWAR test requires.
func emptyEntry(ord uint32) entry {
	return entry{makeMeta(ord, 0, 0), laneEmpty[0], laneEmpty[0]}
}

// newOrdinal allocates an ordinal for a new entry, which the caller
// inserts. Writer-only.
func (d *directory) newOrdinal() (ord uint32) {
	if n := len(d.free); n > 0 {
		ord, d.free = d.free[n-1], d.free[:n-1]
	} else {
		if d.next == math.MaxUint32 {
			panic("personify: more than 2^32-1 members")
		}
		ord = d.next
		d.next++
	}
	d.live++
	return ord
}

// reserve grows the table now if n more entries would take it past its
// maximum load, so that a bulk load rehashes once, not many times.
// Writer-only.
func (d *directory) reserve(n int) {
	if t := d.tab.Load(); float64(t.used+n) > dirMaxLoad*float64(len(t.slots)) {
		// At least 1.5 times larger: a load that keeps adding people
		// rehashes O(log n) times, not once per batch.
		d.growTo(t, t.arena, max(d.live+n, int(float64(len(t.slots))*1.5*dirLoad)))
	}
}

// insert adds p, which must be absent. Writer-only.
func (d *directory) insert(p anonymize.Pseudonym, e entry) {
	t := d.tab.Load()
	if float64(t.used+1) > dirMaxLoad*float64(len(t.slots)) {
		t = d.grow(t, t.arena)
	}
	t.put(uint64(p), e)
}

// put writes a new key and its entry into the first empty slot of its
// probe path (never a tombstone: see the type's doc); the key goes last.
func (t *dirTable) put(p uint64, e entry) {
	var s *dirSlot
	if p <= slotTombstone {
		s = &t.special[p]
	} else {
		for i := home(p, len(t.slots)); ; {
			if s = &t.slots[i]; s.key == slotEmpty {
				t.used++
				break
			}
			if i++; i == len(t.slots) {
				i = 0
			}
		}
	}
	atomic.StoreUint64(&s.meta, e.meta&^seqMask)
	atomic.StoreUint64(&s.lo, e.lo)
	atomic.StoreUint64(&s.hi, e.hi)
	if p <= slotTombstone {
		atomic.StoreUint64(&s.key, 1)
	} else {
		atomic.StoreUint64(&s.key, p)
	}
}

// grow copies the live entries into a table sized for load dirLoad, with
// arena a (the same, or a compacted one whose references the caller fixes),
// and publishes it.
func (d *directory) grow(old *dirTable, a *arena) *dirTable { return d.growTo(old, a, d.live+1) }

// growTo is grow with room for live entries at load dirLoad.
func (d *directory) growTo(old *dirTable, a *arena, live int) *dirTable {
	t := &dirTable{slots: newSlots(tableSize(live)), arena: a}
	old.each(func(p anonymize.Pseudonym, e entry) { t.put(uint64(p), e) })
	d.tab.Store(t)
	return t
}

func tableSize(live int) int { return max(dirMinSlots, int(float64(live)/dirLoad)) }

// newSlots allocates a table's slots, on huge pages where the system allows.
func newSlots(n int) []dirSlot {
	s := make([]dirSlot, n)
	if size := uintptr(n) * unsafe.Sizeof(dirSlot{}); size >= 4<<20 {
		adviseHugePages(unsafe.Pointer(&s[0]), size)
	}
	return s
}

// each calls fn for every live entry of t, in slot order (pseudonym order
// but for wrap-around). Writer or RLock holder: the entries do not change.
func (t *dirTable) each(fn func(p anonymize.Pseudonym, e entry)) {
	for p := range t.special {
		if s := &t.special[p]; s.key == 1 {
			fn(anonymize.Pseudonym(p), entry{s.meta, s.lo, s.hi})
		}
	}
	for i := range t.slots {
		if s := &t.slots[i]; s.key > slotTombstone {
			fn(anonymize.Pseudonym(s.key), entry{s.meta, s.lo, s.hi})
		}
	}
}

// remove deletes p's entry, leaving its ordinal allocated: the caller
// releases the ordinal once nothing refers to it. The slot keeps nothing of
// the person (its entry is overwritten with an empty one, so that a
// snapshot of the table cannot give back an erased person's ordinal,
// segments or record), and a reader that matched the key a moment before
// finds no segment. Writer-only.
func (d *directory) remove(p anonymize.Pseudonym) bool {
	t := d.tab.Load()
	if p <= slotTombstone {
		s := &t.special[p]
		if atomic.LoadUint64(&s.key) != 1 {
			return false
		}
		atomic.StoreUint64(&s.key, 0)
		setSlot(s, emptyEntry(0))
		return true
	}
	s := t.slot(uint64(p))
	if s == nil {
		return false
	}
	atomic.StoreUint64(&s.key, slotTombstone)
	setSlot(s, emptyEntry(0))
	return true
}

// rekey moves an entry from pseudonym old to pseudonym new (key rotation);
// new must be absent. Writer-only.
func (d *directory) rekey(old, new anonymize.Pseudonym) {
	e, _ := d.get(old)
	d.insert(new, e) // visible under both for an instant, never under neither
	d.remove(old)
}

// release returns ord to the free list. The caller guarantees that ord is in
// no set and that its pseudonym was removed. Writer-only.
func (d *directory) release(ord uint32) {
	d.free = append(d.free, ord)
	d.live--
}

// len returns the number of live entries.
func (d *directory) len() int { return d.live }

// ordinals returns one past the highest ordinal ever assigned.
func (d *directory) ordinals() int { return int(d.next) }

// sizeBytes estimates the directory's memory, the overflow records
// included.
func (d *directory) sizeBytes() uint64 {
	t := d.tab.Load()
	return uint64(len(t.slots))*32 + uint64(cap(d.free))*4 + t.arena.sizeBytes()
}
