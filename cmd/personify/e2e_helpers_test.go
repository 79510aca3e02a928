package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/cmd/personify/gen/personify/v1/personifyv1connect"
	"github.com/personify-go/personify/cmd/personify/internal/keyfile"
)

// binary is the personify command, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "personify-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "personify")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the personify command:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The tokens every e2e server accepts, one per role and one with two.
const (
	lookupToken  = "lookup-token-0123456789abcdef"
	privacyToken = "privacy-token-0123456789abcdef"
	adminToken   = "admin-token-0123456789abcdef"
	bothToken    = "lookup-and-privacy-0123456789"
	testKeyHex   = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e0123456789abcdef0123456789abcdef"
)

// setup is a data directory, a key file and a token file for servers.
type setup struct {
	dir, keyFile, tokens string
	key                  anonymize.Key
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	root := t.TempDir()
	s := &setup{dir: filepath.Join(root, "data"), keyFile: filepath.Join(root, "key"), tokens: filepath.Join(root, "tokens")}
	var err error
	s.key, err = anonymize.KeyFromHex(testKeyHex)
	require.NoError(t, err)
	require.NoError(t, keyfile.Write(s.keyFile, s.key))
	require.NoError(t, os.WriteFile(s.tokens, []byte(fmt.Sprintf("# test tokens\nlookup %s\nprivacy %s\nadmin %s\nlookup %s\nprivacy %s\n",
		lookupToken, privacyToken, adminToken, bothToken, bothToken)), 0o600))
	return s
}

// proc is a running `personify serve`.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan error
}

// start runs the binary with args and waits until it says ready.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	s := &proc{t: t, done: make(chan error, 1)}
	s.cmd = exec.Command(binary, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	s.cmd.Env = append(os.Environ(), "PERSONIFY_KEY=", "PERSONIFY_LOOKUP_TOKEN=", "PERSONIFY_PRIVACY_TOKEN=", "PERSONIFY_ADMIN_TOKEN=")
	out, err := s.cmd.StdoutPipe()
	require.NoError(t, err)
	s.cmd.Stderr = &lockedWriter{mu: &s.mu, w: &s.stderr}
	require.NoError(t, s.cmd.Start())
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var addr string
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.stdout.WriteString(line + "\n")
			s.mu.Unlock()
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				addr = a
			}
			if line == "ready" {
				ready <- addr
			}
		}
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	select {
	case s.base = <-ready:
	case err := <-s.done:
		t.Fatalf("the server exited before it was ready (%v):\n%s%s", err, s.out(), s.errs())
	case <-time.After(90 * time.Second):
		t.Fatalf("the server was not ready within 90 s:\n%s%s", s.out(), s.errs())
	}
	return s
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (s *proc) out() string  { s.mu.Lock(); defer s.mu.Unlock(); return s.stdout.String() }
func (s *proc) errs() string { s.mu.Lock(); defer s.mu.Unlock(); return s.stderr.String() }

// stop sends SIGTERM and waits for a clean exit.
func (s *proc) stop() {
	s.t.Helper()
	require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-s.done:
		require.NoError(s.t, err, "exit after SIGTERM:\n%s", s.errs())
	case <-time.After(60 * time.Second):
		s.t.Fatal("the server did not stop within 60 s of SIGTERM")
	}
}

// post sends a JSON body to an API method with a plain net/http client, as
// a curl or a Python client does, and returns the status and body.
func (s *proc) post(t *testing.T, token, method string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.base+"/personify.v1."+method, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// postOK is post that requires 200 and decodes the answer into out.
func (s *proc) postOK(t *testing.T, token, method, body string, out any) {
	t.Helper()
	code, got := s.post(t, token, method, body)
	require.Equal(t, http.StatusOK, code, "%s: %s", method, got)
	if out != nil {
		reflect.ValueOf(out).Elem().SetZero() // an empty list is left out of the JSON: decode into a fresh value
		require.NoError(t, json.Unmarshal([]byte(got), out))
	}
}

// bearer is an http.RoundTripper that adds a token: the generated clients'
// transport.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// h2c is a client speaking HTTP/2 without TLS, as gRPC clients do to a
// sidecar on loopback, with token.
func h2c(token string) *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: bearer{token: token, next: tr}}
}

func (s *proc) lookup(token string) personifyv1connect.LookupServiceClient {
	return personifyv1connect.NewLookupServiceClient(h2c(token), s.base, connect.WithGRPC())
}

func (s *proc) privacy(token string) personifyv1connect.PrivacyServiceClient {
	return personifyv1connect.NewPrivacyServiceClient(h2c(token), s.base, connect.WithGRPC())
}

func (s *proc) admin(token string) personifyv1connect.AdminServiceClient {
	return personifyv1connect.NewAdminServiceClient(h2c(token), s.base, connect.WithGRPC())
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (s *proc) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(s.base + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
