package personify_test

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// newExampleEngine returns an engine with a fixed key and clock, k = 3, a
// "personalization" purpose (opt-out) and a "newsletter" purpose (opt-in).
func newExampleEngine() *personify.Engine {
	key, _ := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	e, err := personify.New(personify.Options{Key: key, K: 3, Now: func() time.Time { return now }})
	if err != nil {
		panic(err)
	}
	_ = e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut})
	_ = e.DefinePurpose(personify.Purpose{Name: "newsletter", Model: personify.OptIn})
	return e
}

func emails(names ...string) []anonymize.Identifier {
	ids := make([]anonymize.Identifier, len(names))
	for i, n := range names {
		ids[i] = anonymize.Email(n + "@example.com")
	}
	return ids
}

// The per-request flow: the pseudonym once per session, then the segments
// a purpose may use.
func ExampleEngine_Segments() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization", Retention: 90 * 24 * time.Hour})
	_ = e.Define(personify.Segment{Name: "ios", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana", "bo", "cy", "di")...)
	_ = e.Add("ios", emails("ana", "bo")...) // too small to serve with k = 3

	p, _ := e.Pseudonym(anonymize.Email("Ana@Example.com"))
	fmt.Println(e.Segments(nil, p, "personalization"))
	fmt.Println(e.In(p, "ios"))
	// Output:
	// [runners]
	// true
}

// The request path's shape: resolve names once at start-up, then ask by
// the prepared value, with no name hashing per request.
func ExampleEngine_PrepareSegment() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana", "bo", "cy")...)

	runners, err := e.PrepareSegment("runners") // at start-up
	if err != nil {
		panic(err) // a typo in configuration: better found now
	}
	perso, err := e.PreparePurpose("personalization")
	if err != nil {
		panic(err)
	}
	_, err = e.PrepareSegment("runer")
	fmt.Println(errors.Is(err, personify.ErrUnknownSegment))

	p, _ := e.Pseudonym(anonymize.Email("bo@example.com")) // once per session
	var dst []string
	dst = perso.Segments(dst[:0], p) // per request
	fmt.Println(runners.In(p), dst)
	// Output:
	// true
	// true [runners]
}

func ExampleEngine_SetConsent() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "readers", Purpose: "newsletter"})
	_ = e.Add("readers", emails("ana", "bo", "cy")...)
	ana := anonymize.Email("ana@example.com")
	p, _ := e.Pseudonym(ana)

	fmt.Println(e.Segments(nil, p, "newsletter")) // opt-in: nothing yet
	_ = e.SetConsent(ana, "newsletter", true)
	fmt.Println(e.Segments(nil, p, "newsletter"))
	_ = e.Suppress(ana, "newsletter") // suppression wins over consent
	fmt.Println(e.Segments(nil, p, "newsletter"))
	// Output:
	// []
	// [readers]
	// []
}

func ExampleEngine_Audience() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Define(personify.Segment{Name: "churned", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana", "bo", "cy", "di", "ed")...)
	_ = e.Add("churned", emails("ed")...)

	a, err := e.Audience("runners & !churned", "personalization")
	fmt.Println(a.Count, err)
	_, err = e.Audience("runners & churned", "personalization")
	fmt.Println(errors.Is(err, personify.ErrAudienceTooSmall))
	// Output:
	// 4 <nil>
	// true
}

func ExampleEngine_Explain() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization",
		Description: "You logged a run recently", Retention: 32 * 24 * time.Hour})
	_ = e.Add("runners", emails("ana", "bo", "cy")...)

	r, _ := e.Explain(anonymize.Email("ana@example.com"))
	fmt.Print(r)
	// Output:
	// What is held about you (generated 2026-11-24T12:00:00Z)
	//   email pseudonym 30ee272a43461105 (key b9f5db2b343b7800): data stored
	// Segments:
	//   - runners (purpose personalization): You logged a run recently
	//     expires 2026-12-26 unless renewed
	//     used for personalization
	// Consent:
	//   - personalization (opt-out): consent not given, so allowed
	//   - newsletter (opt-in): consent not given, so not allowed
	// Your data is stored under a 64-bit keyed pseudonym. With 3 people stored here, the chance that someone else shares your pseudonym, and so that this report mixes in their data, is about 1e-19.
}

// Forget erases a person everywhere and returns a receipt that anyone can
// verify with the engine's public key.
func ExampleEngine_ForgetWith() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana", "bo", "cy")...)

	r, _ := e.ForgetWith(anonymize.Email("ana@example.com"), personify.ForgetOptions{RequestID: "req-7"})
	fmt.Println(r.Segments, r.RequestID)
	fmt.Println(personify.VerifyReceipt(r, e.ReceiptPublicKey()))
	r.Segments = nil // tampering breaks the signature
	fmt.Println(errors.Is(personify.VerifyReceipt(r, e.ReceiptPublicKey()), personify.ErrBadReceipt))
	// Output:
	// [{runners 1}] req-7
	// <nil>
	// true
}

// A durable engine: changes survive a restart (or a crash) once the call
// returns, and an erasure leaves the disk by the time its receipt says.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "personify-example-")
	defer os.RemoveAll(dir)
	key, _ := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	opts := personify.Options{Key: key, K: 1}

	e, err := personify.Open(dir, opts)
	if err != nil {
		panic(err)
	}
	_ = e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut})
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana", "bo")...)
	_ = e.Close()

	e, _ = personify.Open(dir, opts) // after a restart
	defer e.Close()
	p, _ := e.Pseudonym(anonymize.Email("bo@example.com"))
	fmt.Println("bo in runners:", e.In(p, "runners"))

	r, _ := e.Forget(anonymize.Email("bo@example.com"))
	_ = e.Compact() // maintenance does this by itself soon after Forget
	fmt.Println("bo purged from every file:", e.Purged(r))

	_, err = personify.Open(dir, opts) // while e holds the directory
	fmt.Println(errors.Is(err, personify.ErrLocked))
	// Output:
	// bo in runners: true
	// bo purged from every file: true
	// true
}
