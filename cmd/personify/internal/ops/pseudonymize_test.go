package ops

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

func enginePseudonym(t *testing.T, e *personify.Engine, id anonymize.Identifier) string {
	t.Helper()
	p, err := e.Pseudonym(id)
	require.NoError(t, err)
	return p.String()
}

// The pseudonyms are the engine's, for every kind.
func TestPseudonymizeMatchesTheEngine(t *testing.T) {
	keyPath, key, keyHex := testKey(t)
	e, err := personify.New(personify.Options{Key: key})
	require.NoError(t, err)
	defer e.Close()
	for _, tc := range []struct {
		kind, region, value string
		id                  anonymize.Identifier
	}{
		{"email", "", "Jane.Doe+news@GMail.com", anonymize.Email("janedoe@gmail.com")},
		{"email", "", "Zoë@Exämple.com", anonymize.Email("Zoë@Exämple.com")},
		{"phone", "", "+44 20 7946 0958", anonymize.Phone("+442079460958")},
		{"phone", "GB", "020 7946 0958", anonymize.Phone("+442079460958")},
		{"user", "", "cust-00042", anonymize.UserID("cust-00042")},
		{"device", "", "6D92078A-8246-4BA4-AE5B-76104861E7DC", anonymize.DeviceID("6D92078A-8246-4BA4-AE5B-76104861E7DC")},
	} {
		want := enginePseudonym(t, e, tc.id)
		args := []string{"pseudonymize", "--key-file", keyPath, "--column", "id", "--kind", tc.kind}
		if tc.region != "" {
			args = append(args, "--region", tc.region)
		}
		out, _, err := runOps(t, "name,id,city\nx,\""+tc.value+"\",Oslo\n", args...)
		require.NoError(t, err, tc.kind)
		assert.Equal(t, "name,pseudonym,city\nx,"+want+",Oslo\n", out, tc.value)

		line, _ := json.Marshal(map[string]string{"id": tc.value})
		out, _, err = runOps(t, string(line)+"\n", append(args, "--format", "ndjson", "--as", "p")...)
		require.NoError(t, err, tc.kind)
		assert.Equal(t, `{"p":"`+want+`"}`+"\n", out, tc.value)
		assert.NotContains(t, out, keyHex)
	}

	// HMAC-SHA256 too, with the key from the environment.
	h, err := personify.New(personify.Options{Key: key, Hasher: anonymize.HMACSHA256})
	require.NoError(t, err)
	defer h.Close()
	t.Setenv(keyEnv, keyHex)
	out, _, err := runOps(t, "email\nana@example.com\n", "pseudonymize", "--column", "email", "--hasher", "hmac-sha256")
	require.NoError(t, err)
	assert.Equal(t, "pseudonym\n"+enginePseudonym(t, h, anonymize.Email("ana@example.com"))+"\n", out)
}

func TestPseudonymizeKeepsOtherColumns(t *testing.T) {
	keyPath, key, _ := testKey(t)
	e, err := personify.New(personify.Options{Key: key})
	require.NoError(t, err)
	defer e.Close()
	p := enginePseudonym(t, e, anonymize.Email("ana@example.com"))

	in := "\ufeffemail,name,note\r\nana@example.com,\"Ana, Jr\",\"said \"\"hi\"\"\nthen left\"\r\n"
	out, _, err := runOps(t, in, "pseudonymize", "--key-file", keyPath, "--column", "email")
	require.NoError(t, err)
	assert.Equal(t, "pseudonym,name,note\n"+p+",\"Ana, Jr\",\"said \"\"hi\"\"\nthen left\"\n", out)

	in = `{"a": [1, {"email": "x"}], "email" : "ana@example.com" , "z": "\u00e9\"", "n": -1.5e3}` + "\r\n\n" +
		`{"em\u0061il":"ana@example.com"}` + "\n"
	out, _, err = runOps(t, in, "pseudonymize", "--key-file", keyPath, "--column", "email", "--format", "ndjson")
	require.NoError(t, err)
	assert.Equal(t, `{"a": [1, {"email": "x"}], "pseudonym":"`+p+`" , "z": "\u00e9\"", "n": -1.5e3}`+"\n"+
		`{"pseudonym":"`+p+`"}`+"\n", out)

	// To a file, in the format of the input's extension.
	src := writeFile(t, "in.ndjson", `{"email":"ana@example.com","k":1}`+"\n")
	dst := filepath.Join(t.TempDir(), "out.ndjson")
	_, _, err = runOps(t, "", "pseudonymize", "--key-file", keyPath, "--column", "email", src, "--out", dst)
	require.NoError(t, err)
	b, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, `{"pseudonym":"`+p+`","k":1}`+"\n", string(b))
	fi, err := os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

// An invalid identifier fails with its row and reason, never its value;
// --on-invalid skip counts it.
func TestPseudonymizeInvalidRows(t *testing.T) {
	keyPath, _, keyHex := testKey(t)
	const secret = "SECRET-jane.doe.at.example.com"
	in := "email,n\nana@example.com,1\n" + secret + ",2\nbo@example.com,3\n"
	_, stderr, err := runOps(t, in, "pseudonymize", "--key-file", keyPath, "--column", "email")
	require.Error(t, err)
	assert.Equal(t, "row 2: column email: invalid email: missing '@'", err.Error())
	assert.NotContains(t, stderr, secret)

	out, stderr, err := runOps(t, in, "pseudonymize", "--key-file", keyPath, "--column", "email", "--on-invalid", "skip")
	require.NoError(t, err)
	assert.Equal(t, 3, strings.Count(out, "\n"))
	assert.Contains(t, stderr, "skipped 1 of 3 rows")
	for _, s := range []string{out, stderr} {
		assert.NotContains(t, s, secret)
		assert.NotContains(t, s, "ana@example.com")
		assert.NotContains(t, s, keyHex)
	}

	for _, line := range []string{
		`{"email":"` + secret + `"}`, `{"email":` + secret + `}`, `{"email":null}`, `{"mail":"` + secret + `"}`,
		`{"email":"a@b.c","email":"` + secret + `"}`, `["` + secret + `"]`, `{"email":"a@b.c"} {"x":"` + secret + `"}`,
		`{"email":"a@b.c","pseudonym":"` + secret + `"}`,
	} {
		_, stderr, err := runOps(t, `{"email":"a@b.c"}`+"\n"+line+"\n", "pseudonymize", "--key-file", keyPath, "--column", "email", "--format", "ndjson")
		require.Error(t, err, line)
		assert.True(t, strings.HasPrefix(err.Error(), "row 2: "), "%s: %v", line, err)
		assert.NotContains(t, err.Error()+stderr, secret, line)
	}

	// Without a key, the error names both ways to give one.
	t.Setenv(keyEnv, "")
	_, _, err = runOps(t, in, "pseudonymize", "--column", "email")
	require.ErrorIs(t, err, errNoKey)
	assert.Contains(t, err.Error(), "--key-file")
	assert.Contains(t, err.Error(), keyEnv)
	_, _, err = runOps(t, in, "pseudonymize", "--key-file", keyPath, "--column", "nope")
	assert.ErrorContains(t, err, `no column "nope"`)
}

func TestPseudonymizeProgress(t *testing.T) {
	keyPath, _, _ := testKey(t)
	src := writeFile(t, "in.csv", "email\nana@example.com\n")
	_, stderr, err := runOps(t, "", "pseudonymize", "--key-file", keyPath, "--column", "email", "--progress", src)
	require.NoError(t, err)
	assert.Contains(t, stderr, "1 rows")
	_, stderr, err = runOps(t, "", "pseudonymize", "--key-file", keyPath, "--column", "email", src)
	require.NoError(t, err)
	assert.Empty(t, stderr, "no progress when stderr is not a terminal")
}
