package personify

import (
	"log/slog"
	"slices"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/segment"
)

// keyedPseudonyms returns id's pseudonym under every key whose grace period
// has not ended, current first.
func (e *Engine) keyedPseudonyms(id anonymize.Identifier) ([]anonymize.KeyedPseudonym, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	now := e.now()
	if err := e.checkKeysAvailable(now); err != nil {
		return nil, err
	}
	return e.keyring().AppendPseudonyms(make([]anonymize.KeyedPseudonym, 0, 2), id, now)
}

// allKeyedPseudonyms returns id's pseudonym under every key still in the
// keyring, including keys whose grace period has ended but that Expire has
// not destroyed yet: Explain shows, and Forget erases, everything stored.
func (e *Engine) allKeyedPseudonyms(id anonymize.Identifier) ([]anonymize.KeyedPseudonym, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	if err := e.checkKeysAvailable(time.Time{}); err != nil {
		return nil, err
	}
	return e.keyring().AppendPseudonyms(make([]anonymize.KeyedPseudonym, 0, 2), id, time.Time{})
}

// resolveLocked returns the ordinal stored under p and the primary
// pseudonym of that entry: p itself, or, for an alias left by re-keying,
// the pseudonym the person moved to. Caller holds mu (read or write).
func (e *Engine) resolveLocked(p anonymize.Pseudonym) (uint32, anonymize.Pseudonym, bool) {
	if en, ok := e.dir.Get(p); ok {
		return en.Ord(), p, true
	}
	if a, ok := e.aliases[p]; ok {
		return a.ord, a.primary, true
	}
	return 0, 0, false
}

// findLocked returns the ordinal and primary pseudonym of the first of kps
// that is stored. Caller holds mu.
func (e *Engine) findLocked(kps []anonymize.KeyedPseudonym) (uint32, anonymize.Pseudonym, bool) {
	for _, kp := range kps {
		if ord, p, ok := e.resolveLocked(kp.Pseudonym); ok {
			return ord, p, true
		}
	}
	return 0, 0, false
}

// resolveForWrite returns the person's ordinal and primary pseudonym for a
// write by identifier, creating an entry under the current key if there is
// none. Caller holds mu.
func (e *Engine) resolveForWrite(kps []anonymize.KeyedPseudonym) (uint32, anonymize.Pseudonym) {
	if ord, p, ok := e.resolveExistingLocked(kps); ok {
		return ord, p
	}
	cur := kps[0]
	return e.assignLocked(cur.Pseudonym, cur.Key), cur.Pseudonym
}

// resolveExistingLocked is resolveForWrite for a person already stored:
// one still stored under an older key is re-keyed. The entry moves to the
// current pseudonym (same ordinal and record, so every membership,
// consent and suppression moves with it) and the old pseudonym stays as an
// alias until its key leaves the keyring. Of a linked person, only this
// identifier's slot moves. Caller holds mu.
func (e *Engine) resolveExistingLocked(kps []anonymize.KeyedPseudonym) (uint32, anonymize.Pseudonym, bool) {
	cur := kps[0]
	if ord, p, ok := e.resolveLocked(cur.Pseudonym); ok {
		return ord, p, true
	}
	for _, old := range kps[1:] {
		en, ok := e.dir.Get(old.Pseudonym)
		if !ok {
			continue
		}
		ord := en.Ord()
		e.dir.Rekey(old.Pseudonym, cur.Pseudonym)
		for _, q := range e.aliasesOf[ord] { // aliases of earlier rotations follow the entry
			if a := e.aliases[q]; a.primary == old.Pseudonym {
				a.primary = cur.Pseudonym
				e.aliases[q] = a
			}
		}
		e.addAliasLocked(old.Pseudonym, alias{ord: ord, key: old.Key, primary: cur.Pseudonym})
		if l, ok := e.links[ord]; ok {
			for i := range l {
				if l[i].Pseudonym == old.Pseudonym {
					l[i].Pseudonym, l[i].Key = cur.Pseudonym, cur.Key
				}
			}
			e.fixKeyGenLocked(ord, l)
		} else {
			e.keyGenSet(old.Key).Remove(ord)
			e.keyGenSet(cur.Key).Add(ord)
		}
		e.event("rekey", slog.String("from", old.Pseudonym.String()), slog.String("to", cur.Pseudonym.String()),
			slog.String("from_key", old.Key.String()), slog.String("to_key", cur.Key.String()))
		return ord, cur.Pseudonym, true
	}
	return 0, 0, false
}

// addAliasLocked records an alias and indexes it by ordinal, so that
// re-keying and erasure find a person's aliases without scanning them all.
func (e *Engine) addAliasLocked(p anonymize.Pseudonym, a alias) {
	e.aliases[p] = a
	e.aliasesOf[a.ord] = append(e.aliasesOf[a.ord], p)
	e.hasAliases.Store(true)
}

// dropAliasesUnderLocked removes the aliases computed with key fp (its
// grace period ended).
func (e *Engine) dropAliasesUnderLocked(fp anonymize.Fingerprint) {
	for q, a := range e.aliases {
		if a.key != fp {
			continue
		}
		delete(e.aliases, q)
		e.reattributeLocked(q, a.primary) // its impressions not logged yet stay the person's
		e.aliasesOf[a.ord] = slices.DeleteFunc(e.aliasesOf[a.ord], func(x anonymize.Pseudonym) bool { return x == q })
		if len(e.aliasesOf[a.ord]) == 0 {
			delete(e.aliasesOf, a.ord)
		}
	}
	e.hasAliases.Store(len(e.aliases) > 0)
}

// indexAliases derives aliasesOf from aliases (after a snapshot load).
func indexAliases(aliases map[anonymize.Pseudonym]alias) map[uint32][]anonymize.Pseudonym {
	of := make(map[uint32][]anonymize.Pseudonym, len(aliases))
	for q, a := range aliases {
		of[a.ord] = append(of[a.ord], q)
	}
	return of
}

// assignLocked gives p, which has no entry, a fresh ordinal under key.
func (e *Engine) assignLocked(p anonymize.Pseudonym, key anonymize.Fingerprint) uint32 {
	ord, _ := e.dir.Assign(p)
	e.live.Add(ord)
	e.keyGenSet(key).Add(ord)
	return ord
}

func (e *Engine) keyGenSet(fp anonymize.Fingerprint) *segment.Set {
	s, ok := e.keyGen[fp]
	if !ok {
		s = segment.New()
		e.keyGen[fp] = s
	}
	return s
}

// dropPersonLocked removes every trace of the person stored under
// pseudonym p with ordinal ord (memberships, consent, suppression, records,
// directory entries, linked pseudonyms and aliases) and releases the
// ordinal. It returns what it removed. Caller holds mu.
func (e *Engine) dropPersonLocked(p anonymize.Pseudonym, ord uint32) erased {
	var out erased
	// The person's pseudonyms, for their impressions not logged yet: the
	// counters go last, once no lookup finds the person (see
	// dropCountsLocked).
	mine := map[anonymize.Pseudonym]bool{p: true}
	for _, s := range e.links[ord] {
		mine[s.Pseudonym] = true
	}
	for _, q := range e.aliasesOf[ord] {
		mine[q] = true
	}
	if out.linked = e.linkedOfLocked(ord); out.linked != nil {
		for _, s := range e.links[ord] {
			if s.Pseudonym != p {
				e.forgetRecordLocked(s.Pseudonym)
				e.dir.Remove(s.Pseudonym)
			}
		}
		delete(e.links, ord)
	}
	for _, st := range e.segs {
		if st.remove(ord) {
			out.segments = append(out.segments, st.Name)
			e.refreshLocked(st)
		}
	}
	for _, ps := range e.purposeByBit {
		if ps.granted.Remove(ord) || ps.denied.Remove(ord) {
			out.consents++
		}
		if ps.suppressed.Remove(ord) {
			out.suppressions++
		}
	}
	if e.suppressedAll.Remove(ord) {
		out.suppressions++
	}
	for _, s := range e.keyGen {
		s.Remove(ord)
	}
	for _, q := range e.aliasesOf[ord] {
		delete(e.aliases, q)
	}
	delete(e.aliasesOf, ord)
	e.hasAliases.Store(len(e.aliases) > 0)
	e.forgetRecordLocked(p)
	e.dir.Remove(p)
	e.live.Remove(ord)
	out.counters = e.dropCountsLocked(ord, nil, func(q anonymize.Pseudonym) bool { return mine[q] })
	e.forgetUnsureLocked(func(q anonymize.Pseudonym) bool { return mine[q] })
	e.dir.Release(ord)
	e.forgets.Add(1)
	return out
}

// dropOrdinalsLocked drops everyone whose ordinal is in ords. It returns
// how many it dropped.
func (e *Engine) dropOrdinalsLocked(ords *segment.Set) int {
	found := e.peopleInLocked(ords)
	for _, f := range found {
		e.dropPersonLocked(f.p, f.ord)
	}
	return len(found)
}

// entryRef is a directory entry's pseudonym and ordinal.
type entryRef struct {
	p   anonymize.Pseudonym
	ord uint32
}

// peopleInLocked finds the pseudonyms of the ordinals in ords with one
// scan of the directory (the directory maps pseudonyms to ordinals, not
// back). Caller holds mu.
func (e *Engine) peopleInLocked(ords *segment.Set) []entryRef {
	if ords.IsEmpty() {
		return nil
	}
	var found []entryRef
	e.dir.Tab.Load().Each(func(p anonymize.Pseudonym, en index.Entry) {
		if ords.Contains(en.Ord()) && e.firstSlotLocked(p, en.Ord()) {
			found = append(found, entryRef{p, en.Ord()})
		}
	})
	return found
}

// firstSlotLocked reports whether p is the pseudonym scans report person
// ord by: their only one, or the first of their linked pseudonyms (an
// email, phone or user ID where they have one). Caller holds mu.
func (e *Engine) firstSlotLocked(p anonymize.Pseudonym, ord uint32) bool {
	if len(e.links) == 0 {
		return true
	}
	l, ok := e.links[ord]
	return !ok || l[0].Pseudonym == p
}

// erased counts what dropPersonLocked removed.
type erased struct {
	segments     []string
	consents     int
	suppressions int
	linked       []LinkedPseudonym // every pseudonym of a linked person, aliases included
	counters     int               // frequency counters
}
