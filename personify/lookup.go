package personify

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
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
		if e.dir.Tab.Load().Slot(uint64(kp.Pseudonym)) != nil {
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
// cache miss for most people. On a request path, resolve the segment once
// with [Engine.PrepareSegment] and ask [PreparedSegment.In]: the same
// answer without hashing the name on every call.
func (e *Engine) In(p anonymize.Pseudonym, segmentName string) bool {
	g := e.gen.Load() // before rt: see inID
	rt := e.rt.Load()
	id, ok := rt.byName.Get(segmentName)
	return e.inID(g, p, rt, id, ok, segmentName)
}

// inID is In for segment id of read table rt (known: the name was
// defined in rt), with g the engine's gen loaded before rt. The whole path
// is written out here, without calls: a lookup costs a few dozen
// instructions besides its cache miss, and every instruction waiting on
// the miss delays the next lookup's. rt may be older than the directory
// table: segment ids are never reused while gen is unchanged, and the
// check of gen at the end, against the g read before rt, catches a
// snapshot load (which renumbers segments) that began after it.
func (e *Engine) inID(g uint64, p anonymize.Pseudonym, rt *readTable, id uint32, known bool, segmentName string) bool {
	t := e.dir.Tab.Load()
	if uint64(p) <= index.SlotTombstone || g&1 != 0 {
		return e.inLocked(p, segmentName) // the two reserved pseudonym values; closed; loading
	}
	slots := t.Slots
	i := index.Home(uint64(p), len(slots))
	for {
		k := atomic.LoadUint64(&slots[i].Key)
		if k == uint64(p) {
			break
		}
		if k == index.SlotEmpty {
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
	m := atomic.LoadUint64(&s.Meta)
	lo, hi := atomic.LoadUint64(&s.Lo), atomic.LoadUint64(&s.Hi)
	if m&index.SeqOne != 0 || atomic.LoadUint64(&s.Meta) != m || atomic.LoadUint64(&s.Key) != uint64(p) {
		return e.inLocked(p, segmentName) // a writer is mid-update, or removed p (Table.Read's checks)
	}
	en := index.Entry{Meta: m, Lo: lo, Hi: hi}
	ok := known
	switch {
	case !ok:
	case en.Overflow():
		ok = (index.Bloom96{A: uint32(lo >> 32), B: hi}).Covers(rt.segs[id].bloom) && index.ViewRecord(t.Arena.Record(en.Ref())).Has(id)
	case en.Code() == index.CodeEF:
		ok = index.EFHas(lo, hi, en.EFLow(), id)
	default:
		c := en.Code() & 7
		ok = uint64(id) <= index.LaneMax[c] && index.LaneMatch(lo, hi, c, uint64(id)*index.LaneLow[c], ^uint64(0))
	}
	if ok && rt.anyTimed && hasBit(rt.timed, id) {
		st := rt.segs[id].st
		if now := e.now(); now.UnixNano() >= st.live.deadline.Load() {
			ok = e.stillHolds(st, en.Ord(), now)
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
// anyone out. An unknown pseudonym or purpose appends nothing (Engine.Purpose
// says whether a name is defined, and suggests the one meant).
//
// Segments takes no lock and allocates nothing beyond growing dst: one probe
// of the directory (one cache miss for most people) and, per segment of the
// person, a few bit tests against the (cached) segment table. On a request
// path, resolve the purpose once with [Engine.PreparePurpose] and ask
// [PreparedPurpose.Segments]: the same answer without hashing the name.
func (e *Engine) Segments(dst []string, p anonymize.Pseudonym, purpose string) []string {
	g := e.gen.Load() // before rt: see segmentsOf
	rt := e.rt.Load()
	return e.segmentsOf(g, dst, p, rt, rt.purposes[purpose], purpose)
}

// segmentsOf is Segments for purpose pu of read table rt (nil: the
// purpose is not defined in rt), with g the engine's gen loaded before rt
// (odd while closed or loading a snapshot). rt may be older than the
// directory table: segment ids and purpose bits are never reused while gen
// is unchanged, and the check of gen at the end catches a snapshot load.
func (e *Engine) segmentsOf(g uint64, dst []string, p anonymize.Pseudonym, rt *readTable, pu *readPurpose, purpose string) []string {
	if g&1 != 0 {
		return e.segmentsLocked(dst, p, purpose)
	}
	n0 := len(dst)
	dst = e.segmentsFast(dst, p, rt, pu, purpose)
	if e.gen.Load() != g { // a snapshot was loaded meanwhile: start again under the lock
		return e.segmentsLocked(dst[:n0], p, purpose)
	}
	return dst
}

func (e *Engine) segmentsFast(dst []string, p anonymize.Pseudonym, rt *readTable, pu *readPurpose, purpose string) []string {
	t := e.dir.Tab.Load()
	en, ok, stuck := t.Read(uint64(p))
	if !ok || stuck {
		if stuck || e.hasAliases.Load() {
			return e.segmentsLocked(dst, p, purpose)
		}
		return dst
	}
	if pu == nil {
		return dst
	}
	state := en.State()
	var rec index.RecordView
	if en.Overflow() {
		rec = index.ViewRecord(t.Arena.Record(en.Ref()))
		state = rec.State
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
	if !en.Overflow() {
		c := en.Code()
		if c == index.CodeEF {
			n := index.EFDecode(buf[:], en.Lo, en.Hi, en.EFLow())
			return e.appendServable(dst, rt, pu, buf[:n], granted, en.Ord())
		}
		width, per, mask := index.LaneWidth[c], index.LanesPer[c], uint64(1)<<index.LaneWidth[c]-1
		word, n := en.Lo, en.Count()
		for k := range n {
			if k == per {
				word = en.Hi
			}
			buf[k] = uint32(word & mask)
			word >>= width
		}
		return e.appendServable(dst, rt, pu, buf[:n], granted, en.Ord())
	}
	cur, b := uint64(0), rec.Rest
	for rec.N > 0 {
		n := min(rec.N, len(buf))
		for k := range n {
			d, size := index.Uvarint(b)
			b, cur = b[size:], cur+d
			buf[k] = uint32(cur)
		}
		rec.N -= n
		dst = e.appendServable(dst, rt, pu, buf[:n], granted, en.Ord())
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
