package redisbench

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled is returned, wrapped, by Start when no redis-server binary
// can be found. Tests branch on it to skip.
var ErrNotInstalled = errors.New("redisbench: redis-server not found in PATH, /usr/bin or /usr/sbin; " +
	"install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)")

// fallbackPaths are tried, in order, when redis-server is not in PATH: Debian
// installs it in /usr/bin, and PATH is often trimmed under sudo or in CI.
var fallbackPaths = []string{"/usr/bin/redis-server", "/usr/sbin/redis-server"}

const (
	startTimeout = 10 * time.Second // how long Start waits for PING to answer
	stopTimeout  = 5 * time.Second  // how long Close waits after SIGTERM before SIGKILL
	startTries   = 3                // attempts when another process grabs the port first
	logTailBytes = 2048             // how much of redis.log a start error quotes
)

// A Server is a redis-server child process listening on a loopback port,
// with no persistence and its working files in a private temporary directory.
//
// The zero Server is not usable; get one from Start. A Server's methods are
// safe for concurrent use by multiple goroutines.
type Server struct {
	addr   string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed by the reaper goroutine once cmd.Wait returns

	killAfter time.Duration // SIGTERM grace period; tests shorten it

	closeOnce sync.Once
	closeErr  error
}

// Start launches redis-server on a free 127.0.0.1 port and returns once it
// answers PING, or after 10 seconds with an error that quotes the end of the
// server's log. It returns an error wrapping ErrNotInstalled when no
// redis-server binary is found. The caller must Close the Server.
func Start() (*Server, error) {
	bin, err := findServer()
	if err != nil {
		return nil, err
	}
	for try := 1; ; try++ {
		s, err := start(bin)
		if err == nil {
			return s, nil
		}
		// The port is picked by binding and releasing it, so another process
		// can take it before redis-server binds; only then is a retry useful.
		if try == startTries || !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
	}
}

// findServer locates the redis-server binary.
func findServer() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range fallbackPaths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (looked for %q in PATH and at %s)",
		ErrNotInstalled, "redis-server", strings.Join(fallbackPaths, ", "))
}

// start makes one attempt at launching bin.
func start(bin string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redisbench-")
	if err != nil {
		return nil, fmt.Errorf("redisbench: start: %w", err)
	}
	logPath := filepath.Join(dir, "redis.log")
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--supervised", "no",
		"--dir", dir,
		"--logfile", logPath,
		"--databases", "1",
		"--io-threads", "1",
		"--latency-tracking", "no", // no per-command histogram bookkeeping
		"--activedefrag", "no",
		"--maxmemory", "0",
		"--always-show-logo", "no",
	)
	cmd.Dir = dir
	var stderr bytes.Buffer // redis-server reports bad arguments here, before it opens the log
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("redisbench: start %s: %w", bin, err)
	}
	s := &Server{
		addr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir:       dir,
		cmd:       cmd,
		exited:    make(chan struct{}),
		killAfter: stopTimeout,
	}
	go func() { // owned by s: it ends when the process does, which Close forces
		cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(); err != nil {
		s.stop()
		tail := logTail(logPath)
		if tail == "" {
			tail = strings.TrimSpace(stderr.String()) // safe to read: the reaper has returned
		}
		os.RemoveAll(dir)
		return nil, fmt.Errorf("redisbench: start %s on %s: %w; log tail:\n%s", bin, s.addr, err, tail)
	}
	return s, nil
}

// freePort asks the kernel for an unused loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redisbench: picking a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls with PING until the server answers, exits, or startTimeout
// passes.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = s.ping(deadline); last == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("redis-server exited: %v", s.cmd.ProcessState)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v: %w", startTimeout, last)
		}
	}
}

// ping dials, sends one PING and hangs up.
func (s *Server) ping(deadline time.Time) error {
	nc, err := net.DialTimeout("tcp", s.addr, time.Until(deadline))
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(deadline)
	return newConn(nc).Ping()
}

// logTail returns the last logTailBytes of the log file, or "" if unreadable.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return strings.TrimSpace(string(b))
}

// Addr returns the server's "127.0.0.1:port" address, for Dial.
func (s *Server) Addr() string { return s.addr }

// Close stops the server: SIGTERM, then SIGKILL if it has not exited within 5
// seconds. It returns only after the process has been reaped, and removes the
// temporary directory. Close is idempotent; later calls return the first
// call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		err := s.stop()
		if rmErr := os.RemoveAll(s.dir); rmErr != nil && err == nil {
			err = fmt.Errorf("redisbench: close: %w", rmErr)
		}
		s.closeErr = err
	})
	return s.closeErr
}

// stop terminates the process and waits until the reaper has collected it.
func (s *Server) stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	var err error
	if sigErr := s.cmd.Process.Signal(syscall.SIGTERM); sigErr != nil && !errors.Is(sigErr, os.ErrProcessDone) {
		err = fmt.Errorf("redisbench: close: %w", sigErr)
	}
	timer := time.NewTimer(s.killAfter)
	defer timer.Stop()
	select {
	case <-s.exited:
		return err
	case <-timer.C:
	}
	if killErr := s.cmd.Process.Kill(); killErr != nil && !errors.Is(killErr, os.ErrProcessDone) {
		err = fmt.Errorf("redisbench: close: %w", killErr)
	}
	<-s.exited
	return err
}
