package personify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
)

// ForgetOptions adjusts an erasure.
//
// The zero value is a plain erasure: no request ID, and the person may be
// added again. It is a plain value, read once by the call, safe for
// concurrent reads.
type ForgetOptions struct {
	// DoNotReAdd keeps the person's pseudonyms (and nothing else) on a list
	// that stops them from being added to any segment again, for people who
	// ask to be erased and never profiled again. The list holds their
	// pseudonym under every key the engine holds (current, previous and
	// upcoming), and gains the new one whenever they are written by
	// identifier during a rotation's grace period; a bulk load by pseudonym
	// under a key that was unknown at the erasure, of a person never seen
	// by identifier since, is the one case it cannot recognize (give the
	// next key in Options.UpcomingKeys before erasing, to close it). The
	// other identifiers of a linked person (Engine.Link) are listed under
	// the keys they were stored under only: the engine holds their
	// pseudonyms, not the identifiers, so it cannot compute them under an
	// upcoming key; such an identifier joins the list under a new key when
	// it is written by identifier during the grace period, and otherwise
	// leaves it with the old key.
	DoNotReAdd bool `json:"do_not_re_add"`
	// RequestID is the caller's reference for the request (a ticket
	// number), recorded in the signed receipt. It must not hold personal
	// data: it is limited to 1 to 64 characters of [A-Za-z0-9._:/-] (no
	// email address, no "+" phone number, no spaces), and a value with no
	// letter and 7 digits or more, or with a run of 9 digits or more, is
	// refused as a possible phone number: "ticket-4711", "DSAR/2026/0042"
	// pass. A name ("alice.smith") cannot be told from a ticket: do not
	// use one. Empty is allowed.
	RequestID string `json:"request_id,omitempty"`
}

// maxRequestIDLen bounds ForgetOptions.RequestID.
const maxRequestIDLen = 64

// checkRequestID enforces ForgetOptions.RequestID's safe form. The error
// (ErrInvalidChange) does not quote the value: it may be exactly what must
// not be stored.
func checkRequestID(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > maxRequestIDLen {
		return fmt.Errorf("%w: ForgetOptions.RequestID has %d bytes, at most %d", ErrInvalidChange, len(s), maxRequestIDLen)
	}
	letters, digits, run, longest := false, 0, 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			digits, run = digits+1, run+1
			longest = max(longest, run)
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_':
			letters = true
		case c == '.', c == ':', c == '/', c == '-':
		default:
			return fmt.Errorf("%w: ForgetOptions.RequestID: character %d is not one of [A-Za-z0-9._:/-] (an email address or a name is personal data: use a ticket number)", ErrInvalidChange, i+1)
		}
		run = 0
	}
	if !letters && digits >= 7 || longest >= 9 {
		return fmt.Errorf("%w: ForgetOptions.RequestID may hold a phone number (%d digits): use a ticket reference such as \"ticket-4711\"", ErrInvalidChange, digits)
	}
	return nil
}

// Forget erases the person identified by id: under every key in the
// keyring, from every segment, consent and suppression list, at once. See
// ForgetWith.
func (e *Engine) Forget(id anonymize.Identifier) (Receipt, error) {
	return e.ForgetContext(context.Background(), id, ForgetOptions{})
}

// ForgetWith is Forget with options. Afterwards In, Segments, Audience and
// Explain show nothing of the person, and the ordinal that held them is free
// for reuse. Forgetting someone who is not stored returns a receipt that
// says nothing was removed.
//
// The receipt is issued only once the erasure is complete on this engine
// under every key it holds data under (current and previous); an erasure
// computed under a keyring that changed before it was applied (a rotation
// in between, on this engine or, in a fleet, on another replica) is refused
// with ErrKeyChanged and can be retried. In durable and fleet mode the
// erasure's deadline for physical deletion (Receipt.PurgeBy) is part of the
// logged change, so a restart neither forgets nor delays it.
func (e *Engine) ForgetWith(id anonymize.Identifier, opts ForgetOptions) (Receipt, error) {
	return e.ForgetContext(context.Background(), id, opts)
}

// ForgetContext is ForgetWith with a context that bounds how long it waits
// (see the package doc). A receipt is returned only for an erasure that
// completed: if ctx ends first, there is none.
func (e *Engine) ForgetContext(ctx context.Context, id anonymize.Identifier, opts ForgetOptions) (Receipt, error) {
	if err := checkRequestID(opts.RequestID); err != nil {
		return Receipt{}, err
	}
	kps, err := e.allKeyedPseudonyms(id)
	if err != nil {
		return Receipt{}, err
	}
	var also []anonymize.KeyedPseudonym
	if opts.DoNotReAdd {
		// The wish must outlive a rotation to a key this engine already
		// holds: list the person under the upcoming keys as well. (A
		// rotation to a key unknown now is covered when the person is next
		// written by identifier during its grace period; see DoNotReAdd.)
		if also, err = e.upcomingPseudonyms(id); err != nil {
			return Receipt{}, err
		}
	}
	return e.forgetKeyed(ctx, kps, also, opts)
}

// forgetKeyed is ForgetContext of the person stored under kps; also are
// their pseudonyms under the upcoming keys, for DoNotReAdd.
func (e *Engine) forgetKeyed(ctx context.Context, kps, also []anonymize.KeyedPseudonym, opts ForgetOptions) (Receipt, error) {
	var rid [16]byte
	_, _ = rand.Read(rid[:])
	o := &op{kind: opForget, at: e.now(), flag: opts.DoNotReAdd, people: [][]anonymize.KeyedPseudonym{kps}, receipt: hex.EncodeToString(rid[:])}
	if within := e.purgeWithin(); within > 0 {
		o.purgeBy = o.at.Add(within)
		if last := maxChangeTime.Add(-time.Nanosecond); o.purgeBy.After(last) {
			o.purgeBy = last // the last moment a change can carry
		}
	}
	if opts.DoNotReAdd {
		o.also = also
	}
	res, err := e.commit(ctx, o)
	if err != nil {
		return Receipt{}, err
	}
	r := Receipt{Version: receiptVersion, ID: hex.EncodeToString(rid[:]), RequestID: opts.RequestID, Pseudonyms: kps,
		Segments: []ErasedSegment{}, DoNotReAdd: opts.DoNotReAdd, Key: res.key, Seq: res.seq,
		Consents: res.erased.consents, Suppressions: res.erased.suppressions, Linked: res.erased.linked,
		Counters: res.erased.counters}
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
	if !o.purgeBy.IsZero() {
		r.PurgeBy = o.purgeBy.UTC()
	}
	signer := e.receipt.current(e)
	r.SigningKey = hex.EncodeToString(signer.r.pub)
	r.Signature = signer.sign(r.SignedMessage())
	return r, nil
}

// upcomingPseudonyms returns id's pseudonyms under the keys the engine
// holds that are not in its keyring (Options.UpcomingKeys).
func (e *Engine) upcomingPseudonyms(id anonymize.Identifier) ([]anonymize.KeyedPseudonym, error) {
	inRing := map[anonymize.Fingerprint]bool{}
	for _, k := range e.ringKeys() {
		inRing[k.Fingerprint] = true
	}
	var out []anonymize.KeyedPseudonym
	for fp, k := range e.keySet() {
		if inRing[fp] || k.IsZero() {
			continue
		}
		newHasher := e.hasher
		if newHasher == nil {
			newHasher = anonymize.SipHash
		}
		p, err := newHasher(k).Pseudonym(id)
		if err != nil {
			return nil, err
		}
		out = append(out, anonymize.KeyedPseudonym{Pseudonym: p, Key: fp})
	}
	slices.SortFunc(out, func(a, b anonymize.KeyedPseudonym) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	return out, nil
}

// purgeWithin is the deadline for physical erasure a durable or fleet
// engine promises; zero in memory, where Forget is complete when it
// returns.
func (e *Engine) purgeWithin() time.Duration {
	switch {
	case e.store != nil:
		return e.store.purgeWithin
	case e.replica != nil:
		if pg, ok := e.replica.j.(fleet.Purger); ok {
			return pg.PurgeWithin()
		}
	}
	return 0
}

// ErrKeyChanged is returned by a write (an erasure, most importantly) that
// was computed under a set of keys that changed before the write was
// applied: a key rotation landed in between, on this engine or on another
// replica of a fleet. Nothing was changed; retry the call.
var ErrKeyChanged = errors.New("personify: the keys changed while the change was in flight")

func (e *Engine) applyForget(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	var out erased
	kps := o.person()
	if err := e.checkKeyedLocked(o, kps, true); err != nil {
		return opResult{}, err
	}
	for _, kp := range kps {
		ord, p, ok := e.resolveLocked(kp.Pseudonym)
		if !ok {
			continue
		}
		gone := e.dropPersonLocked(p, ord)
		out.segments = append(out.segments, gone.segments...)
		out.consents += gone.consents
		out.suppressions += gone.suppressions
		out.linked = append(out.linked, gone.linked...)
		out.counters += gone.counters
	}
	listed := append(kps[:len(kps):len(kps)], o.also...)
	for _, l := range out.linked { // every identifier of a linked person
		listed = append(listed, anonymize.KeyedPseudonym{Pseudonym: l.Pseudonym, Key: l.Key})
	}
	for _, kp := range listed {
		if o.flag {
			e.doNotReAdd[kp.Pseudonym] = kp.Key
		} else {
			delete(e.doNotReAdd, kp.Pseudonym)
		}
	}
	if o.seq != 0 && !o.purgeBy.IsZero() {
		p := pendingErasure{seq: o.seq, at: o.at, purgeBy: o.purgeBy}
		e.nextPurgeLocked(e.purgedThrough())
		e.pending = append(e.pending, p)
		if e.schedulePurge != nil {
			e.schedulePurge(p.due())
		}
	}
	e.maybeCompactLocked()
	attrs := []slog.Attr{slog.String("receipt", o.receipt), slog.Int("segments", len(out.segments)),
		slog.Int("consents", out.consents), slog.Int("suppressions", out.suppressions), slog.Bool("do_not_re_add", o.flag)}
	for _, kp := range kps {
		attrs = append(attrs, pseudonymAttr(kp.Pseudonym))
	}
	if len(out.linked) > 0 {
		attrs = append(attrs, slog.Int("linked", len(out.linked)))
	}
	e.event("forget", attrs...)
	return opResult{erased: out, key: e.keyring().Current()}, nil
}

// checkKeyedLocked checks that a change by identifier was computed under
// the keyring in force where it is applied (in the log or the journal,
// the same on every replica): its first pseudonym under the current key,
// and one under every other key whose data it must reach: every key in the
// keyring for an erasure (all), the keys still in their grace period at
// the change's time otherwise. A change computed before a rotation (or a
// grace period's end) it had not seen would otherwise miss the person, or
// make a second entry for them. Changes by pseudonym (no key) and records
// of earlier releases pass.
func (e *Engine) checkKeyedLocked(o *op, kps []anonymize.KeyedPseudonym, all bool) error {
	if o.version < 2 || len(kps) == 0 || kps[0].Key.IsZero() {
		return nil
	}
	if err := e.checkKeysLocked(kps); err != nil {
		return err
	}
	for _, k := range e.ringKeys() {
		if !all && !k.Current && !o.at.Before(k.Until) {
			continue
		}
		if !slices.ContainsFunc(kps, func(kp anonymize.KeyedPseudonym) bool { return kp.Key == k.Fingerprint }) {
			return fmt.Errorf("%w: the change was computed without key %s, which the engine holds data under: retry it", ErrKeyChanged, k.Fingerprint)
		}
	}
	return nil
}

// checkKeysLocked checks that kps starts with the current key's pseudonym
// and names keys of the keyring only: a change naming another key was
// computed before a key left the keyring (or was forged), and would leave
// entries under a key that never expires.
func (e *Engine) checkKeysLocked(kps []anonymize.KeyedPseudonym) error {
	if cur := e.keyring().Current(); kps[0].Key != cur {
		return fmt.Errorf("%w: the change was computed under key %s, but the current key is %s: retry it", ErrKeyChanged, kps[0].Key, cur)
	}
	ring := e.ringKeys()
	for _, kp := range kps[1:] {
		if !slices.ContainsFunc(ring, func(k anonymize.KeyInfo) bool { return k.Fingerprint == kp.Key }) {
			return fmt.Errorf("%w: the change was computed under key %s, which is not in the keyring: retry it", ErrKeyChanged, kp.Key)
		}
	}
	return nil
}

// purgedThrough is the log or journal position up to which every erasure
// is physically complete.
func (e *Engine) purgedThrough() uint64 {
	switch {
	case e.store != nil:
		return e.store.purged.Load()
	case e.replica != nil:
		if pg, ok := e.replica.j.(fleet.Purger); ok {
			return pg.PurgedThrough()
		}
	}
	return 0
}

// nextPurgeLocked drops the erasures the store has physically completed
// (through purged) and returns when the next compaction is due, if one is.
func (e *Engine) nextPurgeLocked(purged uint64) (time.Time, bool) {
	e.pending = slices.DeleteFunc(e.pending, func(p pendingErasure) bool { return p.seq <= purged })
	var due time.Time
	for i, p := range e.pending {
		if d := p.due(); i == 0 || d.Before(due) {
			due = d
		}
	}
	return due, len(e.pending) > 0
}
