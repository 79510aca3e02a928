//go:build unix

package redisbench

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// alive reports whether a process with this pid exists. Close reaps the
// server, so its pid is gone, not a zombie.
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func TestServerClose(t *testing.T) {
	s := startOwn(t)
	pid := s.cmd.Process.Pid
	c, err := Dial(s.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Ping())
	require.True(t, alive(pid))
	_, err = os.Stat(filepath.Join(s.dir, "redis.log"))
	require.NoError(t, err, "the server logs to its temporary directory")

	require.NoError(t, s.Close())
	assert.False(t, alive(pid), "redis-server (pid %d) outlived Close", pid)
	assert.NoDirExists(t, s.dir)
	assert.Error(t, c.Ping(), "the server's connections are gone")
	_, err = Dial(s.Addr())
	assert.Error(t, err)

	require.NoError(t, s.Close(), "Close is idempotent")
}

// TestCloseKillsStuckServer stops the server with SIGSTOP, so SIGTERM stays
// pending, and checks that Close falls back to SIGKILL.
func TestCloseKillsStuckServer(t *testing.T) {
	s := startOwn(t)
	s.killAfter = 50 * time.Millisecond
	pid := s.cmd.Process.Pid
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))

	require.NoError(t, s.Close())
	assert.False(t, alive(pid), "redis-server (pid %d) outlived Close", pid)
	ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	assert.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "wait status %v", s.cmd.ProcessState)
}

func TestStartFailureQuotesOutput(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "redis-server")
	script := "#!/bin/sh\necho 'FATAL CONFIG FILE ERROR: bad directive' >&2\nexit 1\n"
	require.NoError(t, os.WriteFile(fake, []byte(script), 0o755))

	begin := time.Now()
	s, err := start(fake)
	require.Error(t, err)
	assert.Nil(t, s)
	assert.False(t, errors.Is(err, ErrNotInstalled), "a failing binary is not a missing one")
	assert.Contains(t, err.Error(), "exited")
	assert.Contains(t, err.Error(), "FATAL CONFIG FILE ERROR: bad directive")
	assert.Less(t, time.Since(begin), startTimeout, "an early exit must not wait for the timeout")
}
