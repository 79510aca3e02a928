package personify

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"
	"unsafe"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
)

// writeChunk bounds how many memberships one write applies while holding
// the engine's lock, so that no reader or writer waits on a bulk load for
// long.
const writeChunk = 4096

// Add adds the people identified by ids to a segment (refreshing the
// retention clock of those already in it). Identifiers are pseudonymized
// first; if any is invalid, nothing is added. People who were forgotten with
// DoNotReAdd are skipped.
func (e *Engine) Add(segmentName string, ids ...anonymize.Identifier) error {
	return e.AddContext(context.Background(), segmentName, ids...)
}

// AddContext is Add with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) AddContext(ctx context.Context, segmentName string, ids ...anonymize.Identifier) error {
	kps, err := e.pseudonymizeAll(ids)
	if err != nil {
		return err
	}
	_, err = e.commit(ctx, &op{kind: opAdd, at: e.now(), name: segmentName, people: kps})
	return err
}

func (e *Engine) applyAdd(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	st, err := e.segmentLocked(o.name)
	if err != nil {
		return opResult{}, err
	}
	for _, kp := range o.people {
		if err := e.checkKeyedLocked(o, kp, false); err != nil {
			return opResult{}, err
		}
	}
	added, skipped := 0, 0
	for _, kp := range o.people {
		if len(kp) == 0 {
			continue
		}
		if e.onDoNotReAddLocked(kp) {
			skipped++
			continue
		}
		ord, p := e.resolveForWrite(kp)
		st.add(ord, o.at)
		e.addIDLocked(p, st.id)
		added++
	}
	e.refreshLocked(st)
	e.maybeCompactLocked()
	e.event("add", slog.String("segment", o.name), slog.Int("count", added), slog.Int("skipped_do_not_re_add", skipped))
	return opResult{n: added}, nil
}

// onDoNotReAddLocked reports whether the person with pseudonyms kps asked
// never to be added again, under any of their keys. If so, the pseudonyms
// under keys the list did not have yet (a key rotated in since the
// erasure) join it, so that the wish follows the person to the new key
// and bulk loads computed under it are refused too.
func (e *Engine) onDoNotReAddLocked(kps []anonymize.KeyedPseudonym) bool {
	if len(e.doNotReAdd) == 0 {
		return false
	}
	found := slices.ContainsFunc(kps, func(kp anonymize.KeyedPseudonym) bool {
		_, ok := e.doNotReAdd[kp.Pseudonym]
		return ok
	})
	if found {
		for _, kp := range kps {
			if !kp.Key.IsZero() {
				e.doNotReAdd[kp.Pseudonym] = kp.Key
			}
		}
	}
	return found
}

// pseudonymizeAll computes every keyed pseudonym of every identifier, before
// any lock is taken; it fails on the first invalid identifier.
func (e *Engine) pseudonymizeAll(ids []anonymize.Identifier) ([][]anonymize.KeyedPseudonym, error) {
	out := make([][]anonymize.KeyedPseudonym, len(ids))
	for i, id := range ids {
		kps, err := e.keyedPseudonyms(id)
		if err != nil {
			if len(ids) == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("personify: identifier %d of %d (counting from 0): %w", i, len(ids), err) // the index, never the text
		}
		out[i] = kps
	}
	return out, nil
}

// AddPseudonyms adds people by pseudonym, for bulk loads from systems that
// compute pseudonyms under the same key (a data warehouse using
// anonymize.HMACSHA256, for example). Pseudonyms under a previous key still
// in its grace period reach people already re-keyed; unknown ones become new
// members under the current key. Forgotten people who asked never to be
// added again are skipped. Large batches are applied in chunks, so readers
// never wait long; a concurrent reader may see part of a batch.
func (e *Engine) AddPseudonyms(segmentName string, ps []anonymize.Pseudonym) error {
	return e.AddPseudonymsContext(context.Background(), segmentName, ps)
}

// AddPseudonymsContext is AddPseudonyms with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) AddPseudonymsContext(ctx context.Context, segmentName string, ps []anonymize.Pseudonym) error {
	_, err := e.commit(ctx, &op{kind: opAddPseudonyms, at: e.now(), name: segmentName, ps: ps})
	return err
}

func (e *Engine) applyAddPseudonyms(o *op) (opResult, error) {
	ps := o.ps
	added, skipped, fresh := 0, 0, 0
	for start := 0; ; start += writeChunk {
		a, s, f, err := e.addPseudonymChunk(o.name, ps[start:min(start+writeChunk, len(ps))], o.at)
		added, skipped, fresh = added+a, skipped+s, fresh+f
		if err != nil {
			return opResult{n: added}, err
		}
		if start+writeChunk >= len(ps) {
			break
		}
	}
	if added >= writeChunk {
		if err := e.lock(); err == nil {
			if st, ok := e.segs[o.name]; ok {
				st.trimLocked()
			}
			// A bulk add of people mostly known (at most 1 in 64 new):
			// whatever load grew the table has stopped growing it.
			if fresh <= added/64 {
				e.dir.Fit(writeChunk)
			}
			e.mu.Unlock()
		}
	}
	e.event("add_pseudonyms", slog.String("segment", o.name), slog.Int("count", added), slog.Int("skipped_do_not_re_add", skipped))
	return opResult{n: added}, nil
}

// addPseudonymChunk adds one chunk of AddPseudonyms under the lock. It
// returns the memberships added, the pseudonyms skipped as do-not-re-add
// and, of those added, how many were new people.
func (e *Engine) addPseudonymChunk(segmentName string, ps []anonymize.Pseudonym, at time.Time) (added, skipped, fresh int, err error) {
	if err := e.lock(); err != nil {
		return 0, 0, 0, err
	}
	defer e.mu.Unlock()
	st, err := e.segmentLocked(segmentName)
	if err != nil {
		return 0, 0, 0, err
	}
	// Sorted, the batch probes the directory front to back (home slots are
	// monotone in the pseudonym), and the slot a few keys ahead is
	// prefetched so that its cache miss overlaps this key's work.
	batch := append(e.batchBuf[:0], ps...)
	e.batchBuf = batch[:0]
	sorted := sortPseudonyms(batch, &e.sortBuf) // batch or sortBuf; the two never alias
	cur := e.keyring().Current()
	ords := e.ordBuf[:0]
	e.dir.Reserve(len(sorted))
	const ahead = 12
	for i, p := range sorted {
		if len(e.doNotReAdd) > 0 {
			if _, ok := e.doNotReAdd[p]; ok {
				skipped++
				continue
			}
		}
		t := e.dir.Tab.Load()
		if i+ahead < len(sorted) {
			index.Prefetch(unsafe.Pointer(&t.Slots[index.Home(uint64(sorted[i+ahead]), len(t.Slots))]))
		}
		if s := t.Slot(uint64(p)); s != nil {
			ord := s.Entry().Ord()
			ords = append(ords, ord)
			if len(e.links) > 0 && e.links[ord] != nil {
				e.addIDLocked(p, st.id) // every slot of the person
			} else {
				e.changeSlotLocked(s, p, st.id, index.NoID, nil)
			}
			continue
		}
		if e.hasAliases.Load() {
			if a, ok := e.aliases[p]; ok { // stored under a newer key
				ords = append(ords, a.ord)
				e.addIDLocked(a.primary, st.id)
				continue
			}
		}
		// A new person, inserted with their first segment.
		ord := e.dir.NewOrdinal()
		lo, hi, code, _ := index.PackLanes([]uint32{st.id})
		e.dir.Insert(p, index.Entry{Meta: index.MakeMeta(ord, 0, 1) | uint64(code)<<index.CodeShift, Lo: lo, Hi: hi})
		e.live.Add(ord)
		e.keyGenSet(cur).Add(ord)
		ords = append(ords, ord)
		fresh++
	}
	st.addMany(ords, at)
	e.ordBuf = ords[:0]
	e.refreshLocked(st)
	e.maybeCompactLocked()
	return len(ords), skipped, fresh, nil
}

// Remove removes the person identified by id from a segment. Removing
// someone who is not a member is not an error.
func (e *Engine) Remove(segmentName string, id anonymize.Identifier) error {
	return e.RemoveContext(context.Background(), segmentName, id)
}

// RemoveContext is Remove with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) RemoveContext(ctx context.Context, segmentName string, id anonymize.Identifier) error {
	kps, err := e.keyedPseudonyms(id)
	if err != nil {
		return err
	}
	_, err = e.commit(ctx, &op{kind: opRemove, at: e.now(), name: segmentName, people: [][]anonymize.KeyedPseudonym{kps}})
	return err
}

// RemovePseudonyms removes people by pseudonym from a segment.
func (e *Engine) RemovePseudonyms(segmentName string, ps []anonymize.Pseudonym) error {
	return e.RemovePseudonymsContext(context.Background(), segmentName, ps)
}

// RemovePseudonymsContext is RemovePseudonyms with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) RemovePseudonymsContext(ctx context.Context, segmentName string, ps []anonymize.Pseudonym) error {
	kps := make([]anonymize.KeyedPseudonym, len(ps))
	for i, p := range ps {
		kps[i].Pseudonym = p
	}
	_, err := e.commit(ctx, &op{kind: opRemove, at: e.now(), name: segmentName, people: [][]anonymize.KeyedPseudonym{kps}})
	return err
}

func (e *Engine) applyRemove(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	st, err := e.segmentLocked(o.name)
	if err != nil {
		return opResult{}, err
	}
	if err := e.checkKeyedLocked(o, o.person(), false); err != nil {
		return opResult{}, err
	}
	removed := 0
	for _, kp := range o.person() {
		if ord, p, ok := e.resolveLocked(kp.Pseudonym); ok && st.remove(ord) {
			e.removeIDLocked(p, st.id)
			removed++
		}
	}
	e.refreshLocked(st)
	e.maybeCompactLocked()
	e.event("remove", slog.String("segment", o.name), slog.Int("count", removed))
	return opResult{n: removed}, nil
}

// sortPseudonyms orders ps by their top 24 bits with an LSD radix sort (3
// passes of 8 bits), using *tmp as scratch, and returns the ordered slice
// (ps or *tmp). The directory's home slots are monotone in the top bits, so
// this order walks the table front to back; equal prefixes stay in input
// order. Duplicates need not be adjacent.
func sortPseudonyms(ps []anonymize.Pseudonym, tmp *[]anonymize.Pseudonym) []anonymize.Pseudonym {
	if len(ps) < 64 {
		slices.Sort(ps)
		return ps
	}
	if cap(*tmp) < len(ps) {
		*tmp = make([]anonymize.Pseudonym, len(ps))
	}
	src, dst := ps, (*tmp)[:len(ps)]
	for shift := uint(40); shift < 64; shift += 8 {
		var count [256]int
		for _, p := range src {
			count[byte(p>>shift)]++
		}
		if count[byte(src[0]>>shift)] == len(src) {
			continue
		}
		pos := 0
		for d, c := range count {
			count[d], pos = pos, pos+c
		}
		for _, p := range src {
			d := byte(p >> shift)
			dst[count[d]] = p
			count[d]++
		}
		src, dst = dst, src
	}
	return src
}
