package personify

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/segment"
)

// DefaultK is the default minimum size of a served segment or an audience
// (k-anonymity): no one is ever targeted through a group smaller than this.
const DefaultK = 50

// Options configures an [Engine]. The zero value is not usable: Key is
// required. Every other field has a sensible default.
//
// An Options is a plain value read once by New or Open, which copy what they
// keep: it may be reused, and read concurrently, but not changed while a call
// reads it.
type Options struct {
	// Key is the secret from which pseudonyms are computed (required). Keep
	// it in a secret store; it never reaches the engine's output.
	Key anonymize.Key

	// PreviousKeys are keys that Key replaced and whose grace period has not
	// ended, so that people stored under them are still found (see
	// Engine.RotateKey). Optional.
	PreviousKeys []PreviousKey

	// Hasher makes the hasher for each key. Nil means anonymize.SipHash,
	// the default; use anonymize.HMACSHA256 to match pseudonyms computed in
	// SQL.
	Hasher func(anonymize.Key) anonymize.Hasher

	// K is the minimum size of a segment that Segments may serve and of an
	// audience (k-anonymity). Zero means DefaultK; it must not be negative.
	// A segment's MinSize can raise it, never lower it.
	K int

	// ReceiptKey signs erasure receipts (Ed25519). The zero value means a
	// key derived from Key (HMAC-SHA256 with its own label, so it reveals
	// nothing of Key): the same on every restart and every replica of a
	// fleet, so that a receipt verifies forever. After RotateKey the engine
	// signs with the key derived from the new key and keeps the public keys
	// of the earlier ones (Engine.ReceiptPublicKeys). Set it only to sign
	// with a key kept elsewhere.
	ReceiptKey ReceiptKey

	// Audit receives an event for every change and every audience query,
	// with pseudonyms and counts only. Nil discards them.
	Audit *slog.Logger

	// Now returns the current time. Nil means time.Now. Tests inject a fake
	// clock here.
	Now func() time.Time

	// UpcomingKeys are keys that a key rotation may switch to but that are
	// not in use yet: a replica of a fleet needs the key another replica
	// rotates to before that rotation reaches it through the journal. A
	// single engine does not need them (RotateKey is given the key).
	UpcomingKeys []anonymize.Key

	// Durable holds the settings of Open's storage and maintenance; New
	// ignores them.
	Durable DurableOptions

	// CapFlush is how often a durable or fleet engine logs the impressions
	// its frequency caps counted, in one batch (DefaultCapFlush if zero):
	// the most counts a crash loses, and, in a fleet, how long the other
	// replicas take to count them (see Allow).
	CapFlush time.Duration `json:"cap_flush,omitempty"`
}

// keyState is the engine's keyring: the keys it holds data under, with
// their material, and those of its data's keyring whose material it was
// not given (missing). The keyring, not the material, decides what a
// change means, so every replica of a fleet agrees on it; a missing key
// only stops this engine from computing pseudonyms under it.
type keyState struct {
	ring    *anonymize.Keyring
	missing []anonymize.KeyInfo // previous keys of the data, never the current one
}

// keyring returns the keys with their hashers.
func (e *Engine) keyring() *anonymize.Keyring { return e.kr.Load().ring }

// ringKeys returns every key the engine's data is under, current first,
// whether or not the engine holds its material.
func (e *Engine) ringKeys() []anonymize.KeyInfo {
	ks := e.kr.Load()
	return append(ks.ring.Keys(), ks.missing...)
}

// ErrKeyUnavailable is returned when a change needs a key the engine was
// not given: a write or erasure by identifier while the data is still held
// under a previous key missing from Options.PreviousKeys (the pseudonyms
// under it cannot be computed, so the person could not be found under
// them), or, on a replica, a key rotation in the journal to a key it lacks.
var ErrKeyUnavailable = errors.New("personify: a key the change needs is not available")

// checkKeysAvailable returns ErrKeyUnavailable if, at now, the data is
// held under a key whose material the engine lacks (zero now: under any
// key still in the keyring).
func (e *Engine) checkKeysAvailable(now time.Time) error {
	for _, k := range e.kr.Load().missing {
		if now.IsZero() || now.Before(k.Until) {
			return fmt.Errorf("%w: the data is held under previous key %s until %s, which this engine was not given: give it in Options.PreviousKeys",
				ErrKeyUnavailable, k.Fingerprint, k.Until.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// PreviousKey is a key replaced by rotation and the time its grace period
// ends.
//
// The zero PreviousKey holds no key, which New refuses. It is a plain value,
// read once by New or Open, safe for concurrent reads.
type PreviousKey struct {
	Key   anonymize.Key `json:"key"` // redacted in JSON
	Until time.Time     `json:"until"`
}

// Engine holds segments of pseudonymous members and answers, for a person,
// which segments may be used for a purpose, under the privacy rules of the
// package doc. New makes an in-memory Engine.
//
// An Engine is safe for concurrent use by any number of goroutines. Lookups
// (In, Segments) take no lock; writes are serialized among themselves.
//
// The zero Engine is not usable: make one with New or Open.
type Engine struct {
	kr      atomic.Pointer[keyState] // the keyring; replaced whole when a snapshot is loaded
	k       int
	now     func() time.Time
	audit   *slog.Logger
	receipt receiptKeys // signs receipts; the public keys of earlier ones

	dir        *index.Directory // lock-free lookups; changed under mu
	rt         atomic.Pointer[readTable]
	states     atomic.Pointer[[]privState]
	hasAliases atomic.Bool   // whether lookups may need the alias map
	closed     atomic.Bool   // set by Close
	gen        atomic.Uint64 // odd while closed or while a snapshot is being installed
	store      *store        // nil in memory
	replica    *replicator   // a fleet replica's journal (package replica); nil otherwise
	keysMu     sync.Mutex
	keys       map[anonymize.Fingerprint]anonymize.Key // every key given in Options or to RotateKey
	closeOnce  sync.Once
	hasher     func(anonymize.Key) anonymize.Hasher
	replaying  bool                                 // Open is replaying the log: no audit events
	forgets    atomic.Uint64                        // counts erasures, for Audience iterators
	refused    atomic.Uint64                        // changes from a log or journal refused as invalid
	capsRead   atomic.Pointer[map[string]*capState] // the caps, for lock-free callers (caps.go)
	capFlush   *capFlusher                          // durable and fleet engines: logs counted impressions in batches
	// schedulePurge is told the time by which a compaction should run for
	// an erasure that is not physically complete yet (durable and fleet
	// engines); nil in memory.
	schedulePurge func(at time.Time)

	mu            sync.RWMutex // guards the state below; writers hold it briefly
	segs          map[string]*segState
	nextSegID     uint32
	purposes      map[string]*purposeState
	purposeByBit  []*purposeState
	suppressedAll *segment.Set                           // ordinals suppressed for every purpose
	live          *segment.Set                           // ordinals with a directory entry
	keyGen        map[anonymize.Fingerprint]*segment.Set // ordinals stored under each key
	aliases       map[anonymize.Pseudonym]alias          // old-key pseudonyms of re-keyed people
	aliasesOf     map[uint32][]anonymize.Pseudonym       // the aliases of each ordinal (derived from aliases)
	links         map[uint32][]LinkedPseudonym           // every pseudonym of each linked person (linkgraph.go)
	caps          map[string]*capState                   // frequency caps (caps.go)
	flights       map[string]*capFlight                  // each cap's impressions being logged, by cap name (capflush.go)
	flightOrder   uint64                                 // the last batch put in flight, counted
	nextCapID     uint32
	doNotReAdd    map[anonymize.Pseudonym]anonymize.Fingerprint // forgotten people who asked never to be added again
	stateIDs      map[privState]uint32                          // interned privacy states
	pending       []pendingErasure                              // erasures not yet physically complete, by seq
	idBuf         []uint32                                      // scratch for entry rewrites
	recBuf        []byte
	batchBuf      []anonymize.Pseudonym // scratch for bulk loads
	sortBuf       []anonymize.Pseudonym
	ordBuf        []uint32
}

// alias records that a person stored under an older key's pseudonym was
// re-keyed to the current key: sessions holding the old pseudonym keep
// working until that key leaves the keyring.
type alias struct {
	ord     uint32
	key     anonymize.Fingerprint
	primary anonymize.Pseudonym // where the person is stored now
}

// pendingErasure is an erasure that is durable but not yet physically
// complete: a snapshot or log (or journal row) may still hold the person.
// It is part of the state (logs and snapshots carry it), so a restart
// neither forgets nor delays the deadline its receipt promised.
type pendingErasure struct {
	seq     uint64    // the forget's position in the log or journal
	at      time.Time // when it was asked for
	purgeBy time.Time // the receipt's promise
}

// due is when a compaction should run for the erasure: a quarter of its
// window after it was asked for, so that the erasures of that window share
// one snapshot, well before the deadline.
func (p pendingErasure) due() time.Time { return p.at.Add(p.purgeBy.Sub(p.at) / 4) }

// New returns an in-memory engine. It returns an error if the options are
// invalid. The engine keeps its own copies of the keys in opts: destroying
// them later (or the engine destroying its copies when a grace period
// ends) affects no one else.
func New(opts Options) (*Engine, error) {
	if opts.Key.IsZero() {
		return nil, fmt.Errorf("personify: Options.Key is required: generate one with anonymize.GenerateKey and keep it in a secret store")
	}
	if opts.K < 0 {
		return nil, fmt.Errorf("personify: Options.K is %d: the minimum audience size cannot be negative", opts.K)
	}
	key := opts.Key.Clone()
	e := &Engine{
		k:             opts.K,
		now:           opts.Now,
		audit:         opts.Audit,
		dir:           index.NewDirectory(),
		segs:          map[string]*segState{},
		purposes:      map[string]*purposeState{},
		live:          segment.New(),
		keyGen:        map[anonymize.Fingerprint]*segment.Set{},
		aliases:       map[anonymize.Pseudonym]alias{},
		aliasesOf:     map[uint32][]anonymize.Pseudonym{},
		links:         map[uint32][]LinkedPseudonym{},
		caps:          map[string]*capState{},
		flights:       map[string]*capFlight{},
		doNotReAdd:    map[anonymize.Pseudonym]anonymize.Fingerprint{},
		suppressedAll: segment.New(),
		keys:          map[anonymize.Fingerprint]anonymize.Key{key.Fingerprint(): key},
		hasher:        opts.Hasher,
	}
	e.kr.Store(&keyState{ring: anonymize.NewKeyring(key, opts.Hasher)})
	if e.k == 0 {
		e.k = DefaultK
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.audit == nil {
		e.audit = slog.New(slog.DiscardHandler)
	}
	e.receipt.override = opts.ReceiptKey
	for _, k := range opts.UpcomingKeys {
		if k.IsZero() {
			return nil, fmt.Errorf("personify: Options.UpcomingKeys: a key is zero or destroyed")
		}
		k = k.Clone()
		e.keys[k.Fingerprint()] = k
	}
	for _, pk := range opts.PreviousKeys {
		if pk.Key.IsZero() {
			return nil, fmt.Errorf("personify: Options.PreviousKeys: a key is zero or destroyed")
		}
		if err := checkTime("Options.PreviousKeys: the end of a grace period", pk.Until); err != nil && !pk.Until.IsZero() {
			return nil, err
		}
		k := pk.Key.Clone()
		e.keys[k.Fingerprint()] = k
		if err := e.keyring().Add(k, pk.Until); err != nil {
			return nil, fmt.Errorf("personify: Options.PreviousKeys: %w", err)
		}
		if _, err := e.receipt.remember(k); err != nil { // receipts signed before the rotation still verify
			return nil, fmt.Errorf("personify: Options.PreviousKeys: %w", err)
		}
	}
	if _, err := e.receipt.remember(key); err != nil {
		return nil, fmt.Errorf("personify: Options.Key: %w", err)
	}
	for _, k := range e.keyring().Keys() {
		e.keyGen[k.Fingerprint] = segment.New()
	}
	e.initIndexLocked()
	return e, nil
}

// Close releases the engine. Afterwards every method that returns an error
// returns ErrClosed (writes, Pseudonym, Explain, Forget, Audience, Len,
// snapshots), and the others report nothing: In is false, Segments appends
// nothing, Stats is zero, Definitions and Purposes are empty. A durable
// engine stops its maintenance, finishes the write in flight and releases
// its directory; every write acknowledged before is on disk. Closing twice
// is not an error.
func (e *Engine) Close() error {
	e.stopCapFlusher() // the last impressions reach the log or journal first
	if e.store != nil {
		var err error
		e.closeOnce.Do(func() { err = e.store.close(e) })
		return err
	}
	e.markClosed()
	if e.replica != nil {
		e.replica.wakeAll(fmt.Errorf("%w: %w (it takes effect on the replicas that apply the journal)", ErrClosed, fleet.ErrNotApplied))
	}
	return nil
}

// markClosed makes every later call return ErrClosed and lookups answer
// nothing.
func (e *Engine) markClosed() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed.Swap(true) {
		e.gen.Add(1) // odd for good: lookups take the locked path, which answers nothing
	}
}

// hasKey reports whether the engine was given the key with fingerprint fp.
func (e *Engine) hasKey(fp anonymize.Fingerprint) bool { return !e.key(fp).IsZero() }

// key returns the key with fingerprint fp among those the engine was
// given (Options and RotateKey), or the zero Key.
func (e *Engine) key(fp anonymize.Fingerprint) anonymize.Key {
	e.keysMu.Lock()
	defer e.keysMu.Unlock()
	return e.keys[fp]
}

// addKey remembers a key given to RotateKey, for replay and snapshots, and
// returns the engine's own copy of it.
func (e *Engine) addKey(k anonymize.Key) anonymize.Key {
	e.keysMu.Lock()
	defer e.keysMu.Unlock()
	if have, ok := e.keys[k.Fingerprint()]; ok && !have.IsZero() {
		return have
	}
	k = k.Clone()
	e.keys[k.Fingerprint()] = k
	return k
}

// keySet returns a copy of the keys the engine was given.
func (e *Engine) keySet() map[anonymize.Fingerprint]anonymize.Key {
	e.keysMu.Lock()
	defer e.keysMu.Unlock()
	return maps.Clone(e.keys)
}

// ReceiptPublicKey returns the public key that verifies the receipts this
// engine issues now (see VerifyReceipt): derived from the current key
// unless Options.ReceiptKey is set, so the same on every restart and every
// replica that shares the key.
func (e *Engine) ReceiptPublicKey() ed25519.PublicKey {
	return e.receipt.current(e).Public()
}

// ReceiptPublicKeys returns every public key that verifies a receipt this
// engine (or its data directory or fleet) ever issued: the current one
// first, then those of keys replaced by rotation. They are not secret.
func (e *Engine) ReceiptPublicKeys() []ed25519.PublicKey {
	cur := e.ReceiptPublicKey()
	out := []ed25519.PublicKey{cur}
	for _, p := range e.receipt.history() {
		if !bytes.Equal(p, cur) {
			out = append(out, p)
		}
	}
	return out
}

// VerifyReceipt checks a receipt against the receipt keys this engine
// knows (ReceiptPublicKeys): the one the receipt names must be among them.
// Anyone without the engine checks it with the package-level VerifyReceipt
// and the published public key.
func (e *Engine) VerifyReceipt(r Receipt) error {
	for _, pub := range e.ReceiptPublicKeys() {
		if r.Version < 2 || r.SigningKey == hex.EncodeToString(pub) {
			if err := VerifyReceipt(r, pub); err == nil || r.Version >= 2 {
				return err
			}
		}
	}
	return fmt.Errorf("%w: receipt %s was not signed by a key of this engine", ErrBadReceipt, receiptName(r.ID))
}

// K returns the minimum audience and segment size in force.
func (e *Engine) K() int { return e.k }

// KeyFingerprint returns the fingerprint of the current key.
func (e *Engine) KeyFingerprint() anonymize.Fingerprint { return e.keyring().Current() }

// lock takes the write lock, or returns ErrClosed.
func (e *Engine) lock() error {
	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// event writes one audit event. Attributes hold pseudonyms, names and
// counts, never identifiers.
func (e *Engine) event(name string, attrs ...slog.Attr) {
	if e.replaying {
		return
	}
	e.audit.LogAttrs(context.Background(), slog.LevelInfo, "personify."+name, attrs...)
}

func pseudonymAttr(p anonymize.Pseudonym) slog.Attr { return slog.String("pseudonym", p.String()) }

// String describes the engine without any secret or personal data.
func (e *Engine) String() string {
	s := e.Stats()
	return fmt.Sprintf("personify.Engine{people: %d, segments: %d, memberships: %d, key: %s}",
		s.People, s.Segments, s.Memberships, e.keyring().Current())
}

// Format writes String for every verb: an Engine never prints its keys.
func (e *Engine) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(e.String())) }

// String describes the options with the keys redacted.
func (o Options) String() string {
	return fmt.Sprintf("personify.Options{Key: %v, PreviousKeys: %d, UpcomingKeys: %d, K: %d, ReceiptKey: %v, Audit: %t, Now: %t}",
		o.Key, len(o.PreviousKeys), len(o.UpcomingKeys), o.K, o.ReceiptKey, o.Audit != nil, o.Now != nil)
}

// Format writes String for every verb: Options never print their keys.
func (o Options) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(o.String())) }

// MarshalJSON writes String as a JSON string: Options never serialize
// their keys (or fail on their function fields).
func (o Options) MarshalJSON() ([]byte, error) { return json.Marshal(o.String()) }

// String describes a previous key by its fingerprint.
func (p PreviousKey) String() string {
	return fmt.Sprintf("personify.PreviousKey{Key: %v, Until: %s}", p.Key, p.Until.Format(time.RFC3339))
}

// Format writes String for every verb.
func (p PreviousKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(p.String())) }
