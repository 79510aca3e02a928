package index

import (
	"math"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/personify-go/personify/anonymize"
)

// Directory is the lookup index's table: for each pseudonym, one 32-byte
// slot (half a cache line) holding the person's entry: their dense member
// ordinal (assigned on first use and stable), their privacy state and their
// segment ids, inline when they fit in 16 bytes (as lanes, or Elias-Fano
// coded: 97% of people at 10 segments each of 1,000), otherwise in an
// overflow record with an inline Bloom filter. In and Segments therefore cost one cache miss for most
// people. See the engine's indexsync.go for why, and what was measured.
//
// Open addressing with linear probing; the home slot of a pseudonym is
// 2*mulhi(p, len(slots)/2), the first slot of a 64-byte line and monotone
// in p, so a batch sorted by pseudonym walks the table front to back.
// Load factor between 0.6 and 0.9.
//
// Readers never lock and never write: the protocol between them and the
// one writer is in seqlock.go.
//
// An ordinal is released only by [Directory.Release], which the engine calls
// after clearing the ordinal from every set; released ordinals are reused
// first, so the ordinal space stays dense.
type Directory struct {
	Tab atomic.Pointer[Table]

	// Writer-only state, guarded by the engine's mutex.
	next  uint32   // one past the highest ordinal ever assigned
	free  []uint32 // released ordinals, reused last-in first-out
	live  int      // ordinals in use (people)
	slots int      // keys in the table: live plus the extra pseudonyms of linked people
	fit   bool     // Fit may rebuild the table: Reserve grew it, or Load adopted it, since Fit last did
}

// Slot key values with a meaning of their own. Pseudonyms that are equal to
// them (a chance of 2^-63 per person, or a deliberate bulk load) live in
// Table.Special instead, where key 1 means present.
const (
	SlotEmpty     = 0
	SlotTombstone = 1
)

// Slot is one person's entry; every word is read and written
// atomically.
type Slot struct {
	Key  uint64 // SlotEmpty, SlotTombstone or the pseudonym
	Meta uint64 // see Entry
	Lo   uint64 // inline ids (bytes 0-7) or overflow reference and filter
	Hi   uint64 // inline ids (bytes 8-15) or filter
}

// Entry is a consistent snapshot of a slot's meta, lo and hi words.
//
// meta: bits 0-31 ordinal; 32-47 sequence (odd while the entry changes);
// 48-55 privacy state id (StateOverflow: in the overflow record only; an
// overflow entry whose state id fits holds it here and in the record); 56-59
// number of inline segment ids (for lane code CodeEF, the low-part width);
// 60-62 lane code; 63 overflow.
//
// Inline, lo and hi hold the sorted segment ids as fixed-width lanes (the
// lane code picks 6 lanes of 10 bits per word, 5 of 12, 4 of 16, 3 of 21
// or 2 of 32), unused lanes all ones: In tests every lane at once with a
// SWAR zero-lane test, a dozen instructions and no branch; ids that no
// lane code holds (more than 12 of 1,000 segments) are Elias-Fano coded
// (CodeEF), up to 16 of them. Overflow: lo's
// low 32 bits are the record's reference in the arena; lo's high 32 bits
// and hi are a 96-bit Bloom filter of the ids.
type Entry struct{ Meta, Lo, Hi uint64 }

const (
	SeqOne        = 1 << 32
	SeqMask       = 0xffff << 32
	StateShift    = 48
	CountShift    = 56
	CodeShift     = 60
	OverflowBit   = 1 << 63
	StateOverflow = 0xff
)

// Ord, State, Count, Code, Overflow and Ref read the fields of the meta
// and lo words (see Entry).
func (e Entry) Ord() uint32   { return uint32(e.Meta) }
func (e Entry) State() uint32 { return uint32(e.Meta >> StateShift & 0xff) }
func (e Entry) Count() int {
	if e.Meta>>CodeShift&0x7 == CodeEF && e.Meta&OverflowBit == 0 {
		return bits.OnesCount64(e.Hi >> 32)
	}
	return int(e.Meta >> CountShift & 0xf)
}

// EFLow returns the low-part width of an Elias-Fano entry (see CodeEF).
func (e Entry) EFLow() uint    { return uint(e.Meta >> CountShift & 0xf) }
func (e Entry) Code() int      { return int(e.Meta >> CodeShift & 0x7) }
func (e Entry) Overflow() bool { return e.Meta&OverflowBit != 0 }
func (e Entry) Ref() uint32    { return uint32(e.Lo) }

// WithSeq returns e with the sequence bits of m.
func (e Entry) WithSeq(m uint64) Entry {
	e.Meta = e.Meta&^SeqMask | m&SeqMask
	return e
}

// MakeMeta packs an ordinal, a privacy state id and an inline id count
// into a meta word, with sequence 0.
func MakeMeta(ord, state uint32, count int) uint64 {
	return uint64(ord) | uint64(state)<<StateShift | uint64(count)<<CountShift
}

// Table is one generation of the directory: open-addressed slots, the
// overflow arena, and the two slots for the reserved keys. Readers load it
// from Directory.Tab and read its slots under the seqlock protocol; only
// the writer changes it.
type Table struct {
	Slots   []Slot
	Arena   *Arena // the overflow records
	Used    int    // live keys plus tombstones; writer-only
	Special [2]Slot
}

const (
	MinSlots    = 64
	maxLoad     = 0.9     // grow past this share of used slots
	load        = 0.82    // load factor right after growing
	fitBelow    = 0.75    // Fit rebuilds tables under this share of live keys
	fitMinSlots = 1 << 16 // Fit builds no table smaller than this: 2 MB
	maxSpins    = 64      // reads retried while a writer is mid-update, then the caller falls back to the lock
)

// NewDirectory returns an empty directory with a table of MinSlots.
func NewDirectory() *Directory {
	d := &Directory{}
	d.Tab.Store(&Table{Slots: make([]Slot, MinSlots), Arena: NewArena()})
	return d
}

// Home returns p's home slot in a table of n slots: the first slot of a
// 64-byte line (slot pairs are lines, the table being line-aligned; see
// NewSlots), so that a key one slot past its home is still in its home
// line. Measured on 1M random keys at a load of 0.68 (the 10M x 1000
// workload's), keys off their home line drop from 26% to 20% (inserted in
// random order), and with the tables that growing fills by lines
// (lineFiller) lower still. Monotone in p, so that a batch sorted by
// pseudonym walks the table front to back.
func Home(p uint64, n int) int {
	hi, _ := bits.Mul64(p, uint64(n>>1))
	return int(hi) << 1
}

// slot returns p's slot, or nil. Readers and the writer.
func (t *Table) Slot(p uint64) *Slot {
	if p <= SlotTombstone {
		if s := &t.Special[p]; atomic.LoadUint64(&s.Key) == 1 {
			return s
		}
		return nil
	}
	slots := t.Slots
	for i := Home(p, len(slots)); ; {
		s := &slots[i]
		switch atomic.LoadUint64(&s.Key) {
		case p:
			return s
		case SlotEmpty:
			return nil
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

// get returns p's entry. Writer-only: nothing changes it meanwhile.
func (t *Table) Get(p anonymize.Pseudonym) (Entry, bool) {
	s := t.Slot(uint64(p))
	if s == nil {
		return Entry{}, false
	}
	return Entry{s.Meta, s.Lo, s.Hi}, true
}

// get returns p's entry in the current table. Writer-only.
func (d *Directory) Get(p anonymize.Pseudonym) (Entry, bool) { return d.Tab.Load().Get(p) }

// set replaces p's entry under the slot's sequence lock; p must be present.
// Writer-only.
func (d *Directory) Set(p anonymize.Pseudonym, e Entry) { SetSlot(d.Tab.Load().Slot(uint64(p)), e) }

// assign returns p's ordinal, giving p the next free ordinal and an empty
// entry if it has none. Writer-only.
func (d *Directory) Assign(p anonymize.Pseudonym) (ord uint32, added bool) {
	if e, ok := d.Get(p); ok {
		return e.Ord(), false
	}
	ord = d.NewOrdinal()
	d.Insert(p, EmptyEntry(ord))
	return ord, true
}

// EmptyEntry is the entry of a person with no segment and no privacy
// state: every lane unused (all ones), as the SWAR test requires.
func EmptyEntry(ord uint32) Entry {
	return Entry{MakeMeta(ord, 0, 0), LaneEmpty[0], LaneEmpty[0]}
}

// newOrdinal allocates an ordinal for a new entry, which the caller
// inserts. Writer-only.
func (d *Directory) NewOrdinal() (ord uint32) {
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

// reserve makes room for n more entries now if they would take the table
// past its maximum load, so that a bulk load rehashes once, not many
// times: by dropping the tombstones if that is room enough, otherwise by
// growing the table 1.5x. Writer-only.
func (d *Directory) Reserve(n int) {
	t := d.Tab.Load()
	if float64(t.Used+n) <= maxLoad*float64(len(t.Slots)) {
		return
	}
	if TableSize(d.slots+n) <= len(t.Slots) {
		// Tombstones (people removed) take the room: rebuilt at the same
		// size without them. Grown 1.5x instead, a population that stays
		// constant while it turns over would multiply the table.
		d.rebuild(t, t.Arena, len(t.Slots))
		return
	}
	// At least 1.5 times larger: a load that keeps adding people
	// rehashes O(log n) times, not once per batch.
	d.growTo(t, t.Arena, max(d.slots+n, int(float64(len(t.Slots))*1.5*load)))
	d.fit = true
}

// Fit gives back the room Reserve left: Reserve grows a table 1.5 times,
// so that a load that keeps adding people rehashes O(log n) times, and a
// load that then stops adding them leaves the table anywhere between 0.6
// and 0.9 full (at 10M x 1000, 0.68: 4.7 bytes a membership where 0.82
// takes 3.9). If Reserve grew the table since Fit last rebuilt it (or Load
// adopted it as stored), and the table is under fitBelow full, Fit
// rebuilds it at load 0.82 with room for headroom more keys besides, and
// reports whether it did. It builds no table under fitMinSlots, which
// alone leaves room for more than a write chunk (the most a chunk
// reserves), so that batches of known people never grow a fitted table
// again; the engine passes a write chunk as headroom, a margin on top.
// The engine calls it after a bulk add that brought few new people (the
// load has stopped growing the table).
//
// The cost: one rebuild per growth at most, O(1) per key added. A load
// that keeps alternating batches of new people with batches of known ones
// rebuilds twice per 10% of growth (about 20 copies of each key, where
// 1.5x growth alone copies each about 3 times). The rebuild holds the
// engine's lock, as a growth does; readers on the old table finish
// undisturbed. Writer-only.
func (d *Directory) Fit(headroom int) bool {
	t := d.Tab.Load()
	if !d.fit || TableSize(d.slots+headroom) < fitMinSlots || float64(d.slots) >= fitBelow*float64(len(t.Slots)) {
		return false
	}
	d.fit = false
	d.growTo(t, t.Arena, d.slots+headroom)
	return true
}

// insert adds p, which must be absent. Several pseudonyms may hold
// entries with one ordinal (a linked person); the ordinal is allocated
// once, by NewOrdinal. Writer-only.
func (d *Directory) Insert(p anonymize.Pseudonym, e Entry) {
	t := d.Tab.Load()
	if float64(t.Used+1) > maxLoad*float64(len(t.Slots)) {
		t = d.grow(t, t.Arena)
	}
	t.Put(uint64(p), e)
	d.slots++
}

// put writes a new key and its entry into the first empty slot of its
// probe path (never a tombstone: see the type's doc); the key goes last.
func (t *Table) Put(p uint64, e Entry) {
	var s *Slot
	if p <= SlotTombstone {
		s = &t.Special[p]
	} else {
		for i := Home(p, len(t.Slots)); ; {
			if s = &t.Slots[i]; s.Key == SlotEmpty {
				t.Used++
				break
			}
			if i++; i == len(t.Slots) {
				i = 0
			}
		}
	}
	atomic.StoreUint64(&s.Meta, e.Meta&^SeqMask)
	atomic.StoreUint64(&s.Lo, e.Lo)
	atomic.StoreUint64(&s.Hi, e.Hi)
	if p <= SlotTombstone {
		atomic.StoreUint64(&s.Key, 1)
	} else {
		atomic.StoreUint64(&s.Key, p)
	}
}

// grow copies the live entries into a table sized for load load, with
// Arena a (the same, or a compacted one whose references the caller fixes),
// and publishes it.
func (d *Directory) grow(old *Table, a *Arena) *Table { return d.growTo(old, a, d.slots+1) }

// growTo is grow with room for live entries at load load.
func (d *Directory) growTo(old *Table, a *Arena, live int) *Table {
	return d.rebuild(old, a, TableSize(live))
}

// rebuild copies the live entries into a new table of size slots and
// publishes it.
func (d *Directory) rebuild(old *Table, a *Arena, size int) *Table {
	t := &Table{Slots: NewSlots(size), Arena: a}
	f := lineFiller{t: t}
	old.Each(func(p anonymize.Pseudonym, e Entry) { f.add(uint64(p), e) })
	f.finish()
	d.Tab.Store(t)
	return t
}

// lineFiller fills an empty, unpublished table in two passes: first each
// key into a free slot of its home slot's 64-byte cache line, then the
// others by linear probing (Put). Filled in slot order instead (Put
// alone, keys in about pseudonym order), most keys of a cluster sit past
// their home, since every earlier key of the cluster took a slot before
// them: measured on 200K random keys at a load of 0.82
// (TestGrowFillsByLines), 61% of the keys off their home line in
// pseudonym order, 33% in random order, 26% filled by lines.
// The result is a table Put could have built: a key's slot is reached from
// its home through occupied slots only, since slots only fill.
type lineFiller struct {
	t    *Table
	rest []Slot // the keys left for the second pass, with their entries
}

func (f *lineFiller) add(p uint64, e Entry) {
	slots := f.t.Slots
	if p <= SlotTombstone {
		f.t.Put(p, e)
		return
	}
	h := Home(p, len(slots))
	for i, end := h, lineEnd(slots, h); i < end; i++ {
		if s := &slots[i]; s.Key == SlotEmpty {
			s.Key, s.Meta, s.Lo, s.Hi = p, e.Meta&^SeqMask, e.Lo, e.Hi
			f.t.Used++
			return
		}
	}
	f.rest = append(f.rest, Slot{Key: p, Meta: e.Meta, Lo: e.Lo, Hi: e.Hi})
}

func (f *lineFiller) finish() {
	for _, s := range f.rest {
		f.t.Put(s.Key, s.Entry())
	}
	f.rest = nil
}

// lineEnd returns the index one past the last slot in slot i's 64-byte
// line (or len(slots)).
func lineEnd(slots []Slot, i int) int {
	if uintptr(unsafe.Pointer(&slots[i]))&63 == 0 && i+1 < len(slots) {
		return i + 2
	}
	return i + 1
}

// TableSize is the number of slots for live entries right after growing.
func TableSize(live int) int { return max(MinSlots, int(float64(live)/load)) }

// NewSlots allocates a table's slots, on huge pages where the system
// allows, starting on a 64-byte line so that each even slot and the next
// share a line (Home): Go's allocator aligns blocks of these sizes to 64
// bytes (large ones to pages); a 32-byte offset, were it to happen, is
// corrected, and a smaller one would cost only speed.
func NewSlots(n int) []Slot {
	s := make([]Slot, n+1)
	if uintptr(unsafe.Pointer(&s[0]))&63 != 0 {
		s = s[1:]
	}
	s = s[:n:n]
	if size := uintptr(n) * unsafe.Sizeof(Slot{}); size >= 4<<20 {
		adviseHugePages(unsafe.Pointer(&s[0]), size)
	}
	return s
}

// each calls fn for every live entry of t, in slot order (pseudonym order
// but for wrap-around). Writer or RLock holder: the entries do not change.
func (t *Table) Each(fn func(p anonymize.Pseudonym, e Entry)) {
	for p := range t.Special {
		if s := &t.Special[p]; s.Key == 1 {
			fn(anonymize.Pseudonym(p), Entry{s.Meta, s.Lo, s.Hi})
		}
	}
	for i := range t.Slots {
		if s := &t.Slots[i]; s.Key > SlotTombstone {
			fn(anonymize.Pseudonym(s.Key), Entry{s.Meta, s.Lo, s.Hi})
		}
	}
}

// remove deletes p's entry, leaving its ordinal allocated: the caller
// releases the ordinal once nothing refers to it. The slot keeps nothing of
// the person (its entry is overwritten with an empty one, so that a
// snapshot of the table cannot give back an erased person's ordinal,
// segments or record), and a reader that matched the key a moment before
// finds no segment. Writer-only.
func (d *Directory) Remove(p anonymize.Pseudonym) bool {
	t := d.Tab.Load()
	if p <= SlotTombstone {
		s := &t.Special[p]
		if atomic.LoadUint64(&s.Key) != 1 {
			return false
		}
		atomic.StoreUint64(&s.Key, 0)
		SetSlot(s, EmptyEntry(0))
		d.slots--
		return true
	}
	s := t.Slot(uint64(p))
	if s == nil {
		return false
	}
	atomic.StoreUint64(&s.Key, SlotTombstone)
	SetSlot(s, EmptyEntry(0))
	d.slots--
	return true
}

// rekey moves an entry from pseudonym old to pseudonym new (key rotation);
// new must be absent. Writer-only.
func (d *Directory) Rekey(old, new anonymize.Pseudonym) {
	e, _ := d.Get(old)
	d.Insert(new, e) // visible under both for an instant, never under neither
	d.Remove(old)
}

// release returns ord to the free list. The caller guarantees that ord is in
// no set and that its pseudonym was removed. Writer-only.
func (d *Directory) Release(ord uint32) {
	d.free = append(d.free, ord)
	d.live--
}

// len returns the number of ordinals in use: people, not pseudonyms.
func (d *Directory) Len() int { return d.live }

// Slots returns the number of pseudonyms with an entry: Len plus the
// extra pseudonyms of linked people.
func (d *Directory) Slots() int { return d.slots }

// ordinals returns one past the highest ordinal ever assigned.
func (d *Directory) Ordinals() int { return int(d.next) }

// sizeBytes estimates the Directory's memory, the overflow records
// included.
func (d *Directory) SizeBytes() uint64 {
	t := d.Tab.Load()
	return uint64(len(t.Slots))*32 + uint64(cap(d.free))*4 + t.Arena.SizeBytes()
}

// Entry returns the slot's entry as it is. Writer-only (readers use
// Table.Read, which follows the sequence lock).
func (s *Slot) Entry() Entry { return Entry{s.Meta, s.Lo, s.Hi} }
