package personify

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/personify-go/personify/personify/internal/index"
)

// The counters of one cap, by person ordinal, held in pages of 256
// ordinals. A page exists once one of its people is counted and holds, in
// one []uint32, a flags word, a bitmap of the people it counts and their
// words in rank order. A word is the person's own window index (a rolling
// cap's newest sub-window, a calendar cap's period; none for lifetime)
// and their count: four bits per rolling sub-window while every count of
// the page fits them, a byte per sub-window once one does not ("wide");
// a calendar or lifetime count in one uint32. So a counted (person, cap)
// costs 4 to 12 bytes, a bit of the bitmap per 8 ordinals around it and
// its share of a 36-byte page header: about 10 bytes for a rolling or
// calendar cap and 6 for a lifetime one where one person in ten is
// counted, against the ~43 of a Go map of words. Each person keeps their
// own window, so what one person's times do (a clock gone wrong, a late
// request) touches nobody else's count, exactly as a map of words would.
//
// A lookup reads a pointer from a small directory (312 KB a cap at 10M
// people, cache-resident) and one or two lines of the page, which the
// request path prefetches while it checks consent.
//
// Pages are guarded by the lock of their shard (by page number), which
// also holds the shard's impressions not logged yet; the directory grows
// under grow, copy-on-write, and is read lock-free. The memory of a person
// removed from a page is zeroed, so that an erased count stays nowhere.

const (
	capShards     = 64
	capPageBits   = 8
	capPageOrds   = 1 << capPageBits
	capChunkBits  = 8 // pages per directory chunk: 2^8 pages, 65,536 ordinals
	capChunkPages = 1 << capChunkBits

	pgFlags = 0          // pgWide
	pgBits  = 1          // 8 words: the bitmap of the page's people
	pgCells = pgBits + 8 // the words, in rank order
	pgSlack = 4          // uint32s of room kept when a page grows, so that most inserts do not copy it

	pgWide = 1 // a rolling page's counts are a byte per sub-window
)

// capChunk is a part of the page directory: a pointer per page, to the
// page's first uint32, with its length and capacity, so that the request
// path finds where to prefetch without touching the page.
type capChunk [capChunkPages]pageRef

// pageRef is a page, or nil.
type pageRef struct {
	p        unsafe.Pointer
	len, cap uint32
}

// get returns the page (nil if none).
func (r *pageRef) get() []uint32 {
	if r.p == nil {
		return nil
	}
	return unsafe.Slice((*uint32)(r.p), r.cap)[:r.len]
}

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
func (t *capTable) page(ord uint32, create bool) *pageRef {
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

// units is how many uint32s a word takes in a page of cap c.
func (c *capState) units(wide bool) int {
	switch {
	case c.Window.Kind == Lifetime:
		return 1
	case wide:
		return 3
	}
	return 2
}

// fitsNarrow reports whether w's counts fit a narrow page.
func (c *capState) fitsNarrow(w capWord) bool {
	return c.Window.Kind != Rolling || w.counts&0xf0f0f0f0f0f0f0f0 == 0
}

// rank is how many of page pg's people come before ord, and whether the
// page counts ord.
func rank(pg []uint32, ord uint32) (int, bool) {
	b := ord % capPageOrds
	w := int(b >> 5)
	r := 0
	for i := range w {
		r += bits.OnesCount32(pg[pgBits+i])
	}
	word := pg[pgBits+w]
	return r + bits.OnesCount32(word&(1<<(b&31)-1)), word>>(b&31)&1 != 0
}

// pageRank is where ord's word is in page pg: whether the page counts
// ord, and the index of its first uint32.
func (c *capState) pageRank(pg []uint32, ord uint32) (int, bool) {
	r, ok := rank(pg, ord)
	return pgCells + r*c.units(pg[pgFlags]&pgWide != 0), ok
}

// wordAt reads the word at i of page pg.
func (c *capState) wordAt(pg []uint32, i int) capWord {
	if c.Window.Kind == Lifetime {
		return capWord{counts: uint64(pg[i])}
	}
	w := capWord{last: pg[i], counts: uint64(pg[i+1])}
	if c.Window.Kind == Rolling {
		if pg[pgFlags]&pgWide != 0 {
			w.counts |= uint64(pg[i+2]) << 32
		} else { // eight nibbles to eight bytes
			v := w.counts
			v = (v | v<<16) & 0x0000ffff0000ffff
			v = (v | v<<8) & 0x00ff00ff00ff00ff
			w.counts = (v | v<<4) & 0x0f0f0f0f0f0f0f0f
		}
	}
	return w
}

// setWordAt writes w at i of page pg (which it fits).
func (c *capState) setWordAt(pg []uint32, i int, w capWord) {
	if c.Window.Kind == Lifetime {
		pg[i] = uint32(w.counts)
		return
	}
	pg[i] = w.last
	v := w.counts
	if c.Window.Kind == Rolling {
		if pg[pgFlags]&pgWide != 0 {
			pg[i+2] = uint32(v >> 32)
		} else { // eight bytes (each < 16) to eight nibbles
			v = (v | v>>4) & 0x00ff00ff00ff00ff
			v = (v | v>>8) & 0x0000ffff0000ffff
			v = (v | v>>16) & 0x00000000ffffffff
		}
	}
	pg[i+1] = uint32(v)
}

// prefetch starts fetching the lines of ord's page that its word is
// likely in (the header, and the line where the word would be were the
// page's people spread evenly, with its neighbours), so that the miss
// overlaps other work. Caller holds ord's shard lock.
func (t *capTable) prefetch(ord uint32) {
	pp := t.page(ord, false)
	if pp == nil || pp.p == nil {
		return
	}
	pg := pp.get() // from the directory: the page itself is not read here
	index.Prefetch(unsafe.Pointer(&pg[0]))
	if n := len(pg) - pgCells; n > 8 {
		est := pgCells + int(uint(ord%capPageOrds)*uint(n)>>capPageBits)
		index.Prefetch(unsafe.Pointer(&pg[est]))
		index.Prefetch(unsafe.Pointer(&pg[max(est-16, pgCells)]))
		index.Prefetch(unsafe.Pointer(&pg[min(est+16, len(pg)-1)]))
	}
}

// get returns ord's word. Caller holds ord's shard lock.
func (t *capTable) get(c *capState, ord uint32) (capWord, bool) {
	w, r := t.find(c, ord)
	return w, r.pg != nil
}

// find returns ord's word and where it is (nil where ord has none), for
// a caller that may rewrite it in place with replace. Caller holds ord's
// shard lock.
func (t *capTable) find(c *capState, ord uint32) (capWord, wordRef) {
	pp := t.page(ord, false)
	if pp == nil || pp.p == nil {
		return capWord{}, wordRef{}
	}
	pg := pp.get()
	i, ok := c.pageRank(pg, ord)
	if !ok {
		return capWord{}, wordRef{}
	}
	return c.wordAt(pg, i), wordRef{pg, i}
}

// wordRef is where a stored word is: its page and index.
type wordRef struct {
	pg []uint32
	i  int
}

// replace rewrites ord's word at r (from find, under the same lock) with
// w, in place where w fits the page; otherwise (no count, a count too wide
// for a narrow page) it stores w as put does.
func (t *capTable) replace(c *capState, ord uint32, r wordRef, w capWord) {
	if r.pg == nil || w.counts == 0 || r.pg[pgFlags]&pgWide == 0 && !c.fitsNarrow(w) {
		t.put(c, ord, w)
		return
	}
	if c.Window.Kind == Lifetime {
		w.last = 0
	}
	c.setWordAt(r.pg, r.i, w)
}

// put stores ord's word (a word of no count removes ord). Caller holds
// ord's shard lock.
func (t *capTable) put(c *capState, ord uint32, w capWord) {
	if c.Window.Kind == Lifetime {
		w.last = 0
	}
	if w.counts == 0 {
		t.del(ord)
		return
	}
	pp := t.page(ord, true)
	if pp.p == nil {
		pg := make([]uint32, pgCells, pgCells+3+pgSlack)
		if !c.fitsNarrow(w) {
			pg[pgFlags] = pgWide
		}
		t.setPage(pp, pg)
	} else if pp.get()[pgFlags]&pgWide == 0 && !c.fitsNarrow(w) {
		t.rebuild(c, pp, true)
	}
	pg := pp.get()
	i, ok := c.pageRank(pg, ord)
	if !ok {
		units := c.units(pg[pgFlags]&pgWide != 0)
		pg = t.open(pg, i, units)
		b := ord % capPageOrds
		pg[pgBits+int(b>>5)] |= 1 << (b & 31)
		t.setPage(pp, pg)
		t.words.Add(1)
	}
	c.setWordAt(pg, i, w)
}

// open makes room for units uint32s at i of pg, zeroing what it leaves
// behind when it moves the page.
func (t *capTable) open(pg []uint32, i, units int) []uint32 {
	n := len(pg)
	if cap(pg) < n+units {
		np := make([]uint32, n+units, n+units+pgSlack+n/8)
		copy(np, pg[:i])
		copy(np[i+units:], pg[i:])
		return np // setPage zeroes pg
	}
	pg = pg[:n+units]
	copy(pg[i+units:], pg[i:n])
	return pg
}

// del drops ord's word, zeroing its memory (a page left empty goes).
// Caller holds ord's shard lock.
func (t *capTable) del(ord uint32) bool {
	pp := t.page(ord, false)
	if pp == nil || pp.p == nil {
		return false
	}
	pg := pp.get()
	r, ok := rank(pg, ord)
	if !ok {
		return false
	}
	b := ord % capPageOrds
	people := 0 // the units a word takes are the page's length over its people (del knows no cap)
	for i := range 8 {
		people += bits.OnesCount32(pg[pgBits+i])
	}
	units := (len(pg) - pgCells) / people
	i := pgCells + r*units
	pg[pgBits+int(b>>5)] &^= 1 << (b & 31)
	t.words.Add(-1)
	n := copy(pg[i:], pg[i+units:])
	clear(pg[i+n:])
	pg = pg[:i+n]
	switch {
	case people == 1:
		pg = nil
	case cap(pg) > 2*len(pg)+pgSlack: // give back what the page no longer needs
		pg = append(make([]uint32, 0, len(pg)+pgSlack), pg...)
	}
	t.setPage(pp, pg)
	return true
}

// rebuild rewrites page *pp narrow or wide.
func (t *capTable) rebuild(c *capState, pp *pageRef, wide bool) {
	pg := pp.get()
	if pg == nil || (pg[pgFlags]&pgWide != 0) == wide || c.Window.Kind != Rolling {
		return
	}
	from, to := c.units(!wide), c.units(wide)
	people := (len(pg) - pgCells) / from
	n := pgCells + to*people
	np := make([]uint32, n, n+pgSlack)
	copy(np[pgBits:pgCells], pg[pgBits:pgCells])
	if wide {
		np[pgFlags] = pgWide
	}
	for k := range people {
		c.setWordAt(np, pgCells+k*to, c.wordAt(pg, pgCells+k*from))
	}
	t.setPage(pp, np)
}

// setPage replaces page *pp with pg (or records pg's new length),
// keeping count of the memory and zeroing a page it replaces, so that no
// count outlives its place in the table.
func (t *capTable) setPage(pp *pageRef, pg []uint32) {
	old := pp.get()
	t.mem.Add(int64(cap(pg)-cap(old)) * 4)
	if old != nil && (pg == nil || &old[0] != &pg[0]) {
		clear(old[:cap(old)])
	}
	if pg == nil {
		*pp = pageRef{}
		return
	}
	*pp = pageRef{unsafe.Pointer(&pg[0]), uint32(len(pg)), uint32(cap(pg))}
}

// shardPages calls f for every page of shard s (s locked by the caller),
// with the first ordinal it holds.
func (t *capTable) shardPages(s int, f func(pp *pageRef, base uint32)) {
	d := t.dir.Load()
	if d == nil {
		return
	}
	for ci, ch := range *d {
		if ch == nil {
			continue
		}
		for pi := s; pi < capChunkPages; pi += capShards { // (page number) % capShards == s
			if ch[pi].p != nil {
				f(&ch[pi], uint32(ci)<<(capPageBits+capChunkBits)|uint32(pi)<<capPageBits)
			}
		}
	}
}

// pageWords calls f with each word of page pg, whose first ordinal is
// base.
func (c *capState) pageWords(pg []uint32, base uint32, f func(ord uint32, w capWord)) {
	units := c.units(pg[pgFlags]&pgWide != 0)
	i := pgCells
	for w := range 8 {
		for x := pg[pgBits+w]; x != 0; x &= x - 1 {
			f(base+uint32(w*32+bits.TrailingZeros32(x)), c.wordAt(pg, i))
			i += units
		}
	}
}

// eachShard calls f with every shard locked in turn, and the words of
// its pages; f sees a shard's words and pending impressions at one moment.
func (t *capTable) eachShard(c *capState, f func(sh *capShard, words func(func(ord uint32, w capWord)))) {
	for s := range t.shards {
		sh := &t.shards[s]
		sh.mu.Lock()
		f(sh, func(g func(uint32, capWord)) {
			t.shardPages(s, func(pp *pageRef, base uint32) { c.pageWords(pp.get(), base, g) })
		})
		sh.mu.Unlock()
	}
}

// eachWord calls f with every counted person's word, a shard at a time.
func (t *capTable) eachWord(c *capState, f func(ord uint32, w capWord)) {
	t.eachShard(c, func(_ *capShard, words func(func(uint32, capWord))) { words(f) })
}

// expire drops the words that hold no count at time at (Unix ns) and
// narrows the pages whose counts fit again. It returns how many it
// dropped.
func (t *capTable) expire(c *capState, at int64) int {
	n := 0
	for s := range t.shards {
		sh := &t.shards[s]
		sh.mu.Lock()
		t.shardPages(s, func(pp *pageRef, base uint32) {
			var gone []uint32
			narrow := true
			c.pageWords(pp.get(), base, func(ord uint32, w capWord) {
				if c.advance(w, at).counts == 0 {
					gone = append(gone, ord)
				} else if !c.fitsNarrow(w) {
					narrow = false
				}
			})
			for _, ord := range gone {
				t.del(ord)
			}
			n += len(gone)
			if narrow {
				t.rebuild(c, pp, false)
			}
		})
		sh.mu.Unlock()
	}
	return n
}

// bytes is the memory the counters hold.
func (t *capTable) bytes() int64 { return t.mem.Load() }
