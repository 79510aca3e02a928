package personify

import (
	"fmt"
	"iter"
	"log/slog"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/segment"
)

// Audience is the answer of Engine.Audience: the people matched by a
// segment expression whom a purpose may use. The zero Audience is empty. An
// Audience is an immutable value, safe for concurrent use.
type Audience struct {
	// Expr is the expression in canonical form.
	Expr string `json:"expr"`
	// Purpose is the purpose the audience was built for.
	Purpose string `json:"purpose"`
	// Count is the exact number of people. Use it inside the system (for
	// activation and capacity); publish NoisyCount instead.
	Count int `json:"count"`

	pseudonyms []anonymize.Pseudonym
	ords       []uint32 // each pseudonym's ordinal then: a pseudonym that moved to someone else (a device) is skipped
	e          *Engine
	forgets    uint64 // e.forgets when the audience was built
}

// NoisyCount returns Count with epsilon-differentially private noise (see
// anonymize.NoisyCount): safe to publish in reports, where exact counts of
// overlapping audiences could reveal individuals.
func (a Audience) NoisyCount(epsilon float64) int { return anonymize.NoisyCount(a.Count, epsilon) }

// Pseudonyms yields the audience's pseudonyms, for activation inside the
// system (sending to an email service that holds the same key, say). People
// forgotten since the audience was built are skipped.
func (a Audience) Pseudonyms() iter.Seq[anonymize.Pseudonym] {
	return func(yield func(anonymize.Pseudonym) bool) {
		check := a.e != nil && a.e.forgets.Load() != a.forgets
		for i, p := range a.pseudonyms {
			if check {
				// The reader protocol (no lock); a slot mid-update is read
				// again under the lock.
				en, ok, stuck := a.e.dir.Tab.Load().Read(uint64(p))
				if stuck {
					a.e.mu.RLock()
					en, ok = a.e.dir.Get(p)
					a.e.mu.RUnlock()
				}
				if !ok || en.Ord() != a.ords[i] {
					continue
				}
			}
			if !yield(p) {
				return
			}
		}
	}
}

// Audience evaluates a segment expression such as
// `runners & (ios | android) & !churned` (see segment.Parse) for a purpose,
// and keeps only the people the purpose may use: not suppressed, with
// consent under the purpose's model (explicit opt-in if any segment in the
// expression is sensitive), and with memberships that have not expired.
//
// Every segment in the expression must be of the same purpose
// (ErrPurposeMismatch): data collected for one purpose is not used for
// another. An audience with fewer than K people (or the largest MinSize of
// its segments) is refused with ErrAudienceTooSmall, which does not say how
// many people it would have held.
func (e *Engine) Audience(expr, purpose string) (Audience, error) {
	if e.closed.Load() {
		return Audience{}, ErrClosed
	}
	a, k, err := e.audience(expr, purpose)
	if err != nil {
		e.event("audience_refused", append(e.refusedExprAttrs(expr, purpose, err), slog.Int("k", k))...)
		return Audience{}, err
	}
	e.event("audience", slog.String("expr", a.Expr), slog.String("purpose", purpose), slog.Int("count", a.Count))
	return a, nil
}

// audience computes an Audience; it also returns the k that applied.
func (e *Engine) audience(expr, purpose string) (Audience, int, error) {
	ex, err := segment.Parse(expr)
	if err != nil {
		return Audience{}, 0, fmt.Errorf("personify: audience: %w", err)
	}
	now := e.now()
	e.mu.RLock()
	defer e.mu.RUnlock()
	ps, ok := e.purposes[purpose]
	if !ok {
		names := make([]string, 0, len(e.purposes))
		for n := range e.purposes {
			names = append(names, n)
		}
		return Audience{}, 0, unknownName(ErrUnknownPurpose, "purpose", purpose, "(the audience's purpose)", "declare it first with Engine.DefinePurpose", names)
	}
	k, sensitive := e.k, false
	for i, name := range ex.Names() {
		st, ok := e.segs[name]
		if !ok {
			// The name is not repeated: an expression may be built from
			// input, and an undefined name may be anything.
			return Audience{}, k, unknownName(ErrUnknownSegment, "segment", name, fmt.Sprintf("(name %d of the expression)", i+1),
				"define it first with Engine.Define", e.segmentNamesLocked())
		}
		if st.purpose != ps {
			return Audience{}, k, fmt.Errorf("%w: segment %q was collected for %q, not %q: build the audience from segments of one purpose",
				ErrPurposeMismatch, name, st.Purpose, purpose)
		}
		k, sensitive = max(k, st.MinSize), sensitive || st.Sensitive
	}
	members, err := ex.Eval(func(name string) (*segment.Set, error) {
		return e.segs[name].liveMembers(now), nil
	}, e.live)
	if err != nil {
		return Audience{}, k, fmt.Errorf("personify: audience: %w", err)
	}
	members.AndNot(e.suppressedAll)
	members.AndNot(ps.suppressed)
	if ps.Model == OptIn || sensitive {
		members.And(ps.granted)
	} else {
		members.AndNot(ps.denied)
	}
	a := Audience{Expr: ex.String(), Purpose: purpose, Count: members.Len(), e: e, forgets: e.forgets.Load()}
	if a.Count < k {
		return Audience{}, k, fmt.Errorf("%w: %s for purpose %q has fewer than %d people (k-anonymity): widen the expression",
			ErrAudienceTooSmall, a.Expr, purpose, k)
	}
	// One scan of the directory finds the pseudonyms, in pseudonym order.
	a.pseudonyms = make([]anonymize.Pseudonym, 0, a.Count)
	a.ords = make([]uint32, 0, a.Count)
	e.dir.Tab.Load().Each(func(p anonymize.Pseudonym, en index.Entry) {
		if members.Contains(en.Ord()) && e.firstSlotLocked(p, en.Ord()) {
			a.pseudonyms = append(a.pseudonyms, p)
			a.ords = append(a.ords, en.Ord())
		}
	})
	return a, k, nil
}

// refusedExprAttrs describes a refused expression for the audit log. The
// expression is logged only if every name in it is a defined segment (and
// the purpose only if it is a defined purpose); otherwise the log names
// the defined segments it uses and counts the others, so that an
// expression built from input cannot carry personal data into the log.
func (e *Engine) refusedExprAttrs(expr, purpose string, err error) []slog.Attr {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var attrs []slog.Attr
	if _, ok := e.purposes[purpose]; ok {
		attrs = append(attrs, slog.String("purpose", purpose))
	} else {
		attrs = append(attrs, slog.Bool("purpose_defined", false))
	}
	parsed, perr := segment.Parse(expr)
	if perr != nil {
		return append(attrs, slog.Int("expr_bytes", len(expr)), slog.String("reason", "the expression does not parse"))
	}
	var defined []string
	undefined := 0
	for _, n := range parsed.Names() {
		if _, ok := e.segs[n]; ok {
			defined = append(defined, n)
		} else {
			undefined++
		}
	}
	if _, ok := e.purposes[purpose]; !ok {
		return append(attrs, slog.Any("segments", defined), slog.Int("undefined_names", undefined),
			slog.String("reason", "the purpose is not defined"))
	}
	if undefined == 0 {
		return append(attrs, slog.String("expr", parsed.String()), slog.String("reason", err.Error()))
	}
	return append(attrs, slog.Any("segments", defined), slog.Int("undefined_names", undefined),
		slog.String("reason", "the expression names segments that are not defined"))
}
