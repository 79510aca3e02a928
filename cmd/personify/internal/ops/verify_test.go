package ops

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

func testReceipt(t testing.TB, key anonymize.Key) ([]byte, string) {
	e, err := personify.New(personify.Options{Key: key, K: 1})
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.DefinePurpose(personify.Purpose{Name: "ads", Model: personify.OptOut}))
	require.NoError(t, e.Define(personify.Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Define(personify.Segment{Name: "vip", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", anonymize.Email("ana@example.com")))
	require.NoError(t, e.Add("vip", anonymize.Email("ana@example.com")))
	r, err := e.Forget(anonymize.Email("ana@example.com"))
	require.NoError(t, err)
	b, err := json.Marshal(r)
	require.NoError(t, err)
	return b, hex.EncodeToString(e.ReceiptPublicKey())
}

func TestVerifyReceipt(t *testing.T) {
	keyPath, key, _ := testKey(t)
	rc, pub := testReceipt(t, key)
	path := writeFile(t, "receipt.json", string(rc))

	out, _, err := runOps(t, "", "verify-receipt", "--public-key", pub, path)
	require.NoError(t, err)
	assert.Regexp(t, `^valid: erasure [0-9a-f]+ of 2 memberships in 2 segments, erased at \S+, signed by `+pub+"\n$", out)
	out, _, err = runOps(t, string(rc), "verify-receipt", "--key-file", keyPath)
	require.NoError(t, err)
	assert.Contains(t, out, "valid: ")

	// A flipped byte: a membership count changed.
	altered := bytes.Replace(rc, []byte(`"memberships":1`), []byte(`"memberships":7`), 1)
	require.NotEqual(t, rc, altered)
	_, _, errAltered := runOps(t, string(altered), "verify-receipt", "--public-key", pub)
	require.ErrorIs(t, errAltered, personify.ErrBadReceipt)
	assert.ErrorContains(t, errAltered, "altered")

	other, _, _ := ed25519.GenerateKey(nil)
	_, _, errOther := runOps(t, string(rc), "verify-receipt", "--public-key", hex.EncodeToString(other))
	require.ErrorIs(t, errOther, personify.ErrBadReceipt)
	assert.ErrorContains(t, errOther, "not among the 1 public keys given")

	_, _, errTrunc := runOps(t, string(rc[:len(rc)/2]), "verify-receipt", "--public-key", pub)
	require.Error(t, errTrunc)
	assert.ErrorContains(t, errTrunc, "truncated")

	_, _, errSyntax := runOps(t, `{"id": x}`, "verify-receipt", "--public-key", pub)
	assert.ErrorContains(t, errSyntax, "syntax error at byte 8")

	msgs := map[string]bool{errAltered.Error(): true, errOther.Error(): true, errTrunc.Error(): true, errSyntax.Error(): true}
	assert.Len(t, msgs, 4, "distinct messages")

	_, _, err = runOps(t, string(rc), "verify-receipt", "--public-key", "abc")
	assert.ErrorContains(t, err, "64 hex digits")
	_, _, err = runOps(t, string(rc), "verify-receipt")
	assert.ErrorContains(t, err, "no public key")
	_, _, err = runOps(t, strings.Repeat(" ", maxReceipt+1), "verify-receipt", "--public-key", pub)
	assert.ErrorContains(t, err, "larger than 1 MiB")
}

// The receipt decoder never panics, and what it accepts verifies or fails
// cleanly.
func FuzzReceiptJSON(f *testing.F) {
	key := anonymize.GenerateKey()
	rc, pub := testReceipt(f, key)
	f.Add(rc)
	f.Add(rc[:len(rc)/2])
	f.Add([]byte(`{"version":3,"id":"x","signature":"AA=="}`))
	f.Add([]byte(`[]`))
	pk, _ := hex.DecodeString(pub)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReceipt(b)
		if err != nil {
			assert.True(t, strings.HasPrefix(err.Error(), "malformed receipt"), err.Error())
			return
		}
		_, _ = verifyWith(r, []ed25519.PublicKey{pk})
	})
}
