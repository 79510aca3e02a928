package ops

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/cmd/personify/internal/keyfile"
)

// runOps runs the operator commands with args and stdin, as main does.
func runOps(t testing.TB, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := &cobra.Command{Use: "personify", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(Commands()...)
	var out, errb bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	err = root.Execute()
	return out.String(), errb.String(), err
}

// testKey writes a new key file and returns its path, the key and the
// key's hex.
func testKey(t testing.TB) (string, anonymize.Key, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key")
	k := anonymize.GenerateKey()
	require.NoError(t, keyfile.Write(path, k))
	return path, k, hex.EncodeToString(k.Bytes())
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}
