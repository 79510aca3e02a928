package personify

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/personify-go/personify/anonymize"
)

// ErrInvalidTime is returned when a change carries a time the engine cannot
// store: before 1970 or after 2261 (a zero time.Time from a broken
// Options.Now, say), or a retention or grace period over 100 years.
var ErrInvalidTime = errors.New("personify: time out of range")

// ErrInvalidChange is wrapped by the error of a change read from a log or a
// journal that does not decode, is not authenticated, or fails the checks
// the API applies to the same change made locally. Such a change is never
// applied; every replica refuses it alike.
var ErrInvalidChange = errors.New("personify: invalid change")

// The range of times a change may carry. The lower bound keeps retention
// arithmetic (Unix nanoseconds, epochs counted from 1970) in range; the
// upper one keeps Unix nanoseconds from overflowing.
var (
	minChangeTime = time.Unix(0, 0).UTC()
	maxChangeTime = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// maxDuration bounds retentions and grace periods: 100 years.
const maxDuration = 100 * 365 * 24 * time.Hour

// maxPurgeWithin bounds the deadline for physical erasure an engine
// promises: 30 days, the month the GDPR allows for an erasure.
const maxPurgeWithin = 30 * 24 * time.Hour

// checkTime reports whether t is in the range a change may carry.
func checkTime(what string, t time.Time) error {
	if t.Before(minChangeTime) || !t.Before(maxChangeTime) {
		return fmt.Errorf("%w: %s is %s, outside 1970-01-01..2261-12-31 (is Options.Now or the time passed in right?)",
			ErrInvalidTime, what, t.UTC().Format(time.RFC3339))
	}
	return nil
}

func checkDuration(what string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%w: %s is %v: it cannot be negative", ErrInvalidDefinition, what, d)
	}
	if d > maxDuration {
		return fmt.Errorf("%w: %s is %v: it must be between 0 and 100 years", ErrInvalidDefinition, what, d)
	}
	return nil
}

func checkDescription(kind, name, desc string) error {
	if len(desc) > maxDescriptionLen {
		return fmt.Errorf("%w: %s %q: Description has %d bytes, at most %d", ErrInvalidDefinition, kind, name, len(desc), maxDescriptionLen)
	}
	if !utf8.ValidString(desc) {
		return fmt.Errorf("%w: %s %q: Description is not valid UTF-8", ErrInvalidDefinition, kind, name)
	}
	return nil
}

// checkPeople checks the people of a change by identifier: each is a
// non-empty list of pseudonyms, one per key, under distinct key
// fingerprints. byPseudonym allows the changes made with pseudonyms only
// (RemovePseudonyms), whose fingerprints are all zero.
func checkPeople(people [][]anonymize.KeyedPseudonym, byPseudonym bool) error {
	for i, kps := range people {
		if len(kps) == 0 {
			return fmt.Errorf("%w: person %d has no pseudonym", ErrInvalidChange, i)
		}
		if byPseudonym && kps[0].Key.IsZero() {
			for _, kp := range kps {
				if !kp.Key.IsZero() {
					return fmt.Errorf("%w: person %d mixes pseudonyms with and without keys", ErrInvalidChange, i)
				}
			}
			continue
		}
		for j, kp := range kps {
			if kp.Key.IsZero() {
				return fmt.Errorf("%w: person %d has a pseudonym under no key", ErrInvalidChange, i)
			}
			for _, q := range kps[:j] {
				if q.Key == kp.Key {
					return fmt.Errorf("%w: person %d has two pseudonyms under key %s", ErrInvalidChange, i, kp.Key)
				}
			}
		}
	}
	return nil
}

// validate checks what the op says on its own, without the engine's state:
// names, models, times, durations, sizes. The local API and every change
// read back from a log or a journal pass the same checks, so a change that
// a replica would refuse is never logged, and a change someone wrote
// straight into a journal is refused by every replica alike.
func (o *op) validate() error {
	if o.kind == 0 || o.kind >= opKindEnd {
		return fmt.Errorf("%w: unknown kind %d", ErrInvalidChange, uint8(o.kind))
	}
	if err := checkTime("the change's time", o.at); err != nil {
		return err
	}
	switch o.kind {
	case opDefinePurpose:
		p := o.purpose
		if err := validName("purpose", p.Name); err != nil {
			return err
		}
		if p.Model != OptIn && p.Model != OptOut {
			return fmt.Errorf("%w: purpose %q: Model must be personify.OptIn or personify.OptOut", ErrInvalidDefinition, p.Name)
		}
		return checkDescription("purpose", p.Name, p.Description)
	case opDefine:
		s := o.seg
		if err := validName("segment", s.Name); err != nil {
			return err
		}
		if s.Purpose == "" {
			return fmt.Errorf("%w: segment %q has no Purpose: every segment needs one (declare it with Engine.DefinePurpose)", ErrUnknownPurpose, s.Name)
		}
		if err := validName("purpose", s.Purpose); err != nil {
			return inContext(err, "segment %q", s.Name)
		}
		if err := checkDuration(fmt.Sprintf("segment %q: Retention", s.Name), s.Retention); err != nil {
			return err
		}
		if s.MinSize < 0 {
			return fmt.Errorf("%w: segment %q: MinSize is %d: it cannot be negative", ErrInvalidDefinition, s.Name, s.MinSize)
		}
		if s.MinSize > math.MaxInt32 {
			return fmt.Errorf("%w: segment %q: MinSize is %d: it must be between 0 and %d", ErrInvalidDefinition, s.Name, s.MinSize, math.MaxInt32)
		}
		return checkDescription("segment", s.Name, s.Description)
	case opDrop, opAddPseudonyms:
		return validName("segment", o.name)
	case opAdd:
		if err := validName("segment", o.name); err != nil {
			return err
		}
		return checkPeople(o.people, false)
	case opRemove:
		if err := validName("segment", o.name); err != nil {
			return err
		}
		return checkPeople(o.people, true)
	case opConsent:
		if err := validName("purpose", o.name); err != nil {
			return err
		}
		return checkPeople(o.people, false)
	case opSuppress:
		if err := checkPeople(o.people, false); err != nil {
			return err
		}
		if len(o.names) > MaxPurposes {
			return fmt.Errorf("%w: suppression for %d purposes, at most %d", ErrInvalidChange, len(o.names), MaxPurposes)
		}
		for _, n := range o.names {
			if err := validName("purpose", n); err != nil {
				return err
			}
		}
	case opForget:
		if err := checkPeople(o.people, false); err != nil {
			return err
		}
		if err := checkPeople([][]anonymize.KeyedPseudonym{o.also}, false); err != nil && len(o.also) > 0 {
			return err
		}
		if !o.purgeBy.IsZero() {
			if err := checkTime("the erasure's purge deadline", o.purgeBy); err != nil {
				return err
			}
			if o.purgeBy.Before(o.at) {
				return fmt.Errorf("%w: the erasure's purge deadline is before the erasure", ErrInvalidChange)
			}
		}
	case opLink:
		return o.validateLink()
	case opDefineCap:
		_, err := checkCap(o.cap)
		return err
	case opDropCap:
		return validName("cap", o.name)
	case opImpressions:
		if err := validName("cap", o.name); err != nil {
			return err
		}
		for i, im := range o.imps {
			if err := checkTime(fmt.Sprintf("impression %d's time", i), time.Unix(0, im.at)); err != nil {
				return err
			}
		}
	case opUnlink:
		return checkPeople(o.people, false)
	case opRotateKey:
		if o.key.IsZero() {
			return fmt.Errorf("%w: key rotation to the zero fingerprint", ErrInvalidChange)
		}
		if err := checkDuration("RotateKey's grace period", o.grace); err != nil {
			return err
		}
	}
	return nil
}
