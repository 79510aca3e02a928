package anonymize_test

import (
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// A fixed key for reproducible examples. Real keys come from GenerateKey
// and live in a secret store.
var exampleKey, _ = anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")

func ExampleIdentifier_Normalize() {
	for _, id := range []anonymize.Identifier{
		anonymize.Email("  Jane.Doe+promo@GMail.com "),
		anonymize.Email("Jane.Doe+promo@example.com"),
		anonymize.Phone("+1 (234) 567-8901"),
		anonymize.Phone("+44 (0)20 7946 0958"),
		anonymize.PhoneIn("GB", "020 7946 0958"),
		anonymize.UserID(" Customer-42 "),
	} {
		s, err := id.Normalize()
		fmt.Println(id.Kind(), s, err)
	}
	// Output:
	// email janedoe@gmail.com <nil>
	// email jane.doe+promo@example.com <nil>
	// phone +12345678901 <nil>
	// phone +442079460958 <nil>
	// phone +442079460958 <nil>
	// user Customer-42 <nil>
}

func ExampleIdentifier_Normalize_errors() {
	for _, id := range []anonymize.Identifier{
		anonymize.Email("jane.doe.example.com"),
		anonymize.Phone("(234) 567-8901"),
		anonymize.PhoneIn("GB", "020 7946 095"),
		anonymize.PhoneIn("XX", "020 7946 0958"),
	} {
		_, err := id.Normalize()
		fmt.Println(errors.Is(err, anonymize.ErrInvalidIdentifier), err)
	}
	// Output:
	// true anonymize: invalid email (20 bytes): missing '@'
	// true anonymize: invalid phone (14 bytes): national number (no '+' or "00" and country code): use PhoneIn with the number's region
	// true anonymize: invalid phone (12 bytes, region GB): not a valid number for its country
	// true anonymize: invalid phone (13 bytes, region XX): unknown region: not an ISO 3166-1 alpha-2 code with a numbering plan
}

func ExampleSipHash() {
	h := anonymize.SipHash(exampleKey)
	p, err := h.Pseudonym(anonymize.Email("Jane.Doe@Example.com"))
	if err != nil {
		panic(err)
	}
	fmt.Println(p)
	fmt.Println(anonymize.Email("Jane.Doe@Example.com")) // identifiers never print
	fmt.Println(exampleKey)                              // nor do keys
	// Output:
	// b5c5d75051e3f3aa
	// email:[redacted]
	// anonymize.Key([redacted] b9f5db2b343b7800)
}

// The HMAC-SHA256 construction is reproducible in SQL, for segments built in
// a warehouse; see HMACSHA256 for the PostgreSQL query.
func ExampleHMACSHA256() {
	p, _ := anonymize.HMACSHA256(exampleKey).Pseudonym(anonymize.Email("jane.doe@example.com"))
	fmt.Println(p)
	// Output: 62b85b2776c2d443
}

// A warehouse gets the HMAC subkey and only it; with it, it computes the
// pseudonyms HMACSHA256 computes under the key.
func ExampleHMACSubkey() {
	sub := anonymize.HMACSubkey(exampleKey)
	subkeyHex := hex.EncodeToString(sub.Bytes()) // into the warehouse's secret store, never a log
	sub.Destroy()

	// In the warehouse (or in SQL, see HMACSHA256):
	warehouseKey, err := anonymize.KeyFromHex(subkeyHex)
	if err != nil {
		panic(err)
	}
	there, _ := anonymize.HMACSHA256FromSubkey(warehouseKey).Pseudonym(anonymize.Email("jane.doe@example.com"))
	here, _ := anonymize.HMACSHA256(exampleKey).Pseudonym(anonymize.Email("Jane.Doe@Example.com"))
	fmt.Println(there, there == here)
	// Output: 62b85b2776c2d443 true
}

func ExampleKeyring() {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	next, _ := anonymize.KeyFromHex("ffeeddccbbaa99887766554433221100")
	ring := anonymize.NewKeyring(exampleKey, anonymize.SipHash)
	_ = ring.Rotate(next, t0, 90*24*time.Hour) // keep the old key for 90 days

	ps, _ := ring.AppendPseudonyms(nil, anonymize.Email("jane.doe@example.com"), t0.Add(24*time.Hour))
	for _, p := range ps {
		fmt.Println(p.Key, p.Pseudonym)
	}
	fmt.Println("destroyed:", ring.Prune(t0.Add(90*24*time.Hour)))
	// Output:
	// d29c4c4f277007d6 52b3cf6804041914
	// b9f5db2b343b7800 b5c5d75051e3f3aa
	// destroyed: [b9f5db2b343b7800]
}

func ExampleCollisionRate() {
	for _, bits := range []int{32, 64} {
		fmt.Printf("%d bits: %.2g of 100M people share a pseudonym\n", bits, anonymize.CollisionRate(100_000_000, bits))
	}
	// Output:
	// 32 bits: 0.023 of 100M people share a pseudonym
	// 64 bits: 5.4e-12 of 100M people share a pseudonym
}

func ExampleNoisyCountSource() {
	src := mrand.NewPCG(1, 2) // use NoisyCount (crypto/rand) for released counts
	for range 3 {
		fmt.Println(anonymize.NoisyCountSource(src, 1000, 0.5))
	}
	// Output:
	// 1000
	// 1000
	// 996
}
