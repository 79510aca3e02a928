package index

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unsafe"

	"github.com/personify-go/personify/anonymize"
)

// A snapshot keeps the directory as laid out in memory, so that opening it
// copies memory instead of re-inserting 100 million memberships one by
// one: the table's slots as one blob (little endian), the overflow records
// one blob per arena chunk, and this metadata. Load checks every entry, so
// a damaged snapshot whose checksums were forged still cannot make a
// lookup read out of bounds.

// Meta is the directory's state besides its slots and records. The JSON
// names are the snapshot format's.
type Meta struct {
	Next    uint32       `json:"next"`
	Free    []uint32     `json:"free"`
	Live    int          `json:"live"`
	Slots   int          `json:"slots,omitempty"` // pseudonyms with an entry; 0 (earlier releases): Live
	Special [2][4]uint64 `json:"special"`
	// Homes names the table's home-slot function: "line" (Home, even
	// slots); "" (earlier releases): mulhi(p, len(slots)), whose table Load
	// rebuilds.
	Homes string `json:"homes,omitempty"`
}

// HomesLine is Meta.Homes for the tables Home places.
const HomesLine = "line"

// ArenaMeta is the overflow records' state.
type ArenaMeta struct {
	Cur     int   `json:"cur"`
	Off     int   `json:"off"`
	Used    int64 `json:"used"`
	Garbage int64 `json:"garbage"`
}

// Snapshot returns what a snapshot keeps of the current table: its
// metadata, and its slots viewed as bytes (no copy: the caller writes them
// out while no writer runs). Writer or RLock holder.
func (d *Directory) Snapshot() (Meta, ArenaMeta, []byte) {
	t := d.Tab.Load()
	m := Meta{Next: d.next, Free: d.free, Live: d.live, Slots: d.slots, Homes: HomesLine}
	for i, s := range t.Special {
		m.Special[i] = [4]uint64{s.Key, s.Meta &^ SeqMask, s.Lo, s.Hi}
	}
	a := t.Arena
	return m, ArenaMeta{Cur: a.Cur, Off: a.Off, Used: a.Used, Garbage: a.Garbage}, slotBytes(t.Slots)
}

// WriteRecords calls write with each arena chunk of the current table,
// the chunk being filled only up to its last record. Replaced records
// (garbage until the next compaction) are written as zeros, so that no
// snapshot holds the segment list of a person who was erased, or an old
// one of a person who was not: only the live entries' records are copied.
// Writer or RLock holder.
func (d *Directory) WriteRecords(write func(chunk []byte) error) error {
	t := d.Tab.Load()
	a := t.Arena
	chunkOf := func(i int) []byte {
		c := *a.chunks[i].Load()
		if i == a.Cur && a.Off < len(c) {
			c = c[:a.Off]
		}
		return c
	}
	if a.Garbage == 0 { // every record is live: the chunks as they are
		for i := 0; i <= a.Cur; i++ {
			if err := write(chunkOf(i)); err != nil {
				return err
			}
		}
		return nil
	}
	var refs []uint32
	t.Each(func(_ anonymize.Pseudonym, en Entry) {
		if en.Overflow() {
			refs = append(refs, en.Ref())
		}
	})
	slices.Sort(refs)
	var buf []byte
	for i := 0; i <= a.Cur; i++ {
		c := chunkOf(i)
		buf = append(buf[:0], make([]byte, len(c))...)
		for len(refs) > 0 && int(refs[0]>>ChunkBits) == i {
			off := int(refs[0] & ChunkMask)
			n := RecordLen(c[off:])
			copy(buf[off:off+n], c[off:off+n])
			refs = refs[1:]
		}
		if err := write(buf); err != nil {
			return err
		}
	}
	return nil
}

// slotBytes views a table's slots as bytes: the little-endian layout a
// snapshot stores (loading on a big-endian machine is refused).
func slotBytes(s []Slot) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(Slot{})))
}

// LittleEndian reports whether this machine can load a snapshot's table.
func LittleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// Load rebuilds a directory from a snapshot's metadata, slots (as bytes)
// and arena chunks, checking every entry: its ordinal within Next, its
// record within the arena and well formed, and, by check, its privacy
// state and segment ids. The slots' memory is adopted when aligned; the
// chunks are adopted as they are (the one being filled gets its room
// back).
func Load(m Meta, am ArenaMeta, slots []byte, chunks [][]byte, check func(state uint32, ids []uint32) error) (*Directory, error) {
	size := int(unsafe.Sizeof(Slot{}))
	if len(slots)%size != 0 || len(slots)/size < MinSlots {
		return nil, fmt.Errorf("index table of %d bytes", len(slots))
	}
	if m.Homes != "" && m.Homes != HomesLine {
		return nil, fmt.Errorf("index table of unknown home slots %q (a later release's snapshot?)", m.Homes)
	}
	table := adoptSlots(slots)
	a := &Arena{Cur: am.Cur, Off: am.Off, Used: am.Used, Garbage: am.Garbage}
	if len(chunks) == 0 || len(chunks) > MaxChunks || a.Cur != len(chunks)-1 || a.Off < 0 || a.Off > ChunkSize ||
		a.Off > len(chunks[a.Cur]) && a.Off != ChunkSize {
		return nil, fmt.Errorf("index arena position %d:%d does not match its %d chunks", a.Cur, a.Off, len(chunks))
	}
	for i, c := range chunks {
		switch {
		case i == a.Cur && a.Off < ChunkSize:
			// The chunk being filled is stored up to its last record (format
			// 1 stored all of it); it gets its room back here.
			if len(c) < a.Off || len(c) > ChunkSize {
				return nil, fmt.Errorf("index arena chunk %d has %d bytes, its records end at %d", i, len(c), a.Off)
			}
			full := make([]byte, ChunkSize)
			copy(full, c)
			c = full
		case len(c) < BigRecord && len(c) < ChunkSize:
			return nil, fmt.Errorf("index arena chunk %d has %d bytes", i, len(c))
		}
		a.chunks[i].Store(&c)
	}
	d := &Directory{next: m.Next, free: m.Free, live: m.Live, slots: m.Slots}
	if d.slots == 0 {
		d.slots = d.live
	}
	t := &Table{Slots: table, Arena: a}
	for i, sp := range m.Special {
		t.Special[i] = Slot{sp[0], sp[1], sp[2], sp[3]}
	}
	ids := make([]uint32, 0, 64)
	live := 0
	checkSlot := func(s *Slot) error {
		s.Meta &^= SeqMask // no writer was mid-update in a snapshot
		en := Entry{s.Meta, s.Lo, s.Hi}
		if en.Ord() >= d.next {
			return fmt.Errorf("index entry has ordinal %d, past %d", en.Ord(), d.next)
		}
		var state uint32
		ids = ids[:0]
		if en.Overflow() {
			ref := en.Ref()
			c := int(ref >> ChunkBits)
			if c > a.Cur || int(ref&ChunkMask) >= len(chunks[c]) {
				return fmt.Errorf("index entry refers past the arena")
			}
			var ok bool
			if state, ids, ok = safeRecord(chunks[c][ref&ChunkMask:], ids); !ok {
				return fmt.Errorf("index overflow record at %d is malformed", ref)
			}
			if s := en.State(); s != StateOverflow && s != state {
				return fmt.Errorf("index entry's state %d is not its record's %d", s, state)
			}
		} else {
			state = en.State()
			switch c := en.Code(); {
			case c == CodeEF:
				n, l := en.Count(), en.EFLow()
				if n == 0 || n > efMaxIDs || uint(n)*l > efLowBits {
					return fmt.Errorf("index entry has %d Elias-Fano ids of %d low bits", n, l)
				}
				ids = InlineIDs(ids, en)
				for k := 1; k < len(ids); k++ {
					if ids[k] <= ids[k-1] {
						return fmt.Errorf("index entry's Elias-Fano ids are not increasing")
					}
				}
				// Exactly as packEF writes them, so that In's test and
				// Segments' decoding agree on every id.
				if lo, hi, l2, ok := packEF(ids); !ok || l2 != l || lo != en.Lo || hi != en.Hi {
					return fmt.Errorf("index entry's Elias-Fano words are not the encoding of its %d ids", n)
				}
			case c >= LaneCodes || en.Count() > 2*LanesPer[c]:
				return fmt.Errorf("index entry has lane code %d and %d ids", c, en.Count())
			default:
				for k := range en.Count() {
					ids = append(ids, LaneID(en.Lo, en.Hi, c, k))
				}
			}
		}
		if err := check(state, ids); err != nil {
			return err
		}
		live++
		return nil
	}
	for i := range t.Special {
		if s := &t.Special[i]; s.Key == 1 {
			if err := checkSlot(s); err != nil {
				return nil, err
			}
		} else if s.Key != 0 {
			return nil, fmt.Errorf("reserved index slot %d has key %d", i, s.Key)
		}
	}
	for i := range table {
		s := &table[i]
		switch s.Key {
		case SlotEmpty:
			continue
		case SlotTombstone:
			t.Used++
			continue
		}
		t.Used++
		if err := checkSlot(s); err != nil {
			return nil, err
		}
	}
	if live != d.slots || d.live > d.slots || t.Used >= len(table) {
		return nil, fmt.Errorf("index holds %d pseudonyms in %d slots, metadata says %d (of %d people)", live, len(table), d.slots, d.live)
	}
	for _, o := range d.free {
		if o >= d.next {
			return nil, fmt.Errorf("free ordinal %d is out of range", o)
		}
	}
	if m.Homes != HomesLine { // placed by the earlier home function: lookups would miss
		f := lineFiller{t: &Table{Slots: NewSlots(TableSize(d.slots + 1)), Arena: a}}
		t.Each(func(p anonymize.Pseudonym, e Entry) { f.add(uint64(p), e) })
		f.finish()
		t = f.t
	}
	// Stored as laid out, the table is as full as the writer's was: Fit
	// may give back what a bulk load left before the snapshot.
	d.fit = float64(d.slots) < fitBelow*float64(len(t.Slots))
	d.Tab.Store(t)
	return d, nil
}

// Free returns the released ordinals, for a caller checking them against
// the ones in use. Writer-only; the slice is the directory's.
func (d *Directory) Free() []uint32 { return d.free }

// adoptSlots views b as slots without copying when it is aligned.
func adoptSlots(b []byte) []Slot {
	n := len(b) / int(unsafe.Sizeof(Slot{}))
	if uintptr(unsafe.Pointer(&b[0]))%8 == 0 {
		return unsafe.Slice((*Slot)(unsafe.Pointer(&b[0])), n)
	}
	s := make([]Slot, n)
	copy(slotBytes(s), b)
	return s
}

// safeRecord decodes an overflow record with every bound checked.
func safeRecord(b []byte, ids []uint32) (uint32, []uint32, bool) {
	state, k := binary.Uvarint(b)
	if k <= 0 || state > 1<<32-1 {
		return 0, ids, false
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return 0, ids, false
	}
	b = b[k:]
	cur := uint64(0)
	for range n {
		d, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, ids, false
		}
		b = b[k:]
		if cur += d; cur > 1<<32-1 {
			return 0, ids, false
		}
		ids = append(ids, uint32(cur))
	}
	return uint32(state), ids, true
}

// Compact re-encodes every live entry into a fresh table and arena,
// without the segment ids keep refuses (dropped segments), and publishes
// them with one atomic store: readers on the old table finish undisturbed.
// Writer-only.
func (d *Directory) Compact(keep func(id uint32) bool) {
	old := d.Tab.Load()
	t := &Table{Slots: NewSlots(TableSize(d.slots + 1)), Arena: NewArena()}
	var ids []uint32
	var buf []byte
	f := lineFiller{t: t}
	old.Each(func(p anonymize.Pseudonym, en Entry) {
		var state uint32
		state, ids = old.DecodeEntry(ids[:0], en)
		ids = slices.DeleteFunc(ids, func(id uint32) bool { return !keep(id) })
		en, buf = MakeEntry(t.Arena, buf, en.Ord(), state, ids)
		f.add(uint64(p), en)
	})
	f.finish()
	d.Tab.Store(t)
	d.fit = false // rebuilt at load 0.82: nothing for Fit to give back
}

// Replace makes d hold what from holds (a directory just loaded), so that
// readers holding d see the new table from their next lookup. Writer-only,
// with readers kept on the locked path by the caller.
func (d *Directory) Replace(from *Directory) {
	d.next, d.free, d.live, d.slots, d.fit = from.next, from.free, from.live, from.slots, from.fit
	d.Tab.Store(from.Tab.Load())
}
