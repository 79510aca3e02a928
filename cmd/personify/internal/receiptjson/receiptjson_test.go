package receiptjson

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/personify"
)

func TestDecode(t *testing.T) {
	in := personify.Receipt{Version: 3, ID: "00112233445566778899aabbccddeeff", Signature: []byte{1, 2}}
	b, err := json.Marshal(in)
	require.NoError(t, err)
	got, err := Decode(b, 0)
	require.NoError(t, err)
	assert.Equal(t, in.ID, got.ID)
	for bad, says := range map[string]string{
		"":                               "empty",
		string(b[:len(b)/2]):             "ends early",
		`{"version":3,"secret@x.org":1}`: "wrong shape",
		`{"version":"secret@x.org"}`:     "wrong shape",
		`{"version":3} {}`:               "data after",
		`{"version":3,}`:                 "syntax error at byte",
	} {
		_, err := Decode([]byte(bad), 0)
		assert.ErrorIs(t, err, ErrMalformed, bad)
		assert.ErrorContains(t, err, says, bad)
		if err != nil {
			assert.NotContains(t, err.Error(), "secret", bad)
		}
	}
	_, err = Decode([]byte(strings.Repeat(" ", 100)), 10)
	assert.ErrorContains(t, err, "more than 10")
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":3,"id":"x","pseudonyms":[],"segments":[]}`))
	f.Add([]byte(`{"version":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Decode(b, 1<<20); err != nil && len(b) > 16 && strings.Contains(err.Error(), string(b)) {
			t.Fatalf("the error quotes the input: %v", err)
		}
	})
}
