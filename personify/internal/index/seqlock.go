package index

import "sync/atomic"

// The reader protocol. Readers never lock and never write. The one writer
// (the engine holds its mutex) publishes a new key only after its entry is
// written, deletes by turning the key into a tombstone, never moves a key
// or reuses a slot within a table, and updates an entry under a per-slot
// sequence lock: the sequence number in the meta word (bits 32-47) is odd
// while the entry's words change, and a reader takes a snapshot only when
// the meta word reads the same, even, before and after. Growing (which
// also drops tombstones) copies the entries into a new table and
// publishes it with one atomic pointer store; a reader on the old table
// finishes undisturbed. Every word is read and written atomically, so the
// race detector agrees. The engine's In inlines the same steps.

// Read returns a consistent snapshot of p's entry. ok is false if p is
// absent; stuck is true if a writer stayed mid-update for maxSpins reads (it
// was descheduled), and the caller must fall back to the engine's lock.
func (t *Table) Read(p uint64) (e Entry, ok, stuck bool) {
	s := t.Slot(p)
	if s == nil {
		return Entry{}, false, false
	}
	for range maxSpins {
		m := atomic.LoadUint64(&s.Meta)
		lo := atomic.LoadUint64(&s.Lo)
		hi := atomic.LoadUint64(&s.Hi)
		if m&SeqOne == 0 && atomic.LoadUint64(&s.Meta) == m {
			// The key again: a removal stores its tombstone before it
			// empties the entry, so an entry read after that is not p's.
			want := p
			if p <= SlotTombstone { // the special slots hold 1 while they are in use
				want = 1
			}
			if atomic.LoadUint64(&s.Key) != want {
				return Entry{}, false, false
			}
			return Entry{m, lo, hi}, true, false
		}
	}
	return Entry{}, true, true
}

// SetSlot replaces a slot's entry under its sequence lock. Writer-only.
func SetSlot(s *Slot, e Entry) {
	seq := s.Meta&SeqMask | SeqOne // odd (a slot inserted mid-update already is); then even again, wrapping within its 16 bits
	atomic.StoreUint64(&s.Meta, s.Meta&^SeqMask|seq)
	atomic.StoreUint64(&s.Lo, e.Lo)
	atomic.StoreUint64(&s.Hi, e.Hi)
	atomic.StoreUint64(&s.Meta, e.WithSeq((seq+SeqOne)&SeqMask).Meta) // even again
}
