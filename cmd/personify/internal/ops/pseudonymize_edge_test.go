package ops

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A header that names the identifier column twice is refused: only the
// first was replaced, and the second written raw.
func TestPseudonymizeRefusesTheColumnTwice(t *testing.T) {
	kp, _, _ := testKey(t)
	in := "email,name,email\nana@example.com,Ana,ana@example.com\n"
	out, stderr, err := runOps(t, in, "pseudonymize", "--key-file", kp, "--column", "email", "-q")
	require.Error(t, err)
	assert.ErrorContains(t, err, `names column "email" twice`)
	assert.NotContains(t, out+stderr+err.Error(), "ana@example.com")
}

// --out is written whole or not at all: an existing file gets mode 600,
// a failed run leaves the old file as it was, and a symbolic link is
// replaced, not written through.
func TestPseudonymizeOutIsReplacedWhole(t *testing.T) {
	kp, _, _ := testKey(t)
	dir := t.TempDir()
	outp := filepath.Join(dir, "out.csv")
	require.NoError(t, os.WriteFile(outp, []byte("old"), 0o644))
	require.NoError(t, os.Chmod(outp, 0o644))
	in := writeFile(t, "in.csv", "email\nana@example.com\n")
	_, _, err := runOps(t, "", "pseudonymize", "--key-file", kp, "--column", "email", "-q", "--out", outp, in)
	require.NoError(t, err)
	fi, err := os.Stat(outp)
	require.NoError(t, err)
	t.Logf("mode of --out after the run: %v", fi.Mode().Perm())
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	// And a failing run removes a pre-existing file the operator had.
	bad := writeFile(t, "bad.csv", "email\nnot-an-email\n")
	keep := filepath.Join(dir, "keep.csv")
	require.NoError(t, os.WriteFile(keep, []byte("precious"), 0o600))
	_, _, err = runOps(t, "", "pseudonymize", "--key-file", kp, "--column", "email", "-q", "--out", keep, bad)
	require.Error(t, err)
	b, err := os.ReadFile(keep)
	require.NoError(t, err)
	assert.Equal(t, "precious", string(b), "a failed run leaves the old --out as it was")
	// symlink: --out follows a symlink
	target := filepath.Join(dir, "target")
	require.NoError(t, os.WriteFile(target, []byte("x"), 0o644))
	link := filepath.Join(dir, "lnk")
	require.NoError(t, os.Symlink(target, link))
	_, _, err = runOps(t, "", "pseudonymize", "--key-file", kp, "--column", "email", "-q", "--out", link, in)
	require.NoError(t, err)
	b, _ = os.ReadFile(target)
	assert.Equal(t, "x", string(b), "the link's target is untouched")
	fi, err = os.Lstat(link)
	require.NoError(t, err)
	assert.True(t, fi.Mode().IsRegular())
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.NotContains(t, e.Name(), ".tmp", "no temporary file is left")
	}
}

// A failed run must not leave half a file ("no half a file").
func TestPseudonymizeFailedRunLeavesNoOut(t *testing.T) {
	kp, _, _ := testKey(t)
	var b strings.Builder
	b.WriteString("email\n")
	for i := 0; i < 100000; i++ {
		b.WriteString("user" + strings.Repeat("x", 10) + "@example.com\n")
	}
	b.WriteString("not-an-email\n")
	in := writeFile(t, "in.csv", b.String())
	outp := filepath.Join(t.TempDir(), "out.csv")
	_, _, err := runOps(t, "", "pseudonymize", "--key-file", kp, "--column", "email", "-q", "--out", outp, in)
	require.Error(t, err)
	_, serr := os.Stat(outp)
	assert.True(t, os.IsNotExist(serr), "a failed run left a partial --out file")
}

// No malformed, ragged, duplicated or odd input makes pseudonymize write
// the identifier, or quote it in an error.
func TestPseudonymizeEdgeInputsNeverWriteTheValue(t *testing.T) {
	kp, _, _ := testKey(t)
	secret := "secret.person@example.com"
	cases := []struct{ name, format, in string }{
		{"csv quoted newline", "csv", "email,n\n\"" + secret + "\n\",1\n"},
		{"csv bom quoted header", "csv", "\ufeff\"email\",n\n" + secret + ",1\n"},
		{"csv ragged", "csv", "email,n\n" + secret + ",1,2\n"},
		{"csv ragged short", "csv", "n,email\n" + secret + "\n"},
		{"csv bare quote", "csv", "email,n\n" + secret + "\"x,1\n"},
		{"csv invalid email", "csv", "email\n" + "not-an-email-" + secret[:6] + "@\n"},
		{"csv dup header other col", "csv", "email,n,n\n" + secret + ",1,2\n"},
		{"ndjson dup", "ndjson", `{"email":"` + secret + `","email":"` + secret + `"}` + "\n"},
		{"ndjson esc dup", "ndjson", `{"email":"` + secret + `","em\u0061il":"` + secret + `"}` + "\n"},
		{"ndjson array line", "ndjson", `["` + secret + `"]` + "\n"},
		{"ndjson truncated", "ndjson", `{"email":"` + secret + "\n"},
		{"ndjson bom", "ndjson", "\ufeff{\"email\":\"" + secret + "\"}\n"},
		{"ndjson number", "ndjson", `{"email":12345}` + "\n"},
		{"ndjson obj value", "ndjson", `{"email":{"x":"` + secret + `"}}` + "\n"},
		{"ndjson invalid utf8 value", "ndjson", "{\"email\":\"secret.p\xffrson@example.com\"}\n"},
		{"ndjson case key", "ndjson", `{"Email":"` + secret + `"}` + "\n"},
		{"ndjson trailing garbage", "ndjson", `{"email":"` + secret + `"} x` + "\n"},
	}
	for _, c := range cases {
		for _, mode := range []string{"fail", "skip"} {
			out, stderr, err := runOps(t, c.in, "pseudonymize", "--key-file", kp, "--column", "email", "--format", c.format, "--on-invalid", mode, "-q")
			es := ""
			if err != nil {
				es = err.Error()
			}
			for _, s := range []string{secret, "secret.p", "not-an-email"} {
				assert.NotContains(t, es, s, "%s: error echoes the value", c.name)
				assert.NotContains(t, stderr, s, "%s: stderr echoes the value", c.name)
				assert.NotContains(t, out, s, "%s/%s: output holds the raw value", c.name, mode)
			}
		}
	}
}
