package personify_test

import (
	"fmt"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// The README's code sample, verbatim: a test keeps it true.
func Example_readme() {
	key, _ := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f") // from a secret store
	e, _ := personify.New(personify.Options{Key: key, K: 2})                                           // k-anonymity: never serve a segment below 2 people
	defer e.Close()

	e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut})
	e.Define(personify.Segment{Name: "runners", Purpose: "personalization", Retention: 90 * 24 * time.Hour,
		Description: "You logged a run in the last 90 days"})
	e.Add("runners", anonymize.Email("ana@example.com"), anonymize.Email("bo@example.com"))

	p, _ := e.Pseudonym(anonymize.Email(" Ana@Example.com ")) // once per session: a keyed 64-bit pseudonym
	fmt.Println(e.Segments(nil, p, "personalization"))        // per request: lock-free, no allocation

	e.SetConsent(anonymize.Email("ana@example.com"), "personalization", false) // she opts out
	fmt.Println(e.Segments(nil, p, "personalization"))

	r, _ := e.Forget(anonymize.Email("ana@example.com")) // erasure, with a signed receipt
	fmt.Println(len(r.Segments), personify.VerifyReceipt(r, e.ReceiptPublicKey()) == nil, e.In(p, "runners"))
	// Output:
	// [runners]
	// []
	// 1 true false
}
