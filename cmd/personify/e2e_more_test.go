package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/cmd/personify/gen/personify/v1/personifyv1connect"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "personify test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(priv)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// With certificate files the server speaks HTTPS only: gRPC over TLS
// (HTTP/2 by ALPN) and JSON over HTTPS work, plain HTTP does not.
func TestServeTLS(t *testing.T) {
	st := newSetup(t)
	cert, key, pool := selfSigned(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2", "--tls-cert", cert, "--tls-key", key)
	require.True(t, strings.HasPrefix(s.base, "https://"), s.base)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	grpc := personifyv1connect.NewAdminServiceClient(&http.Client{Transport: bearer{token: adminToken, next: tr}}, s.base, connect.WithGRPC())
	ctx := ctxT(t)
	_, err := grpc.DefinePurpose(ctx, connect.NewRequest(&pb.DefinePurposeRequest{Purpose: &pb.Purpose{Name: "personalization", Model: "opt-out"}}))
	require.NoError(t, err)
	st2, err := grpc.Stats(ctx, connect.NewRequest(&pb.StatsRequest{}))
	require.NoError(t, err)
	assert.EqualValues(t, 0, st2.Msg.GetSegments())

	req, err := http.NewRequest(http.MethodPost, s.base+"/personify.v1.LookupService/Segments", strings.NewReader(`{"subject":{"pseudonym":"0123456789abcdef"},"purpose":"personalization"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+lookupToken)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	resp, err = http.Get("http://" + strings.TrimPrefix(s.base, "https://") + "/healthz")
	if err == nil {
		resp.Body.Close()
		assert.NotEqual(t, http.StatusOK, resp.StatusCode, "plain HTTP is not served next to TLS")
	}
	s.stop()
}

// Setup mistakes are refused with a clear message and a non-zero exit,
// before anything is served.
func TestServeRefusesBadSetup(t *testing.T) {
	st := newSetup(t)
	first := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens)
	worldReadable := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(worldReadable, []byte("lookup "+lookupToken+"\n"), 0o644))
	otherKey := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(otherKey, []byte(strings.Repeat("ab", 32)+"\n"), 0o600))
	for name, c := range map[string]struct {
		args []string
		says string
	}{
		"directory in use": {[]string{"--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens}, "in use by another engine"},
		"no tokens":        {[]string{"--dir", t.TempDir(), "--key-file", st.keyFile}, "no tokens"},
		"readable tokens":  {[]string{"--dir", t.TempDir(), "--key-file", st.keyFile, "--tokens", worldReadable}, "readable or writable by others"},
		"no key":           {[]string{"--dir", t.TempDir(), "--tokens", st.tokens}, "no key"},
		"no store":         {[]string{"--key-file", st.keyFile, "--tokens", st.tokens}, "give --dir"},
		"half TLS":         {[]string{"--dir", t.TempDir(), "--key-file", st.keyFile, "--tokens", st.tokens, "--tls-cert", "x"}, "both --tls-cert and --tls-key"},
	} {
		cmd := exec.Command(binary, append([]string{"serve", "--addr", "127.0.0.1:0"}, c.args...)...)
		cmd.Env = append(os.Environ(), "PERSONIFY_KEY=", "PERSONIFY_LOOKUP_TOKEN=", "PERSONIFY_PRIVACY_TOKEN=", "PERSONIFY_ADMIN_TOKEN=")
		out, err := cmd.CombinedOutput()
		assert.Error(t, err, name)
		assert.Contains(t, string(out), c.says, name)
		assert.NotContains(t, string(out), lookupToken, name)
	}
	// The first server's key is not another's: a directory opened with the
	// wrong key is refused.
	first.stop()
	cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0", "--dir", st.dir, "--key-file", otherKey, "--tokens", st.tokens)
	out, err := cmd.CombinedOutput()
	assert.Error(t, err)
	assert.Contains(t, string(out), "another key")
	assert.NotContains(t, string(out), strings.Repeat("ab", 32))
	start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens).stop()
}

// The demo is one command that shows it working: the quickstart's visitor
// gets the quickstart's segments.
func TestServeDemo(t *testing.T) {
	s := start(t, "--demo")
	path, ok := strings.CutPrefix(strings.Split(s.out(), "\n")[0], "demo tokens (one per role) are in ")
	require.True(t, ok, s.out())
	path = strings.TrimSuffix(path, ", readable by you only")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	defer os.RemoveAll(filepath.Dir(path))
	var tok string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "lookup "); ok {
			tok = v
		}
	}
	require.NotEmpty(t, tok)
	assert.NotContains(t, s.out(), tok, "the demo's tokens are not printed")
	var segs struct {
		Segments []string `json:"segments"`
	}
	s.postOK(t, tok, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":" Member000042@Example.com "}},"purpose":"personalization"}`, &segs)
	assert.Equal(t, []string{"runners", "ios", "bargain-hunters"}, segs.Segments, "the quickstart's answer")
	s.stop()
}
