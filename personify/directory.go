package personify

import (
	"math"
	"math/bits"
	"sync/atomic"

	"github.com/personify-go/personify/anonymize"
)

// directory maps each pseudonym to the person's record in the lookup index
// (see index.go), which holds their dense member ordinal, assigned on first
// use, their privacy state and their segments. It is most of the engine's
// per-person memory, so it is an open-addressing table of 16-byte slots
// {pseudonym, record reference, segment filter} with linear probing at a
// load factor between 0.7 and 0.85 (about 21 bytes per person). The segment
// filter is a 32-bit Bloom filter of the person's segment ids: In answers
// "not a member" from the slot alone unless the filter matches (about one
// lookup in five for a person in 10 segments), saving the second cache miss.
//
// The home slot of a pseudonym is mulhi(p, len(slots)): monotone in p, so a
// batch sorted by pseudonym walks the table front to back, and keyed
// pseudonyms, being uniformly random, spread evenly. The way back, ordinal
// to pseudonym, is only needed in bulk (audience activation, expiry,
// erasure of a destroyed key's data), so it is a scan of the table rather
// than 8 more bytes per person.
//
// Readers never lock. The one writer (the engine holds its mutex) fills a
// slot's reference and filter before it publishes the key with an atomic
// store, deletes by turning the key into a tombstone, and never moves a key
// or reuses a slot within a table. Growing, which also drops the
// tombstones, builds a new table and publishes it with one atomic pointer
// store. A reader therefore sees every write that happened before it loaded
// the table, and a consistent table either way.
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
	buf  []byte // scratch for new records
}

// Slot key values with a meaning of their own. Pseudonyms that are equal to
// them (a chance of 2^-63 per person, or a deliberate bulk load) live in
// dirTable.special instead.
const (
	slotEmpty     = 0
	slotTombstone = 1
)

type dirSlot struct {
	key   uint64 // atomic: slotEmpty, slotTombstone or a pseudonym
	ref   uint32 // atomic: the person's record in the table's arena
	bloom uint32 // atomic: Bloom filter of the record's segment ids
}

type dirTable struct {
	slots   []dirSlot
	arena   *arena // the records the slots refer to
	used    int    // live keys plus tombstones; writer-only
	special [2]specialSlot
}

type specialSlot struct {
	present atomic.Bool
	ref     atomic.Uint32
	bloom   atomic.Uint32
}

const (
	dirMinSlots = 64
	dirMaxLoad  = 0.85 // grow past this share of used slots
	dirLoad     = 0.7  // load factor right after growing
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

// lookup returns p's record reference and segment filter. Safe for
// concurrent use with one writer.
func (d *directory) lookup(p anonymize.Pseudonym) (ref, bloom uint32, ok bool) {
	return d.tab.Load().lookup(uint64(p))
}

func (t *dirTable) lookup(p uint64) (ref, bloom uint32, ok bool) {
	if p <= slotTombstone {
		s := &t.special[p]
		if !s.present.Load() {
			return 0, 0, false
		}
		return s.ref.Load(), s.bloom.Load(), true
	}
	slots := t.slots
	for i := home(p, len(slots)); ; {
		s := &slots[i]
		k := atomic.LoadUint64(&s.key)
		if k == p {
			return atomic.LoadUint32(&s.ref), atomic.LoadUint32(&s.bloom), true
		}
		if k == slotEmpty {
			return 0, 0, false
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

// find returns the index of p's slot, or -1. Writer-only helper.
func (t *dirTable) find(p uint64) int {
	slots := t.slots
	for i := home(p, len(slots)); ; {
		switch slots[i].key {
		case p:
			return i
		case slotEmpty:
			return -1
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

// ord returns the ordinal in the record at ref.
func (t *dirTable) ord(ref uint32) uint32 { return viewRecord(t.arena.record(ref)).ord }

// assign returns p's ordinal, giving p the next free ordinal and an empty
// record if it has none. Writer-only; the caller checks that the arena is
// not full.
func (d *directory) assign(p anonymize.Pseudonym) (ord uint32, added bool) {
	if ref, _, ok := d.lookup(p); ok {
		return d.tab.Load().ord(ref), false
	}
	if n := len(d.free); n > 0 {
		ord, d.free = d.free[n-1], d.free[:n-1]
	} else {
		if d.next == math.MaxUint32 {
			panic("personify: more than 2^32-1 members")
		}
		ord = d.next
		d.next++
	}
	d.buf = encodeRecord(d.buf[:0], ord, 0, nil)
	d.insert(p, d.tab.Load().arena.add(d.buf), 0)
	d.live++
	return ord, true
}

// insert adds p, which must be absent. Writer-only.
func (d *directory) insert(p anonymize.Pseudonym, ref, bloom uint32) {
	t := d.tab.Load()
	if float64(t.used+1) > dirMaxLoad*float64(len(t.slots)) {
		t = d.grow(t)
	}
	t.put(uint64(p), ref, bloom)
}

// put writes a new key into the first empty slot of its probe path (never a
// tombstone: see the type's doc). The key is published last.
func (t *dirTable) put(p uint64, ref, bloom uint32) {
	if p <= slotTombstone {
		s := &t.special[p]
		s.ref.Store(ref)
		s.bloom.Store(bloom)
		s.present.Store(true)
		return
	}
	slots := t.slots
	for i := home(p, len(slots)); ; {
		if s := &slots[i]; s.key == slotEmpty {
			t.used++
			atomic.StoreUint32(&s.ref, ref)
			atomic.StoreUint32(&s.bloom, bloom)
			atomic.StoreUint64(&s.key, p)
			return
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

// grow rehashes the live keys into a table sized for load dirLoad (tombstones
// are dropped, so this also cleans a table full of them) and publishes it.
func (d *directory) grow(old *dirTable) *dirTable {
	t := &dirTable{slots: make([]dirSlot, tableSize(d.live+1)), arena: old.arena}
	old.each(func(p anonymize.Pseudonym, ref, bloom uint32) { t.put(uint64(p), ref, bloom) })
	d.tab.Store(t)
	return t
}

func tableSize(live int) int { return max(dirMinSlots, int(float64(live)/dirLoad)) }

// update replaces p's record reference and filter; p must be present.
// Readers must never see a filter that lacks a segment of the record they
// may read, so the filter covers both records while the reference moves.
// Writer-only.
func (d *directory) update(p anonymize.Pseudonym, ref, bloom uint32) {
	t := d.tab.Load()
	if p <= slotTombstone {
		s := &t.special[p]
		s.bloom.Store(s.bloom.Load() | bloom)
		s.ref.Store(ref)
		s.bloom.Store(bloom)
		return
	}
	s := &t.slots[t.find(uint64(p))]
	atomic.StoreUint32(&s.bloom, s.bloom|bloom)
	atomic.StoreUint32(&s.ref, ref)
	atomic.StoreUint32(&s.bloom, bloom)
}

// each calls fn for every live entry of the current table, in slot order
// (pseudonym order but for wrap-around). fn must not change the directory.
// Writer or RLock holder.
func (d *directory) each(fn func(p anonymize.Pseudonym, ref, bloom uint32)) { d.tab.Load().each(fn) }

func (t *dirTable) each(fn func(p anonymize.Pseudonym, ref, bloom uint32)) {
	for p := range t.special {
		if s := &t.special[p]; s.present.Load() {
			fn(anonymize.Pseudonym(p), s.ref.Load(), s.bloom.Load())
		}
	}
	for i := range t.slots {
		if s := &t.slots[i]; s.key > slotTombstone {
			fn(anonymize.Pseudonym(s.key), s.ref, s.bloom)
		}
	}
}

// remove deletes p's entry, leaving its ordinal allocated: the caller
// releases the ordinal once nothing refers to it. Writer-only.
func (d *directory) remove(p anonymize.Pseudonym) bool {
	t := d.tab.Load()
	if p <= slotTombstone {
		return t.special[p].present.Swap(false)
	}
	i := t.find(uint64(p))
	if i < 0 {
		return false
	}
	atomic.StoreUint64(&t.slots[i].key, slotTombstone)
	return true
}

// rekey moves an entry from pseudonym old to pseudonym new (key rotation);
// new must be absent. Writer-only.
func (d *directory) rekey(old, new anonymize.Pseudonym) {
	ref, bloom, _ := d.lookup(old)
	d.insert(new, ref, bloom) // visible under both for an instant, never under neither
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

// sizeBytes estimates the directory's memory, the index records included.
func (d *directory) sizeBytes() uint64 {
	t := d.tab.Load()
	return uint64(len(t.slots))*16 + uint64(cap(d.free))*4 + t.arena.sizeBytes()
}
