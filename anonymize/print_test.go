package anonymize

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// printKeyHex is the key whose material the printing tests look for: random
// looking, so that none of its forms turns up in printed output by chance.
const printKeyHex = "1c5b07b3e391527d4696807965e527954b93fd0af82a8c84ac608e45b6d227da"

// printIDText is the identifier text the printing tests look for.
const printIDText = "Jane.Doe@Example.com"

// secret is one value that must never print, with every form in which fmt,
// slog or encoding/json could write it.
type secret struct {
	name  string
	forms []string
}

// byteSecret returns the forms of b: raw, hex (plain, spaced, upper case),
// the decimal list of %v, the element list of %#v, Go-quoted and base64,
// each from every 8-byte offset, and the forms of its 8-byte words.
func byteSecret(name string, b []byte) secret {
	s := secret{name: name}
	for off := 0; off+8 <= len(b); off += 8 {
		c := b[off : off+8]
		hx := hex.EncodeToString(c[:6])
		s.forms = append(s.forms,
			string(c[:6]), hx, strings.ToUpper(hx),
			fmt.Sprintf("% x", c[:4]), fmt.Sprintf("% X", c[:4]),
			strings.Trim(fmt.Sprint(c[:4]), "[]"),
			strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%#v", c[:3]), "[]byte{"), "}"),
			strings.Trim(strconv.Quote(string(c[:6])), `"`),
			strings.Trim(strconv.QuoteToASCII(string(c[:6])), `"`),
			base64.StdEncoding.EncodeToString(c[:6]),
		)
		s.forms = append(s.forms, wordForms(binary.LittleEndian.Uint64(c))...)
		s.forms = append(s.forms, wordForms(binary.BigEndian.Uint64(c))...)
	}
	return s
}

// wordForms returns how a secret uint64 prints: decimal (as uint64 and as
// int64) and hex.
func wordForms(w uint64) []string {
	return []string{strconv.FormatUint(w, 10), strconv.FormatInt(int64(w), 10), fmt.Sprintf("%x", w), fmt.Sprintf("%X", w)}
}

// textSecret returns the forms of an identifier's text: raw, lower case,
// hex, the decimal list of its bytes and base64.
func textSecret(name, text string) secret {
	c := text[:8]
	hx := hex.EncodeToString([]byte(c))
	return secret{name: name, forms: []string{
		c, strings.ToLower(c), hx, strings.ToUpper(hx),
		strings.Trim(fmt.Sprint([]byte(c[:4])), "[]"),
		base64.StdEncoding.EncodeToString([]byte(c[:6])),
	}}
}

func hmacSum(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// hmacStateSecrets returns what an HMAC under key keeps: its pads (the key
// XOR 0x36 and 0x5c) and the SHA-256 states after each pad, the values
// crypto/hmac caches and from which the HMAC can be computed without the
// key.
func hmacStateSecrets(name string, key []byte) []secret {
	var out []secret
	for _, pad := range []struct {
		name string
		x    byte
	}{{"ipad", 0x36}, {"opad", 0x5c}} {
		block := make([]byte, sha256.BlockSize)
		copy(block, key)
		for i := range block {
			block[i] ^= pad.x
		}
		d := sha256.New()
		d.Write(block)
		st, err := d.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			panic(err)
		}
		// The marshaled state is "sha\x03", the eight state words, the
		// (empty) block buffer and the length: [4:36] are the words.
		out = append(out, byteSecret(name+" "+pad.name, block[:len(key)]),
			byteSecret(name+" "+pad.name+" state", st[4:36]),
			byteSecret(name+" "+pad.name+" state words", st[8:40]))
	}
	return out
}

// printSecrets returns every secret that printing a value built from
// printKeyHex or printIDText could reveal: the key, the subkeys the
// hashers derive from it and the HMAC states under either, and the
// identifier's text. They are computed here from the documented
// constructions, not taken from the implementation.
func printSecrets(t *testing.T) []secret {
	t.Helper()
	master, err := hex.DecodeString(printKeyHex)
	require.NoError(t, err)
	sip := hmacSum(master, "personify/v1/siphash-2-4")[:16]
	salt := hmacSum(master, "personify/v1/xxhash64-salt")
	hmacSub := hmacSum(master, "personify/v1/hmac-sha256")
	secrets := []secret{
		byteSecret("key", master),
		byteSecret("siphash subkey", sip),
		{"siphash k0", wordForms(binary.LittleEndian.Uint64(sip))},
		{"siphash k1", wordForms(binary.LittleEndian.Uint64(sip[8:]))},
		byteSecret("xxhash salt", salt),
		byteSecret("hmac subkey", hmacSub),
		textSecret("identifier", printIDText),
	}
	secrets = append(secrets, hmacStateSecrets("key hmac", master)...)
	return append(secrets, hmacStateSecrets("hmac subkey hmac", hmacSub)...)
}

// leaked returns the name and form of the first secret that out contains,
// or "" if none.
func leaked(out string, secrets []secret) string {
	for _, s := range secrets {
		for _, f := range s.forms {
			if strings.Contains(out, f) {
				return fmt.Sprintf("%s as %q", s.name, f)
			}
		}
	}
	return ""
}

// Holders: a value in an exported or an unexported field. fmt calls String
// and Format on exported fields only; what an unexported field holds it
// prints by reflection.
type (
	pub[T any]  struct{ V T }
	priv[T any] struct{ v T }
)

// holders returns v in every place a program might keep it: exported and
// unexported fields, by value and by pointer, nested two deep, in an
// interface, a slice and a map.
func holders[T any](v T) map[string]any {
	return map[string]any{
		"exported":                     pub[T]{v},
		"exported/ptr":                 &pub[T]{v},
		"exported/field-ptr":           pub[*T]{&v},
		"unexported":                   priv[T]{v},
		"unexported/ptr":               &priv[T]{v},
		"unexported/field-ptr":         priv[*T]{&v},
		"unexported/ptr/field-ptr":     &priv[*T]{&v},
		"unexported/any":               priv[any]{v},
		"unexported/slice":             priv[[]T]{[]T{v}},
		"unexported/map":               &priv[map[string]T]{map[string]T{"k": v}},
		"nested/unexported-unexported": priv[priv[T]]{priv[T]{v}},
		"nested/unexported-exported":   &priv[pub[T]]{pub[T]{v}},
		"nested/exported-unexported":   pub[priv[T]]{priv[T]{v}},
		"nested/ptr-ptr":               &priv[*priv[T]]{&priv[T]{v}},
		"nested/ptr-ptr-field-ptr":     &priv[*priv[*T]]{&priv[*T]{&v}},
		"nested/exported-ptr":          &pub[*priv[T]]{&priv[T]{v}},
		"nested/any":                   priv[any]{&priv[T]{v}},
	}
}

// printVerbs are the verbs and flags tried on every holder: %s, %q and the
// other verbs that are bad for a pointer make fmt dereference it.
var printVerbs = []string{
	"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T",
	"% x", "%#x", "%+q", "%#q", "%-8s", "%08.3v", "%p", "%t", "%c", "%U", "%o", "%b", "%e",
}

// printings returns every way v gets written: each verb, fmt.Sprint and
// Sprintln, slog's JSON and text handlers, and encoding/json.
func printings(v any) map[string]string {
	out := make(map[string]string, len(printVerbs)+5)
	for _, verb := range printVerbs {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v, v)
	for name, newHandler := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog-json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"slog-text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(newHandler(&b)).Info("m", "v", v, slog.Group("g", "v", v))
		out[name] = b.String()
	}
	js, err := json.Marshal(v)
	out["json"] = string(js) + fmt.Sprint(err)
	return out
}

// printValues returns a value of each kind that holds a secret, each made
// from printKeyHex or printIDText, in every holder.
func printValues(t *testing.T) map[string]map[string]any {
	t.Helper()
	k, err := KeyFromHex(printKeyHex)
	require.NoError(t, err)
	sipRing := NewKeyring(k, nil)
	hmacRing := NewKeyring(k, HMACSHA256)
	return map[string]map[string]any{
		"key":                     holders(k),
		"key-slice":               holders([]Key{k, k}),
		"key-map":                 holders(map[string]Key{"current": k}),
		"hasher/siphash":          holders(SipHash(k)),
		"hasher/hmac":             holders(HMACSHA256(k)),
		"hasher/xxhash":           holders(XXHash(k)),
		"hasher/hmac-from-subkey": holders(HMACSHA256FromSubkey(HMACSubkey(k))),
		"hmac-subkey":             holders(HMACSubkey(k)),
		"hashers":                 holders([]Hasher{SipHash(k), HMACSHA256(k), XXHash(k)}),
		"keyring/siphash":         holders(sipRing),
		"keyring/hmac":            holders(hmacRing),
		"identifier":              holders(Email(printIDText)),
		"identifier-slice":        holders([]Identifier{Email(printIDText), UserID(printIDText)}),
		"identifier-struct":       holders(struct{ id Identifier }{Email(printIDText)}),
	}
}

// TestSecretsNeverPrint prints every value that holds key material or an
// identifier's text, in every holder, with every verb and through every
// encoder, and checks that no form of any secret comes out.
func TestSecretsNeverPrint(t *testing.T) {
	secrets := printSecrets(t)
	for value, hs := range printValues(t) {
		for holder, v := range hs {
			t.Run(value+"/"+holder, func(t *testing.T) {
				for how, out := range printings(v) {
					if what := leaked(out, secrets); what != "" {
						assert.Failf(t, "secret printed", "%s prints the %s: %s", how, what, out)
					}
				}
			})
		}
	}
}

// TestLeakDetectorFinds proves that TestSecretsNeverPrint can fail: every
// form in which fmt prints bytes, words and text is among those it looks
// for.
func TestLeakDetectorFinds(t *testing.T) {
	secrets := printSecrets(t)
	master, _ := hex.DecodeString(printKeyHex)
	sip := hmacSum(master, "personify/v1/siphash-2-4")
	var salt [32]byte
	copy(salt[:], hmacSum(master, "personify/v1/xxhash64-salt"))
	words := struct{ k0, k1 uint64 }{binary.LittleEndian.Uint64(sip), binary.LittleEndian.Uint64(sip[8:])}
	for _, tc := range []struct {
		name  string
		v     any
		verbs string
	}{
		{"key bytes", priv[[]byte]{master}, "%v %+v %#v %s %q %x %X %d % x"},
		{"salt array", priv[[32]byte]{salt}, "%v %+v %#v %s %q %x %X %d % x"},
		{"sip words", words, "%v %+v %#v %s %x %X %d"}, // %q prints any large word as '\ufffd'
		{"text", priv[string]{printIDText}, "%v %+v %#v %s %q %x %X %d"},
		// A bad verb makes fmt dereference one pointer, whatever its depth.
		{"key bytes behind a pointer", &priv[*[]byte]{&master}, "%s %q %t"},
	} {
		for verb := range strings.FieldsSeq(tc.verbs) {
			out := fmt.Sprintf(verb, tc.v)
			assert.NotEmpty(t, leaked(out, secrets), "%s of %s: %s", verb, tc.name, out)
		}
	}
	js, _ := json.Marshal(pub[[]byte]{master})
	assert.NotEmpty(t, leaked(string(js), secrets), "base64 in JSON: %s", js)
}
