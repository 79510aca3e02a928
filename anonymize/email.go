package anonymize

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

const (
	maxLocalLen  = 64  // RFC 5321
	maxDomainLen = 253 // RFC 1035, without the trailing dot
	maxLabelLen  = 63
)

// Byte maps for the one-pass scanner: each maps an ASCII byte to its
// lowercased self where it may appear, or to a control code below 0x20 that
// sends the scanner to a slower branch. Bytes >= 0x80 map to mNonASCII.
const (
	mInvalid  = 0 // not allowed here
	mDot      = 1 // '.': rules depend on context
	mAt       = 2 // '@'
	mHyphen   = 3 // '-' in a domain: not at a label's start or end
	mNonASCII = 4 // a multi-byte UTF-8 sequence starts
)

var localMap, domainMap = func() (local, domain [256]byte) {
	for c := 0x80; c < 0x100; c++ {
		local[c], domain[c] = mNonASCII, mNonASCII
	}
	set := func(c, lower byte) { local[c], domain[c] = lower, lower }
	for c := byte('a'); c <= 'z'; c++ {
		set(c, c)
		set(c-'a'+'A', c)
	}
	for c := byte('0'); c <= '9'; c++ {
		set(c, c)
	}
	for _, c := range []byte("!#$%&'*+-/=?^_`{|}~") { // RFC 5322 atext specials
		local[c] = c
	}
	local['.'], local['@'] = mDot, mAt
	domain['.'], domain['-'], domain['@'] = mDot, mHyphen, mAt
	return
}()

// appendEmail appends the normalized form of the email address s to dst.
// See Identifier.Normalize for the rules. It lowercases and validates in one
// pass: the local part up to '@' (in NFC), then the domain (converted to
// its IDNA ASCII form if it is not plain ASCII); gmail's rules are applied
// to the lowercased local part afterwards, once the domain is known. The
// output of a successful call is a fixed point.
func appendEmail(dst []byte, s string) ([]byte, error) {
	if out, ok := appendEmailFast(dst, s); ok {
		return out, nil
	}
	return appendEmailExact(dst, s)
}

// appendEmailExact is appendEmail without the fast path: every rule, with
// the reason for every rejection.
func appendEmailExact(dst []byte, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	n := len(s)
	if n == 0 {
		return dst, invalid(KindEmail, n, "empty")
	}
	start := len(dst)
	s = nfcLocal(s)
	dst, at, dotReason := appendLocal(dst, s)
	if at < 0 {
		if dotReason == "" {
			return dst[:start], invalid(KindEmail, n, "missing '@'")
		}
		return dst[:start], invalid(KindEmail, n, dotReason)
	}
	localEnd := len(dst)
	dst = append(dst, '@')
	dst, reason := appendDomain(dst, s[at+1:])
	if reason != "" {
		return dst[:start], invalid(KindEmail, n, reason)
	}
	if domain := dst[localEnd+1:]; string(domain) == "gmail.com" || string(domain) == "googlemail.com" {
		// Drop the dots and the "+tag", then move the domain back.
		w := start
		for _, c := range dst[start:localEnd] {
			if c == '+' {
				break
			}
			if c != '.' {
				dst[w] = c
				w++
			}
		}
		dst = append(dst[:w], dst[localEnd:]...)
		localEnd, dotReason = w, ""
	}
	switch {
	case localEnd == start:
		return dst[:start], invalid(KindEmail, n, "empty local part (before '@')")
	case localEnd-start > maxLocalLen:
		return dst[:start], invalid(KindEmail, n, "local part longer than 64 bytes")
	case dotReason != "":
		return dst[:start], invalid(KindEmail, n, dotReason)
	case len(dst)-start > MaxEmailLen:
		return dst[:start], invalid(KindEmail, n, "longer than 254 bytes")
	}
	return dst, nil
}

// nfcLocal returns s with its local part (up to the first '@', or all of
// it) lowercased as appendLocal lowercases it and in Unicode NFC, before
// and after, so that an address typed with precomposed letters and one
// with combining marks ("jürgen" with U+00FC, or with u and U+0308) are
// one. The domain is left to IDNA, which does the same. NFC never moves an
// '@', which composes with nothing. ASCII, and a local part already in
// this form, come back as they are, without allocating; appendLocal
// lowercasing again changes nothing.
func nfcLocal(s string) string {
	at := strings.IndexByte(s, '@')
	if at < 0 {
		at = len(s)
	}
	local := s[:at]
	if isASCII(local) || !utf8.ValidString(local) {
		return s // invalid UTF-8 is rejected by appendLocal, with its reason
	}
	l := norm.NFC.String(strings.Map(unicode.ToLower, norm.NFC.String(local)))
	if l == local {
		return s
	}
	return l + s[at:]
}

func hasDoubleHyphen(b []byte) bool {
	for i := 1; i < len(b); i++ {
		if b[i] == '-' && b[i-1] == '-' {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// appendLocal appends the lowercased local part of s, up to the first '@',
// to dst and validates it as RFC 5322 atext and dots, extended to visible
// non-ASCII characters (RFC 6531). It returns the index of the '@' in s
// (-1 if there is none) and, separately, why the dots are misplaced (leading,
// trailing or doubled), which does not matter for gmail, whose dots go. On
// any other invalid character it returns -1 and the reason.
func appendLocal(dst []byte, s string) (out []byte, at int, dotReason string) {
	start := len(dst)
	for i := 0; i < len(s); i++ {
		c := localMap[s[i]]
		if c >= 0x20 {
			dst = append(dst, c)
			continue
		}
		switch c {
		case mDot:
			if dotReason == "" {
				if len(dst) == start {
					dotReason = "local part starts or ends with '.'"
				} else if dst[len(dst)-1] == '.' {
					dotReason = "'..' in local part"
				}
			}
			dst = append(dst, '.')
		case mAt:
			if dotReason == "" && len(dst) > start && dst[len(dst)-1] == '.' {
				dotReason = "local part starts or ends with '.'"
			}
			return dst, i, dotReason
		case mNonASCII:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, -1, "local part is not valid UTF-8"
			}
			r = unicode.ToLower(r)
			if !isVisible(r) {
				return dst, -1, "invalid character in local part"
			}
			dst = utf8.AppendRune(dst, r)
			i += size - 1
		default:
			return dst, -1, "invalid character in local part"
		}
	}
	return dst, -1, ""
}

// isVisible reports whether a non-ASCII rune may appear in an address.
func isVisible(r rune) bool {
	return r != utf8.RuneError && unicode.IsPrint(r) && !unicode.IsSpace(r) && !unicode.Is(unicode.Cf, r)
}

// appendDomain appends the domain s to dst in its IDNA ASCII form (RFC
// 5891, with the UTS #46 mapping of golang.org/x/net/idna's Lookup profile:
// lowercased, NFC, "bücher.de" as "xn--bcher-kva.de") and validates it.
// Plain ASCII is lowercased and validated here, and handed to IDNA only if
// a label has "--" (an A-label such as "xn--bcher-kva", which IDNA must
// check and may canonicalize, or a label IDNA reserves); anything else goes
// through IDNA first. Either way the ASCII form must then pass
// appendASCIIDomain: at least two labels of letters, digits and inner
// hyphens, within the DNS's lengths.
func appendDomain(dst []byte, s string) ([]byte, string) {
	if strings.IndexByte(s, '@') >= 0 {
		return dst, "more than one '@'"
	}
	start := len(dst)
	if isASCII(s) {
		dst, reason := appendASCIIDomain(dst, s)
		if reason != "" || !hasDoubleHyphen(dst[start:]) {
			return dst, reason
		}
		a, err := idna.Lookup.ToASCII(string(dst[start:]))
		if err != nil {
			return dst, "invalid IDNA A-label ('xn--') or reserved '--' in a domain label"
		}
		return appendASCIIDomain(dst[:start], a)
	}
	if !utf8.ValidString(s) {
		return dst, "domain is not valid UTF-8"
	}
	a, err := idna.Lookup.ToASCII(s)
	if err != nil {
		return dst, "invalid internationalized domain name (IDNA)"
	}
	return appendASCIIDomain(dst, a)
}

// appendASCIIDomain appends the lowercased ASCII domain s to dst and
// validates it: at least two labels of letters, digits and inner hyphens.
func appendASCIIDomain(dst []byte, s string) ([]byte, string) {
	start, labelStart, labels := len(dst), len(dst), 1
	for i := 0; i < len(s); i++ {
		c := domainMap[s[i]]
		if c >= 0x20 {
			dst = append(dst, c)
			continue
		}
		switch c {
		case mDot:
			if reason := checkLabel(dst[labelStart:]); reason != "" {
				return dst, reason
			}
			dst = append(dst, '.')
			labelStart, labels = len(dst), labels+1
		case mHyphen:
			if len(dst) == labelStart {
				return dst, "domain label starts with '-'"
			}
			dst = append(dst, '-')
		case mAt:
			return dst, "more than one '@'"
		default:
			return dst, "invalid character in domain"
		}
	}
	switch d := dst[start:]; {
	case len(d) == 0:
		return dst, "empty domain (after '@')"
	case len(d) > maxDomainLen:
		return dst, "domain longer than 253 bytes"
	case len(dst) == labelStart:
		return dst, "domain ends with '.'"
	case labels < 2:
		if reason := checkLabel(dst[labelStart:]); reason != "" {
			return dst, reason
		}
		return dst, "domain has no '.'"
	}
	return dst, checkLabel(dst[labelStart:])
}

// checkLabel returns why a domain label is invalid, or "".
func checkLabel(l []byte) string {
	switch {
	case len(l) == 0:
		return "empty label in domain"
	case len(l) > maxLabelLen:
		return "domain label longer than 63 bytes"
	case l[len(l)-1] == '-':
		return "domain label ends with '-'"
	}
	return ""
}
