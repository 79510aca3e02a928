package personify

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
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
	return e.ExpireContext(context.Background(), now)
}

// ExpireContext is Expire with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) ExpireContext(ctx context.Context, now time.Time) (int, error) {
	res, err := e.commit(ctx, &op{kind: opExpire, at: now})
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
	gone := e.keyring().Prune(now)
	if ks := e.kr.Load(); len(ks.missing) > 0 { // keys the engine never had: only their names to drop
		var kept []anonymize.KeyInfo
		for _, k := range ks.missing {
			if now.Before(k.Until) {
				kept = append(kept, k)
			} else {
				gone = append(gone, k.Fingerprint)
			}
		}
		e.kr.Store(&keyState{ring: ks.ring, missing: kept})
	}
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
	if len(gone) > 0 && e.schedulePurge != nil {
		// Crypto-shredding: the files still hold what was under the
		// destroyed keys (and are headed with them) until a compaction.
		e.schedulePurge(now)
	}
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
// longest segment retention, at most 100 years), and people stored under
// it move to the new key the next time they are written by identifier.
// When the grace period ends, Expire destroys the engine's copy of the old
// key and erases whoever is still stored only under it (crypto-shredding;
// the copy in your secret store is yours to destroy). Receipts are signed
// with the key derived from next from then on; those signed before still
// verify (ReceiptPublicKeys).
//
// On a replica of a fleet whose journal knows the keys of the live
// replicas (pgstore's does), RotateKey refuses while a live replica lacks
// next: give every replica the key in Options.UpcomingKeys first.
func (e *Engine) RotateKey(next anonymize.Key, grace time.Duration) error {
	return e.RotateKeyContext(context.Background(), next, grace)
}

// RotateKeyContext is RotateKey with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) RotateKeyContext(ctx context.Context, next anonymize.Key, grace time.Duration) error {
	if next.IsZero() {
		return fmt.Errorf("personify: RotateKey: the new key is zero or destroyed")
	}
	if e.replica != nil {
		if kc, ok := e.replica.j.(fleet.KeyChecker); ok {
			ctx, cancel := context.WithTimeout(ctx, e.replica.timeout)
			err := kc.CheckKey(ctx, next.Fingerprint())
			cancel()
			if err != nil {
				return fmt.Errorf("personify: RotateKey: %w", err)
			}
		}
	}
	own := e.addKey(next) // replay, replicas and snapshots find it by fingerprint
	_, err := e.commit(ctx, &op{kind: opRotateKey, at: e.now(), key: own.Fingerprint(), grace: grace, next: own})
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
	old := e.keyring().Current()
	if err := e.keyring().Rotate(o.next, o.at, o.grace); err != nil {
		return opResult{}, fmt.Errorf("personify: RotateKey: %w", err)
	}
	e.keyGenSet(o.key)
	_, _ = e.receipt.remember(o.next) // the engine's own copy: not destroyed while current
	e.event("rotate_key", slog.String("from_key", old.String()), slog.String("to_key", o.key.String()),
		slog.Duration("grace", o.grace))
	return opResult{}, nil
}

// Stats describes an engine's contents and memory.
type Stats struct {
	People      int    `json:"people"`       // pseudonyms stored
	Segments    int    `json:"segments"`     // segments defined
	Memberships int    `json:"memberships"`  // memberships stored, expired ones Expire has not dropped included
	MemoryBytes uint64 `json:"memory_bytes"` // estimated memory of the stored data
	// PendingErasures counts erasures that are durable but not physically
	// complete yet (a file or journal row may still hold the person);
	// OldestPendingErasure is when the oldest of them was asked for.
	PendingErasures      int       `json:"pending_erasures"`
	OldestPendingErasure time.Time `json:"oldest_pending_erasure,omitzero"`
	// RefusedChanges counts changes read from the log or a journal that
	// were refused as undecodable, unauthenticated or invalid.
	RefusedChanges uint64 `json:"refused_changes"`
}

// Stats returns the engine's current statistics; the zero Stats once the
// engine is closed.
func (e *Engine) Stats() Stats {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return Stats{}
	}
	s := Stats{People: e.dir.Len(), Segments: len(e.segs), MemoryBytes: e.dir.SizeBytes() + e.live.SizeBytes(),
		RefusedChanges: e.refused.Load()}
	purged := e.purgedThrough()
	for _, p := range e.pending {
		if p.seq > purged {
			if s.PendingErasures == 0 || p.at.Before(s.OldestPendingErasure) {
				s.OldestPendingErasure = p.at
			}
			s.PendingErasures++
		}
	}
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
