// Command frequency caps how often one person sees a campaign: at most 3
// banners a calendar day in the person's time zone, and at most one
// "welcome" email ever. The counters are the person's data: counted only
// with their consent, shown by Explain, erased by Forget, gone with their
// window.
//
//	go run ./examples/frequency
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
		fmt.Fprintln(os.Stderr, "frequency:", err)
		os.Exit(1)
	}
}

// clock is the example's time, so that its output is the same on every run.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func run(w io.Writer) error {
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		return err
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		return err
	}
	c := &clock{time.Date(2026, 12, 1, 21, 0, 0, 0, berlin)}
	e, err := personify.New(personify.Options{Key: key, K: 2, Now: c.Now})
	if err != nil {
		return err
	}
	defer e.Close()
	for _, p := range []personify.Purpose{
		{Name: "ads", Model: personify.OptOut, Description: "Offers on our site"},
		{Name: "email", Model: personify.OptIn, Description: "Emails from us"},
	} {
		if err := e.DefinePurpose(p); err != nil {
			return err
		}
	}
	if err := e.Define(personify.Segment{Name: "runners", Purpose: "ads"}); err != nil {
		return err
	}
	jane, joe := anonymize.Email("jane@example.com"), anonymize.Email("joe@example.com")
	if err := e.Add("runners", jane, joe); err != nil {
		return err
	}
	for _, cp := range []personify.Cap{
		{Name: "winter-sale", Purpose: "ads", Max: 3, Description: "the sale banner",
			Window: personify.Window{Kind: personify.Calendar, Period: personify.Day, TimeZone: "Europe/Berlin"}},
		{Name: "welcome-email", Purpose: "email", Max: 1, Window: personify.Window{Kind: personify.Lifetime}},
	} {
		if err := e.DefineCap(cp); err != nil {
			return err
		}
	}

	// Jane browses: each page asks whether the banner may show, and
	// counts it when it does.
	p, err := e.Pseudonym(jane)
	if err != nil {
		return err
	}
	page := func() {
		fmt.Fprintf(w, "%s  banner: %v\n", c.t.Format("Jan 2 15:04 MST"), e.Allow(p, "winter-sale"))
	}
	for range 4 {
		page()
		c.t = c.t.Add(40 * time.Minute)
	}
	c.t = c.t.Add(40 * time.Minute)
	page() // after midnight in Berlin: a new day, 3 hours after the first
	// Opt-in: no welcome email without consent, and nothing counted.
	fmt.Fprintf(w, "welcome email without consent: %v\n", e.Allow(p, "welcome-email"))
	if err := e.SetConsent(jane, "email", true); err != nil {
		return err
	}
	fmt.Fprintf(w, "welcome email with consent: %v, again: %v\n", e.Allow(p, "welcome-email"), e.Allow(p, "welcome-email"))

	// Jane sees her counters, and erasing her erases them.
	r, err := e.Explain(jane)
	if err != nil {
		return err
	}
	for _, cr := range r.Caps {
		end := "never"
		if !cr.WindowEnd.IsZero() {
			end = cr.WindowEnd.In(berlin).Format("Jan 2 15:04 MST")
		}
		fmt.Fprintf(w, "explain: %s %d of %d, window ends %s\n", cr.Cap, cr.Count, cr.Max, end)
	}
	receipt, err := e.Forget(jane)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "forgotten: %d counters erased (signed receipt %s)\n", receipt.Counters, receipt.ID[:8])
	fmt.Fprintf(w, "banner for the forgotten pseudonym: %v\n", e.Allow(p, "winter-sale"))
	return nil
}
