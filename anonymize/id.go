package anonymize

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// appendID appends a normalized user or device ID to dst: trimmed, valid
// UTF-8, 1 to MaxIDLen bytes, no control (Cc) or format (Cf) characters.
// Format characters are invisible (zero-width spaces, bidi overrides) and
// would let two IDs that look the same hash differently.
func appendID(dst []byte, k Kind, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	n := len(s)
	switch {
	case n == 0:
		return dst, invalid(k, n, "empty")
	case n > MaxIDLen:
		return dst, invalid(k, n, "longer than 256 bytes")
	}
	for i := 0; i < n; {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return dst, invalid(k, n, "control character")
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return dst, invalid(k, n, "not valid UTF-8")
		case unicode.Is(unicode.Cc, r):
			return dst, invalid(k, n, "control character")
		case unicode.Is(unicode.Cf, r):
			return dst, invalid(k, n, "invisible format character")
		}
		i += size
	}
	return append(dst, s...), nil
}
