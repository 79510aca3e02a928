package ops

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// findMember agrees with encoding/json on what is one valid JSON object,
// on the member's value, and the line it rewrites decodes as the original
// with the member replaced.
func FuzzFindMember(f *testing.F) {
	for _, s := range []string{
		`{"email":"ana@example.com","n":1}`, `{}`, ` { "a" : [1,2,{"email":"x"}] , "email" : "\u00e9\"\\" } `,
		`{"em\u0061il":"x"}`, `{"email":12.5e-3}`, `{"email":null}`, `{"email":"a","email":"b"}`, `[1]`, `null`,
		`{"email":"a"} x`, `{"email":"\ud800"}`, "{\"email\":\"\xff\"}", `{"a":-0.0E+1,"b":true,"c":false}`, `{"a":01}`,
		`{"pseudonym":"x","email":"y"}`, `{"a":"` + "\x01" + `"}`, `{"a":[}`,
	} {
		f.Add([]byte(s), "email")
	}
	f.Fuzz(func(t *testing.T, b []byte, key string) {
		m, err := findMember(b, key, "pseudonym")
		var obj map[string]json.RawMessage
		jerr := json.Unmarshal(b, &obj)
		valid := jerr == nil && obj != nil // "null" decodes into a nil map
		if !valid {
			require.Error(t, err, "encoding/json refuses it: %v", jerr)
			return
		}
		require.NoError(t, err)
		raw, ok := obj[key]
		require.Equal(t, ok, m.found)
		_, hasOther := obj["pseudonym"]
		if key != "pseudonym" {
			require.Equal(t, hasOther, m.other)
		}
		if !ok || m.dup {
			return
		}
		require.Equal(t, string(bytes.TrimSpace(raw)), string(b[m.val:m.end]))
		if raw[0] == '"' {
			var want string
			require.NoError(t, json.Unmarshal(raw, &want))
			got, err := ndjsonValue(b, m, 1, key)
			require.NoError(t, err)
			require.Equal(t, want, got)
		}
		// The rewritten line.
		out := append(append(append([]byte{}, b[:m.start]...), `"pseudonym":"0123456789abcdef"`...), b[m.end:]...)
		var got map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(out, &got), "%s", out)
		want := obj
		if key != "pseudonym" {
			delete(want, key)
			if hasOther {
				return // the command refuses such a line
			}
		}
		want["pseudonym"] = json.RawMessage(`"0123456789abcdef"`)
		assert.Equal(t, len(want), len(got))
		for k, v := range want {
			assert.Equal(t, string(bytes.TrimSpace(v)), string(bytes.TrimSpace(got[k])), k)
		}
	})
}
