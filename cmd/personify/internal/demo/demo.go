// Package demo loads the quickstart's sample into an engine for
// `personify serve --demo`, with one more purpose, "advertising", that the
// preference center's "Do not sell or share my personal information" and
// the Global Privacy Control signal suppress.
package demo

import (
	"fmt"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/internal/sample"
	"github.com/personify-go/personify/personify"
)

// KeyHex is the demo's engine key: the quickstart's, public, so that the
// demo's pseudonyms match the quickstart's output. Never use it for real
// data.
const KeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// DoNotSell is the purpose "do not sell or share" suppresses in the demo.
const DoNotSell = "advertising"

// Person is a sample person in several segments, for trying the API.
const Person = "member000042@example.com"

// Load defines the sample and loads its people (unless the engine holds
// segments already), and returns a line that says what it holds.
func Load(e sample.Engine, defined func() []personify.Segment) (string, error) {
	if len(defined()) == 0 {
		if err := sample.Define(e); err != nil {
			return "", err
		}
		if err := e.DefinePurpose(personify.Purpose{Name: DoNotSell, Model: personify.OptOut,
			Description: "Sharing audiences with advertising partners (a sale or share under California law)"}); err != nil {
			return "", err
		}
		if err := e.Define(personify.Segment{Name: "lookalike-seed", Purpose: DoNotSell,
			Description: "Shared with advertising partners to find people like you"}); err != nil {
			return "", err
		}
		if _, err := sample.Load(e); err != nil {
			return "", err
		}
		var seed []anonymize.Identifier
		for i := 0; i < sample.People; i += 3 {
			seed = append(seed, anonymize.Email(fmt.Sprintf("member%06d@example.com", i)))
		}
		if err := e.Add("lookalike-seed", seed...); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("demo: the quickstart's sample of %d synthetic people, %d segments; try %s", sample.People, len(defined()), Person), nil
}
