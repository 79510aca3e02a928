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

	"github.com/personify-go/personify/anonymize"
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

	// Anonymous: the generic page, and a device cookie.
	assert.Contains(t, get("/"), "Sign in")
	assert.Contains(t, get("/"), "Our bestsellers")
	u, _ := url.Parse(srv.URL)
	var did string
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "did" {
			did = ck.Value
		}
	}
	require.Len(t, did, 32)
	device, err := e.Pseudonym(deviceID(did))
	require.NoError(t, err)

	// runner6 is in runners, swimmers and bargain-hunters; signing in
	// (typed their own way) links the device, which now serves the
	// segments built for the email.
	code, _ := post("/signin", url.Values{"email": {"  Runner6@Example.com "}})
	require.Equal(t, http.StatusOK, code)
	home := get("/")
	assert.Contains(t, home, "New trail shoes")
	assert.Contains(t, home, "Goggles")
	assert.Contains(t, home, "deals")
	assert.True(t, e.In(device, "swimmers"), "the device answers for the person")

	// Their own data only, every linked pseudonym listed.
	code, body := post("/privacy/explain", url.Values{"email": {"runner7@example.com"}})
	assert.Equal(t, http.StatusForbidden, code, string(body))
	code, body = post("/privacy/explain", url.Values{"email": {"runner6@example.com"}})
	require.Equal(t, http.StatusOK, code, string(body))
	var rep personify.Report
	require.NoError(t, json.Unmarshal(body, &rep))
	assert.Len(t, rep.Segments, 3)
	assert.Contains(t, string(body), `"kind":"device"`)
	assert.NotContains(t, string(body), "runner6", "the report holds pseudonyms, never the email")
	assert.NotContains(t, string(body), did, "nor the device cookie")

	// Erasure, with a receipt the person can verify, takes the device too.
	code, body = post("/privacy/forget", url.Values{"email": {"runner6@example.com"}})
	require.Equal(t, http.StatusOK, code, string(body))
	var out struct {
		Receipt   personify.Receipt `json:"receipt"`
		PublicKey []byte            `json:"public_key"`
	}
	require.NoError(t, json.Unmarshal(body, &out))
	require.NoError(t, personify.VerifyReceipt(out.Receipt, ed25519.PublicKey(out.PublicKey)))
	assert.Len(t, out.Receipt.Segments, 3)
	kinds := map[anonymize.Kind]anonymize.Pseudonym{}
	for _, l := range out.Receipt.Linked {
		kinds[l.Kind] = l.Pseudonym
	}
	assert.Equal(t, device, kinds[anonymize.KindDeviceID], "the receipt lists the device")
	assert.False(t, e.In(device, "swimmers"), "the device is erased with the person")

	// Gone: the session ended, and signing in again personalizes nothing.
	assert.Contains(t, get("/"), "Sign in")
	post("/signin", url.Values{"email": {"runner6@example.com"}})
	home = get("/")
	assert.Contains(t, home, "Our bestsellers")
	assert.NotContains(t, home, "trail shoes")

	// A shared device moves to whoever signs in on it, with none of the
	// first person's segments: runner9 (runners, swimmers) after runner8
	// (runners, bargain-hunters).
	jar2, _ := cookiejar.New(nil)
	c = &http.Client{Jar: jar2}
	post("/signin", url.Values{"email": {"runner8@example.com"}})
	home = get("/")
	assert.Contains(t, home, "deals")
	post("/signin", url.Values{"email": {"runner9@example.com"}})
	home = get("/")
	assert.Contains(t, home, "Goggles")
	assert.NotContains(t, home, "deals", "runner8's segments stay with runner8")

	// A malformed email is a clear error that does not echo the input.
	code, body = post("/signin", url.Values{"email": {"not-an-email"}})
	assert.Equal(t, http.StatusBadRequest, code)
	assert.NotContains(t, string(body), "not-an-email")
}
