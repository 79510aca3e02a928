package main

import (
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/personify-go/personify/personify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSite(t *testing.T) {
	e, err := demoEngine()
	require.NoError(t, err)
	defer e.Close()
	srv := httptest.NewServer(newServer(e))
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	get := func(path string) string {
		resp, err := c.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	post := func(path string, form url.Values) (int, []byte) {
		resp, err := c.PostForm(srv.URL+path, form)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	// Anonymous: the generic page.
	assert.Contains(t, get("/"), "Sign in")

	// runner6 is in runners, swimmers and bargain-hunters; signing in
	// (typed their own way) personalizes the page.
	code, _ := post("/signin", url.Values{"email": {"  Runner6@Example.com "}})
	require.Equal(t, http.StatusOK, code)
	home := get("/")
	assert.Contains(t, home, "New trail shoes")
	assert.Contains(t, home, "Goggles")
	assert.Contains(t, home, "deals")

	// Their own data only.
	code, body := post("/privacy/explain", url.Values{"email": {"runner7@example.com"}})
	assert.Equal(t, http.StatusForbidden, code, string(body))
	code, body = post("/privacy/explain", url.Values{"email": {"runner6@example.com"}})
	require.Equal(t, http.StatusOK, code, string(body))
	var rep personify.Report
	require.NoError(t, json.Unmarshal(body, &rep))
	assert.Len(t, rep.Segments, 3)
	assert.NotContains(t, string(body), "runner6", "the report holds pseudonyms, never the email")

	// Erasure, with a receipt the person can verify.
	code, body = post("/privacy/forget", url.Values{"email": {"runner6@example.com"}})
	require.Equal(t, http.StatusOK, code, string(body))
	var out struct {
		Receipt   personify.Receipt `json:"receipt"`
		PublicKey []byte            `json:"public_key"`
	}
	require.NoError(t, json.Unmarshal(body, &out))
	require.NoError(t, personify.VerifyReceipt(out.Receipt, ed25519.PublicKey(out.PublicKey)))
	assert.Len(t, out.Receipt.Segments, 3)

	// Gone: the session ended, and signing in again personalizes nothing.
	assert.Contains(t, get("/"), "Sign in")
	post("/signin", url.Values{"email": {"runner6@example.com"}})
	home = get("/")
	assert.Contains(t, home, "Our bestsellers")
	assert.NotContains(t, home, "trail shoes")

	// A malformed email is a clear error that does not echo the input.
	code, body = post("/signin", url.Values{"email": {"not-an-email"}})
	assert.Equal(t, http.StatusBadRequest, code)
	assert.NotContains(t, string(body), "not-an-email")
}
