package personify

import (
	"context"
	"fmt"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// Person names the person one identifier stands for by that identifier's
// pseudonyms under the engine's keys, without the identifier: what a
// service hands to something that must act for the person later and must
// not carry their email or phone number (a preference center's signed
// link, a queued erasure). Engine.Person computes it; ExplainPerson,
// SetConsentPerson, SuppressPerson, UnsuppressPerson and ForgetPerson act
// on it exactly as Explain, SetConsent, Suppress, Unsuppress and Forget
// act on the identifier.
//
// A Person is valid while the engine's keyring stays as it was: after a
// rotation, or once a previous key leaves the keyring, those calls refuse
// it with ErrKeyChanged (it would miss data held under the new key), and
// a new one must be computed from the identifier. Its pseudonyms are
// keyed hashes, not secrets, but they identify the person to anyone who
// can query the engine: hand one only to the person or a trusted party,
// signed and short-lived.
//
// The zero Person names no one: the calls refuse it with
// ErrInvalidChange. A Person is a plain value, safe for concurrent reads.
type Person struct {
	// Kind is the identifier's kind (email, phone, user ID, device ID).
	Kind anonymize.Kind `json:"kind"`
	// Pseudonyms are the identifier's pseudonyms under every key of the
	// keyring, the current key's first.
	Pseudonyms []anonymize.KeyedPseudonym `json:"pseudonyms"`
	// Upcoming are its pseudonyms under Options.UpcomingKeys, so that an
	// erasure with DoNotReAdd outlives a rotation to one of them.
	Upcoming []anonymize.KeyedPseudonym `json:"upcoming,omitempty"`
}

// Person returns the Person that id stands for under the engine's keys
// now. It fails as Explain does for an identifier that does not normalize
// (anonymize.ErrInvalidIdentifier) or a key the engine lacks.
func (e *Engine) Person(id anonymize.Identifier) (Person, error) {
	kps, err := e.allKeyedPseudonyms(id)
	if err != nil {
		return Person{}, err
	}
	up, err := e.upcomingPseudonyms(id)
	if err != nil {
		return Person{}, err
	}
	return Person{Kind: id.Kind(), Pseudonyms: kps, Upcoming: up}, nil
}

// check refuses a Person that names no one or no valid kind.
func (p Person) check() error {
	if p.Kind < anonymize.KindEmail || p.Kind > anonymize.KindDeviceID {
		return fmt.Errorf("%w: the person has no valid identifier kind", ErrInvalidChange)
	}
	if len(p.Pseudonyms) == 0 || len(p.Pseudonyms) > maxPersonKeys {
		return fmt.Errorf("%w: the person must name 1 to %d pseudonyms, one per key", ErrInvalidChange, maxPersonKeys)
	}
	for i, kp := range p.Pseudonyms {
		if kp.Key.IsZero() {
			return fmt.Errorf("%w: the person's pseudonym %d names no key", ErrInvalidChange, i)
		}
		for _, q := range p.Pseudonyms[:i] {
			if q.Key == kp.Key {
				return fmt.Errorf("%w: the person names key %s twice", ErrInvalidChange, kp.Key)
			}
		}
	}
	if len(p.Upcoming) > maxPersonKeys {
		return fmt.Errorf("%w: the person names more than %d upcoming keys", ErrInvalidChange, maxPersonKeys)
	}
	return nil
}

// maxPersonKeys bounds the keys a Person may name: far more than a keyring
// holds in practice (the current key and those in their grace period).
const maxPersonKeys = 64

// inGrace returns the pseudonyms of p under the keys whose grace period
// has not ended at now, the current key's first: what a write by
// identifier computes (a key past its grace holds data only until Expire
// destroys it, and a write must not add to it).
func (e *Engine) inGrace(p Person, now time.Time) []anonymize.KeyedPseudonym {
	ring := e.ringKeys()
	out := make([]anonymize.KeyedPseudonym, 0, len(p.Pseudonyms))
	for i, kp := range p.Pseudonyms {
		keep := i == 0 // the current key's, or a stale first key the commit refuses
		for _, k := range ring {
			if k.Fingerprint == kp.Key && (k.Current || now.Before(k.Until)) {
				keep = true
			}
		}
		if keep {
			out = append(out, kp)
		}
	}
	return out
}

// ExplainPerson is Explain of the person p names. It refuses a Person
// computed under another keyring with ErrKeyChanged.
func (e *Engine) ExplainPerson(p Person) (Report, error) {
	if err := p.check(); err != nil {
		return Report{}, err
	}
	if e.closed.Load() {
		return Report{}, ErrClosed
	}
	return e.explainKeyed(p.Pseudonyms, p.Kind, true)
}

// SetConsentPerson is SetConsentContext of the person p names.
func (e *Engine) SetConsentPerson(ctx context.Context, p Person, purpose string, granted bool) error {
	if err := p.check(); err != nil {
		return err
	}
	now := e.now()
	_, err := e.commit(ctx, &op{kind: opConsent, at: now, name: purpose, flag: granted, people: [][]anonymize.KeyedPseudonym{e.inGrace(p, now)}})
	return err
}

// SuppressPerson is SuppressContext of the person p names.
func (e *Engine) SuppressPerson(ctx context.Context, p Person, purposes ...string) error {
	return e.suppressPerson(ctx, p, true, purposes)
}

// UnsuppressPerson is UnsuppressContext of the person p names.
func (e *Engine) UnsuppressPerson(ctx context.Context, p Person, purposes ...string) error {
	return e.suppressPerson(ctx, p, false, purposes)
}

func (e *Engine) suppressPerson(ctx context.Context, p Person, on bool, purposes []string) error {
	if err := p.check(); err != nil {
		return err
	}
	now := e.now()
	_, err := e.commit(ctx, &op{kind: opSuppress, at: now, flag: on, names: purposes, people: [][]anonymize.KeyedPseudonym{e.inGrace(p, now)}})
	return err
}

// ForgetPerson is ForgetContext of the person p names: the receipt lists
// p's pseudonyms. It refuses a Person computed under another keyring with
// ErrKeyChanged, before anything is erased.
func (e *Engine) ForgetPerson(ctx context.Context, p Person, opts ForgetOptions) (Receipt, error) {
	if err := p.check(); err != nil {
		return Receipt{}, err
	}
	if err := checkRequestID(opts.RequestID); err != nil {
		return Receipt{}, err
	}
	if e.closed.Load() {
		return Receipt{}, ErrClosed
	}
	return e.forgetKeyed(ctx, p.Pseudonyms, p.Upcoming, opts)
}
