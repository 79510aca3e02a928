package personify

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// Report is what Explain tells a person about the data held under their
// pseudonym(s): every segment with its purpose, description and expiry,
// whether it is used and why not, their consent per purpose, their
// suppressions, and a note on pseudonym collisions. It holds pseudonyms,
// never the identifier. It marshals to JSON and prints as plain text.
//
// The zero Report is empty. A Report is a plain value that the engine does
// not touch once Explain returns it, safe to share between goroutines.
type Report struct {
	GeneratedAt time.Time         `json:"generated_at"`
	Pseudonyms  []ReportPseudonym `json:"pseudonyms"`
	Segments    []SegmentReport   `json:"segments"`
	Consent     []ConsentReport   `json:"consent"`
	// Suppressed lists the purposes the person is suppressed for; "*" means
	// every purpose.
	Suppressed []string `json:"suppressed"`
	// Caps lists the person's frequency counters: per cap, the impressions
	// counted in the current window and when it ends.
	Caps []CapReport `json:"caps"`
	// DoNotReAdd is true if the person was forgotten and asked never to be
	// added again: only their pseudonym is kept, to honour that.
	DoNotReAdd bool `json:"do_not_re_add"`
	// CollisionNote says how likely it is that someone else shares the
	// pseudonym, so that this report could mix in their data.
	CollisionNote string `json:"collision_note"`
}

// ReportPseudonym is one pseudonym the person may be stored under.
//
// A ReportPseudonym is a plain value, safe to share between goroutines; its
// zero value is an empty entry.
type ReportPseudonym struct {
	Pseudonym anonymize.Pseudonym   `json:"pseudonym"`
	Key       anonymize.Fingerprint `json:"key"`    // fingerprint of the key that computed it
	Kind      anonymize.Kind        `json:"kind"`   // the kind of identifier it was computed from
	Stored    bool                  `json:"stored"` // whether anything is stored under it
	// Linked is true for a pseudonym of another identifier linked to the
	// one asked about (Engine.Link).
	Linked bool `json:"linked,omitempty"`
}

// SegmentReport is one segment membership in a Report.
//
// A SegmentReport is a plain value, safe to share between goroutines; its
// zero value is an empty entry.
type SegmentReport struct {
	Name        string `json:"name"`
	Purpose     string `json:"purpose"`
	Description string `json:"description"`
	Sensitive   bool   `json:"sensitive"`
	// AddedAt is the start of the retention epoch (1/32 of the segment's
	// retention) in which the membership was last added; zero without
	// retention. ExpiresAt is AddedAt plus the retention.
	AddedAt   time.Time `json:"added_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: kept until removed
	Used      bool      `json:"used"`                // whether Segments serves it for its purpose now
	Reason    string    `json:"reason,omitempty"`    // why it is not used
}

// ConsentReport is the person's consent for one purpose.
//
// A ConsentReport is a plain value, safe to share between goroutines once
// returned; its zero value is an empty entry.
type ConsentReport struct {
	Purpose     string       `json:"purpose"`
	Description string       `json:"description"`
	Model       ConsentModel `json:"model"`
	Consent     string       `json:"consent"` // "granted", "withdrawn" or "not given"
	Allowed     bool         `json:"allowed"` // whether the purpose may use their (non-sensitive) data
}

// Explain returns everything held about the person identified by id, under
// every key still in the keyring. It includes segments too small to be
// served: a person may always see their own data.
func (e *Engine) Explain(id anonymize.Identifier) (Report, error) {
	kps, err := e.allKeyedPseudonyms(id)
	if err != nil {
		return Report{}, err
	}
	return e.explainKeyed(kps, id.Kind(), false)
}

// explainKeyed is Explain of the person stored under kps, whose kind is
// kind; check says to refuse kps that do not name every key of the keyring
// (a Person computed before the keyring changed).
func (e *Engine) explainKeyed(kps []anonymize.KeyedPseudonym, kind anonymize.Kind, check bool) (Report, error) {
	now := e.now()
	e.mu.RLock()
	defer e.mu.RUnlock()
	if check {
		if err := e.checkKeyedLocked(&op{version: recVersion, at: now}, kps, true); err != nil {
			return Report{}, err
		}
	}
	r := Report{GeneratedAt: now, Segments: []SegmentReport{}, Consent: []ConsentReport{}, Suppressed: []string{}, Caps: []CapReport{}}
	var ords []uint32
	for _, kp := range kps {
		ord, _, ok := e.resolveLocked(kp.Pseudonym)
		r.Pseudonyms = append(r.Pseudonyms, ReportPseudonym{Pseudonym: kp.Pseudonym, Key: kp.Key, Kind: kind, Stored: ok})
		if ok && !slices.Contains(ords, ord) {
			ords = append(ords, ord)
		}
		if _, ok := e.doNotReAdd[kp.Pseudonym]; ok {
			r.DoNotReAdd = true
		}
	}
	for _, ord := range ords {
		for _, l := range e.linkedOfLocked(ord) {
			if !slices.ContainsFunc(r.Pseudonyms, func(p ReportPseudonym) bool { return p.Pseudonym == l.Pseudonym }) {
				r.Pseudonyms = append(r.Pseudonyms, ReportPseudonym{Pseudonym: l.Pseudonym, Key: l.Key, Kind: l.Kind, Stored: true, Linked: true})
			}
		}
		e.explainOrdLocked(&r, ord, now)
		e.explainCapsLocked(&r, ord, now)
	}
	slices.SortFunc(r.Segments, func(a, b SegmentReport) int { return strings.Compare(a.Name, b.Name) })
	r.CollisionNote = collisionNote(e.dir.Len())
	attrs := []slog.Attr{slog.Int("segments", len(r.Segments))}
	for _, p := range r.Pseudonyms {
		if p.Stored {
			attrs = append(attrs, pseudonymAttr(p.Pseudonym))
		}
	}
	e.event("explain", attrs...)
	return r, nil
}

func (e *Engine) explainOrdLocked(r *Report, ord uint32, now time.Time) {
	for _, st := range e.segs {
		if !st.contains(ord) {
			continue
		}
		sr := SegmentReport{Name: st.Name, Purpose: st.Purpose, Description: st.Description, Sensitive: st.Sensitive}
		sr.AddedAt, sr.ExpiresAt = st.addedAt(ord)
		sr.Reason = e.whyNotLocked(st, ord, now)
		sr.Used = sr.Reason == ""
		r.Segments = append(r.Segments, sr)
	}
	for _, ps := range e.purposeByBit {
		c := ps.consentOf(ord)
		r.Consent = append(r.Consent, ConsentReport{Purpose: ps.Name, Description: ps.Description, Model: ps.Model,
			Consent: c.String(), Allowed: e.allowsLocked(ps, ord, false)})
		if ps.suppressed.Contains(ord) {
			r.Suppressed = append(r.Suppressed, ps.Name)
		}
	}
	if e.suppressedAll.Contains(ord) {
		r.Suppressed = append(r.Suppressed, "*")
	}
}

// whyNotLocked returns why Segments does not serve st for ord, or "".
func (e *Engine) whyNotLocked(st *segState, ord uint32, now time.Time) string {
	ps := st.purpose
	switch c := ps.consentOf(ord); {
	case e.suppressedAll.Contains(ord):
		return "you are suppressed for every purpose"
	case ps.suppressed.Contains(ord):
		return fmt.Sprintf("you are suppressed for purpose %q", ps.Name)
	case c == consentWithdrawn:
		return fmt.Sprintf("you withdrew consent for purpose %q", ps.Name)
	case st.Sensitive && c != consentGranted:
		return "sensitive data is used only with your explicit consent, which you have not given"
	case ps.Model == OptIn && c != consentGranted:
		return fmt.Sprintf("purpose %q needs your consent, which you have not given", ps.Name)
	case !st.holds(ord, now):
		return "the membership has expired and will be deleted"
	case st.len() < e.minSize(st):
		return fmt.Sprintf("the segment has fewer than %d members, too few to be used without singling people out", e.minSize(st))
	}
	return ""
}

func collisionNote(n int) string {
	if n < 2 {
		return "Your data is stored under a 64-bit keyed pseudonym; no one else is stored here, so no one can share it."
	}
	return fmt.Sprintf("Your data is stored under a 64-bit keyed pseudonym. With %d people stored here, the chance that someone else "+
		"shares your pseudonym, and so that this report mixes in their data, is about %.1g.", n, anonymize.CollisionRate(n, 64))
}

// String renders the report as plain text for the person it is about.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "What is held about you (generated %s)\n", r.GeneratedAt.UTC().Format(time.RFC3339))
	for _, p := range r.Pseudonyms {
		state := "nothing stored"
		if p.Stored {
			state = "data stored"
		}
		kind := p.Kind.String()
		if p.Linked {
			kind = "linked " + kind
		}
		fmt.Fprintf(&b, "  %s pseudonym %s (key %s): %s\n", kind, p.Pseudonym, p.Key, state)
	}
	if len(r.Segments) == 0 {
		b.WriteString("Segments: none\n")
	} else {
		b.WriteString("Segments:\n")
	}
	for _, s := range r.Segments {
		fmt.Fprintf(&b, "  - %s (purpose %s", s.Name, s.Purpose)
		if s.Sensitive {
			b.WriteString(", sensitive")
		}
		fmt.Fprintf(&b, "): %s\n", s.Description)
		if !s.ExpiresAt.IsZero() {
			fmt.Fprintf(&b, "    expires %s unless renewed\n", s.ExpiresAt.UTC().Format(time.DateOnly))
		} else {
			b.WriteString("    kept until removed\n")
		}
		if s.Used {
			b.WriteString("    used for personalization\n")
		} else {
			fmt.Fprintf(&b, "    not used: %s\n", s.Reason)
		}
	}
	if len(r.Consent) > 0 {
		b.WriteString("Consent:\n")
	}
	for _, c := range r.Consent {
		allowed := "not allowed"
		if c.Allowed {
			allowed = "allowed"
		}
		fmt.Fprintf(&b, "  - %s (%s): consent %s, so %s\n", c.Purpose, c.Model, c.Consent, allowed)
	}
	if len(r.Suppressed) > 0 {
		fmt.Fprintf(&b, "Suppressed for: %s\n", strings.Join(r.Suppressed, ", "))
	}
	if r.DoNotReAdd {
		b.WriteString("You were forgotten at your request and will not be added again.\n")
	}
	b.WriteString(r.CollisionNote)
	b.WriteString("\n")
	return b.String()
}
