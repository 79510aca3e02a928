package personify

import (
	"cmp"
	"math"
	"slices"

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
		if _, _, ok := e.dir.lookup(kp.Pseudonym); ok {
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
// In takes no lock and allocates nothing: one probe of the directory,
// whose slot's segment filter settles most non-members, and otherwise one
// read of the person's record.
func (e *Engine) In(p anonymize.Pseudonym, segmentName string) bool {
	if e.closed.Load() {
		return false
	}
	rt := e.rt.Load()
	id, ok := rt.byName[segmentName]
	if !ok {
		return false
	}
	rs := rt.segs[id]
	t := e.dir.tab.Load()
	ref, bloom, ok := t.lookup(uint64(p))
	if !ok {
		return e.hasAliases.Load() && e.inLocked(p, segmentName)
	}
	if bloom&rs.bloom != rs.bloom {
		return false
	}
	r := viewRecord(t.arena.record(ref))
	if !r.has(id) {
		return false
	}
	if d := rs.live.deadline.Load(); d != math.MaxInt64 {
		if now := e.now(); now.UnixNano() >= d {
			return e.stillHolds(rs, r.ord, now)
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
// of the directory, one read of the person's record, and one pass over
// their segment ids against the (cached) segment table.
func (e *Engine) Segments(dst []string, p anonymize.Pseudonym, purpose string) []string {
	if e.closed.Load() {
		return dst
	}
	rt := e.rt.Load()
	pu, ok := rt.purposes[purpose]
	if !ok {
		return dst
	}
	t := e.dir.tab.Load()
	ref, _, ok := t.lookup(uint64(p))
	if !ok {
		if e.hasAliases.Load() {
			return e.segmentsLocked(dst, p, purpose)
		}
		return dst
	}
	r := viewRecord(t.arena.record(ref))
	bit := uint64(1) << pu.bit
	granted := false
	if r.state != 0 {
		s := &(*e.states.Load())[r.state]
		if s.all || s.suppressed&bit != 0 || s.denied&bit != 0 {
			return dst
		}
		granted = s.granted&bit != 0
	}
	if pu.optIn && !granted {
		return dst
	}
	var nowNS int64 // read lazily: only segments with retention need the time
	b, id := r.rest, uint64(0)
	for range r.n {
		d, k := uvarint(b)
		b, id = b[k:], id+d
		rs := rt.segs[id]
		if rs == nil || rs.bit != pu.bit || rs.sensitive && !granted || rs.live.size.Load() < rs.minSize {
			continue
		}
		if d := rs.live.deadline.Load(); d != math.MaxInt64 {
			if nowNS == 0 {
				nowNS = e.now().UnixNano()
			}
			if nowNS >= d && !e.stillHolds(rs, r.ord, e.now()) {
				continue
			}
		}
		dst = append(dst, rs.name)
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
