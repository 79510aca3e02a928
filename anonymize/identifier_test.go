package anonymize

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type normCase struct {
	name string
	in   string
	want string
}

type rejectCase struct {
	name   string
	in     string
	reason string // a substring of the error's reason
}

func TestNormalizeEmail(t *testing.T) {
	for _, tc := range []normCase{
		{"plain", "jane@example.com", "jane@example.com"},
		{"trim and lowercase", "  Jane.Doe@Example.COM\t\n", "jane.doe@example.com"},
		{"plus tag kept outside gmail", "jane+news@example.com", "jane+news@example.com"},
		{"dots kept outside gmail", "j.a.n.e@example.com", "j.a.n.e@example.com"},
		{"gmail drops dots", "Jane.Doe@gmail.com", "janedoe@gmail.com"},
		{"gmail drops plus tag", "jane.doe+shopping@gmail.com", "janedoe@gmail.com"},
		{"gmail drops everything after first plus", "jane+a+b@GMAIL.COM", "jane@gmail.com"},
		{"googlemail same rules, domain kept", "Jane.Doe+x@googlemail.com", "janedoe@googlemail.com"},
		{"gmail doubled dots dropped", "j..ane@gmail.com", "jane@gmail.com"},
		{"gmail subdomain is not gmail", "jane.doe@mail.gmail.com", "jane.doe@mail.gmail.com"},
		{"atext specials", "o'brien!#$%&*/=?^_`{|}~-@example.co.uk", "o'brien!#$%&*/=?^_`{|}~-@example.co.uk"},
		{"digits and hyphens in domain", "a@x-1.example-2.com", "a@x-1.example-2.com"},
		{"unicode local part lowercased", "JÖRG@example.de", "jörg@example.de"},
		{"IDN domain to its A-label", "info@MÜNCHEN.de", "info@xn--mnchen-3ya.de"},
		{"A-label lowercased", "info@XN--MNCHEN-3YA.DE", "info@xn--mnchen-3ya.de"},
		{"64-byte local part", strings.Repeat("a", 64) + "@example.com", strings.Repeat("a", 64) + "@example.com"},
		{"254 bytes", strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 57) + ".com",
			strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 57) + ".com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Email(tc.in).Normalize()
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			again, err := Email(got).Normalize()
			require.NoError(t, err)
			assert.Equal(t, got, again, "not a fixed point")
		})
	}
}

func TestRejectEmail(t *testing.T) {
	for _, tc := range []rejectCase{
		{"empty", "", "empty"},
		{"blank", "   ", "empty"},
		{"no at", "jane.example.com", "missing '@'"},
		{"two at", "jane@doe@example.com", "more than one '@'"},
		{"empty local", "@example.com", "empty local part"},
		{"gmail tag only", "+news@gmail.com", "empty local part"},
		{"empty domain", "jane@", "empty domain"},
		{"no dot in domain", "jane@localhost", "no '.'"},
		{"trailing dot in domain", "jane@example.com.", "ends with '.'"},
		{"empty label", "jane@example..com", "empty label"},
		{"leading dot in domain", "jane@.example.com", "empty label"},
		{"label starts with hyphen", "jane@-example.com", "starts with '-'"},
		{"label ends with hyphen", "jane@example-.com", "ends with '-'"},
		{"last label ends with hyphen", "jane@example.com-", "ends with '-'"},
		{"underscore in domain", "jane@ex_ample.com", "invalid character in domain"},
		{"ip literal", "jane@[192.168.0.1]", "invalid character in domain"},
		{"long label", "jane@" + strings.Repeat("a", 64) + ".com", "label longer than 63"},
		{"long domain", "jane@" + strings.Repeat(strings.Repeat("a", 60)+".", 5) + "com", "domain longer than 253"},
		{"space in local", "jane doe@example.com", "invalid character in local part"},
		{"quoted local", `"jane"@example.com`, "invalid character in local part"},
		{"comma", "jane,doe@example.com", "invalid character in local part"},
		{"control char", "jane\x01@example.com", "invalid character in local part"},
		{"leading dot", ".jane@example.com", "starts or ends with '.'"},
		{"trailing dot", "jane.@example.com", "starts or ends with '.'"},
		{"double dot", "ja..ne@example.com", "'..'"},
		{"local over 64", strings.Repeat("a", 65) + "@example.com", "longer than 64"},
		{"over 254", strings.Repeat("a", 64) + "@" + strings.Repeat(strings.Repeat("b", 62)+".", 3) + "example.com", "longer than 254"},
		{"bad utf8 local", "ja\xffne@example.com", "not valid UTF-8"},
		{"bad utf8 domain", "jane@exa\xffmple.com", "not valid UTF-8"},
		{"zero width space", "ja\u200bne@example.com", "invalid character in local part"},
		{"huge input", strings.Repeat("a", 2000) + "@example.com", "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertRejected(t, Email(tc.in), tc.reason)
		})
	}
}

func TestNormalizePhone(t *testing.T) {
	for _, tc := range []normCase{
		{"e164", "+12345678901", "+12345678901"},
		{"formatted with plus", "+1 (234) 567-8901", "+12345678901"},
		{"dots and slashes", "+44 20.7946/0958", "+442079460958"},
		{"00 international prefix", "0044 20 7946 0958", "+442079460958"},
		{"00 and a mobile number", "00 49 151 23456789", "+4915123456789"},
		{"three digit country code", "+353 1 234 5678", "+35312345678"},
		{"fifteen digits", "+49 800 1234567890", "+498001234567890"},
		{"seven digits (Niue)", "+683 4002", "+6834002"},
		{"surrounding space", "  +33 1 23 45 67 89 ", "+33123456789"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Phone(tc.in).Normalize()
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			again, err := Phone(got).Normalize()
			require.NoError(t, err)
			assert.Equal(t, got, again, "not a fixed point")
		})
	}
}

func TestRejectPhone(t *testing.T) {
	for _, tc := range []rejectCase{
		{"empty", "", "empty"},
		{"national with parens", "(234) 567-8901", "national number"},
		{"national ten digits", "234 567 8901", "use PhoneIn"},
		{"trunk prefix", "020 7946 0958", "use PhoneIn"},
		{"NANP style without plus", "1 (234) 567-8901", "national number"},
		{"bare digits with country code", "4915123456789", "national number"},
		{"plus then zero", "+0 123 456 789", "cannot start with 0"},
		{"too many digits", "+123456789012345678901", "more than 20"},
		{"sixteen digits", "+1234567890123456", "not a valid number"},
		{"fifteen digits, not a number", "+123456789012345", "not a valid number"},
		{"unused area code", "+1 555 123 4567", "not a valid number"},
		{"too few digits", "+1 234 56", "not a valid number"},
		{"two digits", "+12", "not a phone number"},
		{"three digits", "+123", "not a valid number"},
		{"unassigned country code", "+999 123 456 789", "unassigned"},
		{"unassigned two digit", "+28 123 456 789", "unassigned"},
		{"letters", "+1 800 FLOWERS", "letters"},
		{"extension", "+1 234 567 8901 x12", "letters"},
		{"plus in middle", "+1 234+567 8901", "'+' in the middle"},
		{"nested parens", "+1 ((234)) 567 8901", "more than one pair"},
		{"unbalanced open", "+1 (234 567 8901", "unbalanced"},
		{"unbalanced close", "+1 234) 567 8901", "unbalanced"},
		{"only plus", "+", "no digits"},
		{"hash sign", "+1 234 567 8901#", "invalid character"},
		{"unicode digits", "+1 ２３４ 567 8901", "invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertRejected(t, Phone(tc.in), tc.reason)
		})
	}
}

func TestNormalizeIDs(t *testing.T) {
	for _, ctor := range []func(string) Identifier{UserID, DeviceID} {
		for _, tc := range []normCase{
			{"kept as is", "Customer-0042", "Customer-0042"},
			{"case kept", "AEBE52E7-03EE-455A-B3C4-E57283966239", "AEBE52E7-03EE-455A-B3C4-E57283966239"},
			{"trimmed", "\t 12345 \n", "12345"},
			{"unicode", "kund_åäö", "kund_åäö"},
			{"inner space kept", "a b", "a b"},
			{"256 bytes", strings.Repeat("x", 256), strings.Repeat("x", 256)},
		} {
			id := ctor(tc.in)
			t.Run(id.Kind().String()+"/"+tc.name, func(t *testing.T) {
				got, err := id.Normalize()
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
			})
		}
		for _, tc := range []rejectCase{
			{"empty", "", "empty"},
			{"blank", " \t ", "empty"},
			{"too long", strings.Repeat("x", 257), "longer than 256"},
			{"control", "abc\x00def", "control character"},
			{"del", "abc\x7fdef", "control character"},
			{"C1 control", "abc\u0085def", "control character"},
			{"bidi override", "abc\u202edef", "format character"},
			{"zero width joiner", "abc\u200ddef", "format character"},
			{"bad utf8", "abc\xc3", "not valid UTF-8"},
		} {
			id := ctor(tc.in)
			t.Run(id.Kind().String()+"/reject/"+tc.name, func(t *testing.T) {
				assertRejected(t, id, tc.reason)
			})
		}
	}
}

func TestRejectZeroIdentifier(t *testing.T) {
	var id Identifier
	assert.True(t, id.IsZero())
	assertRejected(t, id, "unknown identifier kind")
}

// assertRejected checks that id is rejected for the given reason, with an
// error that is errors.Is-able and never contains the input.
func assertRejected(t *testing.T, id Identifier, reason string) {
	t.Helper()
	got, err := id.Normalize()
	require.Error(t, err)
	assert.Empty(t, got)
	require.ErrorIs(t, err, ErrInvalidIdentifier)
	var ie *IdentifierError
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, id.Kind(), ie.Kind)
	assert.Contains(t, ie.Reason, reason)
	assert.True(t, strings.HasPrefix(err.Error(), "anonymize: invalid "), err.Error())
	if trimmed := strings.TrimSpace(id.text()); len(trimmed) > 4 {
		assert.NotContains(t, err.Error(), trimmed, "error echoes the input")
	}
	_, err = SipHash(testKey(t)).Pseudonym(id)
	require.ErrorIs(t, err, ErrInvalidIdentifier, "hasher must reject what Normalize rejects")
}

func TestKindsAreDomainSeparated(t *testing.T) {
	for _, h := range testHashers(t) {
		user, err := h.Pseudonym(UserID("12025550143"))
		require.NoError(t, err)
		phone, err := h.Pseudonym(Phone("+12025550143"))
		require.NoError(t, err)
		device, err := h.Pseudonym(DeviceID("12025550143"))
		require.NoError(t, err)
		assert.NotEqual(t, user, phone)
		assert.NotEqual(t, user, device)
	}
}

func TestIdentifierNeverPrints(t *testing.T) {
	const secret = "Jane.Doe@Example.com"
	id := Email(secret)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("visit", "id", id)
	js, err := json.Marshal(struct{ ID Identifier }{id})
	require.NoError(t, err)
	text, err := id.MarshalText()
	require.NoError(t, err)
	outputs := []string{
		id.String(), id.GoString(), string(js), string(text), logs.String(),
		fmt.Sprint(id), fmt.Sprintf("%v %+v %#v %s %q %x %X %d", id, id, id, id, id, id, id, id),
		fmt.Sprintf("%v %+v", struct{ ID Identifier }{id}, &struct{ ID Identifier }{id}),
		fmt.Sprintf("%v", []Identifier{id}),
	}
	for _, out := range outputs {
		assert.NotContains(t, strings.ToLower(out), "jane", out)
		assert.NotContains(t, out, "6a616e65", out) // hex of "jane"
	}
	assert.Equal(t, "email:[redacted]", id.String())
}

func TestNormalizeEmailLookalikeGmail(t *testing.T) {
	// 'İ' (U+0130) is mapped by IDNA (UTS #46) to "i̇", 'i' and a combining
	// dot above, not to ASCII 'i' as unicode.ToLower would: the domain is
	// not gmail.com, and gmail's rules do not apply.
	got, err := Email("Jane.Doe+x@GMAİL.COM").Normalize()
	require.NoError(t, err)
	assert.Equal(t, "jane.doe+x@xn--gmail-bgd.com", got)
	again, err := Email(got).Normalize()
	require.NoError(t, err)
	assert.Equal(t, got, again)
	// In the local part, lowercasing is unicode.ToLower's, as before.
	got, err = Email("JANE.DOE.İ@example.com").Normalize()
	require.NoError(t, err)
	assert.Equal(t, "jane.doe.i@example.com", got)
}

// Identifiers hold their text as a pointer and a length, so that fmt's
// reflection prints an address (see TestSecretsNeverPrint); the text must
// come back whole, and the constructors must stay free.
func TestIdentifierText(t *testing.T) {
	for _, in := range []string{"", "x", "Jane.Doe@Example.com", strings.Repeat("a", maxInputLen+1)} {
		for _, ctor := range []func(string) Identifier{Email, Phone, UserID, DeviceID} {
			id := ctor(in)
			assert.Equal(t, in, id.text())
			assert.False(t, id.IsZero())
		}
	}
	assert.True(t, Identifier{}.IsZero())
	assert.Empty(t, Identifier{}.text())
	s := strings.Repeat("Jane.Doe@Example.com", 2)[:20]
	var sink Identifier
	allocs := testing.AllocsPerRun(100, func() { sink = Email(s) })
	assert.Zero(t, allocs)
	got, err := sink.Normalize()
	require.NoError(t, err)
	assert.Equal(t, "jane.doe@example.com", got)
}
