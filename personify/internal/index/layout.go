package index

import "unsafe"

// Layout describes how the table's entries lie in memory, for what a
// lookup reads: the 64-byte cache lines from a key's home slot to its
// slot, and an overflow record for an entry whose ids are not inline.
type Layout struct {
	Slots, Keys int
	// OffHomeLine counts keys whose slot is not in their home slot's
	// 64-byte line: the probe reads a second line (or more; ProbeLines
	// sums the lines every key's probe reads).
	OffHomeLine, ProbeLines int
	// Overflow counts entries whose ids are in an overflow record, a
	// second miss for Segments; OverflowOffHome those of them that are
	// off their home line too.
	Overflow, OverflowOffHome int
	// InRecordReadsOnHome is the expected number of entries on their home
	// line for which In, asked about a segment drawn uniformly from
	// filters, reads the overflow record (its Bloom filter passes), summed
	// over the entries (the others read a second line anyway).
	InRecordReadsOnHome float64
}

// Layout walks the table (O(slots)) and measures it. filters are the Bloom
// filters of the segments In is asked about, for InRecordReads. The special
// slots are not counted. Writer-only.
func (t *Table) Layout(filters []Bloom96) Layout {
	slots := t.Slots
	l := Layout{Slots: len(slots)}
	line := func(i int) uintptr { return uintptr(unsafe.Pointer(&slots[i])) >> 6 }
	for i := range slots {
		s := &slots[i]
		if s.Key <= SlotTombstone {
			continue
		}
		l.Keys++
		home := Home(s.Key, len(slots))
		lines, off := 1, line(home) != line(i)
		for j := home; j != i; {
			next := j + 1
			if next == len(slots) {
				next = 0
			}
			if line(next) != line(j) {
				lines++
			}
			j = next
		}
		l.ProbeLines += lines
		if off {
			l.OffHomeLine++
		}
		en := s.Entry()
		if !en.Overflow() {
			continue
		}
		l.Overflow++
		if off {
			l.OverflowOffHome++
		}
		if len(filters) > 0 {
			f := Bloom96{A: uint32(en.Lo >> 32), B: en.Hi}
			pass := 0
			for _, g := range filters {
				if f.Covers(g) {
					pass++
				}
			}
			if !off {
				l.InRecordReadsOnHome += float64(pass) / float64(len(filters))
			}
		}
	}
	return l
}
