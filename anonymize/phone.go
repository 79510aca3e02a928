package anonymize

import (
	"errors"
	"strings"
	"sync"
	"unsafe"

	"github.com/nyaruka/phonenumbers"
)

// Phone number limits.
const (
	// The fast path's numbers: E.164's "+" and 7 to 15 digits. Outside it
	// phonenumbers decides, which knows valid numbers of 6 digits (Iran's
	// +98 9601) and of 16 and 17 (German ones, whose numbering plan
	// allows longer numbers than E.164).
	maxPhoneDigits = 15
	minPhoneDigits = 7
	// maxPhoneInputDigits bounds the digits looked at: a country code of
	// 3 and phonenumbers' longest national number, 17.
	maxPhoneInputDigits = 20
	// maxPhoneInputLen is the longest phone input accepted, after trimming
	// (phonenumbers' own limit).
	maxPhoneInputLen = phonenumbers.MAX_INPUT_STRING_LENGTH
)

// Regions, as Identifier stores them: two upper-case ASCII letters, or one
// of these.
var (
	noRegion  = [2]byte{}         // Phone: international numbers only
	badRegion = [2]byte{'?', '?'} // PhoneIn with a region that is not two ASCII letters
)

// parseRegion returns the stored form of a PhoneIn region: upper-cased if it
// is two ASCII letters, badRegion otherwise. It keeps nothing else of the
// string, so a phone number passed as the region by mistake is not kept.
func parseRegion(r string) [2]byte {
	if len(r) != 2 || !isASCIILetter(r[0]) || !isASCIILetter(r[1]) {
		return badRegion
	}
	return [2]byte{r[0] &^ 0x20, r[1] &^ 0x20}
}

func isASCIILetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// invalidPhone is invalid for a phone number, naming the region of a
// PhoneIn identifier in the error if it is well-formed (two letters: not
// personal data).
func invalidPhone(n int, region [2]byte, reason string) error {
	err := invalid(KindPhone, n, reason)
	if region != noRegion && region != badRegion {
		err.(*IdentifierError).Region = string(region[:])
	}
	return err
}

// appendPhone appends the E.164 form of the phone number s to dst: an
// international number ('+' or "00"), or with a region (PhoneIn) also a
// national number of that region. See Identifier.Normalize for the rules.
//
// It checks the characters itself (phonenumbers would read letters as
// digits and split off extensions), drops the separators, and hands the
// digits to phonenumbers, which strips a national prefix after the country
// code, checks the number against its country's metadata and formats it.
// Numbers already in E.164 take a fast path that gives the library's answer
// without its cost (see fastE164).
func appendPhone(dst []byte, s string, region [2]byte) ([]byte, error) {
	s = strings.TrimSpace(s)
	n := len(s)
	switch {
	case n == 0:
		return dst, invalidPhone(n, region, "empty")
	case n > maxPhoneInputLen:
		return dst, invalidPhone(n, region, "longer than 250 bytes")
	case region == badRegion:
		return dst, invalidPhone(n, region, "region is not a two-letter ISO 3166-1 code (PhoneIn takes the region first)")
	case region != noRegion && !phonenumbers.GetSupportedRegions()[string(region[:])]:
		return dst, invalidPhone(n, region, "unknown region: not an ISO 3166-1 alpha-2 code with a numbering plan")
	}
	start := len(dst)
	international := false
	switch {
	case s[0] == '+':
		international, s = true, s[1:]
	case region == noRegion && strings.HasPrefix(s, "00"):
		international, s = true, s[2:]
	}
	if international {
		dst = append(dst, '+')
	}
	digits, open, pairs := 0, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			if digits == maxPhoneInputDigits {
				return dst[:start], invalidPhone(n, region, "more than 20 digits")
			}
			dst = append(dst, c)
			digits++
		case c == ' ' || c == '-' || c == '.' || c == '/' || c == '\t':
		case c == '(':
			if open || pairs > 0 {
				return dst[:start], invalidPhone(n, region, "more than one pair of parentheses")
			}
			open = true
		case c == ')':
			if !open {
				return dst[:start], invalidPhone(n, region, "unbalanced parentheses")
			}
			open, pairs = false, pairs+1
		case c == '+':
			return dst[:start], invalidPhone(n, region, "'+' in the middle of the number")
		case isASCIILetter(c):
			return dst[:start], invalidPhone(n, region, "letters are not allowed (no vanity numbers or extensions)")
		default:
			return dst[:start], invalidPhone(n, region, "invalid character")
		}
	}
	switch {
	case open:
		return dst[:start], invalidPhone(n, region, "unbalanced parentheses")
	case digits == 0:
		return dst[:start], invalidPhone(n, region, "no digits")
	case !international && region == noRegion:
		return dst[:start], invalidPhone(n, region, "national number (no '+' or \"00\" and country code): use PhoneIn with the number's region")
	case !international:
		// A national number, or one with the region's international
		// prefix: phonenumbers knows the region's prefixes.
		out, reason := appendPhoneLib(dst[:start], string(dst[start:]), string(region[:]))
		if reason != "" {
			return dst[:start], invalidPhone(n, region, reason)
		}
		return out, nil
	case dst[start+1] == '0':
		return dst[:start], invalidPhone(n, region, "country code cannot start with 0")
	}
	if minPhoneDigits <= digits && digits <= maxPhoneDigits && phoneFastValid(dst[start+1:], s) {
		return dst, nil
	}
	out, reason := appendPhoneLib(dst[:start], string(dst[start:]), "ZZ")
	if reason != "" {
		return dst[:start], invalidPhone(n, region, reason)
	}
	return out, nil
}

// phoneScratch holds the digits of a formatted number while the fast path
// looks at them: the regular expressions must be given heap memory, not the
// caller's buffer, which would then escape.
var phoneScratch = sync.Pool{New: func() any { return new([maxPhoneDigits]byte) }}

// phoneFastValid reports whether fastE164 accepts the digits of an
// international number. rest is the input after its '+' or "00": where it
// is the digits themselves, the fast path reads them there.
func phoneFastValid(digits []byte, rest string) bool {
	if len(rest) == len(digits) {
		return fastE164(rest)
	}
	buf := phoneScratch.Get().(*[maxPhoneDigits]byte)
	defer phoneScratch.Put(buf)
	k := copy(buf[:], digits)
	return fastE164(unsafe.String(&buf[0], k))
}

// appendPhoneLib appends what phonenumbers makes of number, parsed for
// region ("ZZ": none, the number starts with '+'), in E.164, and returns
// "" or why it is not a valid number.
func appendPhoneLib(dst []byte, number, region string) ([]byte, string) {
	var num phonenumbers.PhoneNumber
	if err := phonenumbers.ParseToNumber(number, region, &num); err != nil {
		return dst, checkParseError(err)
	}
	if num.GetExtension() != "" {
		return dst, "letters are not allowed (no vanity numbers or extensions)"
	}
	if !phonenumbers.IsValidNumber(&num) {
		return dst, "not a valid number for its country"
	}
	e164 := phonenumbers.Format(&num, phonenumbers.E164)
	if len(e164) > 1+maxPhoneInputDigits { // cannot happen: a guard for the hash input's size
		return dst, "more than 20 digits"
	}
	return append(dst, e164...), ""
}

// checkParseError returns the reason for an error from phonenumbers.Parse,
// whose messages are constants too, but not ours.
func checkParseError(err error) string {
	switch {
	case errors.Is(err, phonenumbers.ErrInvalidCountryCode):
		return "unassigned country code"
	case errors.Is(err, phonenumbers.ErrTooShortNSN), errors.Is(err, phonenumbers.ErrTooShortAfterIDD):
		return "too short for a phone number"
	case errors.Is(err, phonenumbers.ErrNumTooLong):
		return "too long for a phone number"
	}
	return "not a phone number"
}
