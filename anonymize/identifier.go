package anonymize

import (
	"errors"
	"fmt"
	"log/slog"
	"unsafe"
)

// Kind is the kind of an identifier. It is part of the hash input, so the
// same characters under two kinds give unrelated pseudonyms:
// UserID("12025550143") and Phone("+12025550143") never collide by
// construction. The zero Kind is invalid; a Kind is a plain value, safe for
// concurrent use.
type Kind uint8

// The identifier kinds. The zero Kind is not a valid kind.
const (
	KindEmail    Kind = 1 // an email address, see [Email]
	KindPhone    Kind = 2 // a phone number in E.164, see [Phone] and [PhoneIn]
	KindUserID   Kind = 3 // an account or customer ID, see [UserID]
	KindDeviceID Kind = 4 // a device or advertising ID, see [DeviceID]
)

// String returns the kind's name, which is also its tag in the hash input.
func (k Kind) String() string {
	switch k {
	case KindEmail:
		return "email"
	case KindPhone:
		return "phone"
	case KindUserID:
		return "user"
	case KindDeviceID:
		return "device"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Limits on identifier sizes, in bytes of UTF-8.
const (
	// MaxEmailLen is the longest email address accepted (RFC 5321: 254).
	MaxEmailLen = 254
	// MaxIDLen is the longest user or device ID accepted.
	MaxIDLen = 256
	// maxInputLen bounds the raw input looked at before any work is done,
	// so that a megabyte of spaces is rejected at once.
	maxInputLen = 1024
	// maxHashInput is the longest hash input: the kind tag, ':' and the
	// longest normalized identifier (an ID). Hashers keep a buffer of this
	// size on the stack.
	maxHashInput = len("device:") + MaxIDLen
)

// ErrInvalidIdentifier is returned (wrapped in an [*IdentifierError]) when
// an identifier cannot be normalized. The error says why, never what the
// input was.
var ErrInvalidIdentifier = errors.New("anonymize: invalid identifier")

// IdentifierError describes why an identifier was rejected. It never holds
// the identifier itself: only its kind, its length and the reason. The zero
// IdentifierError describes nothing; like any error value it is safe to
// read concurrently.
type IdentifierError struct {
	Kind   Kind   `json:"kind"`   // the kind of identifier that was rejected
	Reason string `json:"reason"` // what is wrong, e.g. "missing '@'"
	Len    int    `json:"len"`    // the input's length in bytes, after trimming
	// Region is the region of a [PhoneIn] number, upper-cased, when it is
	// two letters (a region is not personal data; anything else given as
	// the region is not repeated), and "" otherwise.
	Region string `json:"region,omitempty"`
}

func (e *IdentifierError) Error() string {
	if e.Region != "" {
		return fmt.Sprintf("anonymize: invalid %s (%d bytes, region %s): %s", e.Kind, e.Len, e.Region, e.Reason)
	}
	return fmt.Sprintf("anonymize: invalid %s (%d bytes): %s", e.Kind, e.Len, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidIdentifier) true.
func (e *IdentifierError) Is(target error) bool { return target == ErrInvalidIdentifier }

func invalid(k Kind, n int, reason string) error {
	return &IdentifierError{Kind: k, Reason: reason, Len: n}
}

// Identifier is a raw personal identifier on its way to becoming a
// [Pseudonym]. Build one with [Email], [Phone], [PhoneIn], [UserID] or
// [DeviceID]; the constructors do no work, [Identifier.Normalize] and the
// hashers do.
//
// An Identifier never prints: String, GoString, Format (every verb),
// MarshalText, MarshalJSON and LogValue all write a redacted form that
// names only the kind. Where fmt cannot call those methods (an Identifier in
// an unexported struct field, which it prints by reflection) it finds only
// the kind, the text's length, the address of its bytes and, for [PhoneIn],
// the region's two letters. Keep it for as short a time as possible all the
// same.
//
// Compare identifiers by their normalized forms or their pseudonyms: ==
// compares where the text is stored, not the text. The zero Identifier is
// invalid: normalizing it returns an error. An Identifier is an immutable
// value, safe for concurrent use.
type Identifier struct {
	kind Kind
	// The region of a PhoneIn number: two upper-case letters, badRegion,
	// or noRegion (every other identifier). Not personal data: PhoneIn
	// keeps nothing of a region argument that is not two letters.
	region [2]byte
	// The text, as the string's data and length (see text): fmt prints an
	// unsafe.Pointer as an address for every verb, and a string as itself.
	p unsafe.Pointer
	n int
}

func newIdentifier(k Kind, s string) Identifier {
	return Identifier{kind: k, p: unsafe.Pointer(unsafe.StringData(s)), n: len(s)}
}

// text returns the identifier's text.
func (id Identifier) text() string { return unsafe.String((*byte)(id.p), id.n) }

// Email returns an email address identifier. See [Identifier.Normalize]
// for the rules.
func Email(s string) Identifier { return newIdentifier(KindEmail, s) }

// Phone returns the identifier of a phone number in international form:
// '+' or "00", then the country code and the number, as in
// "+44 20 7946 0958". A national number (without country code) is
// rejected when normalized: give its region with [PhoneIn]. See
// [Identifier.Normalize] for the rules.
func Phone(s string) Identifier { return newIdentifier(KindPhone, s) }

// PhoneIn returns the identifier of a phone number written as it is dialled
// in region, an ISO 3166-1 alpha-2 code such as "GB" or "us": national
// numbers ("020 7946 0958"), the region's international prefix
// ("0044 20 7946 0958" in GB, "011 44 20 7946 0958" in US) and
// international numbers ("+44 20 7946 0958", whatever the region) are all
// read. PhoneIn("GB", "020 7946 0958") and Phone("+44 20 7946 0958")
// normalize alike, to "+442079460958", and so have the same pseudonym: the
// region is not part of the hash input.
//
// A region that phonenumbers does not know, or that is not two letters, is
// an error when the identifier is normalized; the error names a two-letter
// region, and only that. See [Identifier.Normalize] for the rules.
func PhoneIn(region, s string) Identifier {
	id := newIdentifier(KindPhone, s)
	id.region = parseRegion(region)
	return id
}

// UserID returns an account or customer ID identifier. IDs are
// case-sensitive.
func UserID(s string) Identifier { return newIdentifier(KindUserID, s) }

// DeviceID returns a device or advertising ID identifier. IDs are
// case-sensitive.
func DeviceID(s string) Identifier { return newIdentifier(KindDeviceID, s) }

// Kind returns the identifier's kind.
func (id Identifier) Kind() Kind { return id.kind }

// IsZero reports whether id is the zero Identifier.
func (id Identifier) IsZero() bool { return id.kind == 0 && id.n == 0 }

// Normalize returns the canonical form of the identifier, the one that is
// hashed:
//
//   - Email: surrounding white space trimmed. The local part is lowercased
//     and put in Unicode NFC (golang.org/x/text/unicode/norm), so that
//     "jürgen" typed with a precomposed ü or with u and a combining
//     diaeresis is one address. The domain is converted to its IDNA ASCII
//     form by golang.org/x/net/idna's Lookup profile (UTS #46 mapping,
//     non-transitional: lowercased, NFC, full-width forms folded, ignorable
//     characters dropped, ß kept): "bücher.de", "BÜCHER.DE",
//     "xn--bcher-kva.de" and "XN--BCHER-KVA.DE" are all
//     "xn--bcher-kva.de". For gmail.com and googlemail.com the dots and any
//     "+tag" of the local part are dropped (the normalization of UID2 and
//     the ad platforms, so that pseudonyms match across systems).
//     Rejected: no or several '@', empty parts, a local part over 64 bytes,
//     an address over [MaxEmailLen] bytes, spaces, control characters,
//     quotes and the other RFC 5322 specials, leading, trailing or doubled
//     dots in the local part, invalid UTF-8, a domain IDNA rejects
//     (including invalid A-labels such as "xn--abc" and labels with "--"
//     in their third and fourth places), and a domain whose ASCII form has
//     no dot, empty or over-long labels (63 bytes; 253 for the domain) or
//     labels with characters other than letters, digits and inner hyphens.
//   - Phone: E.164 as github.com/nyaruka/phonenumbers (libphonenumber)
//     formats it, "+" and the digits, for a number that phonenumbers calls
//     valid for its country (IsValidNumber: its country's numbering plan
//     has numbers of this length and prefix; not that it is in service).
//     [Phone] takes international numbers only: "+" or "00", then the
//     country code; a national number is rejected, never guessed: give its
//     region with [PhoneIn], which also reads the region's national and
//     international prefixes. Spaces, tabs, '-', '.', '/' and one pair of
//     parentheses are dropped; a national prefix after the country code is
//     dropped as phonenumbers drops it ("+44 (0)20 7946 0958" and
//     "+44 020 7946 0958" are "+442079460958"; Italy's leading 0 is kept),
//     and national forms are rewritten as phonenumbers rewrites them
//     (Argentina's mobile "15" after the area code becomes the "9" of the
//     international form). Letters (vanity numbers, extensions) and other
//     characters are rejected. Numbers are mostly 7 to 15 digits; the
//     metadata knows a few valid ones outside that range (6 digits in Iran,
//     16 and 17 in Germany).
//   - UserID, DeviceID: surrounding white space trimmed; must be valid
//     UTF-8, 1 to [MaxIDLen] bytes, without control or format characters.
//     Case is kept.
//
// These rules replace hand-written ones (the domain kept as written in
// Unicode, no NFC, phone numbers checked against a table of country codes
// only), and so the pseudonyms of the inputs they treat differently
// changed: email addresses not in NFC, with an IDN domain
// (in Unicode: it is now its A-label) or with 'İ', full-width forms,
// ideographic full stops or ignorable characters in the domain, phone
// numbers with a national prefix after the country code, in parentheses or
// not, or in a national form phonenumbers rewrites. Inputs accepted before
// are now rejected: national numbers and bare digits without "+" or "00"
// (use [PhoneIn]), phone numbers that are not valid for their country,
// invalid A-labels and domains IDNA rejects. Every key hashes the current
// normalized form, so a pseudonym stored for such an input before the
// change is not found again by identifier, under the current key or under
// a previous key of a [Keyring]: key rotation does not re-key these
// people; they need a migration from the old pseudonym to the new.
//
// Normalizing a normalized identifier changes nothing. Errors wrap
// [ErrInvalidIdentifier] and never contain the input. Normalizing the
// common identifiers (an ASCII email address, a phone number in E.164 or
// with separators) allocates only the returned string; internationalized
// domains and phone numbers that need phonenumbers' full parse (national
// numbers, a national prefix after the country code, invalid numbers)
// allocate more, and the latter take tens of microseconds.
func (id Identifier) Normalize() (string, error) {
	var buf [maxHashInput]byte
	b, err := id.appendNormalized(buf[:0])
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// appendNormalized appends the normalized identifier to dst. It never grows
// dst beyond maxHashInput bytes of output.
func (id Identifier) appendNormalized(dst []byte) ([]byte, error) {
	if id.n > maxInputLen {
		if id.kind == KindPhone {
			return dst, invalidPhone(id.n, id.region, "too long")
		}
		return dst, invalid(id.kind, id.n, "too long")
	}
	switch id.kind {
	case KindEmail:
		return appendEmail(dst, id.text())
	case KindPhone:
		return appendPhone(dst, id.text(), id.region)
	case KindUserID, KindDeviceID:
		return appendID(dst, id.kind, id.text())
	}
	return dst, invalid(id.kind, id.n, "unknown identifier kind (use Email, Phone, UserID or DeviceID)")
}

// appendHashInput appends the bytes every hasher hashes: the kind's tag,
// ':' and the normalized identifier, e.g. "email:jane@example.com". The tags
// contain no ':', so the encoding is unambiguous.
func (id Identifier) appendHashInput(dst []byte) ([]byte, error) {
	dst = append(dst, id.kind.String()...)
	dst = append(dst, ':')
	return id.appendNormalized(dst)
}

// redacted is what every printing method writes.
func (id Identifier) redacted() string { return id.kind.String() + ":[redacted]" }

// String returns a redacted form such as "email:[redacted]".
func (id Identifier) String() string { return id.redacted() }

// GoString returns a redacted form such as "email:[redacted]".
func (id Identifier) GoString() string { return id.redacted() }

// Format writes the redacted form for every verb and flag.
func (id Identifier) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(id.redacted())) }

// MarshalText returns the redacted form, so encoders never see the raw value.
func (id Identifier) MarshalText() ([]byte, error) { return []byte(id.redacted()), nil }

// MarshalJSON returns the redacted form as a JSON string.
func (id Identifier) MarshalJSON() ([]byte, error) { return []byte(`"` + id.redacted() + `"`), nil }

// LogValue returns the redacted form for log/slog.
func (id Identifier) LogValue() slog.Value { return slog.StringValue(id.redacted()) }
