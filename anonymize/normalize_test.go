package anonymize

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nyaruka/phonenumbers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Spellings of one address or number that normalize alike: Unicode NFC and
// NFD, IDN domains in Unicode and as A-labels, a national prefix after the
// country code.
func TestNormalizeAlike(t *testing.T) {
	for _, tc := range []struct {
		name string
		ids  []Identifier
		want string
	}{
		{"NFC and NFD local part", []Identifier{
			Email(norm.NFC.String("jürgen@example.de")), Email(norm.NFD.String("jürgen@example.de")), Email("JÜRGEN@example.de"),
		}, "jürgen@example.de"},
		{"NFC and NFD domain", []Identifier{
			Email(norm.NFC.String("x@bücher.de")), Email(norm.NFD.String("x@bücher.de")),
		}, "x@xn--bcher-kva.de"},
		{"IDN domain: Unicode, A-label, upper case", []Identifier{
			Email("x@bücher.de"), Email("x@xn--bcher-kva.de"), Email("X@BÜCHER.DE"), Email("x@XN--BCHER-KVA.DE"), Email("x@Xn--Bcher-Kva.De"),
		}, "x@xn--bcher-kva.de"},
		{"IDNA mapping: full-width letters and ideographic full stop", []Identifier{
			Email("x@ｅｘａｍｐｌｅ。com"), Email("x@example.com"),
		}, "x@example.com"},
		{"sharp s is kept (non-transitional IDNA)", []Identifier{
			Email("x@faß.de"), Email("x@xn--fa-hia.de"),
		}, "x@xn--fa-hia.de"},
		{"gmail rules still apply", []Identifier{
			Email("Jane.Doe+x@GMAIL.COM"), Email("janedoe@gmail.com"),
		}, "janedoe@gmail.com"},
		{"UK trunk zero in parentheses", []Identifier{
			Phone("+44 (0)20 7946 0958"), Phone("+44 20 7946 0958"), Phone("+442079460958"), Phone("0044 20 7946 0958"),
			Phone("+44 020 7946 0958"), PhoneIn("GB", "020 7946 0958"), PhoneIn("gb", "(020) 7946 0958"),
			PhoneIn("GB", "0044 20 7946 0958"), PhoneIn("US", "011 44 20 7946 0958"), PhoneIn("DE", "+44 20 7946 0958"),
		}, "+442079460958"},
		{"US", []Identifier{
			Phone("+1 (202) 555-0143"), PhoneIn("US", "(202) 555-0143"), PhoneIn("US", "1 202 555 0143"), PhoneIn("US", "202.555.0143"),
		}, "+12025550143"},
		{"Germany", []Identifier{Phone("+49 (0)30 123456"), PhoneIn("DE", "030 123456")}, "+4930123456"},
		{"France", []Identifier{Phone("+33 (0)1 23 45 67 89"), PhoneIn("FR", "01 23 45 67 89")}, "+33123456789"},
		{"Italy keeps its leading zero", []Identifier{Phone("+39 06 6982 1234"), PhoneIn("IT", "06 6982 1234")}, "+390669821234"},
		{"Argentina: mobile 15 becomes 9", []Identifier{Phone("+54 9 11 2345 6789"), PhoneIn("AR", "011 15 2345 6789")}, "+5491123456789"},
		{"Japan", []Identifier{Phone("+81 3-1234-5678"), PhoneIn("JP", "03-1234-5678")}, "+81312345678"},
		{"Niue, seven digits", []Identifier{Phone("+683 4002"), PhoneIn("NU", "4002")}, "+6834002"},
		{"non-geographical", []Identifier{Phone("+800 1234 5678")}, "+80012345678"},
		{"six digits (Iran), valid for the library", []Identifier{Phone("+98 9601"), PhoneIn("IR", "09601")}, "+989601"},
		{"sixteen digits (Germany), valid for the library", []Identifier{Phone("+49 800 1234567890 0"), PhoneIn("DE", "0800 12345678900")}, "+4980012345678900"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, id := range tc.ids {
				got, err := id.Normalize()
				require.NoError(t, err, "#%d", i)
				assert.Equal(t, tc.want, got, "#%d", i)
			}
			h := SipHash(testKey(t))
			want, err := h.Pseudonym(tc.ids[0])
			require.NoError(t, err)
			for i, id := range tc.ids {
				p, err := h.Pseudonym(id)
				require.NoError(t, err, "#%d", i)
				assert.Equal(t, want, p, "#%d: one pseudonym", i)
			}
		})
	}
}

func TestRejectNewRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		id     Identifier
		reason string
	}{
		{"invalid punycode", Email("x@xn--abc.de"), "invalid IDNA A-label"},
		{"empty A-label", Email("x@xn--.de"), "ends with '-'"},
		{"invalid upper-case A-label", Email("x@XN--ABC.DE"), "invalid IDNA A-label"},
		{"reserved hyphens", Email("x@ab--cd.com"), "reserved '--'"},
		{"IDN with a disallowed symbol", Email("x@exa_mplé.com"), "invalid internationalized domain name"},
		{"IDN label starting with a combining mark", Email("x@\u0301bücher.de"), "invalid internationalized domain name"},
		{"IDN label ending with '-'", Email("x@bücher-.de"), "invalid internationalized domain name"},
		{"IDN without a dot", Email("x@bücher"), "no '.'"},
		{"IDN with too long an A-label", Email("x@" + strings.Repeat("ü", 60) + ".de"), "longer than 63"},
		{"national number", Phone("020 7946 0958"), "use PhoneIn"},
		{"national number, US", Phone("(202) 555-0143"), "use PhoneIn"},
		{"invalid for its country", Phone("+44 20 7946 095"), "not a valid number for its country"},
		{"unused NANP area code", Phone("+1 555 123 4567"), "not a valid number for its country"},
		{"PhoneIn, invalid number", PhoneIn("GB", "020 7946 095"), "not a valid number for its country"},
		{"PhoneIn, unknown region", PhoneIn("XX", "020 7946 0958"), "unknown region"},
		{"PhoneIn, region ZZ", PhoneIn("ZZ", "020 7946 0958"), "unknown region"},
		{"PhoneIn, empty region", PhoneIn("", "020 7946 0958"), "not a two-letter"},
		{"PhoneIn, numeric region", PhoneIn("001", "+800 1234 5678"), "not a two-letter"},
		{"PhoneIn, arguments swapped", PhoneIn("020 7946 0958", "GB"), "not a two-letter"},
		{"PhoneIn, unknown region with an international number", PhoneIn("XX", "+44 20 7946 0958"), "unknown region"},
		{"PhoneIn, letters", PhoneIn("US", "1-800-FLOWERS"), "letters"},
		{"PhoneIn, extension", PhoneIn("US", "202 555 0143 ext. 12"), "letters"},
		{"PhoneIn, too short", PhoneIn("GB", "0"), "not a phone number"},
		{"PhoneIn, one digit too few", PhoneIn("GB", "020 7946 095"), "not a valid number"},
		{"six digits, invalid", Phone("+1 234 56"), "not a valid number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertRejected(t, tc.id, tc.reason)
		})
	}
}

// Errors name a well-formed region, never the number, and never a region
// argument that is not two letters (a number passed as the region).
func TestPhoneErrors(t *testing.T) {
	_, err := Phone("020 7946 0958").Normalize()
	var ie *IdentifierError
	require.True(t, errors.As(err, &ie))
	assert.Equal(t, KindPhone, ie.Kind)
	assert.Empty(t, ie.Region)
	assert.Contains(t, err.Error(), "PhoneIn")
	assert.NotContains(t, err.Error(), "7946")

	_, err = PhoneIn("xx", "020 7946 0958").Normalize()
	require.True(t, errors.As(err, &ie))
	assert.Equal(t, "XX", ie.Region)
	assert.Equal(t, "anonymize: invalid phone (13 bytes, region XX): unknown region: not an ISO 3166-1 alpha-2 code with a numbering plan", err.Error())

	_, err = PhoneIn("+44 20 7946 0958", "GB").Normalize()
	require.True(t, errors.As(err, &ie))
	assert.Empty(t, ie.Region)
	assert.NotContains(t, err.Error(), "7946")
	assert.NotContains(t, err.Error(), "44")

	_, err = PhoneIn("GB", "020 7946 095").Normalize()
	require.True(t, errors.As(err, &ie))
	assert.Equal(t, "GB", ie.Region)
	assert.NotContains(t, err.Error(), "7946")
}

func TestIdentifierRegion(t *testing.T) {
	a, b := PhoneIn("gb", "x"), PhoneIn("GB", "x")
	assert.Equal(t, [2]byte{'G', 'B'}, a.region)
	assert.Equal(t, a.region, b.region)
	assert.Equal(t, badRegion, PhoneIn("GBR", "x").region)
	assert.Equal(t, badRegion, PhoneIn("G1", "x").region)
	assert.Equal(t, noRegion, Phone("x").region)
	assert.Equal(t, KindPhone, a.Kind())
	assert.Equal(t, "phone:[redacted]", a.String())
	assert.False(t, PhoneIn("GB", "").IsZero())
	s := strings.Repeat("020 7946 0958", 2)[:13]
	var sink Identifier
	assert.Zero(t, testing.AllocsPerRun(100, func() { sink = PhoneIn("GB", s) }))
	got, err := sink.Normalize()
	require.NoError(t, err)
	assert.Equal(t, "+442079460958", got)
}

// The common inputs stay on the fast paths: no allocation.
func TestFastPathsAllocateNothing(t *testing.T) {
	h := SipHash(testKey(t))
	for _, id := range []Identifier{
		Email("Jane.Doe.1984@Example.com"), Email("J.Doe+news@Example.co.uk"),
		Phone("+442079460958"), Phone("+12025550143"), Phone("+4915123456789"), Phone("+390669821234"), Phone("+6834002"),
		Email("jürgen@example.de"), // non-ASCII local part, ASCII domain: NFC already
	} {
		if _, err := h.Pseudonym(id); err != nil {
			t.Fatal(err)
		}
		if raceEnabled && id.Kind() == KindPhone {
			continue // regexp pools its matchers, and sync.Pool drops items under the race detector
		}
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := h.Pseudonym(id); err != nil {
				panic(err)
			}
		})
		assert.Zero(t, allocs, "%d bytes", id.n)
	}
	if !raceEnabled {
		id := Phone("+44 20 7946 0958")
		assert.Zero(t, testing.AllocsPerRun(200, func() { _, _ = h.Pseudonym(id) }), "formatted number, pooled scratch")
	}
}

// exampleNumbers returns every example number in phonenumbers' metadata, in
// E.164 digits (without '+').
func exampleNumbers() []string {
	var out []string
	for r := range phonenumbers.GetSupportedRegions() {
		for typ := phonenumbers.FIXED_LINE; typ <= phonenumbers.VOICEMAIL; typ++ {
			if n := phonenumbers.GetExampleNumberForType(r, typ); n != nil {
				out = append(out, phonenumbers.Format(n, phonenumbers.E164)[1:])
			}
		}
	}
	for cc := range phonenumbers.GetSupportedGlobalNetworkCallingCodes() {
		if n := phonenumbers.GetExampleNumberForNonGeoEntity(cc); n != nil {
			out = append(out, phonenumbers.Format(n, phonenumbers.E164)[1:])
		}
	}
	return out
}

// libraryE164 returns phonenumbers' E.164 form of "+"digits, or "" if it
// does not parse to a valid number.
func libraryE164(number, region string) string {
	num, err := phonenumbers.Parse(number, region)
	if err != nil || !phonenumbers.IsValidNumber(num) || num.GetExtension() != "" {
		return ""
	}
	return phonenumbers.Format(num, phonenumbers.E164)
}

// The fast path gives the library's answer, or declines: on every example
// number of the metadata and on variants of each (a digit more, a digit
// less, a digit changed, a national prefix inserted).
func TestPhoneFastPathMatchesLibrary(t *testing.T) {
	if testing.Short() {
		t.Skip("calls the library some 20,000 times")
	}
	examples := exampleNumbers()
	require.Greater(t, len(examples), 1000)
	fast, checked, examplesFast := 0, 0, 0
	for _, e := range examples {
		if len(e) >= minPhoneDigits && len(e) <= maxPhoneDigits && fastE164(e) {
			examplesFast++
		}
		variants := []string{e, e + "0", e[:len(e)-1], e[:len(e)-1] + string('0'+(e[len(e)-1]-'0'+1)%10)}
		for cl := 1; cl <= 3 && cl < len(e); cl++ {
			variants = append(variants, e[:cl]+"0"+e[cl:], e[:cl]+"1"+e[cl:], e[:cl]+"8"+e[cl:])
		}
		for _, v := range variants {
			checked++
			want := libraryE164("+"+v, "ZZ")
			if fastE164(v) {
				fast++
				if want != "+"+v {
					t.Errorf("fast path accepts +%s, library says %q", v, want)
				}
			}
			got, err := Phone("+" + v).Normalize()
			if want == "" {
				assert.Error(t, err, "+%s", v)
			} else if assert.NoError(t, err, "+%s", v) {
				assert.Equal(t, want, got, "+%s", v)
			}
		}
	}
	t.Logf("%d example numbers, %d on the fast path; %d numbers in all, %d on the fast path", len(examples), examplesFast, checked, fast)
	assert.Greater(t, examplesFast, len(examples)*9/10, "most example numbers take the fast path")
}

// Our domains are IDNA's: for every accepted address, the domain is what
// idna.Lookup.ToASCII makes of it.
func TestEmailDomainIsIDNA(t *testing.T) {
	for _, in := range []string{"x@bücher.de", "x@XN--BCHER-KVA.DE", "x@münchen.de", "x@☃.net", "x@العربية.com", "x@例え.jp", "x@ÉCOLE.fr", "x@a\u0308.de"} {
		got, err := Email(in).Normalize()
		require.NoError(t, err, in)
		want, err := idna.Lookup.ToASCII(norm.NFC.String(in[strings.IndexByte(in, '@')+1:]))
		require.NoError(t, err, in)
		assert.Equal(t, "x@"+want, got, in)
	}
}

// Phone numbers of many countries normalized at once, while the fast path
// compiles each country's metadata on first use: same answers as one by
// one (run with -race).
func TestPhoneConcurrent(t *testing.T) {
	var numbers []string
	for _, r := range []string{"FI", "AX", "NO", "SJ", "RE", "YT", "CW", "BQ", "MA", "EH", "AU", "CX", "GP", "MF", "SH", "TA",
		"RU", "KZ", "AG", "CA", "IM", "JE", "CH", "NL", "BR", "IN"} {
		for _, typ := range []phonenumbers.PhoneNumberType{phonenumbers.FIXED_LINE, phonenumbers.MOBILE} {
			if n := phonenumbers.GetExampleNumberForType(r, typ); n != nil {
				numbers = append(numbers, phonenumbers.Format(n, phonenumbers.INTERNATIONAL))
			}
		}
	}
	want := make([]string, len(numbers))
	for i, n := range numbers {
		want[i] = libraryE164(n, "ZZ")
		require.NotEmpty(t, want[i], n)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range numbers {
				j := (i + g) % len(numbers)
				if got, err := Phone(numbers[j]).Normalize(); err != nil || got != want[j] {
					t.Errorf("%s: %q, %v; want %q", numbers[j], got, err, want[j])
				}
			}
		})
	}
	wg.Wait()
}
