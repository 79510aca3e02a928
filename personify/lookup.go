package personify

import (
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
func (e *Engine) In(p anonymize.Pseudonym, segmentName string) bool {
	return e.inLocked(p, segmentName)
}

// inLocked is the reference answer for In, straight from the segment sets.
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
	ord, ok := e.resolveLocked(p)
	return ok && st.holds(ord, now)
}

// Segments appends to dst the names, in order, of the segments of purpose
// that may be used now to personalize for the person with pseudonym p, and
// returns the extended slice. A segment is included only if the person is a
// member, the membership has not expired, the purpose may use the person's
// data (consent under the purpose's model, explicit opt-in for sensitive
// segments, no suppression) and the segment has at least max(K, MinSize)
// members, so that serving it never singles anyone out. An unknown
// pseudonym or purpose appends nothing.
func (e *Engine) Segments(dst []string, p anonymize.Pseudonym, purpose string) []string {
	return e.segmentsLocked(dst, p, purpose)
}

// segmentsLocked is the reference answer for Segments, straight from the
// segment sets.
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
	ord, ok := e.resolveLocked(p)
	if !ok || !e.allowsLocked(ps, ord, false) {
		return dst
	}
	granted := ps.consentOf(ord) == consentGranted
	for _, st := range ps.segments {
		if (!st.Sensitive || granted) && st.len() >= e.minSize(st) && st.holds(ord, now) {
			dst = append(dst, st.Name)
		}
	}
	return dst
}

// minSize is the size below which a segment is not served.
func (e *Engine) minSize(st *segState) int { return max(e.k, st.MinSize) }
