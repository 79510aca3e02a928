package prefcenter

import (
	"crypto/sha256"
	"sync"
	"time"
)

// maxRevoked bounds the revoked links a handler remembers.
const maxRevoked = 100_000

// revoked is the set of link tokens whose session was used for "Forget
// me": such a link opens nothing any more, so that re-opening it (from the
// history, or a second tab) cannot re-create state for the person just
// erased (a Global Privacy Control opt-out, a consent).
//
// The set is in memory, per process: in a fleet, another replica accepts
// the link until it expires (links are short-lived). There, a link
// re-opened after "Forget me" with "never add me again" shows that the
// person was forgotten and writes nothing (the do-not-add list is shared);
// one re-opened after a plain "Forget me" starts afresh, on an empty
// record, as a new link would.
//
// It holds SHA-256 sums of the tokens, never the tokens, each until the
// token expires, and at most maxRevoked of them: expired entries are
// dropped when one is added, and when it is full the one that expires
// first makes room.
type revoked struct {
	mu  sync.Mutex
	m   map[[sha256.Size]byte]time.Time
	max int
}

func newRevoked(max int) *revoked {
	return &revoked{m: map[[sha256.Size]byte]time.Time{}, max: max}
}

func revokedKey(tok string) [sha256.Size]byte {
	return sha256.Sum256([]byte("personify-revoked-link:" + tok))
}

// add revokes tok until exp.
func (v *revoked) add(tok string, exp, now time.Time) {
	if !exp.After(now) {
		return // it no longer verifies anyway
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, e := range v.m {
		if !e.After(now) {
			delete(v.m, k)
		}
	}
	k := revokedKey(tok)
	if _, ok := v.m[k]; !ok && len(v.m) >= v.max {
		var first [sha256.Size]byte
		var firstExp time.Time
		for k, e := range v.m {
			if firstExp.IsZero() || e.Before(firstExp) {
				first, firstExp = k, e
			}
		}
		delete(v.m, first)
	}
	v.m[k] = exp
}

// has reports whether tok is revoked at now.
func (v *revoked) has(tok string, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.m[revokedKey(tok)]
	return ok && e.After(now)
}

// len is how many entries the set holds (for tests).
func (v *revoked) len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.m)
}
