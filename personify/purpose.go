package personify

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/personify-go/personify/segment"
)

// ConsentModel says what a purpose allows before a person has said anything.
//
// Its zero value is no model, which DefinePurpose refuses: say OptIn or
// OptOut. A ConsentModel is a plain value, safe to share between goroutines.
type ConsentModel uint8

const (
	// OptIn: nothing is allowed until the person grants consent.
	OptIn ConsentModel = iota + 1
	// OptOut: allowed until the person withdraws consent.
	OptOut
)

func (m ConsentModel) String() string {
	switch m {
	case OptIn:
		return "opt-in"
	case OptOut:
		return "opt-out"
	}
	return fmt.Sprintf("ConsentModel(%d)", uint8(m))
}

// MarshalText encodes the model as "opt-in" or "opt-out".
func (m ConsentModel) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText decodes "opt-in" or "opt-out", so that a Report read back
// from JSON has its models.
func (m *ConsentModel) UnmarshalText(b []byte) error {
	switch string(b) {
	case "opt-in":
		*m = OptIn
	case "opt-out":
		*m = OptOut
	default:
		return fmt.Errorf("personify: a consent model of %d bytes that is neither \"opt-in\" nor \"opt-out\"", len(b)) // not quoted: it may be anything
	}
	return nil
}

// MaxPurposes is the most purposes an engine holds.
const MaxPurposes = 64

// Purpose is what data may be used for, agreed with the people it is about:
// "personalization", "email-marketing", "analytics". Every segment has one,
// and consent is given or withdrawn per purpose.
//
// The zero Purpose has no name, which DefinePurpose refuses. A Purpose is a
// plain value, safe to share between goroutines.
type Purpose struct {
	Name        string       `json:"name"`        // 1 to 128 characters of [A-Za-z0-9_.:-]
	Model       ConsentModel `json:"model"`       // OptIn or OptOut
	Description string       `json:"description"` // shown to people in Explain
}

type purposeState struct {
	Purpose
	bit        uint8
	granted    *segment.Set // ordinals who granted consent
	denied     *segment.Set // ordinals who withdrew consent
	suppressed *segment.Set // ordinals suppressed for this purpose
	segments   []*segState  // segments of this purpose, by name
}

// DefinePurpose declares a purpose, or changes an existing one's model and
// description (consent already given or withdrawn stays).
func (e *Engine) DefinePurpose(p Purpose) error {
	return e.DefinePurposeContext(context.Background(), p)
}

// DefinePurposeContext is DefinePurpose with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) DefinePurposeContext(ctx context.Context, p Purpose) error {
	_, err := e.commit(ctx, &op{kind: opDefinePurpose, at: e.now(), purpose: p}) // validated there
	return err
}

func (e *Engine) applyDefinePurpose(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	if err := e.checkDefinePurposeLocked(o); err != nil {
		return opResult{}, err
	}
	p := o.purpose
	if ps, ok := e.purposes[p.Name]; ok {
		ps.Purpose = p
	} else {
		ps := &purposeState{Purpose: p, bit: uint8(len(e.purposeByBit)), granted: segment.New(), denied: segment.New(), suppressed: segment.New()}
		e.purposes[p.Name] = ps
		e.purposeByBit = append(e.purposeByBit, ps)
	}
	e.publishLocked()
	e.publishCapsLocked() // the caps' copies of the consent model
	e.event("define_purpose", slog.String("purpose", p.Name), slog.String("model", p.Model.String()))
	return opResult{}, nil
}

func (e *Engine) checkDefinePurposeLocked(o *op) error {
	if _, ok := e.purposes[o.purpose.Name]; !ok && len(e.purposeByBit) == MaxPurposes {
		return fmt.Errorf("%w: an engine holds at most %d", ErrTooManyPurposes, MaxPurposes)
	}
	return nil
}

// Purposes returns the defined purposes, by name; none once the engine is
// closed.
func (e *Engine) Purposes() []Purpose {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return nil
	}
	out := make([]Purpose, 0, len(e.purposes))
	for _, p := range e.purposes {
		out = append(out, p.Purpose)
	}
	slices.SortFunc(out, func(a, b Purpose) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Purpose returns the purpose named name, or an error wrapping
// ErrUnknownPurpose that suggests the closest defined name. Segments and In
// answer nothing for an unknown name, so that a lookup costs nothing extra
// per request; this is how to find out why (check names once at start-up).
func (e *Engine) Purpose(name string) (Purpose, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return Purpose{}, ErrClosed
	}
	ps, err := e.purposeLocked(name)
	if err != nil {
		return Purpose{}, err
	}
	return ps.Purpose, nil
}

// purposeLocked returns the named purpose or an error that says what to do.
func (e *Engine) purposeLocked(name string) (*purposeState, error) {
	if p, ok := e.purposes[name]; ok {
		return p, nil
	}
	names := make([]string, 0, len(e.purposes))
	for n := range e.purposes {
		names = append(names, n)
	}
	return nil, unknownName(ErrUnknownPurpose, "purpose", name, "", "declare it first with Engine.DefinePurpose", names)
}
