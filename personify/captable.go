package personify

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/personify-go/personify/personify/internal/index"
)

// The counters of one cap, by person ordinal, held in pages of 256
// ordinals. A page exists once one of its people is counted and holds,
// in one []uint32, the page's newest window index (a rolling cap's
// sub-window, a calendar cap's period), a bitmap of the people it
// counts, and their counts in rank order: four bits per rolling
// sub-window while every count of the page fits them (one uint32 a
// person), a byte per sub-window once one does not (two); a calendar or
// lifetime count in one uint32. So a counted (person, cap) costs its
// count, a bit of the bitmap per 8 ordinals around it and its share of a
// 40-byte page header: about 6-7 bytes where one person in ten is
// counted, against the 30-40 of a hash map of words. A lookup is the
// page's slice header (a small directory, cache-resident) and one or two
// lines of the page, fetched together.
//
// The people of a page share its window index: a page is advanced to a
// newer sub-window or period as a whole (the counts that leave the window
// go, a person whose counts are all gone leaves the page), and a count
// for a time older than the page's window counts for nothing. An
// impression's sub-window is absolute time, so this changes nothing for
// impressions that come in time order, and replicas and replays that
// count the same impressions agree.
//
// Pages are guarded by the lock of their shard (by page number), which
// also holds the shard's impressions not logged yet; the directory of
// pages grows under grow, and is read lock-free.

const (
	capShards     = 64
	capPageBits   = 8
	capPageOrds   = 1 << capPageBits
	capChunkBits  = 8 // pages per directory chunk: 2^8 pages, 65,536 ordinals
	capChunkPages = 1 << capChunkBits

	pgLast  = 0          // the page's window index
	pgFlags = 1          // pgWide
	pgBits  = 2          // 8 words: the bitmap of the page's people
	pgCells = pgBits + 8 // the counts, in rank order
	pgSlack = 4          // uint32s of room kept when a page grows, so that most inserts do not copy it

	pgWide = 1 // a rolling page's counts are a byte per sub-window (two uint32s a person)
)

type capChunk [capChunkPages][]uint32

type capShard struct {
	mu      sync.Mutex
	pending []impression
	_       [32]byte // a cache line each
}

type capTable struct {
	shards  [capShards]capShard
	pending atomic.Int64 // impressions in the shards' pending lists, so that an erasure skips them when there are none
	words   atomic.Int64 // counted people
	mem     atomic.Int64 // bytes the pages and their directory hold
	grow    sync.Mutex   // adding chunks to dir
	dir     atomic.Pointer[[]*capChunk]
}

func newCapTable() *capTable { return &capTable{} }

// shard is the lock of ord's page.
func (t *capTable) shard(ord uint32) *capShard {
	return &t.shards[(ord>>capPageBits)%capShards]
}

// page returns ord's page, nil where the page's chunk does not exist yet
// (create asks for it then). Caller holds ord's shard lock.
func (t *capTable) page(ord uint32, create bool) *[]uint32 {
	ci := int(ord >> (capPageBits + capChunkBits))
	if d := t.dir.Load(); d != nil && ci < len(*d) {
		if ch := (*d)[ci]; ch != nil {
			return &ch[ord>>capPageBits%capChunkPages]
		}
	}
	if !create {
		return nil
	}
	t.grow.Lock()
	defer t.grow.Unlock()
	var d []*capChunk
	if p := t.dir.Load(); p != nil {
		d = *p
	}
	if ci >= len(d) || d[ci] == nil {
		nd := make([]*capChunk, max(len(d), ci+1))
		copy(nd, d)
		nd[ci] = new(capChunk)
		t.mem.Add(int64(cap(nd)-len(d))*8 + int64(unsafe.Sizeof(capChunk{})))
		t.dir.Store(&nd)
		d = nd
	}
	return &d[ci][ord>>capPageBits%capChunkPages]
}

// prefetch starts fetching the lines of ord's page that its count is
// likely in (the header, and the line where the count would be were the
// page's people spread evenly, with its neighbours), so that the miss
// overlaps other work. Caller holds ord's shard lock.
func (t *capTable) prefetch(ord uint32) {
	pp := t.page(ord, false)
	if pp == nil || *pp == nil {
		return
	}
	pg := *pp
	index.Prefetch(unsafe.Pointer(&pg[0]))
	if n := len(pg) - pgCells; n > 8 {
		est := pgCells + int(uint(ord%capPageOrds)*uint(n)>>capPageBits)
		index.Prefetch(unsafe.Pointer(&pg[est]))
		index.Prefetch(unsafe.Pointer(&pg[max(est-16, pgCells)]))
		index.Prefetch(unsafe.Pointer(&pg[min(est+16, len(pg)-1)]))
	}
}

// pageRank is where ord's count is in page pg: whether the page counts
// ord, and the index of its first uint32.
func pageRank(pg []uint32, ord uint32) (int, bool) {
	b := ord % capPageOrds
	w := int(b >> 5)
	r := 0
	for i := range w {
		r += bits.OnesCount32(pg[pgBits+i])
	}
	word := pg[pgBits+w]
	r += bits.OnesCount32(word & (1<<(b&31) - 1))
	units := 1
	if pg[pgFlags]&pgWide != 0 {
		units = 2
	}
	return pgCells + r*units, word>>(b&31)&1 != 0
}

// cell reads the count at i of page pg.
func cellAt(pg []uint32, i int) uint64 {
	if pg[pgFlags]&pgWide != 0 {
		return uint64(pg[i]) | uint64(pg[i+1])<<32
	}
	return uint64(pg[i])
}

// get returns ord's word: its count, at its page's window index. Caller
// holds ord's shard lock.
func (t *capTable) get(c *capState, ord uint32) (capWord, bool) {
	pp := t.page(ord, false)
	if pp == nil || *pp == nil {
		return capWord{}, false
	}
	pg := *pp
	i, ok := pageRank(pg, ord)
	if !ok {
		return capWord{}, false
	}
	return capWord{counts: c.unpack(pg, cellAt(pg, i)), last: pg[pgLast]}, true
}

// unpack is a stored count as a word's counts (a rolling narrow page's
// nibbles as bytes).
func (c *capState) unpack(pg []uint32, v uint64) uint64 {
	if c.Window.Kind != Rolling || pg[pgFlags]&pgWide != 0 {
		return v
	}
	// Spread eight nibbles to eight bytes.
	v = (v | v<<16) & 0x0000ffff0000ffff
	v = (v | v<<8) & 0x00ff00ff00ff00ff
	v = (v | v<<4) & 0x0f0f0f0f0f0f0f0f
	return v
}

// narrow is counts as eight nibbles, and whether they fit.
func narrow(v uint64) (uint64, bool) {
	if v&0xf0f0f0f0f0f0f0f0 != 0 {
		return 0, false
	}
	v = (v | v>>4) & 0x00ff00ff00ff00ff
	v = (v | v>>8) & 0x0000ffff0000ffff
	v = (v | v>>16) & 0x00000000ffffffff
	return v, true
}

// put stores ord's word (a word of no count removes ord). A word newer
// than its page advances the page; one older is advanced to the page's
// window first. Caller holds ord's shard lock.
func (t *capTable) put(c *capState, ord uint32, w capWord) {
	if c.Window.Kind == Lifetime {
		w.last = 0
	}
	pp := t.page(ord, w.counts != 0)
	if pp == nil {
		return
	}
	if pg := *pp; pg != nil && pg[pgLast] != w.last {
		if c.Window.Kind != Lifetime && int32(w.last-pg[pgLast]) > 0 {
			t.rebuild(c, pp, func(v uint64) uint64 { return c.advanceTo(capWord{counts: v, last: pg[pgLast]}, w.last).counts }, w.last, false)
		} else {
			w = c.advanceTo(w, pg[pgLast])
		}
	}
	if w.counts == 0 {
		t.remove(pp, ord)
		return
	}
	if *pp == nil {
		pg := make([]uint32, pgCells, pgCells+pgSlack)
		pg[pgLast] = w.last
		t.setPage(pp, pg)
	}
	v := w.counts
	wide := (*pp)[pgFlags]&pgWide != 0
	if c.Window.Kind == Rolling && !wide {
		n, ok := narrow(v)
		if !ok {
			t.rebuild(c, pp, func(v uint64) uint64 { return v }, (*pp)[pgLast], true)
			wide = true
		} else {
			v = n
		}
	}
	pg := *pp
	i, ok := pageRank(pg, ord)
	if !ok {
		units := 1
		if wide {
			units = 2
		}
		pg = grow(pg, i, units)
		b := ord % capPageOrds
		pg[pgBits+int(b>>5)] |= 1 << (b & 31)
		t.setPage(pp, pg)
		t.words.Add(1)
	}
	pg[i] = uint32(v)
	if wide {
		pg[i+1] = uint32(v >> 32)
	}
}

// grow opens units uint32s at i of pg.
func grow(pg []uint32, i, units int) []uint32 {
	n := len(pg)
	if cap(pg) < n+units {
		np := make([]uint32, n+units, n+units+pgSlack)
		copy(np, pg[:i])
		copy(np[i+units:], pg[i:])
		return np
	}
	pg = pg[:n+units]
	copy(pg[i+units:], pg[i:n])
	return pg
}

// remove drops ord from its page (a page left empty goes). Caller holds
// ord's shard lock.
func (t *capTable) remove(pp *[]uint32, ord uint32) bool {
	pg := *pp
	if pg == nil {
		return false
	}
	i, ok := pageRank(pg, ord)
	if !ok {
		return false
	}
	units := 1
	if pg[pgFlags]&pgWide != 0 {
		units = 2
	}
	b := ord % capPageOrds
	pg[pgBits+int(b>>5)] &^= 1 << (b & 31)
	t.words.Add(-1)
	n := copy(pg[i:], pg[i+units:])
	pg = pg[:i+n]
	switch {
	case len(pg) == pgCells:
		pg = nil
	case cap(pg) > 2*len(pg)+pgSlack: // give back what the page no longer needs
		pg = append(make([]uint32, 0, len(pg)+pgSlack), pg...)
	}
	t.setPage(pp, pg)
	return true
}

// del drops ord's count. Caller holds ord's shard lock.
func (t *capTable) del(ord uint32) bool {
	pp := t.page(ord, false)
	return pp != nil && t.remove(pp, ord)
}

// rebuild rewrites page *pp with each count mapped by f (a count mapped
// to zero leaves the page) at window index last, in the narrowest form
// that holds the counts (or wide, if asked).
func (t *capTable) rebuild(c *capState, pp *[]uint32, f func(uint64) uint64, last uint32, wide bool) {
	pg := *pp
	if pg == nil {
		return
	}
	type kv struct {
		b uint32
		v uint64
	}
	var buf [capPageOrds]kv
	cells := buf[:0]
	units := 1
	if pg[pgFlags]&pgWide != 0 {
		units = 2
	}
	i := pgCells
	for w := range 8 {
		for x := pg[pgBits+w]; x != 0; x &= x - 1 {
			b := uint32(w*32 + bits.TrailingZeros32(x))
			v := f(c.unpack(pg, cellAt(pg, i)))
			i += units
			if v == 0 {
				continue
			}
			if c.Window.Kind == Rolling {
				if _, ok := narrow(v); !ok {
					wide = true
				}
			}
			cells = append(cells, kv{b, v})
		}
	}
	t.words.Add(int64(len(cells) - (i-pgCells)/units))
	if len(cells) == 0 {
		t.setPage(pp, nil)
		return
	}
	units = 1
	if wide {
		units = 2
	}
	n := pgCells + units*len(cells)
	np := make([]uint32, n, n+pgSlack)
	np[pgLast] = last
	if wide {
		np[pgFlags] = pgWide
	}
	i = pgCells
	for _, e := range cells {
		np[pgBits+int(e.b>>5)] |= 1 << (e.b & 31)
		v := e.v
		if c.Window.Kind == Rolling && !wide {
			v, _ = narrow(v)
		}
		np[i] = uint32(v)
		if wide {
			np[i+1] = uint32(v >> 32)
		}
		i += units
	}
	t.setPage(pp, np)
}

// setPage replaces page *pp with pg, keeping count of the memory.
func (t *capTable) setPage(pp *[]uint32, pg []uint32) {
	t.mem.Add(int64(cap(pg)-cap(*pp)) * 4)
	*pp = pg
}

// each calls f for every page of the table, with its shard locked and the
// first ordinal it holds; f may replace the page.
func (t *capTable) each(f func(pp *[]uint32, base uint32)) {
	d := t.dir.Load()
	if d == nil {
		return
	}
	for ci, ch := range *d {
		if ch == nil {
			continue
		}
		for pi := range ch {
			base := uint32(ci)<<(capPageBits+capChunkBits) | uint32(pi)<<capPageBits
			sh := t.shard(base)
			sh.mu.Lock()
			if ch[pi] != nil {
				f(&ch[pi], base)
			}
			sh.mu.Unlock()
		}
	}
}

// words calls f with every counted person's word, by ordinal, each page
// under its shard's lock.
func (t *capTable) eachWord(c *capState, f func(ord uint32, w capWord)) {
	t.each(func(pp *[]uint32, base uint32) {
		pg := *pp
		units := 1
		if pg[pgFlags]&pgWide != 0 {
			units = 2
		}
		i := pgCells
		for w := range 8 {
			for x := pg[pgBits+w]; x != 0; x &= x - 1 {
				ord := base + uint32(w*32+bits.TrailingZeros32(x))
				f(ord, capWord{counts: c.unpack(pg, cellAt(pg, i)), last: pg[pgLast]})
				i += units
			}
		}
	})
}

// bytes is the memory the counters hold.
func (t *capTable) bytes() int64 { return t.mem.Load() }
