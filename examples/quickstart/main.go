// Command quickstart runs personify's main job on a built-in sample of
// 200,000 synthetic people and a dozen segments: define purposes and
// segments, load members, personalize for a visitor, build an audience with
// k-anonymity, honour a consent withdrawal, explain what is held, and erase
// a person with a receipt that anyone can verify.
//
//	go run ./examples/quickstart
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/internal/sample"
	"github.com/personify-go/personify/personify"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(w io.Writer) error {
	// A real deployment generates the key once (anonymize.GenerateKey) and
	// keeps it in a secret store; the fixed key and clock keep this output
	// the same on every run.
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		return err
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	e, err := personify.New(personify.Options{Key: key, Now: func() time.Time { return now }})
	if err != nil {
		return err
	}
	defer e.Close()

	// 1. Purposes and segments.
	if err := sample.Define(e); err != nil {
		return err
	}
	// 2. Members. Identifiers are pseudonymized on the way in; the engine
	// never holds an email address.
	n, err := sample.Load(e)
	if err != nil {
		return err
	}
	st := e.Stats()
	fmt.Fprintf(w, "sample of %d people: %d stored with %d memberships in %d segments\n",
		n, st.People, st.Memberships, st.Segments)

	// 3. Personalize: once per session the visitor's pseudonym, then per
	// request the segments personalization may use.
	visitor := anonymize.Email(" Member000042@Example.com ") // however the visitor typed it
	p, err := e.Pseudonym(visitor)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nvisitor %v is stored as %v\n", visitor, p)
	fmt.Fprintf(w, "segments for personalization: %v\n", e.Segments(nil, p, "personalization"))
	fmt.Fprintf(w, "member of vip: %v, but vip is not served: %d members, below its MinSize of %d (k-anonymity)\n",
		e.In(p, "vip"), mustLen(e, "vip"), vipMinSize())

	// 4. Audiences: set algebra over segments, with consent, suppression
	// and k-anonymity applied.
	a, err := e.Audience("runners & ios & !lapsed-buyers", "personalization")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\naudience %q: %d people\n", a.Expr, a.Count)
	a, err = e.Audience("newsletter-readers", "email-marketing")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "audience %q (opt-in, consented only): %d people\n", a.Expr, a.Count)
	_, err = e.Audience("vip & swimmers & hikers", "personalization")
	fmt.Fprintf(w, "audience \"vip & swimmers & hikers\": refused: %v\n", errors.Is(err, personify.ErrAudienceTooSmall))

	// 5. Consent: the visitor withdraws consent for personalization.
	if err := e.SetConsent(visitor, "personalization", false); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nafter withdrawing consent: %v\n", e.Segments(nil, p, "personalization"))

	// 6. Transparency: everything held about the visitor, and why.
	r, err := e.Explain(visitor)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%s", r)

	// 7. Erasure with proof.
	receipt, err := e.ForgetWith(visitor, personify.ForgetOptions{RequestID: "privacy-request-1001"})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nforgotten: %d segments, receipt %s...\n", len(receipt.Segments), receipt.ID[:8])
	fmt.Fprintf(w, "receipt verifies with the engine's public key: %v\n",
		personify.VerifyReceipt(receipt, e.ReceiptPublicKey()) == nil)
	r, err = e.Explain(visitor)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "after forgetting: %d segments held, in runners: %v\n", len(r.Segments), e.In(p, "runners"))
	return nil
}

func vipMinSize() int {
	for _, s := range sample.Segments {
		if s.Name == "vip" {
			return s.MinSize
		}
	}
	return 0
}

func mustLen(e *personify.Engine, segment string) int {
	n, _ := e.Len(segment)
	return n
}
