package personify

import (
	"math"
	"math/bits"
	"sync/atomic"

	"github.com/personify-go/personify/anonymize"
)

// directory maps each pseudonym to a dense member ordinal (assigned on first
// use) and back. It is most of the engine's per-person memory, so it is an
// open-addressing table of 16-byte slots {pseudonym, ordinal, aux} with
// linear probing at a load factor between 0.6 and 0.8 (about 22 bytes per
// person), plus 8 bytes per ordinal for the way back.
//
// The home slot of a pseudonym is mulhi(p, len(slots)): monotone in p, so a
// batch sorted by pseudonym walks the table front to back (bulk loads sort
// their batches) and keyed pseudonyms, being uniformly random, spread evenly.
//
// Readers never lock. The one writer (the engine holds its mutex) fills a
// slot's ordinal and aux before it publishes the key with an atomic store,
// deletes by turning the key into a tombstone, and never moves a key or
// reuses a slot within a table, so a slot's ordinal is written once, before
// any reader can see its key (reusing tombstones would let a reader that had
// just matched the old key read the new person's ordinal). Growing, which
// also drops the tombstones, builds a new table and publishes it with one
// atomic pointer store. A reader therefore sees every write that happened
// before it loaded the table, and a consistent table either way.
//
// An ordinal is released only by [directory.release], which the engine calls
// after clearing the ordinal from every set; released ordinals are reused
// first, so the ordinal space stays dense.
type directory struct {
	tab atomic.Pointer[dirTable]

	// Writer-only state, guarded by the engine's mutex.
	pseudo []anonymize.Pseudonym // ordinal -> pseudonym; valid where live
	free   []uint32              // released ordinals, reused last-in first-out
	live   int
}

// Slot key values with a meaning of their own. Pseudonyms that are equal to
// them (a chance of 2^-63 per person, or a deliberate bulk load) live in
// dirTable.special instead.
const (
	slotEmpty     = 0
	slotTombstone = 1
)

type dirSlot struct {
	key uint64 // atomic: slotEmpty, slotTombstone or a pseudonym
	ord uint32 // written before key is published, never changed after
	aux uint32 // atomic: owned by the index (issue: hot path)
}

type dirTable struct {
	slots   []dirSlot
	used    int // live keys plus tombstones; writer-only
	special [2]specialSlot
}

type specialSlot struct {
	present atomic.Bool
	ord     atomic.Uint32
	aux     atomic.Uint32
}

const (
	dirMinSlots = 64
	dirMaxLoad  = 0.8 // grow past this share of used slots
	dirLoad     = 0.6 // load factor right after growing
)

func newDirectory() *directory {
	d := &directory{}
	d.tab.Store(&dirTable{slots: make([]dirSlot, dirMinSlots)})
	return d
}

// home returns p's home slot in a table of n slots.
func home(p uint64, n int) int {
	hi, _ := bits.Mul64(p, uint64(n))
	return int(hi)
}

// lookup returns p's ordinal and aux word. Safe for concurrent use with one
// writer.
func (d *directory) lookup(p anonymize.Pseudonym) (ord, aux uint32, ok bool) {
	return d.tab.Load().lookup(uint64(p))
}

func (t *dirTable) lookup(p uint64) (ord, aux uint32, ok bool) {
	if p <= slotTombstone {
		s := &t.special[p]
		if !s.present.Load() {
			return 0, 0, false
		}
		return s.ord.Load(), s.aux.Load(), true
	}
	slots := t.slots
	for i := home(p, len(slots)); ; {
		s := &slots[i]
		k := atomic.LoadUint64(&s.key)
		if k == p {
			return s.ord, atomic.LoadUint32(&s.aux), true
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

// assign returns p's ordinal, giving p the next free ordinal if it has none.
// Writer-only.
func (d *directory) assign(p anonymize.Pseudonym) (ord uint32, added bool) {
	if ord, _, ok := d.lookup(p); ok {
		return ord, false
	}
	if n := len(d.free); n > 0 {
		ord, d.free = d.free[n-1], d.free[:n-1]
		d.pseudo[ord] = p
	} else {
		if len(d.pseudo) > math.MaxUint32 {
			panic("personify: more than 2^32 members")
		}
		ord = uint32(len(d.pseudo))
		d.pseudo = append(d.pseudo, p)
	}
	d.insert(p, ord, 0)
	d.live++
	return ord, true
}

// insert adds p, which must be absent, with ordinal ord. Writer-only.
func (d *directory) insert(p anonymize.Pseudonym, ord, aux uint32) {
	t := d.tab.Load()
	if float64(t.used+1) > dirMaxLoad*float64(len(t.slots)) {
		t = d.grow(t)
	}
	t.put(uint64(p), ord, aux)
}

// put writes a new key into the first empty slot of its probe path (never a
// tombstone: see the type's doc). The key is published last.
func (t *dirTable) put(p uint64, ord, aux uint32) {
	if p <= slotTombstone {
		s := &t.special[p]
		s.ord.Store(ord)
		s.aux.Store(aux)
		s.present.Store(true)
		return
	}
	slots := t.slots
	for i := home(p, len(slots)); ; {
		if s := &slots[i]; s.key == slotEmpty {
			t.used++
			s.ord = ord
			atomic.StoreUint32(&s.aux, aux)
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
	n := max(dirMinSlots, int(float64(d.live+1)/dirLoad))
	t := &dirTable{slots: make([]dirSlot, n)}
	for i := range old.slots {
		if s := &old.slots[i]; s.key > slotTombstone {
			t.put(s.key, s.ord, atomic.LoadUint32(&s.aux))
		}
	}
	for p := range old.special {
		if s := &old.special[p]; s.present.Load() {
			t.put(uint64(p), s.ord.Load(), s.aux.Load())
		}
	}
	d.tab.Store(t)
	return t
}

// setAux sets p's aux word; p must be present. Writer-only.
func (d *directory) setAux(p anonymize.Pseudonym, aux uint32) {
	t := d.tab.Load()
	if p <= slotTombstone {
		t.special[p].aux.Store(aux)
		return
	}
	atomic.StoreUint32(&t.slots[t.find(uint64(p))].aux, aux)
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

// rekey moves ordinal ord from pseudonym old to pseudonym new (key
// rotation); new must be absent. Writer-only.
func (d *directory) rekey(old, new anonymize.Pseudonym, ord uint32) {
	_, aux, _ := d.lookup(old)
	d.insert(new, ord, aux) // visible under both for an instant, never under neither
	d.remove(old)
	d.pseudo[ord] = new
}

// release returns ord to the free list. The caller guarantees that ord is in
// no set and that its pseudonym was removed. Writer-only.
func (d *directory) release(ord uint32) {
	d.pseudo[ord] = 0
	d.free = append(d.free, ord)
	d.live--
}

// pseudonym returns the pseudonym of a live ordinal. Writer or RLock holder.
func (d *directory) pseudonym(ord uint32) anonymize.Pseudonym { return d.pseudo[ord] }

// len returns the number of live entries.
func (d *directory) len() int { return d.live }

// ordinals returns one past the highest ordinal ever assigned.
func (d *directory) ordinals() int { return len(d.pseudo) }

// sizeBytes estimates the directory's memory.
func (d *directory) sizeBytes() uint64 {
	t := d.tab.Load()
	return uint64(len(t.slots))*16 + uint64(cap(d.pseudo))*8 + uint64(cap(d.free))*4
}
