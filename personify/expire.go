package personify

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/segment"
)

// Expire applies retention at now: it drops every membership older than its
// segment's Retention and returns how many it dropped. It also ends the
// grace period of rotated keys whose time has come (crypto-shredding: their
// key is destroyed and whoever is still stored only under it is erased),
// and removes the directory entries of people left with nothing stored, so
// that not even a pseudonym outlives the data. Memberships that have
// expired are never served, even before Expire drops them.
func (e *Engine) Expire(now time.Time) (int, error) {
	res, err := e.commit(&op{kind: opExpire, at: now})
	return res.n, err
}

func (e *Engine) applyExpire(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	now := o.at
	dropped := 0
	removed := map[uint32]*segment.Set{}
	for _, st := range e.segs {
		if st.timed == nil {
			continue
		}
		if gone := st.timed.ExpireBefore(st.cutoff(now)); !gone.IsEmpty() {
			dropped += gone.Len()
			removed[st.id] = gone
			e.refreshLocked(st)
		}
	}
	e.dropIDsLocked(removed)
	shredded := 0
	gone := e.ring.Prune(now)
	for _, fp := range gone {
		if s := e.keyGen[fp]; s != nil {
			shredded += e.dropOrdinalsLocked(s.Clone())
			delete(e.keyGen, fp)
		}
		e.dropAliasesUnderLocked(fp)
		for p, k := range e.doNotReAdd {
			if k == fp {
				delete(e.doNotReAdd, p)
			}
		}
	}
	e.hasAliases.Store(len(e.aliases) > 0)
	released := e.releaseEmptyLocked()
	e.maybeCompactLocked()
	attrs := []slog.Attr{slog.Int("memberships", dropped), slog.Int("released", released)}
	for _, fp := range gone {
		attrs = append(attrs, slog.String("destroyed_key", fp.String()))
	}
	if len(gone) > 0 {
		attrs = append(attrs, slog.Int("shredded", shredded))
	}
	e.event("expire", attrs...)
	return opResult{n: dropped}, nil
}

// releaseEmptyLocked erases the directory entries of people who are in no
// segment and have no consent or suppression record left.
func (e *Engine) releaseEmptyLocked() int {
	holders := make([]*segment.Set, 0, len(e.segs)+3*len(e.purposeByBit)+1)
	for _, st := range e.segs {
		holders = append(holders, st.members())
	}
	for _, ps := range e.purposeByBit {
		holders = append(holders, ps.granted, ps.denied, ps.suppressed)
	}
	holders = append(holders, e.suppressedAll)
	empty := e.live.Clone()
	empty.AndNot(segment.Or(holders...))
	return e.dropOrdinalsLocked(empty)
}

// RotateKey makes next the current key. New pseudonyms are computed with it;
// the previous key stays usable for lookups for grace (make it at least the
// longest segment retention), and people stored under it move to the new
// key the next time they are written by identifier. When the grace period
// ends, Expire destroys the old key (every copy of the anonymize.Key
// shares its material) and erases whoever is still stored only under it.
func (e *Engine) RotateKey(next anonymize.Key, grace time.Duration) error {
	if next.IsZero() {
		return fmt.Errorf("personify: RotateKey: the new key is zero or destroyed")
	}
	e.addKey(next) // replay, replicas and snapshots find it by fingerprint
	_, err := e.commit(&op{kind: opRotateKey, at: e.now(), key: next.Fingerprint(), grace: grace, next: next})
	return err
}

func (e *Engine) applyRotateKey(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	if o.next.IsZero() { // replayed or from another replica: the key is among those the engine was given
		o.next = e.key(o.key)
	}
	if o.next.IsZero() {
		return opResult{}, fmt.Errorf("personify: RotateKey to key %s: the key is not available (pass it in Options.Key or Options.PreviousKeys)", o.key)
	}
	old := e.ring.Current()
	if err := e.ring.Rotate(o.next, o.at, o.grace); err != nil {
		return opResult{}, fmt.Errorf("personify: RotateKey: %w", err)
	}
	e.keyGenSet(o.key)
	e.event("rotate_key", slog.String("from_key", old.String()), slog.String("to_key", o.key.String()),
		slog.Duration("grace", o.grace))
	return opResult{}, nil
}

// Stats describes an engine's contents and memory.
type Stats struct {
	People      int    // pseudonyms stored
	Segments    int    // segments defined
	Memberships int    // memberships stored, expired ones Expire has not dropped included
	MemoryBytes uint64 // estimated memory of the stored data
}

// Stats returns the engine's current statistics.
func (e *Engine) Stats() Stats {
	e.mu.RLock()
	defer e.mu.RUnlock()
	s := Stats{People: e.dir.len(), Segments: len(e.segs), MemoryBytes: e.dir.sizeBytes() + e.live.SizeBytes()}
	for _, st := range e.segs {
		s.Memberships += st.len()
		if st.timed != nil {
			for _, b := range st.timed.Epochs() {
				s.MemoryBytes += b.SizeBytes()
			}
		}
		s.MemoryBytes += st.members().SizeBytes()
	}
	for _, ps := range e.purposeByBit {
		s.MemoryBytes += ps.granted.SizeBytes() + ps.denied.SizeBytes() + ps.suppressed.SizeBytes()
	}
	for _, ks := range e.keyGen {
		s.MemoryBytes += ks.SizeBytes()
	}
	return s
}
