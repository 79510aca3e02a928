package personify

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/segment"
)

// A linked person has one ordinal and one directory slot per pseudonym,
// every slot holding the same entry (segment ids and privacy state; an
// overflow record is copied, not shared), so that In and Segments by any
// of their pseudonyms cost the one probe they cost for anyone. The
// invariants, kept by the functions below under mu:
//
//   - e.links[ord] exists for a person with more than one pseudonym and
//     lists every directory key holding ord, with its kind and key, the
//     emails, phones and user IDs before the devices; a person with one
//     pseudonym has no entry (its kind is not kept: nothing needs it);
//   - every change to a linked person's entry is made to each of their
//     slots (changeLocked), or the entry is rebuilt from the sets, which
//     stay the truth, and written to each (rebuildLocked);
//   - ord is in keyGen[k] if and only if one of the person's slots is a
//     pseudonym under key k, so that a key's expiry drops exactly the
//     slots computed with it (expireKeyLocked);
//   - an alias (an older key's pseudonym of a re-keyed identifier) names
//     as primary the slot of that same identifier.

func isDevice(k anonymize.Kind) bool { return k == anonymize.KindDeviceID }

// slotsOfLocked returns the person's pseudonyms: links[ord], or one, the
// slot the caller found them by.
func (e *Engine) slotsOfLocked(ord uint32, one LinkedPseudonym) []LinkedPseudonym {
	if l, ok := e.links[ord]; ok {
		return l
	}
	return []LinkedPseudonym{one}
}

// deviceOnlyLocked reports whether every pseudonym of the person is a
// device ID's.
func (e *Engine) deviceOnlyLocked(ord uint32, one LinkedPseudonym) bool {
	for _, s := range e.slotsOfLocked(ord, one) {
		if !isDevice(s.Kind) {
			return false
		}
	}
	return true
}

// slotKeyLocked returns the key of slot p of person ord, from the
// engine's own state (never from a change, which could name any key): the
// links, else keyGen (a person with one slot is under one key).
func (e *Engine) slotKeyLocked(ord uint32, p anonymize.Pseudonym) anonymize.Fingerprint {
	for _, s := range e.links[ord] {
		if s.Pseudonym == p {
			return s.Key
		}
	}
	for _, k := range e.ringKeys() {
		if s := e.keyGen[k.Fingerprint]; s != nil && s.Contains(ord) {
			return k.Fingerprint
		}
	}
	return e.keyring().Current()
}

// linkLocked applies one person's link: it plans, checks the limit, and
// only then changes anything. The rules are the package doc's.
func (e *Engine) linkLocked(g []linkID, byPseudonym bool) error {
	for _, id := range g {
		if e.onDoNotReAddLocked(id.kps) {
			return fmt.Errorf("%w: one of the identifiers (a %s) was forgotten with DoNotReAdd", ErrDoNotReAdd, id.kind)
		}
	}
	type ref struct {
		ord   uint32
		slot  LinkedPseudonym
		found bool
		dup   bool // another identifier named found the same slot (a pseudonym and its alias)
	}
	refs := make([]ref, len(g))
	cur := e.keyring().Current()
	for i, id := range g {
		ord, p, ok := e.findLocked(id.kps) // nothing changes before the plan is checked
		if !ok {
			continue
		}
		var key anonymize.Fingerprint
		if byPseudonym {
			// A pseudonym stored under an older key cannot be re-keyed
			// without its identifier, and a slot recorded under the
			// wrong key would outlive its key's destruction.
			if key = e.slotKeyLocked(ord, p); key != cur {
				return fmt.Errorf("%w: pseudonym %d of the link is stored under key %s, not the current key %s: link it by identifier (Link re-keys it) or give its pseudonym under the current key",
					ErrKeyChanged, i, key, cur)
			}
		} else {
			key = e.slotKeyLocked(ord, p)
		}
		refs[i] = ref{ord: ord, slot: LinkedPseudonym{id.kind, p, key}, found: true}
		for j := range refs[:i] {
			if refs[j].found && refs[j].slot.Pseudonym == p {
				refs[i].dup = true
			}
		}
	}
	// The people joined: those of the emails, phones and user IDs named
	// (the first is kept), else an anonymous device-only person named.
	var persons []uint32
	known := map[uint32]LinkedPseudonym{}
	for i, id := range g {
		if r := refs[i]; !isDevice(id.kind) && r.found && !slices.Contains(persons, r.ord) {
			persons = append(persons, r.ord)
			known[r.ord] = r.slot
		}
	}
	if len(persons) == 0 {
		for _, r := range refs {
			if r.found && e.deviceOnlyLocked(r.ord, r.slot) {
				persons, known[r.ord] = []uint32{r.ord}, r.slot
				break
			}
		}
	}
	n := 0
	for _, ord := range persons {
		n += len(e.slotsOfLocked(ord, known[ord]))
	}
	for _, r := range refs {
		if !r.found || !slices.Contains(persons, r.ord) {
			n++
		}
	}
	if n > MaxLinked {
		return fmt.Errorf("%w: the link would give one person %d identifiers, at most %d (Unlink one first)", ErrTooManyLinked, n, MaxLinked)
	}
	// The plan holds: identifiers stored under an older key move to the
	// current one (same ordinal, same slot count).
	for i, id := range g {
		if r := &refs[i]; r.found && !byPseudonym && r.slot.Key != cur {
			_, p, _ := e.resolveExistingLocked(id.kps)
			for j := range refs { // a pseudonym and its alias both named: one slot
				if refs[j].found && refs[j].slot.Pseudonym == r.slot.Pseudonym && j != i {
					refs[j].slot.Pseudonym, refs[j].slot.Key = p, cur
				}
			}
			r.slot.Pseudonym, r.slot.Key = p, cur
		}
	}
	for _, r := range refs {
		if r.found && !r.dup && slices.Contains(persons, r.ord) {
			known[r.ord] = r.slot // a slot of each person, as it is now
		}
	}

	// The entry is rebuilt from the sets when people merge or a device
	// brings restrictions; otherwise the new slots copy the person's.
	rebuild := len(persons) > 1
	var target uint32
	if len(persons) > 0 {
		target = persons[0]
		if _, ok := e.links[target]; !ok {
			e.links[target] = []LinkedPseudonym{known[target]}
		}
		for _, src := range persons[1:] {
			e.mergeLocked(target, src, known[src])
		}
	} else {
		target = e.dir.NewOrdinal()
		e.live.Add(target)
	}
	for i, id := range g {
		if r := refs[i]; r.found {
			if r.dup || slices.Contains(persons, r.ord) { // the target's now (the entries are rewritten below)
				continue
			}
			ord := r.ord
			// A device of someone else moves, with no membership of its
			// own; an anonymous device-only person's withdrawals and
			// suppressions come along, so that no restriction is lost.
			if e.deviceOnlyLocked(ord, r.slot) {
				rebuild = e.carryRestrictionsLocked(target, ord) || rebuild
			}
			if _, linked := e.links[ord]; linked {
				e.detachSlotLocked(ord, r.slot.Pseudonym)
			} else {
				e.dropPersonLocked(r.slot.Pseudonym, ord)
			}
			e.addSlotLocked(target, r.slot, rebuild) // the slot itself, not the alias it may have been found by
			continue
		}
		e.addSlotLocked(target, LinkedPseudonym{id.kind, id.kps[0].Pseudonym, id.kps[0].Key}, rebuild)
	}
	if l := e.links[target]; len(l) < 2 {
		delete(e.links, target)
	}
	if rebuild || len(persons) == 0 {
		e.rebuildLocked(target)
	} else {
		e.copyEntryLocked(target, known[target].Pseudonym)
	}
	// The counters last, once every entry names the target: a lock-free
	// Allow that counted under a merged ordinal before this is merged
	// here, and one after finds the target (see dropCountsLocked).
	if len(persons) > 1 {
		for _, src := range persons[1:] {
			e.mergeCountsLocked(target, src)
		}
	}
	// and none the merged or carried restrictions forbid now
	for _, c := range e.caps {
		if !e.allowsLocked(c.purpose, target, false) {
			e.dropCountsLocked(target, c.purpose, nil)
		}
	}
	return nil
}

// copyEntryLocked writes the entry of slot from (person ord's) to each of
// their other slots.
func (e *Engine) copyEntryLocked(ord uint32, from anonymize.Pseudonym) {
	t := e.dir.Tab.Load()
	en, ok := t.Get(from)
	if !ok {
		e.rebuildLocked(ord)
		return
	}
	if !en.Overflow() {
		for _, s := range e.links[ord] {
			if sl := t.Slot(uint64(s.Pseudonym)); sl != nil && s.Pseudonym != from && sl.Entry() != en {
				index.SetSlot(sl, en)
			}
		}
		return
	}
	state, ids := t.DecodeEntry(nil, en)
	e.writeEntryLocked(ord, state, ids, from)
}

// insertLinked adds s to a person's list, the devices last.
func insertLinked(l []LinkedPseudonym, s LinkedPseudonym) []LinkedPseudonym {
	i := len(l)
	if !isDevice(s.Kind) {
		i = slices.IndexFunc(l, func(x LinkedPseudonym) bool { return isDevice(x.Kind) })
		if i < 0 {
			i = len(l)
		}
	}
	return slices.Insert(l, i, s)
}

// addSlotLocked gives person ord the new pseudonym s (absent from the
// directory). Lock-free readers may find the slot at once, so it never
// says less than the truth: where the person's entry is rebuilt below
// (rebuilding: a merge, or restrictions a device brought), the slot is
// inserted mid-update (readers take the locked path, which waits for this
// change) and "suppressed from everything", until rebuildLocked rewrites
// it; otherwise it is a copy of the person's inline entry (an overflow
// one gives its state only: copyEntryLocked writes its record below).
func (e *Engine) addSlotLocked(ord uint32, s LinkedPseudonym, rebuilding bool) {
	en := index.EmptyEntry(ord)
	if rebuilding {
		if id := e.stateID(privState{all: true}); id < index.StateOverflow {
			en.Meta = index.MakeMeta(ord, id, 0)
		}
		en.Meta |= index.SeqOne
	} else {
		for _, o := range e.links[ord] {
			if cur, ok := e.dir.Get(o.Pseudonym); ok && cur.Ord() == ord {
				if cur.Overflow() {
					if st := cur.State(); st != index.StateOverflow {
						en.Meta = index.MakeMeta(ord, st, 0)
					} else {
						en.Meta |= index.SeqOne // a state only the record holds: mid-update until copyEntryLocked
					}
				} else {
					en = cur.WithSeq(0)
				}
				break
			}
		}
	}
	e.dir.Insert(s.Pseudonym, en)
	e.links[ord] = insertLinked(e.links[ord], s)
	e.keyGenSet(s.Key).Add(ord)
}

// mergeLocked joins person src (found by slot one) into person dst: the
// memberships are the union (a timed membership keeps the later time),
// consent is granted only where both granted and withdrawn where either
// withdrew, suppressions are the union, and src's pseudonyms and aliases
// become dst's. src's ordinal is released; rebuildLocked(dst) rewrites the
// entries.
func (e *Engine) mergeLocked(dst, src uint32, one LinkedPseudonym) {
	for _, st := range e.segs {
		if !st.contains(src) {
			continue
		}
		if st.timed != nil {
			at, _ := st.timed.AddedAt(src)
			st.timed.Add(dst, at)
		} else {
			st.set.Add(dst)
		}
		st.remove(src)
		e.refreshLocked(st)
	}
	for _, ps := range e.purposeByBit {
		granted := ps.granted.Contains(dst) && ps.granted.Contains(src)
		denied := ps.denied.Contains(dst) || ps.denied.Contains(src)
		ps.granted.Remove(src)
		ps.denied.Remove(src)
		switch {
		case denied:
			ps.denied.Add(dst)
			ps.granted.Remove(dst)
		case !granted:
			ps.granted.Remove(dst)
		}
		if ps.suppressed.Remove(src) {
			ps.suppressed.Add(dst)
		}
	}
	if e.suppressedAll.Remove(src) {
		e.suppressedAll.Add(dst)
	}
	for _, s := range e.keyGen {
		if s.Remove(src) {
			s.Add(dst)
		}
	}
	for _, q := range e.aliasesOf[src] {
		a := e.aliases[q]
		a.ord = dst
		e.aliases[q] = a
		e.aliasesOf[dst] = append(e.aliasesOf[dst], q)
	}
	delete(e.aliasesOf, src)
	for _, s := range e.slotsOfLocked(src, one) {
		e.links[dst] = insertLinked(e.links[dst], s)
	}
	delete(e.links, src)
	e.live.Remove(src) // its counters are merged once the entries are rewritten (linkLocked)
	e.dir.Release(src) // its slots stay, as dst's, until rebuilt
	e.forgets.Add(1)   // audiences built before list src's pseudonym
}

// carryRestrictionsLocked gives dst the withdrawals and suppressions of
// src (not its grants, not its memberships); it reports whether src had
// any.
func (e *Engine) carryRestrictionsLocked(dst, src uint32) bool {
	any := false
	for _, ps := range e.purposeByBit {
		if ps.denied.Contains(src) {
			ps.denied.Add(dst)
			ps.granted.Remove(dst)
			any = true
		}
		if ps.suppressed.Contains(src) {
			ps.suppressed.Add(dst)
			any = true
		}
	}
	if e.suppressedAll.Contains(src) {
		e.suppressedAll.Add(dst)
		any = true
	}
	return any
}

// detachSlotLocked removes pseudonym p, and the aliases of its identifier,
// from linked person ord, who keeps everything else.
func (e *Engine) detachSlotLocked(ord uint32, p anonymize.Pseudonym) {
	e.forgetRecordLocked(p)
	e.dir.Remove(p)
	l := slices.DeleteFunc(slices.Clone(e.links[ord]), func(s LinkedPseudonym) bool { return s.Pseudonym == p })
	kept := e.aliasesOf[ord][:0]
	for _, q := range e.aliasesOf[ord] {
		if e.aliases[q].primary == p {
			delete(e.aliases, q)
			if len(l) > 0 {
				e.reattributeLocked(q, l[0].Pseudonym) // impressions counted by the alias stay the person's
			}
		} else {
			kept = append(kept, q)
		}
	}
	if len(kept) == 0 {
		delete(e.aliasesOf, ord)
	} else {
		e.aliasesOf[ord] = kept
	}
	e.hasAliases.Store(len(e.aliases) > 0)
	if len(l) > 0 { // its impressions not logged yet stay the person's (a batch already being logged cannot change)
		e.reattributeLocked(p, l[0].Pseudonym)
	}
	if len(l) < 2 {
		delete(e.links, ord)
	} else {
		e.links[ord] = l
	}
	e.fixKeyGenLocked(ord, l)
	e.forgets.Add(1)
}

// fixKeyGenLocked makes keyGen hold ord under exactly the keys of slots.
func (e *Engine) fixKeyGenLocked(ord uint32, slots []LinkedPseudonym) {
	for fp, s := range e.keyGen {
		if slices.ContainsFunc(slots, func(x LinkedPseudonym) bool { return x.Key == fp }) {
			s.Add(ord)
		} else {
			s.Remove(ord)
		}
	}
	for _, x := range slots {
		e.keyGenSet(x.Key).Add(ord)
	}
}

// rebuildLocked derives person ord's entry from the sets and writes it to
// each of their slots.
func (e *Engine) rebuildLocked(ord uint32) {
	var ids []uint32
	for _, st := range e.segs {
		if st.contains(ord) {
			ids = append(ids, st.id)
		}
	}
	slices.Sort(ids)
	var ps privState
	for _, p := range e.purposeByBit {
		bit := uint64(1) << p.bit
		if p.granted.Contains(ord) {
			ps.granted |= bit
		}
		if p.denied.Contains(ord) {
			ps.denied |= bit
		}
		if p.suppressed.Contains(ord) {
			ps.suppressed |= bit
		}
	}
	ps.all = e.suppressedAll.Contains(ord)
	e.writeEntryLocked(ord, e.stateID(ps), ids, 0)
}

// writeEntryLocked encodes person ord's entry (privacy state id and
// segment ids) into each of their slots but skip.
func (e *Engine) writeEntryLocked(ord, state uint32, ids []uint32, skip anonymize.Pseudonym) {
	for _, s := range e.links[ord] {
		if skip != 0 && s.Pseudonym == skip {
			continue
		}
		e.makeRoomLocked(index.RecordMax(len(ids)))
		t := e.dir.Tab.Load()
		sl := t.Slot(uint64(s.Pseudonym))
		if sl == nil {
			continue
		}
		e.forgetRecordLocked(s.Pseudonym) // the record it replaces is garbage
		var en index.Entry
		en, e.recBuf = index.MakeEntry(t.Arena, e.recBuf, ord, state, ids)
		index.SetSlot(sl, en)
	}
}

// expireKeyLocked removes, from the linked people in ords (those stored
// under destroyed key fp), the slots computed with fp, and takes out of
// ords those who keep a slot under another key: only the others are
// dropped.
func (e *Engine) expireKeyLocked(fp anonymize.Fingerprint, ords *segment.Set) {
	var linked []uint32
	for ord := range e.links {
		if ords.Contains(ord) {
			linked = append(linked, ord)
		}
	}
	slices.Sort(linked) // the same order on every replica
	for _, ord := range linked {
		var gone []anonymize.Pseudonym
		for _, s := range e.links[ord] {
			if s.Key == fp {
				gone = append(gone, s.Pseudonym)
			}
		}
		if len(gone) == len(e.links[ord]) {
			continue // every slot under fp: the person goes
		}
		for _, p := range gone {
			e.detachSlotLocked(ord, p)
		}
		ords.Remove(ord)
	}
}

// linkedOfLocked returns what dropPersonLocked reports for the receipt:
// every pseudonym of linked person ord and of their aliases, with kinds.
func (e *Engine) linkedOfLocked(ord uint32) []LinkedPseudonym {
	l, ok := e.links[ord]
	if !ok {
		return nil
	}
	out := slices.Clone(l)
	var aliases []LinkedPseudonym
	for _, q := range e.aliasesOf[ord] {
		a := e.aliases[q]
		kind := anonymize.Kind(0)
		if i := slices.IndexFunc(l, func(s LinkedPseudonym) bool { return s.Pseudonym == a.primary }); i >= 0 {
			kind = l[i].Kind
		}
		aliases = append(aliases, LinkedPseudonym{kind, q, a.key})
	}
	slices.SortFunc(aliases, func(a, b LinkedPseudonym) int { return cmp.Compare(a.Pseudonym, b.Pseudonym) })
	return append(out, aliases...)
}
