package personify

import (
	"cmp"
	"slices"
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
	if e.ring.Len() == 1 {
		return e.ring.Pseudonym(id)
	}
	kps, err := e.keyedPseudonyms(id)
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
	if e.closed.Load() {
		return false
	}
	// The directory probe first: its cache miss overlaps the name lookup.
	t := e.dir.tab.Load()
	en, ok, stuck := t.read(uint64(p))
	if !ok || stuck {
		return (stuck || e.hasAliases.Load()) && e.inLocked(p, segmentName)
	}
	rt := e.rt.Load()
	id, ok := rt.byName.get(segmentName)
	if !ok {
		return false
	}
	rs := &rt.segs[id]
	// Both answers without a branch, so that the next lookup's miss can
	// start before this one's data arrives: the inline lanes' SWAR test
	// (exact) and the overflow filter (maybe); then the one that applies.
	c := en.code()
	inline := laneMatch(en.lo, en.hi, c, rs.pattern[c], rs.fits[c])
	maybe := bloom96{uint32(en.lo >> 32), en.hi}.covers(rs.bloom)
	if en.overflow() {
		inline = maybe && viewRecord(t.arena.record(en.ref())).has(id)
	}
	if !inline {
		return false
	}
	if hasBit(rt.timed, id) {
		if now := e.now(); now.UnixNano() >= rs.st.live.deadline.Load() {
			return e.stillHolds(rs.st, en.ord(), now)
		}
	}
	return true
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
	if e.closed.Load() {
		return dst
	}
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
	ids := idIter{lo: en.lo, hi: en.hi, code: en.code(), n: en.count()}
	state := en.state()
	if en.overflow() {
		r := viewRecord(t.arena.record(en.ref()))
		state, ids.rec, ids.n = r.state, r.rest, r.n
	}
	bit := uint64(1) << pu.bit
	var granted uint64 // all ones if the person granted consent for the purpose
	if state != 0 {
		s := &(*e.states.Load())[state]
		if s.all || s.suppressed&bit != 0 || s.denied&bit != 0 {
			return dst
		}
		granted = -(s.granted >> pu.bit & 1)
	}
	if pu.optIn && granted == 0 {
		return dst
	}
	var now int64 // read lazily: only segments with retention need the time
	for ids.n > 0 {
		id := ids.next()
		w := id >> 6
		if w >= uint32(len(pu.plain)) { // defined after this table was published
			continue
		}
		if (pu.plain[w]|pu.sensitive[w]&granted)&rt.big[w].Load()>>(id&63)&1 == 0 {
			continue
		}
		if rt.timed[w]>>(id&63)&1 != 0 {
			if now == 0 {
				now = e.now().UnixNano()
			}
			if st := rt.segs[id].st; now >= st.live.deadline.Load() && !e.stillHolds(st, en.ord(), time.Unix(0, now)) {
				continue
			}
		}
		dst = append(dst, rt.names[id])
	}
	return dst
}

// idIter iterates a person's segment ids, inline or from an overflow
// record.
type idIter struct {
	lo, hi uint64
	code   int
	k      int    // inline ids read
	rec    []byte // overflow record's ids, nil when inline
	cur    uint64
	n      int // ids left
}

func (it *idIter) next() uint32 {
	it.n--
	if it.rec == nil {
		it.k++
		return laneID(it.lo, it.hi, it.code, it.k-1)
	}
	d, k := uvarint(it.rec)
	it.rec = it.rec[k:]
	it.cur += d
	return uint32(it.cur)
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
