package personify

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// Receipt proves an erasure: what was removed, when, under which keys, and
// where in the log it became durable, signed with Ed25519 so that the
// person or an auditor can check it with VerifyReceipt and the engine's
// public key, without any secret. It holds pseudonyms and counts, never the
// identifier.
//
// A receipt is issued only once the erasure is complete on the engine that
// issues it, under every key the engine holds data under.
//
// The zero Receipt proves nothing: VerifyReceipt refuses it. A Receipt is a
// plain value, safe to share between goroutines.
type Receipt struct {
	// Version is the receipt format: 3 (2: receipts of earlier releases,
	// without Linked; 1: whose signature does not cover Seq or SigningKey
	// either).
	Version    int                        `json:"version"`
	ID         string                     `json:"id"`
	RequestID  string                     `json:"request_id,omitempty"`
	Pseudonyms []anonymize.KeyedPseudonym `json:"pseudonyms"` // every pseudonym looked up, one per key
	// Linked lists, for a person with linked identifiers (Engine.Link),
	// every pseudonym they were stored under, with its kind: each linked
	// identifier's, and its older keys' where it had been re-keyed. Empty
	// for a person with one identifier.
	Linked   []LinkedPseudonym `json:"linked,omitempty"`
	Segments []ErasedSegment   `json:"segments"` // memberships removed, by segment
	// Consents and Suppressions count the consent records and suppression
	// entries removed.
	Consents     int `json:"consents"`
	Suppressions int `json:"suppressions"`
	// Counters counts the frequency counters removed (version 3).
	Counters   int                   `json:"counters"`
	DoNotReAdd bool                  `json:"do_not_re_add"`
	Key        anonymize.Fingerprint `json:"key"` // the current key when erased
	// ErasedAt is when the person vanished from every lookup; DurableAt when
	// the erasure was recorded durably; PurgeBy the deadline by which no
	// file or row holds the person any more (Engine.Purged says whether
	// that has happened). In memory the three are equal.
	ErasedAt  time.Time `json:"erased_at"`
	DurableAt time.Time `json:"durable_at"`
	PurgeBy   time.Time `json:"purge_by"`
	// Seq is the erasure's position in a durable engine's log or a fleet's
	// journal (zero in memory): the signature binds it, and Engine.Purged
	// compares it with what has been physically erased.
	Seq uint64 `json:"seq,omitempty"`
	// SigningKey names the key that signed the receipt: the Ed25519 public
	// key in hex. It is public; VerifyReceipt checks that it is the key
	// the verifier trusts.
	SigningKey string `json:"signing_key"`
	Signature  []byte `json:"signature"`
}

// ErasedSegment is a segment the erased person was removed from.
//
// An ErasedSegment is a plain value, safe to share between goroutines; its
// zero value names no segment.
type ErasedSegment struct {
	Name        string `json:"name"`
	Memberships int    `json:"memberships"`
}

// receiptVersion is the format Forget issues.
const receiptVersion = 3

// SignedMessage returns the bytes the signature covers: a canonical text
// form of every field but the signature, one "name: value" line each, so
// that any Ed25519 implementation can verify a receipt:
//
//	personify-receipt-v3
//	id: <hex>
//	request-id: <Go-quoted string>
//	pseudonyms: <key>:<pseudonym> ...    (space separated, in order)
//	linked: <kind>:<key>:<pseudonym> ... (space separated, in order; kind as anonymize.Kind.String)
//	segments: <Go-quoted name>=<count> ... (space separated, by name)
//	consents: <n>
//	suppressions: <n>
//	counters: <n>                        (version 3)
//	do-not-re-add: <true|false>
//	key: <fingerprint>
//	erased-at: <RFC 3339, nanoseconds, UTC>
//	durable-at: <same>
//	purge-by: <same>
//	seq: <decimal>
//	signing-key: <hex>
//
// Version 2 receipts lack the linked line and start with
// "personify-receipt-v2"; version 1 receipts lack the last two lines as
// well and start with "personify-receipt-v1".
func (r Receipt) SignedMessage() []byte {
	var b strings.Builder
	v := r.Version
	if v < 2 {
		v = 1
	}
	fmt.Fprintf(&b, "personify-receipt-v%d\n", v)
	fmt.Fprintf(&b, "id: %s\nrequest-id: %s\npseudonyms:", r.ID, strconv.Quote(r.RequestID))
	for _, p := range r.Pseudonyms {
		fmt.Fprintf(&b, " %s:%s", p.Key, p.Pseudonym)
	}
	if v >= 3 {
		b.WriteString("\nlinked:")
		for _, p := range r.Linked {
			fmt.Fprintf(&b, " %s:%s:%s", p.Kind, p.Key, p.Pseudonym)
		}
	}
	b.WriteString("\nsegments:")
	for _, s := range r.Segments {
		fmt.Fprintf(&b, " %s=%d", strconv.Quote(s.Name), s.Memberships)
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	fmt.Fprintf(&b, "\nconsents: %d\nsuppressions: %d\n", r.Consents, r.Suppressions)
	if v >= 3 {
		fmt.Fprintf(&b, "counters: %d\n", r.Counters)
	}
	fmt.Fprintf(&b, "do-not-re-add: %t\nkey: %s\nerased-at: %s\ndurable-at: %s\npurge-by: %s\n",
		r.DoNotReAdd, r.Key, ts(r.ErasedAt), ts(r.DurableAt), ts(r.PurgeBy))
	if v >= 2 {
		fmt.Fprintf(&b, "seq: %d\nsigning-key: %s\n", r.Seq, r.SigningKey)
	}
	return []byte(b.String())
}

// VerifyReceipt checks a receipt's signature against pub, the public key of
// the engine that issued it (Engine.ReceiptPublicKey; Engine.VerifyReceipt
// also knows the engine's earlier receipt keys). It returns ErrBadReceipt
// if the receipt was altered, names another signing key, or was signed by
// another key. It needs no secret: anyone can run it.
func VerifyReceipt(r Receipt, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key has %d bytes, want %d", ErrBadReceipt, len(pub), ed25519.PublicKeySize)
	}
	if r.Version > receiptVersion {
		return fmt.Errorf("%w: receipt %s has format version %d; this version of personify reads up to %d", ErrBadReceipt, receiptName(r.ID), r.Version, receiptVersion)
	}
	if r.Version < 3 && (len(r.Linked) > 0 || r.Counters != 0) {
		return fmt.Errorf("%w: receipt %s has format version %d, which cannot list linked pseudonyms", ErrBadReceipt, receiptName(r.ID), r.Version)
	}
	if r.Version >= 2 && r.SigningKey != hex.EncodeToString(pub) {
		return fmt.Errorf("%w: receipt %s names signing key %s, not the key given", ErrBadReceipt, receiptName(r.ID), shortKey(r.SigningKey))
	}
	if !ed25519.Verify(pub, r.SignedMessage(), r.Signature) {
		return fmt.Errorf("%w: receipt %s", ErrBadReceipt, receiptName(r.ID))
	}
	return nil
}

// receiptName is how errors name a receipt: by its ID when it is one the
// engine issues (32 hex digits), and otherwise without quoting it: a
// receipt given to VerifyReceipt may have been made up, with anything in
// its ID.
func receiptName(id string) string {
	if len(id) == 32 && isHex(id) {
		return id
	}
	return "(whose id personify did not issue)"
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// shortKey names a signing key in an error, by its first hex digits, and
// quotes nothing that is not hex.
func shortKey(s string) string {
	if !isHex(s) {
		return "(not a key in hex)"
	}
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return strconv.Quote(s)
}

// ErrBadReceipt is returned by VerifyReceipt when a receipt's signature
// does not match its contents and the public key.
var ErrBadReceipt = errors.New("personify: receipt signature is not valid")

// ReceiptKey is an Ed25519 key that signs erasure receipts (see
// Options.ReceiptKey). It never prints: String, Format (every verb),
// MarshalJSON and LogValue show only the public key's first bytes, and its
// private half sits where fmt's reflection over a struct holding it cannot
// reach.
//
// The zero ReceiptKey means "none given": an engine then derives its
// receipt key from its own key. A ReceiptKey is safe for concurrent use.
type ReceiptKey struct {
	r *receiptKeyRef
}

type receiptKeyRef struct {
	priv *ed25519.PrivateKey // two pointers from any value that holds a ReceiptKey
	pub  ed25519.PublicKey
}

// NewReceiptKey returns a ReceiptKey holding a copy of priv.
func NewReceiptKey(priv ed25519.PrivateKey) (ReceiptKey, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return ReceiptKey{}, fmt.Errorf("personify: receipt key has %d bytes, want an ed25519.PrivateKey of %d", len(priv), ed25519.PrivateKeySize)
	}
	c := bytes.Clone(priv)
	pub := ed25519.PrivateKey(c).Public().(ed25519.PublicKey)
	if !bytes.Equal(ed25519.NewKeyFromSeed(ed25519.PrivateKey(c).Seed()).Public().(ed25519.PublicKey), pub) {
		return ReceiptKey{}, fmt.Errorf("personify: receipt key's public half does not match its seed")
	}
	p := ed25519.PrivateKey(c)
	return ReceiptKey{&receiptKeyRef{priv: &p, pub: pub}}, nil
}

// receiptKeyLabel derives an engine's default receipt key from its key:
// the same key gives the same Ed25519 key on every restart and replica.
const receiptKeyLabel = "personify/v1/receipt-ed25519"

// deriveReceiptKey returns the receipt key derived from k, or an error if
// k has been destroyed.
func deriveReceiptKey(k anonymize.Key) (ReceiptKey, error) {
	sub, err := k.Subkey(receiptKeyLabel)
	if err != nil {
		return ReceiptKey{}, err
	}
	defer sub.Destroy()
	seed := sub.Bytes()
	defer clear(seed)
	p := ed25519.NewKeyFromSeed(seed)
	return ReceiptKey{&receiptKeyRef{priv: &p, pub: p.Public().(ed25519.PublicKey)}}, nil
}

// IsZero reports whether k is the zero ReceiptKey.
func (k ReceiptKey) IsZero() bool { return k.r == nil }

// Public returns the public key that verifies k's signatures.
func (k ReceiptKey) Public() ed25519.PublicKey {
	if k.r == nil {
		return nil
	}
	return bytes.Clone(k.r.pub)
}

func (k ReceiptKey) sign(msg []byte) []byte { return ed25519.Sign(*k.r.priv, msg) }

func (k ReceiptKey) redacted() string {
	if k.r == nil {
		return "personify.ReceiptKey(none)"
	}
	return "personify.ReceiptKey([redacted] public " + hex.EncodeToString(k.r.pub[:8]) + "...)"
}

// String returns a redacted form naming the public key.
func (k ReceiptKey) String() string { return k.redacted() }

// GoString returns the redacted form.
func (k ReceiptKey) GoString() string { return k.redacted() }

// Format writes the redacted form for every verb.
func (k ReceiptKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.redacted())) }

// MarshalJSON writes the redacted form: a receipt key is never serialized.
func (k ReceiptKey) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(k.redacted())), nil }

// LogValue returns the redacted form for log/slog.
func (k ReceiptKey) LogValue() slog.Value { return slog.StringValue(k.redacted()) }

// receiptKeys is how an engine signs receipts: the key from Options, or
// else one derived from the current engine key (cached per key), and the
// public keys of every receipt key its data was ever signed under, which
// snapshots keep so that receipts verify after the keys that made them are
// destroyed.
type receiptKeys struct {
	override ReceiptKey

	mu      sync.Mutex
	derived map[anonymize.Fingerprint]ReceiptKey
	pubs    []ed25519.PublicKey // oldest first
}

// current returns the key that signs receipts now.
func (rk *receiptKeys) current(e *Engine) ReceiptKey {
	if !rk.override.IsZero() {
		rk.mu.Lock()
		rk.addPubLocked(rk.override.r.pub)
		rk.mu.Unlock()
		return rk.override
	}
	fp := e.keyring().Current()
	rk.mu.Lock()
	k, ok := rk.derived[fp]
	rk.mu.Unlock()
	if ok {
		return k
	}
	k, _ = rk.remember(e.key(fp)) // the current key is never destroyed
	return k
}

// remember derives the receipt key of an engine key and records its
// public half.
func (rk *receiptKeys) remember(key anonymize.Key) (ReceiptKey, error) {
	fp := key.Fingerprint()
	rk.mu.Lock()
	defer rk.mu.Unlock()
	if k, ok := rk.derived[fp]; ok {
		return k, nil
	}
	k, err := deriveReceiptKey(key)
	if err != nil {
		return ReceiptKey{}, err
	}
	if rk.derived == nil {
		rk.derived = map[anonymize.Fingerprint]ReceiptKey{}
	}
	rk.derived[fp] = k
	rk.addPubLocked(k.r.pub)
	return k, nil
}

func (rk *receiptKeys) addPubLocked(pub ed25519.PublicKey) {
	for _, p := range rk.pubs {
		if bytes.Equal(p, pub) {
			return
		}
	}
	rk.pubs = append(rk.pubs, bytes.Clone(pub))
}

// history returns every receipt public key recorded, oldest first.
func (rk *receiptKeys) history() []ed25519.PublicKey {
	rk.mu.Lock()
	defer rk.mu.Unlock()
	out := make([]ed25519.PublicKey, len(rk.pubs))
	for i, p := range rk.pubs {
		out[i] = bytes.Clone(p)
	}
	return out
}

// merge records public keys read from a snapshot: older than any this
// process derived, so they go first.
func (rk *receiptKeys) merge(pubs []ed25519.PublicKey) {
	rk.mu.Lock()
	defer rk.mu.Unlock()
	mine := rk.pubs
	rk.pubs = nil
	for _, p := range pubs {
		if len(p) == ed25519.PublicKeySize {
			rk.addPubLocked(p)
		}
	}
	for _, p := range mine {
		rk.addPubLocked(p)
	}
}
