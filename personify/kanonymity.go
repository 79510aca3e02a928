package personify

// k-anonymity: no one is targeted through a group smaller than k. The
// rule holds in three places, all from minSize:
//
//   - Segments serves a segment only while it has at least
//     max(Options.K, Segment.MinSize) members: the read table keeps, per
//     purpose, a bitset of the segments that are big enough (servable),
//     updated by every write that moves a size across the bound
//     (refreshLocked), so the per-request test is one bit;
//   - Audience refuses a result smaller than the largest bound of its
//     segments (ErrAudienceTooSmall, without saying how small);
//   - Explain still shows a person their own memberships of small
//     segments, saying why they are not used.

// minSize is the size below which a segment is not served.
func (e *Engine) minSize(st *segState) int { return max(e.k, st.MinSize) }

// setServable sets or clears a segment's bits in the size-dependent sets.
func (rt *readTable) setServable(st *segState, big bool) {
	if st.id >= uint32(len(rt.segs)) {
		return
	}
	pu := rt.purposes[st.Purpose]
	if pu == nil {
		return
	}
	w, bit := st.id>>6, uint64(1)<<(st.id&63)
	x := &pu.servable[w]
	if st.Sensitive {
		x = &pu.servableSensitive[w]
	}
	if big {
		x.Or(bit)
	} else {
		x.And(^bit)
	}
}
