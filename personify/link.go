package personify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/personify-go/personify/anonymize"
)

// MaxLinked is the most identifiers one person may have linked: an email
// or two, a phone, an account ID and a dozen devices. Link refuses to go
// past it with ErrTooManyLinked; Unlink makes room.
const MaxLinked = 16

var (
	// ErrTooManyLinked is returned by Link when the person would have more
	// than MaxLinked identifiers. Nothing was changed.
	ErrTooManyLinked = errors.New("personify: too many identifiers for one person")
	// ErrNotLinked is returned by Unlink for an identifier that is not
	// stored, or that is the only one its person has (Forget erases a
	// person; Unlink only separates identifiers).
	ErrNotLinked = errors.New("personify: the identifier is not linked to another")
	// ErrDoNotReAdd is returned by Link when one of the identifiers
	// belongs to a person who was forgotten and asked never to be added
	// again (ForgetOptions.DoNotReAdd). Nothing was changed.
	ErrDoNotReAdd = errors.New("personify: the person asked never to be added again")
)

// LinkedPseudonym is one pseudonym of a person, with the kind of
// identifier it was computed from (the kind is not personal data) and the
// fingerprint of the key that computed it. Explain lists them, receipts
// list every one erased, and LinkPseudonyms takes them.
//
// A LinkedPseudonym is a plain value, safe to share between goroutines;
// its zero value names nothing (Kind 0 is not a valid kind).
type LinkedPseudonym struct {
	Kind      anonymize.Kind        `json:"kind"`
	Pseudonym anonymize.Pseudonym   `json:"pseudonym"`
	Key       anonymize.Fingerprint `json:"key"` // the zero fingerprint in LinkPseudonyms: the current key
}

// linkID is one identifier named in a link change: its kind and its
// pseudonym under every key in force, current first (Link), or under the
// current key only (LinkPseudonyms).
type linkID struct {
	kind anonymize.Kind
	kps  []anonymize.KeyedPseudonym
}

// Link joins identifiers of one person: an anonymous device cookie and the
// account that signed in on it, the email the warehouse knows and the
// phone number the call centre knows. From then on every one of them
// finds the person: In and Segments by any of their pseudonyms answer for
// the person, SetConsent and Suppress through any of them set the
// person's state, Explain lists them all, and Forget through any of them
// erases every one (see the package doc, "One person, many identifiers",
// for the rules: who is merged, who moves, what wins).
//
// Link needs at least two identifiers, one of them an email, phone number
// or user ID; identifiers not stored yet are added to the person. It
// returns ErrTooManyLinked past MaxLinked identifiers and ErrDoNotReAdd
// for a person who asked never to be added again; in both cases nothing
// changes. Linking identifiers already linked is not an error.
func (e *Engine) Link(ids ...anonymize.Identifier) error {
	return e.LinkContext(context.Background(), ids...)
}

// LinkContext is Link with a context that bounds how long it waits (see
// the package doc).
func (e *Engine) LinkContext(ctx context.Context, ids ...anonymize.Identifier) error {
	group := make([]linkID, len(ids))
	for i, id := range ids {
		kps, err := e.keyedPseudonyms(id)
		if err != nil {
			if len(ids) == 1 {
				return err
			}
			return fmt.Errorf("personify: identifier %d of %d (counting from 0): %w", i, len(ids), err) // the index, never the text
		}
		group[i] = linkID{kind: id.Kind(), kps: kps}
	}
	_, err := e.commit(ctx, &op{kind: opLink, at: e.now(), links: [][]linkID{group}})
	return err
}

// LinkPseudonyms links, for each person, pseudonyms computed elsewhere
// under the engine's current key (an identity table pseudonymized in a
// data warehouse with anonymize.HMACSHA256, say): people[i] lists person
// i's pseudonyms with their kinds, by the rules of Link. A LinkedPseudonym's
// Key may be zero (the current key) or the current key's fingerprint.
// People who asked never to be added again are skipped, like AddPseudonyms
// skips them; a person past MaxLinked stops the call with ErrTooManyLinked,
// the people before them linked.
func (e *Engine) LinkPseudonyms(people ...[]LinkedPseudonym) error {
	return e.LinkPseudonymsContext(context.Background(), people...)
}

// LinkPseudonymsContext is LinkPseudonyms with a context that bounds how
// long it waits (see the package doc).
func (e *Engine) LinkPseudonymsContext(ctx context.Context, people ...[]LinkedPseudonym) error {
	if e.closed.Load() {
		return ErrClosed
	}
	cur := e.keyring().Current()
	groups := make([][]linkID, len(people))
	for i, ps := range people {
		groups[i] = make([]linkID, len(ps))
		for j, lp := range ps {
			if !lp.Key.IsZero() && lp.Key != cur {
				return fmt.Errorf("%w: person %d: pseudonym %d was computed under key %s, not the current key %s",
					ErrKeyChanged, i, j, lp.Key, cur)
			}
			groups[i][j] = linkID{kind: lp.Kind, kps: []anonymize.KeyedPseudonym{{Pseudonym: lp.Pseudonym, Key: cur}}}
		}
	}
	_, err := e.commit(ctx, &op{kind: opLink, at: e.now(), flag: true, links: groups})
	return err
}

// Unlink detaches one identifier from the person it is linked to (a
// mistaken link, a phone number given up and reassigned): afterwards the
// identifier is a stranger, stored nowhere, and the person keeps
// everything else. It returns ErrNotLinked if the identifier is not
// stored or is its person's only one.
func (e *Engine) Unlink(id anonymize.Identifier) error {
	return e.UnlinkContext(context.Background(), id)
}

// UnlinkContext is Unlink with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) UnlinkContext(ctx context.Context, id anonymize.Identifier) error {
	kps, err := e.keyedPseudonyms(id)
	if err != nil {
		return err
	}
	_, err = e.commit(ctx, &op{kind: opUnlink, at: e.now(), people: [][]anonymize.KeyedPseudonym{kps}})
	return err
}

func (e *Engine) applyLink(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	for _, g := range o.links {
		for _, id := range g {
			check := e.checkKeysLocked // by pseudonym: one, under the current key
			if !o.flag {
				check = func(kps []anonymize.KeyedPseudonym) error { return e.checkKeyedLocked(o, kps, false) }
			}
			if err := check(id.kps); err != nil {
				return opResult{}, err
			}
		}
	}
	linked, skipped := 0, 0
	for i, g := range o.links {
		err := e.linkLocked(g, o.flag)
		switch {
		case err == nil:
			linked++
		case o.flag && errors.Is(err, ErrDoNotReAdd):
			skipped++
		case len(o.links) == 1:
			return opResult{}, err
		default:
			e.event("link", slog.Int("people", linked), slog.Int("skipped_do_not_re_add", skipped))
			return opResult{n: linked}, fmt.Errorf("personify: person %d of %d: %w (the %d before it were linked)", i, len(o.links), err, i)
		}
	}
	e.maybeCompactLocked()
	attrs := []slog.Attr{slog.Int("people", linked), slog.Int("skipped_do_not_re_add", skipped)}
	if len(o.links) == 1 {
		for _, id := range o.links[0] {
			attrs = append(attrs, slog.Group("id", slog.String("kind", id.kind.String()), pseudonymAttr(id.kps[0].Pseudonym)))
		}
	}
	e.event("link", attrs...)
	return opResult{n: linked}, nil
}

func (e *Engine) applyUnlink(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	kps := o.person()
	if err := e.checkKeyedLocked(o, kps, false); err != nil {
		return opResult{}, err
	}
	ord, slot, ok := e.findLocked(kps)
	if !ok {
		return opResult{}, fmt.Errorf("%w: it is not stored", ErrNotLinked)
	}
	if _, ok := e.links[ord]; !ok {
		return opResult{}, fmt.Errorf("%w: it is the person's only identifier (Forget erases a person)", ErrNotLinked)
	}
	e.detachSlotLocked(ord, slot)
	e.maybeCompactLocked()
	e.event("unlink", pseudonymAttr(slot))
	return opResult{}, nil
}

// validateLink checks a link change: per person 2 to MaxLinked
// identifiers of valid kinds, one at least not a device, no pseudonym
// twice, each keyed as checkPeople requires (by pseudonym: exactly one,
// under a key).
func (o *op) validateLink() error {
	if len(o.links) == 0 {
		return fmt.Errorf("%w: a link of no one", ErrInvalidChange)
	}
	for i, g := range o.links {
		if len(g) > MaxLinked {
			return fmt.Errorf("%w: %w: link %d names %d identifiers, at most %d", ErrInvalidChange, ErrTooManyLinked, i, len(g), MaxLinked)
		}
		if len(g) < 2 {
			return fmt.Errorf("%w: link %d names %d identifier: a link joins 2 to %d", ErrInvalidChange, i, len(g), MaxLinked)
		}
		strong := false
		people := make([][]anonymize.KeyedPseudonym, len(g))
		for j, id := range g {
			if id.kind < anonymize.KindEmail || id.kind > anonymize.KindDeviceID {
				return fmt.Errorf("%w: link %d: identifier %d has kind %d", ErrInvalidChange, i, j, uint8(id.kind))
			}
			if o.flag && len(id.kps) != 1 {
				return fmt.Errorf("%w: link %d: pseudonym %d is given under %d keys, not one", ErrInvalidChange, i, j, len(id.kps))
			}
			strong = strong || !isDevice(id.kind)
			people[j] = id.kps
			for _, prev := range g[:j] {
				if len(prev.kps) > 0 && len(id.kps) > 0 && prev.kps[0].Pseudonym == id.kps[0].Pseudonym {
					return fmt.Errorf("%w: link %d names pseudonym %s twice", ErrInvalidChange, i, id.kps[0].Pseudonym)
				}
			}
		}
		if !strong {
			return fmt.Errorf("%w: link %d names only device IDs: a device is linked to a person, by an email, phone number or user ID", ErrInvalidChange, i)
		}
		if err := checkPeople(people, false); err != nil {
			return inContext(err, "link %d", i)
		}
	}
	return nil
}
