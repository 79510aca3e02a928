package anonymize

import (
	"testing"
)

// benchInputs is the one table every benchmark sweeps. email25 is the
// 25-byte email of the performance target (mixed case, so normalization
// works). phone-e164 is a number already in E.164 (the fast path, as is
// phone, once its separators are dropped); phone-trunk and phonein go
// through phonenumbers itself, email-idn through IDNA.
var benchInputs = []struct {
	name string
	id   Identifier
}{
	{"email25", Email("Jane.Doe.1984@Example.com")},
	{"gmail", Email("Jane.Doe+promo@gmail.com")},
	{"email-idn", Email("Jürgen@Bücher.de")},
	{"phone", Phone("+1 (234) 567-8901")},
	{"phone-e164", Phone("+12345678901")},
	{"phone-e164-gb", Phone("+442079460958")},
	{"phone-trunk", Phone("+44 (0)20 7946 0958")},
	{"phonein", PhoneIn("GB", "020 7946 0958")},
	{"userid", UserID("customer-0000042")},
	{"deviceid", DeviceID("AEBE52E7-03EE-455A-B3C4-E57283966239")},
}

func BenchmarkNormalize(b *testing.B) {
	for _, in := range benchInputs {
		b.Run("input="+in.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf [maxHashInput]byte
			for b.Loop() {
				if _, err := in.id.appendNormalized(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPseudonym measures normalize + pseudonymize, the whole path from
// raw identifier to pseudonym, per hasher.
func BenchmarkPseudonym(b *testing.B) {
	hashers := testHashers(b)
	for _, name := range []string{"siphash", "xxhash", "hmac-sha256"} {
		h := hashers[name]
		for _, in := range benchInputs {
			b.Run("hasher="+name+"/input="+in.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := h.Pseudonym(in.id); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkPseudonymParallel(b *testing.B) {
	h := SipHash(testKey(b))
	id := benchInputs[0].id
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Pseudonym(id); err != nil {
				b.Fatal(err)
			}
		}
	})
}
