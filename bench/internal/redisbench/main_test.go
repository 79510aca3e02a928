package redisbench

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// One redis-server serves the whole test binary: starting one costs tens of
// milliseconds and the machine running the tests may be small.
var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}

// testServer returns the shared server, starting it on first use, and skips
// tb when redis-server is not installed.
func testServer(tb testing.TB) *Server {
	tb.Helper()
	sharedOnce.Do(func() { shared, sharedErr = Start() })
	if errors.Is(sharedErr, ErrNotInstalled) {
		tb.Skip(sharedErr)
	}
	require.NoError(tb, sharedErr)
	return shared
}

// testConn dials the shared server; the connection closes with tb.
func testConn(tb testing.TB) *Conn {
	tb.Helper()
	c, err := Dial(testServer(tb).Addr())
	require.NoError(tb, err)
	tb.Cleanup(func() { c.Close() })
	return c
}

// testKey returns a key private to tb, so tests never see each other's data.
func testKey(tb testing.TB, name string) []byte {
	return []byte(tb.Name() + ":" + name)
}

// do sends an arbitrary command and returns the first line of its reply, for
// setting up states the Conn has no method for.
func do(tb testing.TB, c *Conn, args ...string) string {
	tb.Helper()
	c.writeLen('*', len(args))
	for _, a := range args {
		c.writeBulk([]byte(a))
	}
	require.NoError(tb, c.flush())
	line, err := c.r.ReadSlice('\n')
	require.NoError(tb, err)
	return string(line)
}

// members returns n distinct members "prefix0", "prefix1", ...
func members(prefix string, from, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s%d", prefix, from+i)
	}
	return out
}
