package personify_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

func ExampleNew() {
	key := anonymize.GenerateKey()                       // once; then keep it in a secret store
	e, err := personify.New(personify.Options{Key: key}) // k = 50 by default
	if err != nil {
		panic(err)
	}
	defer e.Close()
	fmt.Println(e.K())
	_, err = personify.New(personify.Options{})
	fmt.Println(err)
	// Output:
	// 50
	// personify: Options.Key is required: generate one with anonymize.GenerateKey and keep it in a secret store
}

// Bulk loads from a system that computes the same pseudonyms (a data
// warehouse using anonymize.HMACSHA256, see examples/warehouse).
func ExampleEngine_AddPseudonyms() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "churn-risk", Purpose: "personalization"})
	// Pseudonyms computed elsewhere with the engine's key and hasher.
	h := anonymize.SipHash(mustExampleKey())
	var batch []anonymize.Pseudonym
	for _, email := range []string{"ana@example.com", "bo@example.com", "cy@example.com"} {
		p, _ := h.Pseudonym(anonymize.Email(email))
		batch = append(batch, p)
	}
	fmt.Println(e.AddPseudonyms("churn-risk", batch))
	// The app finds the same people by identifier.
	p, _ := e.Pseudonym(anonymize.Email("Bo@Example.com"))
	fmt.Println(e.In(p, "churn-risk"))
	// Output:
	// <nil>
	// true
}

func mustExampleKey() anonymize.Key {
	key, _ := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	return key
}

// Suppression wins over membership and consent: "do not sell or share" for
// one purpose, or no use at all.
func ExampleEngine_Suppress() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana", "bo", "cy")...)
	ana := anonymize.Email("ana@example.com")
	p, _ := e.Pseudonym(ana)
	fmt.Println(e.Segments(nil, p, "personalization"))
	_ = e.Suppress(ana, "personalization")
	_ = e.Add("runners", ana) // re-adding does not lift it
	fmt.Println(e.Segments(nil, p, "personalization"), e.In(p, "runners"))
	_ = e.Unsuppress(ana, "personalization")
	fmt.Println(e.Segments(nil, p, "personalization"))
	// Output:
	// [runners]
	// [] true
	// [runners]
}

// Retention: memberships expire, and Expire drops them (a durable engine
// runs it by itself).
func ExampleEngine_Expire() {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	e, _ := personify.New(personify.Options{Key: mustExampleKey(), K: 1, Now: func() time.Time { return now }})
	_ = e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut})
	_ = e.Define(personify.Segment{Name: "recent-visitors", Purpose: "personalization", Retention: 7 * 24 * time.Hour})
	_ = e.Add("recent-visitors", emails("ana")...)
	dropped, _ := e.Expire(now.Add(8 * 24 * time.Hour))
	fmt.Println(dropped)
	// Output:
	// 1
}

// Key rotation: the old key stays usable for lookups during the grace
// period; people move to the new key when they are next written.
func ExampleEngine_RotateKey() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana", "bo", "cy")...)
	next, _ := anonymize.KeyFromHex("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100")
	fmt.Println(e.RotateKey(next, 90*24*time.Hour))
	fmt.Println(e.KeyFingerprint() == next.Fingerprint())
	p, _ := e.Pseudonym(anonymize.Email("ana@example.com")) // still found under the old key
	fmt.Println(e.In(p, "runners"))
	// Output:
	// <nil>
	// true
	// true
}

// Hot reload: one process builds the segments, replicas load the snapshot;
// lookups see the old state or the new one, never a mix.
func ExampleEngine_LoadSnapshot() {
	builder := newExampleEngine()
	_ = builder.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = builder.Add("runners", emails("ana", "bo", "cy")...)
	var snap bytes.Buffer
	_, _ = builder.WriteSnapshot(&snap)

	replica, _ := personify.New(personify.Options{Key: mustExampleKey(), K: 3})
	fmt.Println(replica.LoadSnapshot(&snap))
	p, _ := replica.Pseudonym(anonymize.Email("bo@example.com"))
	fmt.Println(replica.Segments(nil, p, "personalization"))
	// Output:
	// <nil>
	// [runners]
}

// Anyone holding the engine's public key can check an erasure receipt;
// an altered receipt fails.
func ExampleVerifyReceipt() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana")...)
	r, _ := e.Forget(anonymize.Email("ana@example.com"))
	pub := e.ReceiptPublicKey()
	fmt.Println(personify.VerifyReceipt(r, pub))
	r.Segments = nil // tampered with
	fmt.Println(personify.VerifyReceipt(r, pub) != nil)
	// Output:
	// <nil>
	// true
}

// Receipts verify forever: the receipt key is derived from the engine key,
// so another process with the same key has the same one, and after a key
// rotation the engine still knows the public keys of the earlier ones.
func ExampleEngine_VerifyReceipt() {
	e := newExampleEngine()
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", emails("ana", "bo")...)
	before, _ := e.Forget(anonymize.Email("ana@example.com"))

	again, _ := personify.New(personify.Options{Key: mustExampleKey()}) // a restart, or another replica
	fmt.Println(personify.VerifyReceipt(before, again.ReceiptPublicKey()))

	_ = e.RotateKey(anonymize.GenerateKey(), 24*time.Hour)
	after, _ := e.Forget(anonymize.Email("bo@example.com"))
	fmt.Println(e.VerifyReceipt(before), e.VerifyReceipt(after), len(e.ReceiptPublicKeys()))
	fmt.Println(after.SigningKey == hex.EncodeToString(e.ReceiptPublicKey()))
	// Output:
	// <nil>
	// <nil> <nil> 2
	// true
}
