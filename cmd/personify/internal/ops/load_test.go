package ops

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

func TestLoad(t *testing.T) {
	keyPath, key, keyHex := testKey(t)
	dir := t.TempDir()
	var csv strings.Builder
	csv.WriteString("email,n\n")
	for i := range 300 {
		fmt.Fprintf(&csv, "person%d@example.com,%d\n", i, i)
	}
	pseudo, _, err := runOps(t, csv.String(), "pseudonymize", "--key-file", keyPath, "--column", "email")
	require.NoError(t, err)
	src := writeFile(t, "members.csv", pseudo)

	// The segment must be defined.
	_, _, err = runOps(t, "", "load", "--dir", dir, "--key-file", keyPath, "--segment", "runners", src)
	require.ErrorContains(t, err, `segment "runners" is not defined`)
	assert.ErrorContains(t, err, "--define --purpose")

	out, _, err := runOps(t, "", "load", "--dir", dir, "--key-file", keyPath, "--segment", "runners", "--batch", "100",
		"--define", "--purpose", "ads", "--description", "Ran lately", "--retention", "720h", src)
	require.NoError(t, err)
	assert.Contains(t, out, "300 rows added to segment runners: 0 members before, 300 after (+300)")

	// By identifier, as NDJSON, from stdin: 100 already members, 50 new.
	var nd strings.Builder
	for i := 200; i < 350; i++ {
		fmt.Fprintf(&nd, `{"mail":"person%d@example.com"}`+"\n", i)
	}
	out, _, err = runOps(t, nd.String(), "load", "--dir", dir, "--key-file", keyPath, "--segment", "runners",
		"--id-column", "mail", "--format", "ndjson")
	require.NoError(t, err)
	assert.Contains(t, out, "300 members before, 350 after (+50)")

	// Remove the first 10 by pseudonym.
	lines := strings.SplitAfter(pseudo, "\n")
	out, _, err = runOps(t, strings.Join(lines[:11], ""), "load", "--dir", dir, "--key-file", keyPath, "--segment", "runners", "--remove")
	require.NoError(t, err)
	assert.Contains(t, out, "350 members before, 340 after (-10)")

	// A row that is not a pseudonym fails with its number, not its value.
	_, _, err = runOps(t, "pseudonym\n0123456789abcdef\nperson1@example.com\n", "load", "--dir", dir, "--key-file", keyPath, "--segment", "runners")
	require.EqualError(t, err, "row 2: column pseudonym: not a pseudonym (16 hex digits)")
	assert.NotContains(t, out, keyHex)

	e, err := personify.Open(dir, personify.Options{Key: key})
	require.NoError(t, err)
	defer e.Close()
	n, err := e.Len("runners")
	require.NoError(t, err)
	assert.Equal(t, 340, n)
	p, err := e.Pseudonym(anonymize.Email("person300@example.com"))
	require.NoError(t, err)
	assert.True(t, e.In(p, "runners"))

	// A directory in use is refused, saying why.
	_, _, err = runOps(t, "pseudonym\n", "load", "--dir", dir, "--key-file", keyPath, "--segment", "runners")
	require.ErrorIs(t, err, personify.ErrLocked)
	assert.ErrorContains(t, err, "server")
}
