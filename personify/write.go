package personify

import (
	"log/slog"

	"github.com/personify-go/personify/anonymize"
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
	kps, err := e.pseudonymizeAll(ids)
	if err != nil {
		return err
	}
	if err := e.lock(); err != nil {
		return err
	}
	defer e.mu.Unlock()
	st, err := e.segmentLocked(segmentName)
	if err != nil {
		return err
	}
	now := e.now()
	added, skipped := 0, 0
	for _, kp := range kps {
		if _, ok := e.doNotReAdd[kp[0].Pseudonym]; ok {
			skipped++
			continue
		}
		ord, p := e.resolveForWrite(kp)
		st.add(ord, now)
		e.addIDLocked(p, st.id)
		added++
	}
	e.refreshLocked(st)
	e.maybeCompactLocked()
	e.event("add", slog.String("segment", segmentName), slog.Int("count", added), slog.Int("skipped_do_not_re_add", skipped))
	return nil
}

// pseudonymizeAll computes every keyed pseudonym of every identifier, before
// any lock is taken; it fails on the first invalid identifier.
func (e *Engine) pseudonymizeAll(ids []anonymize.Identifier) ([][]anonymize.KeyedPseudonym, error) {
	out := make([][]anonymize.KeyedPseudonym, len(ids))
	for i, id := range ids {
		kps, err := e.keyedPseudonyms(id)
		if err != nil {
			return nil, err
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
	added, skipped := 0, 0
	for start := 0; ; start += writeChunk {
		a, s, err := e.addPseudonymChunk(segmentName, ps[start:min(start+writeChunk, len(ps))])
		added, skipped = added+a, skipped+s
		if err != nil {
			return err
		}
		if start+writeChunk >= len(ps) {
			break
		}
	}
	e.event("add_pseudonyms", slog.String("segment", segmentName), slog.Int("count", added), slog.Int("skipped_do_not_re_add", skipped))
	return nil
}

func (e *Engine) addPseudonymChunk(segmentName string, ps []anonymize.Pseudonym) (added, skipped int, err error) {
	if err := e.lock(); err != nil {
		return 0, 0, err
	}
	defer e.mu.Unlock()
	st, err := e.segmentLocked(segmentName)
	if err != nil {
		return 0, 0, err
	}
	cur := e.ring.Current()
	ords := make([]uint32, 0, len(ps))
	for _, p := range ps {
		if _, ok := e.doNotReAdd[p]; ok {
			skipped++
			continue
		}
		ord, primary, ok := e.resolveLocked(p)
		if !ok {
			ord, primary = e.assignLocked(p, cur), p
		}
		e.addIDLocked(primary, st.id)
		ords = append(ords, ord)
	}
	st.addMany(ords, e.now())
	e.refreshLocked(st)
	e.maybeCompactLocked()
	return len(ords), skipped, nil
}

// Remove removes the person identified by id from a segment. Removing
// someone who is not a member is not an error.
func (e *Engine) Remove(segmentName string, id anonymize.Identifier) error {
	kps, err := e.keyedPseudonyms(id)
	if err != nil {
		return err
	}
	return e.removePseudonyms(segmentName, kps...)
}

// RemovePseudonyms removes people by pseudonym from a segment.
func (e *Engine) RemovePseudonyms(segmentName string, ps []anonymize.Pseudonym) error {
	kps := make([]anonymize.KeyedPseudonym, len(ps))
	for i, p := range ps {
		kps[i].Pseudonym = p
	}
	return e.removePseudonyms(segmentName, kps...)
}

func (e *Engine) removePseudonyms(segmentName string, kps ...anonymize.KeyedPseudonym) error {
	if err := e.lock(); err != nil {
		return err
	}
	defer e.mu.Unlock()
	st, err := e.segmentLocked(segmentName)
	if err != nil {
		return err
	}
	removed := 0
	for _, kp := range kps {
		if ord, p, ok := e.resolveLocked(kp.Pseudonym); ok && st.remove(ord) {
			e.removeIDLocked(p, st.id)
			removed++
		}
	}
	e.refreshLocked(st)
	e.maybeCompactLocked()
	e.event("remove", slog.String("segment", segmentName), slog.Int("count", removed))
	return nil
}
