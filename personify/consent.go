package personify

import (
	"context"
	"log/slog"

	"github.com/personify-go/personify/anonymize"
)

// SetConsent records that the person identified by id granted (true) or
// withdrew (false) consent for purpose. Withdrawing takes effect at once:
// Segments and Audience stop using the person for that purpose.
func (e *Engine) SetConsent(id anonymize.Identifier, purpose string, granted bool) error {
	return e.SetConsentContext(context.Background(), id, purpose, granted)
}

// SetConsentContext is SetConsent with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) SetConsentContext(ctx context.Context, id anonymize.Identifier, purpose string, granted bool) error {
	kps, err := e.keyedPseudonyms(id)
	if err != nil {
		return err
	}
	_, err = e.commit(ctx, &op{kind: opConsent, at: e.now(), name: purpose, flag: granted, people: [][]anonymize.KeyedPseudonym{kps}})
	return err
}

func (e *Engine) applyConsent(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	ps, err := e.purposeLocked(o.name)
	if err != nil {
		return opResult{}, err
	}
	kps := o.person()
	if len(kps) == 0 {
		return opResult{}, nil
	}
	if err := e.checkKeyedLocked(o, kps, false); err != nil {
		return opResult{}, err
	}
	granted := o.flag
	ord, p := e.resolveForWrite(kps)
	bit := uint64(1) << ps.bit
	if granted {
		ps.granted.Add(ord)
		ps.denied.Remove(ord)
	} else {
		ps.denied.Add(ord)
		ps.granted.Remove(ord)
	}
	e.setStateLocked(p, func(s *privState) {
		s.granted, s.denied = s.granted&^bit, s.denied&^bit
		if granted {
			s.granted |= bit
		} else {
			s.denied |= bit
		}
	})
	if !granted {
		e.dropCountsLocked(ord, ps, nil) // nothing counted or kept without consent (after the state is published)
	}
	e.maybeCompactLocked()
	e.event("consent", pseudonymAttr(p), slog.String("purpose", o.name), slog.Bool("granted", granted))
	return opResult{}, nil
}

// consentState describes a person's consent for a purpose.
type consentState uint8

const (
	consentNotGiven consentState = iota
	consentGranted
	consentWithdrawn
)

func (c consentState) String() string {
	return [...]string{"not given", "granted", "withdrawn"}[c]
}

func (p *purposeState) consentOf(ord uint32) consentState {
	switch {
	case p.granted.Contains(ord):
		return consentGranted
	case p.denied.Contains(ord):
		return consentWithdrawn
	}
	return consentNotGiven
}

// allows reports whether the purpose may use the person's data: not
// suppressed, and consent as the model (or, for sensitive data, explicit
// opt-in) requires.
func (e *Engine) allowsLocked(p *purposeState, ord uint32, sensitive bool) bool {
	if e.suppressedAll.Contains(ord) || p.suppressed.Contains(ord) {
		return false
	}
	switch c := p.consentOf(ord); {
	case sensitive || p.Model == OptIn:
		return c == consentGranted
	default:
		return c != consentWithdrawn
	}
}
