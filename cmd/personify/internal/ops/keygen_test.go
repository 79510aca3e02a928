package ops

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/cmd/personify/internal/keyfile"
)

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	out, _, err := runOps(t, "", "keygen", path)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	k, err := keyfile.Read(path)
	require.NoError(t, err)
	assert.Contains(t, out, k.Fingerprint().String())
	assert.Contains(t, out, path)
	assert.NotContains(t, out, hex.EncodeToString(k.Bytes()))

	before, err := os.ReadFile(path)
	require.NoError(t, err)
	_, _, err = runOps(t, "", "keygen", path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exists")
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "a second keygen leaves the file alone")
}
