package personify

import (
	"context"
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
	e.expireCountsLocked(now)
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
			drop := s.Clone()
			e.expireKeyLocked(fp, drop) // linked people keep their slots under other keys
			shredded += e.dropOrdinalsLocked(drop)
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
	for ord := range e.links { // a link is held data: kept until Forget or Unlink
		empty.Remove(ord)
	}
	// Frequency counts do not hold a person: counts reach the log in
	// batches, so whether one is held at this point would differ between
	// this engine and a replay or another replica. A person left with
	// nothing else goes, counts and all.
	return e.dropOrdinalsLocked(empty)
}
