package personify

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// Pseudonym returns the pseudonym under which the person identified by id
// is stored: the current key's, or during a key rotation's grace period an
// older key's if the person has not been re-keyed yet. Call it once per
// session and keep the result for In and Segments. It allocates nothing
// outside a grace period.
func (e *Engine) Pseudonym(id anonymize.Identifier) (anonymize.Pseudonym, error) {
	if e.closed.Load() {
		return 0, ErrClosed
	}
	ring := e.keyring()
	if ring.Len() == 1 {
		return ring.Pseudonym(id)
	}
	// Under the keys the engine holds: a lookup finds whoever it can (a
	// write would refuse while a previous key is missing).
	kps, err := ring.AppendPseudonyms(make([]anonymize.KeyedPseudonym, 0, 2), id, e.now())
	if err != nil {
		return 0, err
	}
	for _, kp := range kps {
		if e.dir.tab.Load().slot(uint64(kp.Pseudonym)) != nil {
			return kp.Pseudonym, nil
		}
	}
	return kps[0].Pseudonym, nil
}

// In reports whether the person with pseudonym p is a member of the segment
// (and the membership has not expired). It is the raw fact, for the app's
// own logic; what may be used for a purpose is Segments' answer. Unknown
// pseudonyms and segments are not members.
//
// In takes no lock and allocates nothing: one probe of the directory, one
// cache miss for most people.
func (e *Engine) In(p anonymize.Pseudonym, segmentName string) bool {
	// The whole path is written out here, without calls: a lookup costs a
	// few dozen instructions besides its cache miss, and every instruction
	// waiting on the miss delays the next lookup's.
	g := e.gen.Load() // odd while closed or loading a snapshot
	t := e.dir.tab.Load()
	if uint64(p) <= slotTombstone || g&1 != 0 {
		return e.inLocked(p, segmentName) // the two reserved pseudonym values; closed; loading
	}
	slots := t.slots
	i := home(uint64(p), len(slots))
	for {
		k := atomic.LoadUint64(&slots[i].key)
		if k == uint64(p) {
			break
		}
		if k == slotEmpty {
			if e.hasAliases.Load() || e.gen.Load() != g {
				return e.inLocked(p, segmentName)
			}
			return false
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
	s := &slots[i]
	m := atomic.LoadUint64(&s.meta)
	lo, hi := atomic.LoadUint64(&s.lo), atomic.LoadUint64(&s.hi)
	if m&seqOne != 0 || atomic.LoadUint64(&s.meta) != m {
		return e.inLocked(p, segmentName) // a writer is mid-update
	}
	rt := e.rt.Load()
	id, ok := rt.byName.get(segmentName)
	en := entry{m, lo, hi}
	switch {
	case !ok:
	case en.overflow():
		ok = (bloom96{uint32(lo >> 32), hi}).covers(rt.segs[id].bloom) && viewRecord(t.arena.record(en.ref())).has(id)
	default:
		c := en.code() & 7
		ok = uint64(id) <= laneMax[c] && laneMatch(lo, hi, c, uint64(id)*laneLow[c], ^uint64(0))
	}
	if ok && rt.anyTimed && hasBit(rt.timed, id) {
		st := rt.segs[id].st
		if now := e.now(); now.UnixNano() >= st.live.deadline.Load() {
			ok = e.stillHolds(st, en.ord(), now)
		}
	}
	if e.gen.Load() != g { // a snapshot was loaded meanwhile: t and rt may not match
		return e.inLocked(p, segmentName)
	}
	return ok
}

// Segments appends to dst the names, in order of segment definition, of
// the segments of purpose that may be used now to personalize for the
// person with pseudonym p, and returns the extended slice. A segment is
// included only if the person is a member, the membership has not expired,
// the purpose may use the person's data (consent under the purpose's model,
// explicit opt-in for sensitive segments, no suppression) and the segment
// has at least max(K, MinSize) members, so that serving it never singles
// anyone out. An unknown pseudonym or purpose appends nothing.
//
// Segments takes no lock and allocates nothing beyond growing dst: one probe
// of the directory (one cache miss for most people) and, per segment of the
// person, a few bit tests against the (cached) segment table.
func (e *Engine) Segments(dst []string, p anonymize.Pseudonym, purpose string) []string {
	g := e.gen.Load() // odd while closed or loading a snapshot
	if g&1 != 0 {
		return e.segmentsLocked(dst, p, purpose)
	}
	n0 := len(dst)
	dst = e.segmentsFast(dst, p, purpose)
	if e.gen.Load() != g { // a snapshot was loaded meanwhile: start again under the lock
		return e.segmentsLocked(dst[:n0], p, purpose)
	}
	return dst
}

func (e *Engine) segmentsFast(dst []string, p anonymize.Pseudonym, purpose string) []string {
	t := e.dir.tab.Load()
	en, ok, stuck := t.read(uint64(p))
	if !ok || stuck {
		if stuck || e.hasAliases.Load() {
			return e.segmentsLocked(dst, p, purpose)
		}
		return dst
	}
	rt := e.rt.Load()
	pu, ok := rt.purposes[purpose]
	if !ok {
		return dst
	}
	state := en.state()
	var rec recordView
	if en.overflow() {
		rec = viewRecord(t.arena.record(en.ref()))
		state = rec.state
	}
	bit := uint64(1) << pu.bit
	var granted uint64 // all ones if the person granted consent for the purpose
	if state != 0 {
		states := *e.states.Load()
		if int(state) >= len(states) { // a snapshot replaced the states meanwhile
			return e.segmentsLocked(dst, p, purpose)
		}
		s := &states[state]
		if s.all || s.suppressed&bit != 0 || s.denied&bit != 0 {
			return dst
		}
		granted = -(s.granted >> pu.bit & 1)
	}
	if pu.optIn && granted == 0 {
		return dst
	}
	// Decode the ids into a stack buffer, then one tight loop tests and
	// appends them (no call per id: each instruction that waits on this
	// person's entry delays the next lookup's miss).
	var buf [32]uint32
	if !en.overflow() {
		c := en.code()
		width, per, mask := laneWidth[c], lanesPer[c], uint64(1)<<laneWidth[c]-1
		word, n := en.lo, en.count()
		for k := range n {
			if k == per {
				word = en.hi
			}
			buf[k] = uint32(word & mask)
			word >>= width
		}
		return e.appendServable(dst, rt, pu, buf[:n], granted, en.ord())
	}
	cur, b := uint64(0), rec.rest
	for rec.n > 0 {
		n := min(rec.n, len(buf))
		for k := range n {
			d, size := uvarint(b)
			b, cur = b[size:], cur+d
			buf[k] = uint32(cur)
		}
		rec.n -= n
		dst = e.appendServable(dst, rt, pu, buf[:n], granted, en.ord())
	}
	return dst
}

// appendServable appends the names of the segments in ids that Segments
// may serve: big enough, of the purpose, consented if sensitive, and, for a
// segment with a retention, the membership not expired.
func (e *Engine) appendServable(dst []string, rt *readTable, pu *readPurpose, ids []uint32, granted uint64, ord uint32) []string {
	serv, servSensitive, names := pu.servable, pu.servableSensitive, rt.names
	var now time.Time // read once, and only if a timed segment needs it
	for _, id := range ids {
		w := id >> 6
		if w >= uint32(len(serv)) || w >= uint32(len(servSensitive)) { // defined after this table was published
			continue
		}
		if (serv[w].Load()|servSensitive[w].Load()&granted)>>(id&63)&1 == 0 {
			continue
		}
		if pu.timed && rt.timed[w]>>(id&63)&1 != 0 {
			st := rt.segs[id].st
			if now.IsZero() {
				now = e.now()
			}
			if now.UnixNano() >= st.live.deadline.Load() && !e.stillHolds(st, ord, now) {
				continue
			}
		}
		dst = append(dst, names[id])
	}
	return dst
}

// inLocked is the reference answer for In, straight from the segment sets
// under the read lock. It serves pseudonyms that are aliases (key rotation)
// and the tests that check the index against it.
func (e *Engine) inLocked(p anonymize.Pseudonym, segmentName string) bool {
	if e.closed.Load() {
		return false
	}
	now := e.now()
	e.mu.RLock()
	defer e.mu.RUnlock()
	st, ok := e.segs[segmentName]
	if !ok {
		return false
	}
	ord, _, ok := e.resolveLocked(p)
	return ok && st.holds(ord, now)
}

// segmentsLocked is the reference answer for Segments, straight from the
// segment sets under the read lock, in the same order.
func (e *Engine) segmentsLocked(dst []string, p anonymize.Pseudonym, purpose string) []string {
	if e.closed.Load() {
		return dst
	}
	now := e.now()
	e.mu.RLock()
	defer e.mu.RUnlock()
	ps, ok := e.purposes[purpose]
	if !ok {
		return dst
	}
	ord, _, ok := e.resolveLocked(p)
	if !ok || !e.allowsLocked(ps, ord, false) {
		return dst
	}
	granted := ps.consentOf(ord) == consentGranted
	segs := slices.Clone(ps.segments)
	slices.SortFunc(segs, func(a, b *segState) int { return cmp.Compare(a.id, b.id) })
	for _, st := range segs {
		if (!st.Sensitive || granted) && st.len() >= e.minSize(st) && st.holds(ord, now) {
			dst = append(dst, st.Name)
		}
	}
	return dst
}

// minSize is the size below which a segment is not served.
func (e *Engine) minSize(st *segState) int { return max(e.k, st.MinSize) }
