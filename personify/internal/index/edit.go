package index

import (
	"encoding/binary"
	"math"
	"slices"
)

// DecodeEntry returns an entry's privacy state id and appends its segment
// ids to dst.
func (t *Table) DecodeEntry(dst []uint32, en Entry) (uint32, []uint32) {
	if en.Overflow() {
		r := ViewRecord(t.Arena.Record(en.Ref()))
		return r.State, r.AppendIDs(dst)
	}
	return en.State(), InlineIDs(dst, en)
}

// MakeEntry encodes an entry: inline when the ids fit in the lanes and the
// state id in 8 bits, otherwise with an overflow record appended to a.
func MakeEntry(a *Arena, buf []byte, ord, state uint32, ids []uint32) (Entry, []byte) {
	return MakeEntryFilter(a, buf, ord, state, ids, nil)
}

// MakeEntryFilter is MakeEntry with the overflow filter already known (nil:
// compute it from the ids).
func MakeEntryFilter(a *Arena, buf []byte, ord, state uint32, ids []uint32, known *Bloom96) (Entry, []byte) {
	if state < StateOverflow {
		if en, ok := PackInline(ord, state, ids); ok {
			return en, buf
		}
	}
	buf = EncodeRecord(buf[:0], state, ids)
	var f Bloom96
	if known != nil {
		f = *known
	} else {
		for _, id := range ids {
			f = f.Or(SegmentBloom96(id))
		}
	}
	ref := a.Add(buf)
	// The state id stays in the entry too where it fits, so that a
	// consent check (a frequency cap's) needs no second miss for the
	// record; the record has it either way.
	inline := uint32(StateOverflow)
	if state < StateOverflow {
		inline = state
	}
	return Entry{MakeMeta(ord, inline, 0) | OverflowBit, uint64(ref) | uint64(f.A)<<32, f.B}, buf
}

// NoID stands for "no segment id" in changeLocked.
const NoID = math.MaxUint32

// ChangeInline adds and removes an id of an inline entry without leaving
// the registers; ok is false if the result does not fit inline.
func ChangeInline(en Entry, add, remove uint32) (Entry, bool) {
	n, c := en.Count(), en.Code()
	// Bulk loads add segments in increasing id order: appending to the
	// lanes is one shift and one or.
	if c < LaneCodes && remove == NoID && add != NoID && uint64(add) <= LaneMax[c] && n < 2*LanesPer[c] &&
		(n == 0 || LaneID(en.Lo, en.Hi, c, n-1) < add) {
		w, k := &en.Lo, n
		if k >= LanesPer[c] {
			w, k = &en.Hi, k-LanesPer[c]
		}
		shift := uint(k) * LaneWidth[c]
		*w = *w&^((1<<LaneWidth[c]-1)<<shift) | uint64(add)<<shift
		en.Meta = en.Meta&^(0xf<<CountShift) | uint64(n+1)<<CountShift
		return en, true
	}
	var buf [efMaxIDs + 1]uint32 // room for one added before one removed
	ids := InlineIDs(buf[:0], en)
	changed := false
	if add != NoID {
		if i, found := slices.BinarySearch(ids, add); !found {
			if n == len(buf) {
				return en, false
			}
			ids, changed = slices.Insert(ids, i, add), true
		}
	}
	if remove != NoID {
		if i, found := slices.BinarySearch(ids, remove); found {
			ids, changed = slices.Delete(ids, i, i+1), true
		}
	}
	if !changed {
		return en, true
	}
	return PackInline(en.Ord(), en.State(), ids)
}

// RecordMax bounds the size of an overflow record of n ids.
func RecordMax(n int) int { return (2 + n) * binary.MaxVarintLen32 }
