// Command consent walks through the consent rules an engine enforces:
// opt-out and opt-in purposes, a sensitive segment that needs explicit
// opt-in whatever its purpose's model, and suppression lists ("do not
// sell or share", "no email") that win over membership and consent.
//
//	go run ./examples/consent
package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consent:", err)
		os.Exit(1)
	}
}

func run(w io.Writer) error {
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		return err
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	// K = 3 keeps the example small; the default is 50.
	e, err := personify.New(personify.Options{Key: key, K: 3, Now: func() time.Time { return now }})
	if err != nil {
		return err
	}
	defer e.Close()

	// Purposes, each with its consent model.
	for _, p := range []personify.Purpose{
		{Name: "personalization", Model: personify.OptOut, Description: "Tailoring our site to you"},
		{Name: "email-marketing", Model: personify.OptIn, Description: "Offers by email"},
		{Name: "ad-sharing", Model: personify.OptOut, Description: "Sharing audiences with ad partners (a sale or share under CCPA)"},
	} {
		if err := e.DefinePurpose(p); err != nil {
			return err
		}
	}
	for _, s := range []personify.Segment{
		{Name: "runners", Purpose: "personalization", Description: "You logged a run"},
		{Name: "diabetes-care", Purpose: "personalization", Description: "You bought glucose test strips", Sensitive: true},
		{Name: "sale-alerts", Purpose: "email-marketing", Description: "You asked for sale alerts"},
		{Name: "lookalike-seed", Purpose: "ad-sharing", Description: "Customers like you, for ad partners"},
	} {
		if err := e.Define(s); err != nil {
			return err
		}
	}
	ana, bo, cy, di := email("ana"), email("bo"), email("cy"), email("di")
	everyone := []anonymize.Identifier{ana, bo, cy, di}
	for _, seg := range []string{"runners", "diabetes-care", "sale-alerts", "lookalike-seed"} {
		if err := e.Add(seg, everyone...); err != nil {
			return err
		}
	}
	show := func(what string) {
		fmt.Fprintf(w, "\n%s\n", what)
		for _, id := range everyone {
			p, _ := e.Pseudonym(id)
			fmt.Fprintf(w, "  %-4s personalization=%v email-marketing=%v ad-sharing=%v\n", name(id),
				e.Segments(nil, p, "personalization"), e.Segments(nil, p, "email-marketing"), e.Segments(nil, p, "ad-sharing"))
		}
	}
	show("Everyone is in every segment. Opt-out purposes serve at once; the opt-in one and the sensitive segment serve no one yet:")

	// Opt-in: ana and bo grant consent for personalization (which unlocks
	// the sensitive segment) and ana for email.
	for _, c := range []struct {
		id      anonymize.Identifier
		purpose string
	}{{ana, "personalization"}, {bo, "personalization"}, {cy, "personalization"}, {ana, "email-marketing"}, {bo, "email-marketing"}, {cy, "email-marketing"}} {
		if err := e.SetConsent(c.id, c.purpose, true); err != nil {
			return err
		}
	}
	show("ana, bo and cy grant consent for personalization and email (explicit opt-in also unlocks diabetes-care):")

	// Opt-out: di withdraws consent for personalization.
	if err := e.SetConsent(di, "personalization", false); err != nil {
		return err
	}
	// "Do not sell or share": bo is suppressed for ad-sharing only; cy asks
	// for no contact at all (every purpose).
	if err := e.Suppress(bo, "ad-sharing"); err != nil {
		return err
	}
	if err := e.Suppress(cy); err != nil {
		return err
	}
	show("di withdraws consent for personalization; bo says \"do not sell or share\"; cy is suppressed for everything:")

	// Suppression wins over consent and survives re-adding.
	if err := e.Add("lookalike-seed", bo); err != nil {
		return err
	}
	p, _ := e.Pseudonym(bo)
	fmt.Fprintf(w, "\nbo re-added to lookalike-seed by a nightly job: ad-sharing=%v (suppression survives)\n", e.Segments(nil, p, "ad-sharing"))

	// Audiences apply the same rules, and k-anonymity on top (K = 3 here).
	for _, q := range []struct{ expr, purpose string }{{"lookalike-seed", "ad-sharing"}, {"sale-alerts", "email-marketing"}} {
		a, err := e.Audience(q.expr, q.purpose)
		if err != nil {
			fmt.Fprintf(w, "audience %s for %s: %v\n", q.expr, q.purpose, err)
			continue
		}
		fmt.Fprintf(w, "audience %s for %s: %d people\n", q.expr, q.purpose, a.Count)
	}

	// What bo is told about their data.
	r, err := e.Explain(bo)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nbo's consent and suppressions, from Explain:\n")
	for _, c := range r.Consent {
		fmt.Fprintf(w, "  %s (%s): consent %s, allowed: %v\n", c.Purpose, c.Model, c.Consent, c.Allowed)
	}
	fmt.Fprintf(w, "  suppressed for: %v\n", r.Suppressed)
	return nil
}

func email(name string) anonymize.Identifier { return anonymize.Email(name + "@example.com") }

// name is the example's label for a person; the engine never sees it.
func name(id anonymize.Identifier) string {
	n, _ := id.Normalize()
	for i, c := range n {
		if c == '@' {
			return n[:i]
		}
	}
	return n
}
