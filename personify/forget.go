package personify

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// ForgetOptions adjusts an erasure.
type ForgetOptions struct {
	// DoNotReAdd keeps the person's pseudonyms (and nothing else) on a list
	// that stops them from being added to any segment again, for people who
	// ask to be erased and never profiled again.
	DoNotReAdd bool
	// RequestID is the caller's reference for the request (a ticket
	// number), recorded in the receipt. It must not contain personal data.
	RequestID string
}

// Receipt proves an erasure: what was removed, when, under which key, signed
// with Ed25519 so that the person or an auditor can check it with
// VerifyReceipt and the engine's public key, without any secret. It holds
// pseudonyms and counts, never the identifier.
type Receipt struct {
	ID         string                     `json:"id"`
	RequestID  string                     `json:"request_id,omitempty"`
	Pseudonyms []anonymize.KeyedPseudonym `json:"pseudonyms"` // every pseudonym looked up, one per key
	Segments   []ErasedSegment            `json:"segments"`   // memberships removed, by segment
	// Consents and Suppressions count the consent records and suppression
	// entries removed.
	Consents     int                   `json:"consents"`
	Suppressions int                   `json:"suppressions"`
	DoNotReAdd   bool                  `json:"do_not_re_add"`
	Key          anonymize.Fingerprint `json:"key"` // the current key when erased
	// ErasedAt is when the person vanished from every lookup; DurableAt when
	// the erasure was recorded durably; PurgeBy when no file holds the
	// person any more. In memory the three are equal.
	ErasedAt  time.Time `json:"erased_at"`
	DurableAt time.Time `json:"durable_at"`
	PurgeBy   time.Time `json:"purge_by"`
	Signature []byte    `json:"signature"`
	// Seq locates the erasure in a durable engine's log, for Engine.Purged;
	// zero in memory. It is a locator, not a claim: the signature does not
	// cover it.
	Seq uint64 `json:"seq,omitempty"`
}

// ErasedSegment is a segment the erased person was removed from.
type ErasedSegment struct {
	Name        string `json:"name"`
	Memberships int    `json:"memberships"`
}

// Forget erases the person identified by id: under every key in the
// keyring, from every segment, consent and suppression list, at once. See
// ForgetWith.
func (e *Engine) Forget(id anonymize.Identifier) (Receipt, error) {
	return e.ForgetWith(id, ForgetOptions{})
}

// ForgetWith is Forget with options. Afterwards In, Segments, Audience and
// Explain show nothing of the person, and the ordinal that held them is free
// for reuse. Forgetting someone who is not stored returns a receipt that
// says nothing was removed.
func (e *Engine) ForgetWith(id anonymize.Identifier, opts ForgetOptions) (Receipt, error) {
	kps, err := e.allKeyedPseudonyms(id)
	if err != nil {
		return Receipt{}, err
	}
	var rid [16]byte
	_, _ = rand.Read(rid[:])
	res, err := e.commit(&op{kind: opForget, at: e.now(), flag: opts.DoNotReAdd, people: [][]anonymize.KeyedPseudonym{kps}, receipt: hex.EncodeToString(rid[:])})
	if err != nil {
		return Receipt{}, err
	}
	r := Receipt{ID: hex.EncodeToString(rid[:]), RequestID: opts.RequestID, Pseudonyms: kps,
		Segments: []ErasedSegment{}, DoNotReAdd: opts.DoNotReAdd, Key: e.ring.Current(), Seq: res.seq,
		Consents: res.erased.consents, Suppressions: res.erased.suppressions}
	counts := map[string]int{}
	for _, s := range res.erased.segments {
		counts[s]++
	}
	for name, n := range counts {
		r.Segments = append(r.Segments, ErasedSegment{Name: name, Memberships: n})
	}
	slices.SortFunc(r.Segments, func(a, b ErasedSegment) int { return strings.Compare(a.Name, b.Name) })
	r.ErasedAt = e.now().UTC()
	r.DurableAt, r.PurgeBy = r.ErasedAt, r.ErasedAt
	switch {
	case e.store != nil:
		r.PurgeBy = r.DurableAt.Add(e.store.purgeWithin)
		e.store.schedulePurge()
	case e.replica != nil:
		if pg, ok := e.replica.j.(Purger); ok {
			r.PurgeBy = r.DurableAt.Add(pg.PurgeWithin())
			pg.SchedulePurge()
		}
	}
	r.Signature = ed25519.Sign(e.receiptKey, r.SignedMessage())
	return r, nil
}

func (e *Engine) applyForget(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	var out erased
	kps := o.person()
	for _, kp := range kps {
		ord, p, ok := e.resolveLocked(kp.Pseudonym)
		if !ok {
			continue
		}
		gone := e.dropPersonLocked(p, ord)
		out.segments = append(out.segments, gone.segments...)
		out.consents += gone.consents
		out.suppressions += gone.suppressions
	}
	for _, kp := range kps {
		if o.flag {
			e.doNotReAdd[kp.Pseudonym] = kp.Key
		} else {
			delete(e.doNotReAdd, kp.Pseudonym)
		}
	}
	e.maybeCompactLocked()
	attrs := []slog.Attr{slog.String("receipt", o.receipt), slog.Int("segments", len(out.segments)),
		slog.Int("consents", out.consents), slog.Int("suppressions", out.suppressions), slog.Bool("do_not_re_add", o.flag)}
	for _, kp := range kps {
		attrs = append(attrs, pseudonymAttr(kp.Pseudonym))
	}
	e.event("forget", attrs...)
	return opResult{erased: out}, nil
}

// SignedMessage returns the bytes the signature covers: a canonical text
// form of every field but the signature, one "name: value" line each, so
// that any Ed25519 implementation can verify a receipt:
//
//	personify-receipt-v1
//	id: <hex>
//	request-id: <Go-quoted string>
//	pseudonyms: <key>:<pseudonym> ...    (space separated, in order)
//	segments: <Go-quoted name>=<count> ... (space separated, by name)
//	consents: <n>
//	suppressions: <n>
//	do-not-re-add: <true|false>
//	key: <fingerprint>
//	erased-at: <RFC 3339, nanoseconds, UTC>
//	durable-at: <same>
//	purge-by: <same>
func (r Receipt) SignedMessage() []byte {
	var b strings.Builder
	b.WriteString("personify-receipt-v1\n")
	fmt.Fprintf(&b, "id: %s\nrequest-id: %s\npseudonyms:", r.ID, strconv.Quote(r.RequestID))
	for _, p := range r.Pseudonyms {
		fmt.Fprintf(&b, " %s:%s", p.Key, p.Pseudonym)
	}
	b.WriteString("\nsegments:")
	for _, s := range r.Segments {
		fmt.Fprintf(&b, " %s=%d", strconv.Quote(s.Name), s.Memberships)
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	fmt.Fprintf(&b, "\nconsents: %d\nsuppressions: %d\ndo-not-re-add: %t\nkey: %s\nerased-at: %s\ndurable-at: %s\npurge-by: %s\n",
		r.Consents, r.Suppressions, r.DoNotReAdd, r.Key, ts(r.ErasedAt), ts(r.DurableAt), ts(r.PurgeBy))
	return []byte(b.String())
}

// VerifyReceipt checks a receipt's signature against the public key of the
// engine that issued it (Engine.ReceiptPublicKey). It returns ErrBadReceipt
// if the receipt was altered or signed by another key.
func VerifyReceipt(r Receipt, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key has %d bytes, want %d", ErrBadReceipt, len(pub), ed25519.PublicKeySize)
	}
	if !ed25519.Verify(pub, r.SignedMessage(), r.Signature) {
		return fmt.Errorf("%w: receipt %s", ErrBadReceipt, r.ID)
	}
	return nil
}
