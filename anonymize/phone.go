package anonymize

import "strings"

// Phone number limits (ITU-T E.164).
const (
	maxPhoneDigits = 15
	minPhoneDigits = 7  // country code and subscriber number (Niue: +683 and 4 digits)
	minBareDigits  = 11 // without '+' or "00", fewer digits are likely a national number
)

// appendPhone appends the E.164 form of the phone number s to dst. See
// Identifier.Normalize for the rules.
func appendPhone(dst []byte, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	n := len(s)
	if n == 0 {
		return dst, invalid(KindPhone, n, "empty")
	}
	international := false
	switch {
	case s[0] == '+':
		international, s = true, s[1:]
	case strings.HasPrefix(s, "00"):
		international, s = true, s[2:]
	case s[0] == '(':
		return dst, invalid(KindPhone, n, "national number without country code: write it as +<country code> <number>")
	}
	start := len(dst)
	dst = append(dst, '+')
	digits, open, pairs := 0, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			if digits == maxPhoneDigits {
				return dst[:start], invalid(KindPhone, n, "more than 15 digits")
			}
			dst = append(dst, c)
			digits++
		case c == ' ' || c == '-' || c == '.' || c == '/' || c == '\t':
		case c == '(':
			if open || pairs > 0 {
				return dst[:start], invalid(KindPhone, n, "more than one pair of parentheses")
			}
			open = true
		case c == ')':
			if !open {
				return dst[:start], invalid(KindPhone, n, "unbalanced parentheses")
			}
			open, pairs = false, pairs+1
		case c == '+':
			return dst[:start], invalid(KindPhone, n, "'+' in the middle of the number")
		case 'a' <= c|0x20 && c|0x20 <= 'z':
			return dst[:start], invalid(KindPhone, n, "letters are not allowed (no vanity numbers or extensions)")
		default:
			return dst[:start], invalid(KindPhone, n, "invalid character")
		}
	}
	number := dst[start+1:]
	switch {
	case open:
		return dst[:start], invalid(KindPhone, n, "unbalanced parentheses")
	case digits == 0:
		return dst[:start], invalid(KindPhone, n, "no digits")
	case number[0] == '0':
		if international {
			return dst[:start], invalid(KindPhone, n, "country code cannot start with 0")
		}
		return dst[:start], invalid(KindPhone, n, "national number with trunk prefix 0: write it as +<country code> <number>")
	case !international && digits < minBareDigits:
		return dst[:start], invalid(KindPhone, n, "ambiguous: no '+' and too few digits to hold a country code; write it as +<country code> <number>")
	case digits < minPhoneDigits:
		return dst[:start], invalid(KindPhone, n, "fewer than 7 digits")
	case countryCodeLen(number) == 0:
		return dst[:start], invalid(KindPhone, n, "unassigned country code")
	}
	return dst, nil
}

// countryCodeLen returns the length of the E.164 country code that digits
// start with, or 0 if none is assigned. Country codes form a prefix code,
// so at most one of the 1-, 2- and 3-digit prefixes matches.
func countryCodeLen(digits []byte) int {
	v := 0
	for l := 1; l <= 3 && l <= len(digits); l++ {
		v = v*10 + int(digits[l-1]-'0')
		if assignedCodes[l-1][v] {
			return l
		}
	}
	return 0
}

// assignedCodes[l-1][c] reports whether c is an assigned l-digit code.
var assignedCodes = func() (t [3][1000]bool) {
	for l, list := range countryCodes {
		for _, f := range strings.Fields(list) {
			c := 0
			for _, d := range f {
				c = c*10 + int(d-'0')
			}
			t[l][c] = true
		}
	}
	return t
}()

// countryCodes lists the ITU-T E.164 country calling codes in use, by
// length.
var countryCodes = [3]string{
	" 1 7 ",
	" 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 " +
		"60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 ",
	" 211 212 213 216 218 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 " +
		"235 236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 " +
		"255 256 257 258 260 261 262 263 264 265 266 267 268 269 290 291 297 298 299 " +
		"350 351 352 353 354 355 356 357 358 359 370 371 372 373 374 375 376 377 378 380 " +
		"381 382 383 385 386 387 389 420 421 423 500 501 502 503 504 505 506 507 508 509 " +
		"590 591 592 593 594 595 596 597 598 599 670 672 673 674 675 676 677 678 679 680 " +
		"681 682 683 685 686 687 688 689 690 691 692 800 808 850 852 853 855 856 870 878 " +
		"880 881 882 883 886 888 960 961 962 963 964 965 966 967 968 970 971 972 973 974 " +
		"975 976 977 979 992 993 994 995 996 998 ",
}
