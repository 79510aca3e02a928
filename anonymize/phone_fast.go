package anonymize

import (
	"regexp"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

// The fast path for a number that is already, once its separators are
// dropped, in E.164: "+" and 7 to 15 digits. It answers yes only where
// phonenumbers would parse the digits back to themselves and call the
// number valid; otherwise it declines, and phonenumbers itself decides (see
// appendPhoneLib). It is the library's own algorithm, on the library's own
// metadata (phonenumbers.MetadataCollection) and patterns, compiled once
// per country calling code on first use (all of them: 2,800 patterns,
// 50 ms; +1's 25 regions: a few ms).
//
// It exists because the library is slow for this use. Measured on the
// project's 2-core machine, shared with other work (so within some 20%):
// phonenumbers.Parse, IsValidNumber and Format(E164) of "+442079460958"
// take 76 µs and 81 allocations (10 KB): its regular expressions are built
// by string concatenation and looked up under a lock on every call.
// Through appendPhoneLib, BenchmarkPseudonym/hasher=siphash/input=phone-trunk
// ("+44 (0)20 7946 0958") takes 47 µs, 84 allocations. The fast path:
// input=phone-e164 ("+12345678901") 0.6 to 1.1 µs, input=phone-e164-gb
// ("+442079460958", four regions share +44) 1.0 to 1.6 µs, 0 allocations
// (formatted numbers too: their digits go through phoneScratch); before
// the library, the hand-written rules took 60 to 100 ns. Go's regexp
// backtracker is most of the cost. A number that starts with what its
// country's national prefix pattern matches costs one small allocation
// (the match's position: the library would consider stripping it, and
// the fast path looks at the match to see whether it would), and one the
// fast path declines costs the library's price. It caches no number.
// FuzzPhoneNormalize and TestPhoneFastPathMatchesLibrary check that the
// two agree.
//
// What it replicates (phonenumbers v1.8.1, phonenumberutil.go): parseHelper
// for "+digits" with no default region (extractCountryCode, then
// maybeStripNationalPrefixAndCarrierCode with the main region's metadata,
// then setItalianLeadingZerosForPhoneNumber), IsValidNumber
// (GetRegionCodeForNumber, IsValidNumberForRegion, getNumberTypeHelper) and
// Format(E164), which for a number the parse left unchanged is "+" and the
// same digits.

// phoneDesc is a compiled phonenumbers.PhoneNumberDesc.
type phoneDesc struct {
	re      *regexp.Regexp // "^(?:pattern)$"; nil: the empty pattern, which matches no number
	lengths uint32         // bit l set: l is a possible length
	anyLen  bool           // the desc lists no possible lengths: any length passes
}

func compileDesc(d *phonenumbers.PhoneNumberDesc) phoneDesc {
	var pd phoneDesc
	if p := d.GetNationalNumberPattern(); p != "" {
		pd.re = regexp.MustCompile("^(?:" + p + ")$")
	}
	pd.anyLen = len(d.GetPossibleLength()) == 0
	for _, l := range d.GetPossibleLength() {
		if 0 <= l && l < 32 {
			pd.lengths |= 1 << uint(l)
		}
	}
	return pd
}

// match is the library's isNumberMatchingDesc.
func (d *phoneDesc) match(nsn string) bool {
	if !d.anyLen && (len(nsn) >= 32 || d.lengths&(1<<uint(len(nsn))) == 0) {
		return false
	}
	return d.re != nil && d.re.MatchString(nsn)
}

// phoneRegion is the compiled metadata of one region (or non-geographical
// entity).
type phoneRegion struct {
	cc      int
	leading *regexp.Regexp // "^(?:leadingDigits)", or nil
	general phoneDesc
	// In getNumberTypeHelper's order: premium rate, toll free, shared cost,
	// VoIP, personal number, pager, UAN, voicemail.
	special                []phoneDesc
	fixed, mobile          phoneDesc
	sameMobileAndFixedLine bool
	// Parsing: the national prefix pattern "^(?:nationalPrefixForParsing)"
	// (nil if none), its transform rule, and the general pattern alone.
	nationalPrefix *regexp.Regexp
	transformRule  string
}

func compileRegion(md *phonenumbers.PhoneMetadata) *phoneRegion {
	if md == nil {
		return nil
	}
	r := &phoneRegion{
		cc:                     int(md.GetCountryCode()),
		general:                compileDesc(md.GetGeneralDesc()),
		fixed:                  compileDesc(md.GetFixedLine()),
		mobile:                 compileDesc(md.GetMobile()),
		sameMobileAndFixedLine: md.GetSameMobileAndFixedLinePattern(),
		transformRule:          md.GetNationalPrefixTransformRule(),
	}
	for _, d := range []*phonenumbers.PhoneNumberDesc{md.GetPremiumRate(), md.GetTollFree(), md.GetSharedCost(),
		md.GetVoip(), md.GetPersonalNumber(), md.GetPager(), md.GetUan(), md.GetVoicemail()} {
		r.special = append(r.special, compileDesc(d))
	}
	if p := md.GetLeadingDigits(); p != "" {
		r.leading = regexp.MustCompile("^(?:" + p + ")")
	}
	if p := md.GetNationalPrefixForParsing(); p != "" {
		r.nationalPrefix = regexp.MustCompile("^(?:" + p + ")")
	}
	return r
}

// known reports whether nsn is of a known type, getNumberTypeHelper's
// result other than UNKNOWN: it matches the general pattern and one of the
// types'. The library tries the rare types first, to name the type; for
// whether there is one the order does not matter, and the common types
// come first here.
func (r *phoneRegion) known(nsn string) bool {
	if r == nil || !r.general.match(nsn) {
		return false
	}
	if r.fixed.match(nsn) || !r.sameMobileAndFixedLine && r.mobile.match(nsn) {
		return true
	}
	for i := range r.special {
		if r.special[i].match(nsn) {
			return true
		}
	}
	return false
}

// keepsNationalNumber reports whether parsing leaves the national number
// nsn as it is: no national prefix stripped or transformed. It errs on the
// side of false: false sends the number to the library.
func (r *phoneRegion) keepsNationalNumber(nsn string) bool {
	if r.nationalPrefix == nil || !r.nationalPrefix.MatchString(nsn) {
		return true
	}
	groups := r.nationalPrefix.FindStringSubmatchIndex(nsn)
	last := len(groups)/2 - 1
	if r.transformRule != "" && groups[2*last] >= 0 {
		return false // the library would transform the number
	}
	end := groups[1]
	// The library strips the match unless the number matched the general
	// pattern and what is left would not.
	return end == 0 || r.general.re != nil && r.general.re.MatchString(nsn) && !r.general.re.MatchString(nsn[end:])
}

// phoneCountry is what the fast path knows of one country calling code.
type phoneCountry struct {
	once    sync.Once
	main    *phoneRegion   // the metadata the library parses with
	regions []*phoneRegion // in the library's order; nil entries for regions without metadata
}

var (
	phoneCountries    [1000]phoneCountry // by calling code
	phoneCallingCodes [1000]bool         // the calling codes phonenumbers knows
	phoneMetaOnce     sync.Once
	phoneMetaByID     map[string]*phonenumbers.PhoneMetadata // geographical regions
	phoneMetaNonGeo   map[int]*phonenumbers.PhoneMetadata    // non-geographical entities, by calling code
)

func loadPhoneMetadata() {
	phoneMetaByID = make(map[string]*phonenumbers.PhoneMetadata)
	phoneMetaNonGeo = make(map[int]*phonenumbers.PhoneMetadata)
	coll, err := phonenumbers.MetadataCollection()
	if err != nil {
		return // no fast path: every number goes to the library
	}
	for cc := range phonenumbers.GetSupportedCallingCodes() {
		if 0 < cc && cc < len(phoneCallingCodes) {
			phoneCallingCodes[cc] = true
		}
	}
	for _, md := range coll.GetMetadata() {
		if md.GetId() == "001" {
			phoneMetaNonGeo[int(md.GetCountryCode())] = md
		} else {
			phoneMetaByID[md.GetId()] = md
		}
	}
}

// country returns the compiled metadata of calling code cc, one that
// phonenumbers knows.
func country(cc int) *phoneCountry {
	c := &phoneCountries[cc]
	c.once.Do(func() {
		phoneMetaOnce.Do(loadPhoneMetadata)
		meta := func(id string) *phonenumbers.PhoneMetadata {
			if id == "001" {
				return phoneMetaNonGeo[cc]
			}
			return phoneMetaByID[id]
		}
		ids := phonenumbers.GetRegionCodesForCountryCode(cc)
		for _, id := range ids {
			c.regions = append(c.regions, compileRegion(meta(id)))
		}
		if len(c.regions) > 0 {
			c.main = c.regions[0]
		}
	})
	return c
}

// fastE164 reports whether phonenumbers would parse "+"digits (7 to 15
// ASCII digits) back to itself and call it valid. false means "ask the
// library", not "invalid". digits must not be the caller's stack memory
// (see phoneScratch).
func fastE164(digits string) bool {
	phoneMetaOnce.Do(loadPhoneMetadata)
	if len(digits) < minPhoneDigits || len(digits) > maxPhoneDigits || digits[0] == '0' {
		return false
	}
	// extractCountryCode: the shortest prefix that is a calling code.
	cc, ccLen := 0, 0
	for l := 1; l <= 3; l++ {
		cc = cc*10 + int(digits[l-1]-'0')
		if phoneCallingCodes[cc] {
			ccLen = l
			break
		}
	}
	if ccLen == 0 {
		return false
	}
	c := country(cc)
	nsn := digits[ccLen:]
	if c.main == nil || !c.main.keepsNationalNumber(nsn) {
		return false
	}
	// GetRegionCodeForNumber, then IsValidNumberForRegion: the region is
	// the only one, the first whose leading digits match, or the first of
	// whose types the number is (then it is valid there: no need to ask
	// again).
	if len(c.regions) == 1 {
		r := c.regions[0]
		return r != nil && r.cc == cc && r.known(nsn)
	}
	for _, r := range c.regions {
		switch {
		case r == nil:
		case r.leading != nil:
			if r.leading.MatchString(nsn) {
				return r.cc == cc && r.known(nsn)
			}
		case r.known(nsn):
			return r.cc == cc
		}
	}
	return false
}
