// Package anonymize turns personal identifiers into keyed pseudonyms at the
// boundary, so that nothing downstream ever holds an email address, a phone
// number or an account ID.
//
// Start with an [Identifier] ([Email], [Phone] or [PhoneIn], [UserID],
// [DeviceID]), a [Key] from [GenerateKey] kept in a secret store, and the
// default [Hasher], [SipHash]:
//
//	h := anonymize.SipHash(key)
//	p, err := h.Pseudonym(anonymize.Email("Jane.Doe@example.com"))
//
// Identifiers are normalized first (see [Identifier.Normalize]) so that
// "Jane.Doe@Example.com " and "jane.doe@example.com" are one person, and the
// kind is hashed with the value, so that a user ID and a phone number made
// of the same digits are two. The normalization is the standard libraries'
// where there is one: Unicode NFC (golang.org/x/text) for email local
// parts, IDNA's ASCII form (golang.org/x/net/idna) for their domains, so
// that "bücher.de" and "xn--bcher-kva.de" are one domain, and libphonenumber
// (github.com/nyaruka/phonenumbers) for phone numbers: validity for the
// number's country, national prefixes, E.164. National phone numbers are
// never guessed: [PhoneIn] takes their region. Pseudonyms computed before
// these rules were adopted differ for the inputs they treat differently
// (see [Identifier.Normalize]). A [Pseudonym] is 64 bits: at 100 million people
// the expected number of colliding pairs is about 3e-4 ([CollisionPairs]).
//
// Which hasher:
//
//   - [SipHash] (default): a PRF with a 128-bit key; as fast as a plain hash.
//   - [HMACSHA256]: when pseudonyms must also be computed in SQL, e.g. by a
//     data warehouse (the construction is documented and tested against
//     PostgreSQL's pgcrypto). The warehouse gets [HMACSubkey], never the key.
//   - [XXHash]: salted xxHash64, not a PRF; for pseudonyms that never leave
//     the process.
//
// Each hasher computes under its own subkey of the key ([Key.Subkey]), so
// that one hasher's subkey or pseudonyms say nothing of another's.
//
// A [Keyring] holds the current key and the previous ones during their grace
// period, for key rotation and crypto-shredding: [Key.Destroy] zeroes a key
// and the subkeys derived from it, and from then on its hashers return
// [ErrKeyDestroyed] instead of pseudonyms. [CollisionRate] and [NoisyCount]
// are the privacy arithmetic: how often pseudonyms collide at a given width,
// and a differentially private count.
//
// Identifiers, keys, hashers and errors never print what they hold: their
// String and Format methods redact, fmt's reflection (on an unexported
// field, where it cannot call them) finds nothing it can print, and
// rejections name the reason, never the input. The zero values of [Key] and
// [Identifier] are invalid and refused; the zero [Keyring] is not usable.
// Everything in the package is safe for concurrent use unless its doc says
// otherwise.
package anonymize
