package redisbench

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	saved := fallbackPaths
	fallbackPaths = []string{filepath.Join(t.TempDir(), "redis-server")}
	t.Cleanup(func() { fallbackPaths = saved })

	s, err := Start()
	require.ErrorIs(t, err, ErrNotInstalled)
	assert.Nil(t, s)
	assert.Contains(t, err.Error(), "apt-get install redis-server")
}

// startOwn starts a server that only tb uses, for tests that stop it.
func startOwn(tb testing.TB) *Server {
	tb.Helper()
	testServer(tb) // skips when redis-server is missing
	s, err := Start()
	require.NoError(tb, err)
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestServersAreIndependent(t *testing.T) {
	a, b := testServer(t), startOwn(t)
	require.NotEqual(t, a.Addr(), b.Addr())
	ca, err := Dial(a.Addr())
	require.NoError(t, err)
	defer ca.Close()
	cb, err := Dial(b.Addr())
	require.NoError(t, err)
	defer cb.Close()

	key := testKey(t, "set")
	_, err = cb.SAdd(key, members("m", 0, 1))
	require.NoError(t, err)
	ok, err := ca.SIsMember(key, []byte("m0"))
	require.NoError(t, err)
	assert.False(t, ok)
}
