package anonymize

import (
	"errors"
	"fmt"
	"log/slog"
	"unsafe"
)

// Kind is the kind of an identifier. It is part of the hash input, so the
// same characters under two kinds give unrelated pseudonyms:
// UserID("15551234567") and Phone("+15551234567") never collide by
// construction. The zero Kind is invalid; a Kind is a plain value, safe for
// concurrent use.
type Kind uint8

// The identifier kinds. The zero Kind is not a valid kind.
const (
	KindEmail    Kind = 1 // an email address, see [Email]
	KindPhone    Kind = 2 // a phone number in E.164, see [Phone]
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
}

func (e *IdentifierError) Error() string {
	return fmt.Sprintf("anonymize: invalid %s (%d bytes): %s", e.Kind, e.Len, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidIdentifier) true.
func (e *IdentifierError) Is(target error) bool { return target == ErrInvalidIdentifier }

func invalid(k Kind, n int, reason string) error {
	return &IdentifierError{Kind: k, Reason: reason, Len: n}
}

// Identifier is a raw personal identifier on its way to becoming a
// [Pseudonym]. Build one with [Email], [Phone], [UserID] or [DeviceID]; the
// constructors do no work, [Identifier.Normalize] and the hashers do.
//
// An Identifier never prints: String, GoString, Format (every verb),
// MarshalText, MarshalJSON and LogValue all write a redacted form that
// names only the kind. Where fmt cannot call those methods (an Identifier in
// an unexported struct field, which it prints by reflection) it finds only
// the kind, the text's length and the address of its bytes. Keep it for as
// short a time as possible all the same.
//
// Compare identifiers by their normalized forms or their pseudonyms: ==
// compares where the text is stored, not the text. The zero Identifier is
// invalid: normalizing it returns an error. An Identifier is an immutable
// value, safe for concurrent use.
type Identifier struct {
	kind Kind
	// The text, as the string's data and length (see text): fmt prints an
	// unsafe.Pointer as an address for every verb, and a string as itself.
	p unsafe.Pointer
	n int
}

func newIdentifier(k Kind, s string) Identifier {
	return Identifier{k, unsafe.Pointer(unsafe.StringData(s)), len(s)}
}

// text returns the identifier's text.
func (id Identifier) text() string { return unsafe.String((*byte)(id.p), id.n) }

// Email returns an email address identifier. See [Identifier.Normalize]
// for the rules.
func Email(s string) Identifier { return newIdentifier(KindEmail, s) }

// Phone returns a phone number identifier. See [Identifier.Normalize] for
// the rules.
func Phone(s string) Identifier { return newIdentifier(KindPhone, s) }

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
//   - Email: surrounding white space trimmed and lowercased; for gmail.com
//     and googlemail.com the dots and any "+tag" of the local part are
//     dropped (the normalization of UID2 and the ad platforms, so that
//     pseudonyms match across systems). The domain is kept as written.
//     Rejected: no or several '@', empty parts, a local part over 64 bytes,
//     an address over [MaxEmailLen] bytes, spaces, control characters,
//     quotes and the other RFC 5322 specials, leading, trailing or doubled
//     dots, a domain without a dot, empty or over-long labels, and labels
//     with characters other than letters, digits and inner hyphens.
//   - Phone: E.164, "+" then 7 to 15 digits starting with an assigned
//     country code. Spaces, '-', '.', '/', and one pair of parentheses are
//     dropped; "00" works as "+". Without "+" or "00" the digits are read as
//     country code and number only when that is unambiguous: at least 11
//     digits, not starting with '0' or '(' (a national number such as
//     "(234) 567-8901" is rejected, "1 (234) 567-8901" becomes
//     "+12345678901"). Letters (vanity numbers, extensions) are rejected.
//   - UserID, DeviceID: surrounding white space trimmed; must be valid
//     UTF-8, 1 to [MaxIDLen] bytes, without control or format characters.
//     Case is kept.
//
// Normalizing a normalized identifier changes nothing. Errors wrap
// [ErrInvalidIdentifier] and never contain the input.
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
		return dst, invalid(id.kind, id.n, "too long")
	}
	switch id.kind {
	case KindEmail:
		return appendEmail(dst, id.text())
	case KindPhone:
		return appendPhone(dst, id.text())
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
