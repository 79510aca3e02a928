// Command quickstart shows what personify stores instead of personal data:
// identifiers are normalized and turned into keyed 64-bit pseudonyms at the
// boundary, and only the pseudonyms go on.
//
//	go run ./examples/quickstart
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/personify-go/personify/anonymize"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(w io.Writer) error {
	// A real deployment generates the key once (anonymize.GenerateKey) and
	// keeps it in a secret store; a fixed one keeps this output stable.
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		return err
	}
	h := anonymize.SipHash(key)
	fmt.Fprintf(w, "key: %v (keys never print; the fingerprint names them)\n\n", key)

	people := []anonymize.Identifier{
		anonymize.Email("  Jane.Doe@Example.com "),
		anonymize.Email("jane.doe@example.com"), // the same person
		anonymize.Email("J.Smith+newsletter@gmail.com"),
		anonymize.Phone("+1 (234) 567-8901"),
		anonymize.UserID("customer-0042"),
		anonymize.Email("not-an-email"),
	}
	fmt.Fprintf(w, "%-8s %-26s %s\n", "kind", "normalized (never stored)", "stored pseudonym")
	for _, id := range people {
		norm, err := id.Normalize()
		if err != nil {
			fmt.Fprintf(w, "%-8s rejected: %v\n", id.Kind(), err)
			continue
		}
		p, err := h.Pseudonym(id)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%-8s %-26s %v\n", id.Kind(), norm, p)
	}
	fmt.Fprintf(w, "\nprinting an identifier: %v\n", people[0])
	fmt.Fprintf(w, "share of 100M people sharing a pseudonym: %.1e at 64 bits (%.1f%% at 32 bits)\n",
		anonymize.CollisionRate(100_000_000, 64), 100*anonymize.CollisionRate(100_000_000, 32))
	return nil
}
