package personify

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/personify-go/personify/segment"
)

// A snapshot keeps each cap's definition in the metadata and its counters
// in a blob "caps/<id>": per counted person 16 bytes (u32 ordinal, u32
// last, u64 counts, little endian), by ordinal. It keeps the counts as of
// the log position it is taken at: the impressions counted but not logged
// yet are subtracted (they reach the log after the snapshot, and replay
// counts them then), so a restart counts every impression once.

type snapCap struct {
	Cap
	ID uint32 `json:"id"`
}

const capRecordLen = 16

// lockFlush keeps FlushCounts from running while a snapshot is taken, so
// that every impression is either logged before it or still pending.
// Callers take it before the store's exclusive section.
func (e *Engine) lockFlush() func() {
	if f := e.capFlush; f != nil {
		f.mu.Lock()
		return f.mu.Unlock
	}
	return func() {}
}

// capsMetaLocked adds the caps' definitions to a snapshot's metadata.
// Caller holds mu.
func (e *Engine) capsMetaLocked(meta *snapMeta) {
	meta.NextCap = e.nextCapID
	for _, c := range e.caps {
		meta.Caps = append(meta.Caps, snapCap{c.Cap, c.id})
	}
	slices.SortFunc(meta.Caps, func(a, b snapCap) int { return strings.Compare(a.Name, b.Name) })
}

// writeCapsLocked writes the caps' counters to a snapshot. Caller holds
// mu.
func (e *Engine) writeCapsLocked(meta *snapMeta, sw *segment.Writer) error {
	for _, sc := range meta.Caps {
		c := e.caps[sc.Name]
		words := map[uint32]capWord{}
		var pending []impression
		c.counts.eachShard(c, func(sh *capShard, each func(func(uint32, capWord))) { // a shard's words and pending at one moment
			each(func(ord uint32, w capWord) { words[ord] = w })
			pending = append(pending, sh.pending...)
		})
		if f := e.flights[sc.Name]; f != nil { // being logged: after this snapshot, when a flush's own write compacts first
			for _, b := range f.batches {
				pending = append(pending, b.imps...)
			}
		}
		for _, im := range pending { // not logged yet: replay counts them
			if ord, _, ok := e.resolveLocked(im.p); ok {
				if w, ok := words[ord]; ok {
					words[ord] = c.sub1(w, im.at)
				}
			}
		}
		ords := make([]uint32, 0, len(words))
		for ord, w := range words {
			if w.counts != 0 {
				ords = append(ords, ord)
			}
		}
		slices.Sort(ords)
		b := make([]byte, 0, capRecordLen*len(ords))
		for _, ord := range ords {
			w := words[ord]
			b = binary.LittleEndian.AppendUint32(b, ord)
			b = binary.LittleEndian.AppendUint32(b, w.last)
			b = binary.LittleEndian.AppendUint64(b, w.counts)
		}
		if err := sw.Blob("caps/"+strconv.FormatUint(uint64(c.id), 10), int64(len(ords)), b); err != nil {
			return err
		}
	}
	return nil
}

// sub1 takes one impression at time at back out of w.
func (c *capState) sub1(w capWord, at int64) capWord {
	switch c.Window.Kind {
	case Rolling:
		k := c.period(at)
		if age := int32(w.last - k); age >= 0 && age < capSubWindows {
			if shift := 8 * (k % capSubWindows); w.counts>>shift&0xff > 0 {
				w.counts -= 1 << shift
			}
		}
	case Calendar:
		if c.period(at) == w.last && w.counts > 0 {
			w.counts--
		}
	default:
		if w.counts > 0 {
			w.counts--
		}
	}
	return w
}

// buildCaps reads the caps of a snapshot, each checked: a valid
// definition of a purpose it has, a distinct id below NextCap, counters of
// live ordinals only, in order, each a count the window allows.
func (st *state) buildCaps(sets map[string]*segment.Section) error {
	m := &st.meta
	st.caps = map[string]*capState{}
	ids := map[uint32]bool{}
	for i, sc := range m.Caps {
		loc, err := checkCap(sc.Cap)
		ps := st.purposes[sc.Purpose]
		if err != nil || ps == nil || sc.ID >= m.NextCap || ids[sc.ID] || st.caps[sc.Name] != nil {
			return fmt.Errorf("cap %d is not valid", i)
		}
		ids[sc.ID] = true
		c := &capState{Cap: sc.Cap, id: sc.ID, purpose: ps, loc: loc, counts: newCapTable()}
		if c.Window.Kind == Rolling {
			c.sub = rollingSub(c.Window.Length)
		}
		sec, ok := sets["caps/"+strconv.FormatUint(uint64(sc.ID), 10)]
		if !ok {
			return fmt.Errorf("counters of cap %q are missing", sc.Name)
		}
		b := sec.Blob()
		if len(b)%capRecordLen != 0 || int64(len(b)/capRecordLen) != sec.Aux {
			return fmt.Errorf("counters of cap %q: %d bytes", sc.Name, len(b))
		}
		prev := int64(-1)
		for ; len(b) > 0; b = b[capRecordLen:] {
			ord := binary.LittleEndian.Uint32(b)
			w := capWord{last: binary.LittleEndian.Uint32(b[4:]), counts: binary.LittleEndian.Uint64(b[8:])}
			if int64(ord) <= prev || !st.live.Contains(ord) || w.counts == 0 || c.Window.Kind != Rolling && w.counts >= 1<<32 {
				return fmt.Errorf("counters of cap %q are not valid", sc.Name)
			}
			prev = int64(ord)
			c.counts.put(c, ord, w) // not shared yet: no lock
		}
		st.caps[sc.Name] = c
	}
	return nil
}
