package anonymize

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrKeyExists is returned by [Keyring.Rotate] when the new key is already in
// the keyring.
var ErrKeyExists = errors.New("anonymize: key already in keyring")

// KeyInfo describes one key of a [Keyring]. It holds no secret. The zero
// KeyInfo describes no key; a KeyInfo is a plain value, safe for concurrent
// reads.
type KeyInfo struct {
	Fingerprint Fingerprint `json:"fingerprint"` // the key's public name
	Current     bool        `json:"current"`     // whether new pseudonyms are computed with it
	// Until is when a previous key leaves the keyring: data written under it
	// must have expired by then. Zero for the current key.
	Until time.Time `json:"until,omitzero"`
}

// Keyring holds the current key and the previous keys still within their
// grace period, each with its hasher, so that a caller can compute every
// pseudonym a person may still be stored under. Key rotation limits how long
// one key protects the data; when a previous key's grace period ends,
// [Keyring.Prune] destroys it, and whatever is still stored under it can no
// longer be linked to anyone (crypto-shredding).
//
// Make the grace period at least the longest retention of the data, so that
// everything written under a key has expired before the key is destroyed.
//
// A Keyring is safe for concurrent use; lookups take no lock. The zero
// Keyring is not usable: call [NewKeyring].
type Keyring struct {
	mu        sync.Mutex // serializes Rotate and Prune
	state     atomic.Pointer[ringState]
	newHasher func(Key) Hasher
}

type ringState struct {
	keys []ringKey // current first, then previous keys, latest-until first
}

type ringKey struct {
	key   Key
	h     Hasher
	info  KeyInfo
	until time.Time
}

// NewKeyring returns a keyring whose current key is current. newHasher makes
// the hasher for each key; nil means [SipHash]. It panics if current is the
// zero Key.
func NewKeyring(current Key, newHasher func(Key) Hasher) *Keyring {
	if newHasher == nil {
		newHasher = SipHash
	}
	r := &Keyring{newHasher: newHasher}
	r.state.Store(&ringState{keys: []ringKey{r.entry(current, time.Time{})}})
	return r
}

func (r *Keyring) entry(k Key, until time.Time) ringKey {
	mustKey(k)
	return ringKey{key: k, h: r.newHasher(k), info: KeyInfo{Fingerprint: k.Fingerprint(), Current: until.IsZero(), Until: until}, until: until}
}

// Hasher returns the current key's hasher.
func (r *Keyring) Hasher() Hasher { return r.state.Load().keys[0].h }

// Len returns the number of keys in the keyring, the current one included.
func (r *Keyring) Len() int { return len(r.state.Load().keys) }

// Current returns the current key's fingerprint.
func (r *Keyring) Current() Fingerprint { return r.state.Load().keys[0].info.Fingerprint }

// Pseudonym returns id's pseudonym under the current key.
func (r *Keyring) Pseudonym(id Identifier) (Pseudonym, error) {
	return r.state.Load().keys[0].h.Pseudonym(id)
}

// KeyedPseudonym is a pseudonym with the fingerprint of the key that made it.
// The zero KeyedPseudonym names no key; it is a plain value, safe for
// concurrent reads.
type KeyedPseudonym struct {
	Pseudonym Pseudonym   `json:"pseudonym"`
	Key       Fingerprint `json:"key"`
}

// AppendPseudonyms appends to dst id's pseudonym under every key still in
// the keyring at now: the current key first, then the previous ones, latest
// grace period first. Keys whose grace period has ended at now are skipped even if
// [Keyring.Prune] has not destroyed them yet, and so are previous keys that
// were destroyed (by a Prune that ran during the call, or by hand). A
// current key destroyed by hand is an error wrapping [ErrKeyDestroyed]; one
// that rotations and a Prune retired while the call used it is not (the
// call starts again with the keys as they are).
func (r *Keyring) AppendPseudonyms(dst []KeyedPseudonym, id Identifier, now time.Time) ([]KeyedPseudonym, error) {
	n := len(dst)
	for {
		s := r.state.Load()
		var err error
		if dst, err = s.appendPseudonyms(dst[:n], id, now); err == nil || !errors.Is(err, ErrKeyDestroyed) || r.state.Load() == s {
			return dst, err
		}
	}
}

func (s *ringState) appendPseudonyms(dst []KeyedPseudonym, id Identifier, now time.Time) ([]KeyedPseudonym, error) {
	for i, k := range s.keys {
		if !k.until.IsZero() && !now.Before(k.until) {
			continue
		}
		p, err := k.h.Pseudonym(id)
		if i > 0 && errors.Is(err, ErrKeyDestroyed) {
			continue
		}
		if err != nil {
			return dst, err
		}
		dst = append(dst, KeyedPseudonym{p, k.info.Fingerprint})
	}
	return dst, nil
}

// Keys returns the keys in the keyring, current first.
func (r *Keyring) Keys() []KeyInfo {
	s := r.state.Load()
	out := make([]KeyInfo, len(s.keys))
	for i, k := range s.keys {
		out[i] = k.info
	}
	return out
}

// Hashers returns the fingerprint and hasher of every key in the keyring,
// current first.
func (r *Keyring) Hashers() ([]Fingerprint, []Hasher) {
	s := r.state.Load()
	fps, hs := make([]Fingerprint, len(s.keys)), make([]Hasher, len(s.keys))
	for i, k := range s.keys {
		fps[i], hs[i] = k.info.Fingerprint, k.h
	}
	return fps, hs
}

// Rotate makes next the current key. The current key becomes a previous key
// that stays usable for lookups until now+grace. It returns [ErrKeyExists]
// if next is already in the keyring.
func (r *Keyring) Rotate(next Key, now time.Time, grace time.Duration) error {
	mustKey(next)
	if grace < 0 {
		return fmt.Errorf("anonymize: negative grace period %v", grace)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load().keys
	for _, k := range old {
		if k.key.Equal(next) {
			return fmt.Errorf("%w: %s", ErrKeyExists, k.info.Fingerprint)
		}
	}
	keys := make([]ringKey, 0, len(old)+1)
	keys = append(keys, r.entry(next, time.Time{}))
	prev := old[0]
	prev.until = now.Add(grace)
	prev.info.Current, prev.info.Until = false, prev.until
	keys = append(keys, prev)
	keys = append(keys, old[1:]...)
	// Previous keys are kept latest-until first, as Add keeps them, so a
	// keyring rebuilt from its KeyInfo lists them in the same order.
	slices.SortStableFunc(keys[1:], func(a, b ringKey) int { return b.until.Compare(a.until) })
	r.state.Store(&ringState{keys: keys})
	return nil
}

// Add adds a previous key that stays usable for lookups until until, for
// example when a process restarts during a grace period and must read data
// written under the key it replaced. Keys are kept newest-until first.
func (r *Keyring) Add(prev Key, until time.Time) error {
	mustKey(prev)
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load().keys
	for _, k := range old {
		if k.key.Equal(prev) {
			return fmt.Errorf("%w: %s", ErrKeyExists, k.info.Fingerprint)
		}
	}
	if until.IsZero() { // a zero time marks the current key: two would be current
		return fmt.Errorf("anonymize: Keyring.Add: previous key %s needs the time its grace period ends", prev.Fingerprint())
	}
	keys := append(slices.Clone(old), r.entry(prev, until))
	slices.SortStableFunc(keys[1:], func(a, b ringKey) int { return b.until.Compare(a.until) })
	r.state.Store(&ringState{keys: keys})
	return nil
}

// Prune removes and destroys every previous key whose grace period has
// ended at now, and returns their fingerprints. The hashers of destroyed
// keys, including those returned by [Keyring.Hashers] earlier, return
// errors wrapping [ErrKeyDestroyed] from then on.
func (r *Keyring) Prune(now time.Time) []Fingerprint {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load().keys
	keys := make([]ringKey, 0, len(old))
	var gone []ringKey
	for i, k := range old {
		if i > 0 && !now.Before(k.until) {
			gone = append(gone, k)
			continue
		}
		keys = append(keys, k)
	}
	if len(gone) == 0 {
		return nil
	}
	r.state.Store(&ringState{keys: keys})
	fps := make([]Fingerprint, len(gone))
	for i, k := range gone {
		fps[i] = k.info.Fingerprint
		k.key.Destroy()
	}
	return fps
}
