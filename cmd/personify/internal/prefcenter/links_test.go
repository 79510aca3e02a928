package prefcenter

import (
	"crypto/ed25519"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// boToken signs a link for bo, the other person of the fixture.
func (f *fixture) boToken() (personify.Person, string) {
	f.t.Helper()
	bo, err := f.e.Person(anonymize.Email(boEmail))
	require.NoError(f.t, err)
	tok, _, err := f.signer.Sign(bo, time.Hour)
	require.NoError(f.t, err)
	f.secrets = append(f.secrets, tok)
	return bo, tok
}

// sessionToken is the session cookie c holds for the fixture's server.
func (f *fixture) sessionToken(c *http.Client) string {
	u, err := url.Parse(f.srv.URL + "/privacy/")
	require.NoError(f.t, err)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "pc_session" {
			return ck.Value
		}
	}
	return ""
}

// Login CSRF: a link another site sends (the sender's own, valid) does not
// replace the session open in the browser; the person's "Forget me" then
// erases them, not the sender.
func TestLinkFromAnotherSiteDoesNotReplaceTheSession(t *testing.T) {
	f := newFixture(t)
	c, page := f.open() // ana
	anaTok := f.sessionToken(c)
	require.NotEmpty(t, anaTok)
	bo, boTok := f.boToken()

	// A click on the link, on another site: the link's page, no cookie.
	r := f.get(c, "/privacy/?t="+url.QueryEscape(boTok), "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate")
	require.Equal(t, http.StatusOK, r.status)
	assert.Empty(t, r.header.Values("Set-Cookie"))
	assert.Contains(t, r.body, `id="open-button"`)
	assert.NotContains(t, r.body, `name="csrf"`)
	assert.Equal(t, anaTok, f.sessionToken(c))

	// The other site cannot press the button for the person either.
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "https://evil.example"},
		{"Origin", "null"},
		{"Origin", "null", "Sec-Fetch-Site", "cross-site"},
	} {
		r = f.post(c, "/privacy/open", url.Values{"t": {boTok}, "replace": {"yes"}}, hdr...)
		assert.Equal(t, http.StatusForbidden, r.status, hdr)
		assert.Contains(t, r.body, "Request refused", hdr)
		assert.Empty(t, r.header.Values("Set-Cookie"), hdr)
	}
	assert.Equal(t, anaTok, f.sessionToken(c))

	// The session is still ana's: her "Forget me" erases her.
	r = f.get(c, "/privacy/")
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.body, f.ana.String())
	r = f.post(c, "/privacy/forget", url.Values{"csrf": {csrfOf(t, page.body)}, "confirm": {"yes"}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	anaRep, err := f.e.ExplainPerson(f.person)
	require.NoError(t, err)
	boRep, err := f.e.ExplainPerson(bo)
	require.NoError(t, err)
	assert.Empty(t, anaRep.Segments, "the person who pressed Forget me is still stored")
	assert.Len(t, boRep.Segments, 2, "the sender of the link was erased")
}

// A link for someone else than the session open in the browser says so,
// and replaces it only once the person continues.
func TestLinkForAnotherPersonSaysItReplacesTheSession(t *testing.T) {
	f := newFixture(t)
	c, _ := f.open() // ana
	anaTok := f.sessionToken(c)
	_, boTok := f.boToken()
	const warning = "This link is for a different person than the privacy settings open in this browser now."

	// The link's page warns where the browser sends the session cookie.
	r := f.get(c, "/privacy/?t="+url.QueryEscape(boTok))
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.body, warning)
	assert.Contains(t, r.body, `id="replace-warning"`)
	assert.Contains(t, r.body, "Continue and open these privacy settings")
	assert.Equal(t, url.Values{"t": {boTok}, "replace": {"yes"}}, openForm(t, r.body))
	assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
	accessible(t, "open, replacing", r.body)
	warned := r.body

	// A press of a button that had not warned (the browser withheld the
	// cookie on the link's page) warns first, and replaces nothing.
	noFollow := f.client()
	noFollow.Jar = c.Jar
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r = f.post(noFollow, "/privacy/open", url.Values{"t": {boTok}}, "Origin", "null", "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.body, warning)
	assert.Empty(t, r.header.Values("Set-Cookie"))
	assert.Equal(t, anaTok, f.sessionToken(c))
	assert.Contains(t, f.logs.String(), "prefcenter.link_for_other_person")

	// Continuing replaces it.
	r = f.post(noFollow, "/privacy/open", openForm(t, warned), "Origin", "null", "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusSeeOther, r.status)
	assert.Equal(t, boTok, f.sessionToken(c))
	r = f.get(c, "/privacy/")
	require.Equal(t, http.StatusOK, r.status)
	assert.NotContains(t, r.body, f.ana.String())

	// No warning without a session, for the same person, or where the
	// session's link no longer verifies.
	r = f.get(f.client(), "/privacy/?t="+url.QueryEscape(boTok))
	assert.NotContains(t, r.body, warning)
	later := t0.Add(time.Second)
	f.linkNow.Store(&later)
	r = f.get(c, "/privacy/?t="+url.QueryEscape(f.signBo(t)))
	require.Equal(t, http.StatusOK, r.status)
	assert.NotContains(t, r.body, warning, "a second link for the same person")
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+"/privacy/?t="+url.QueryEscape(anaTok), nil)
	require.NoError(t, err)
	req.AddCookie(&http.Cookie{Name: "pc_session", Value: "not.valid"})
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	r = f.check(resp)
	assert.NotContains(t, r.body, warning)
}

func (f *fixture) signBo(t *testing.T) string {
	bo, err := f.e.Person(anonymize.Email(boEmail))
	require.NoError(t, err)
	tok, _, err := f.signer.Sign(bo, time.Hour)
	require.NoError(t, err)
	f.secrets = append(f.secrets, tok)
	return tok
}

// A link whose session was used for "Forget me" opens nothing any more:
// not the link's page, not its button, not a session on it, and a Global
// Privacy Control signal writes nothing with it.
func TestLinkUsedToEraseIsRevoked(t *testing.T) {
	f := newFixture(t)
	tok := f.token(time.Hour)
	c := f.client()
	page := f.openToken(c, tok)
	require.Equal(t, http.StatusOK, page.status)
	r := f.post(c, "/privacy/forget", url.Values{"csrf": {csrfOf(t, page.body)}, "confirm": {"yes"}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	erased, err := f.e.ExplainPerson(f.person)
	require.NoError(t, err)
	require.False(t, erased.DoNotReAdd)

	const used = "This link was used to erase your data"
	c2 := f.client()
	r = f.get(c2, "/privacy/?t="+url.QueryEscape(tok), "Sec-GPC", "1")
	assert.Equal(t, http.StatusGone, r.status)
	assert.Contains(t, r.body, used)
	assert.Contains(t, r.body, "ask Example Shop for a new link")
	assert.NotContains(t, r.body, `id="open-button"`)
	r = f.post(c2, "/privacy/open", url.Values{"t": {tok}}, "Sec-GPC", "1")
	assert.Equal(t, http.StatusGone, r.status)
	assert.Contains(t, r.body, used)
	assert.Empty(t, f.sessionToken(c2))

	// A session on it (a second tab, a cookie kept) is refused, and cleared.
	for _, path := range []string{"/privacy/", "/privacy/report.json"} {
		req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
		require.NoError(t, err)
		req.AddCookie(&http.Cookie{Name: "pc_session", Value: tok})
		req.Header.Set("Sec-GPC", "1")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		r = f.check(resp)
		assert.Equal(t, http.StatusGone, r.status, path)
		assert.Contains(t, r.body, used, path)
		cl := (&http.Response{Header: r.header}).Cookies()
		require.Len(t, cl, 1, path)
		assert.Equal(t, -1, cl[0].MaxAge, path)
	}
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/privacy/consent",
		strings.NewReader(url.Values{"csrf": {csrfToken(tok)}, "purpose": {"newsletter"}, "granted": {"true"}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "pc_session", Value: tok})
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	r = f.check(resp)
	assert.Equal(t, http.StatusGone, r.status)

	after, err := f.e.ExplainPerson(f.person)
	require.NoError(t, err)
	assert.Equal(t, erased, after, "a revoked link wrote state for the erased person")
	assert.Empty(t, after.Suppressed)
	assert.Equal(t, int32(0), f.gpc.Load())
	assert.Contains(t, f.logs.String(), "revoked: used to erase")

	// A new link (after a plain Forget) starts afresh.
	later := t0.Add(time.Minute)
	f.linkNow.Store(&later)
	_, fresh := f.open()
	assert.Contains(t, fresh.body, "<h1>Your privacy settings</h1>")
	assert.Contains(t, fresh.body, "You are in no segment")

	// It stays revoked until it expires, then it is refused as expired.
	expired := t0.Add(2 * time.Hour)
	f.linkNow.Store(&expired)
	r = f.get(f.client(), "/privacy/?t="+url.QueryEscape(tok))
	assert.Equal(t, http.StatusGone, r.status)
	assert.Contains(t, r.body, "This link has expired")
}

// A person who was forgotten and asked never to be added again is told
// so, and nothing is written for them: no Global Privacy Control opt-out,
// no consent, no do-not-sell, no second erasure.
func TestForgottenPersonIsNotWrittenFor(t *testing.T) {
	f := newFixture(t)
	c, page := f.open()
	r := f.post(c, "/privacy/forget", url.Values{"csrf": {csrfOf(t, page.body)}, "confirm": {"yes"}, "never": {"yes"}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	erased, err := f.e.ExplainPerson(f.person)
	require.NoError(t, err)
	require.True(t, erased.DoNotReAdd)

	// A new link (the used one is revoked), with Global Privacy Control.
	later := t0.Add(time.Minute)
	f.linkNow.Store(&later)
	tok := f.token(time.Hour)
	c2 := f.client()
	r = f.openToken(c2, tok, "Sec-GPC", "1")
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.body, "<h1>You were forgotten</h1>")
	assert.Contains(t, r.body, "It holds nothing about you")
	assert.NotContains(t, r.body, "<form")
	assert.NotContains(t, r.body, "gpc-notice")
	accessible(t, "forgotten", r.body)
	assert.Equal(t, int32(0), f.gpc.Load(), "GPC applied for a forgotten person")
	assert.NotContains(t, f.logs.String(), "prefcenter.gpc_applied")

	csrf := csrfToken(tok)
	for _, w := range []struct {
		path string
		form url.Values
	}{
		{"/privacy/consent", url.Values{"purpose": {"newsletter"}, "granted": {"true"}}},
		{"/privacy/consent", url.Values{"purpose": {"personalization"}, "granted": {"false"}}},
		{"/privacy/donotsell", url.Values{"on": {"true"}}},
		{"/privacy/donotsell", url.Values{"on": {"false"}}},
		{"/privacy/forget", url.Values{"confirm": {"yes"}}},
	} {
		w.form.Set("csrf", csrf)
		for _, gpc := range []string{"", "1"} {
			r = f.post(c2, w.path, w.form, "Sec-GPC", gpc)
			assert.Equal(t, http.StatusGone, r.status, w.path, w.form)
			assert.Contains(t, r.body, "You were forgotten", w.path)
		}
	}
	after, err := f.e.ExplainPerson(f.person)
	require.NoError(t, err)
	assert.Equal(t, erased, after, "state was written for a forgotten person")
	assert.Empty(t, after.Suppressed)
	for _, cs := range after.Consent {
		assert.Equal(t, "not given", cs.Consent, cs.Purpose)
	}
	assert.Equal(t, int32(0), f.gpc.Load())
	// The link still works: it was not used to erase.
	assert.Equal(t, http.StatusOK, f.get(c2, "/privacy/").status)
}

func TestRevokedSetIsBoundedAndForgetsExpiredLinks(t *testing.T) {
	v := newRevoked(3)
	now := t0
	v.add("expired", now.Add(-time.Second), now)
	assert.Equal(t, 0, v.len())
	v.add("a", now.Add(time.Minute), now)
	v.add("b", now.Add(3*time.Minute), now)
	v.add("c", now.Add(2*time.Minute), now)
	v.add("c", now.Add(2*time.Minute), now) // again: no room needed
	assert.Equal(t, 3, v.len())
	assert.True(t, v.has("a", now) && v.has("b", now) && v.has("c", now))
	v.add("d", now.Add(time.Hour), now) // full: a, which expires first, makes room
	assert.Equal(t, 3, v.len())
	assert.False(t, v.has("a", now))
	assert.True(t, v.has("b", now) && v.has("c", now) && v.has("d", now))
	// Expired entries go when one is added.
	later := now.Add(150 * time.Second)
	assert.False(t, v.has("c", later))
	v.add("e", later.Add(time.Hour), later)
	assert.Equal(t, 3, v.len()) // b, d, e
	assert.True(t, v.has("b", later) && v.has("d", later) && v.has("e", later))
	assert.Equal(t, 100_000, maxRevoked)
	// It holds sums, not tokens.
	for k := range v.m {
		assert.NotContains(t, string(k[:]), "b")
	}
}

// A version-1 receipt's signature covers neither its signing key nor its
// log position: the verify page says it is valid, as a legacy receipt,
// and neither names the key nor answers whether it was purged.
func TestVerifyLegacyVersion1Receipt(t *testing.T) {
	f := newFixture(t)
	priv := ed25519.NewKeyFromSeed([]byte(strings.Repeat("r", ed25519.SeedSize)))
	rk, err := personify.NewReceiptKey(priv)
	require.NoError(t, err)
	e, err := personify.New(personify.Options{Key: f.key, K: 2, ReceiptKey: rk, Now: func() time.Time { return t0 }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	require.NoError(t, e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut}))
	require.NoError(t, e.Define(personify.Segment{Name: "runners", Purpose: "personalization"}))
	require.NoError(t, e.Add("runners", anonymize.Email(anaEmail)))
	p, err := e.Person(anonymize.Email(anaEmail))
	require.NoError(t, err)
	rc, err := e.ForgetPerson(t.Context(), p, personify.ForgetOptions{})
	require.NoError(t, err)
	v2 := rc
	v2.Version, v2.Linked, v2.Counters = 2, nil, 0
	v2.Signature = ed25519.Sign(priv, v2.SignedMessage())
	require.NoError(t, e.VerifyReceipt(v2))
	v1 := v2
	v1.Version = 1
	v1.Seq = 7                               // not covered by a version-1 signature
	v1.SigningKey = strings.Repeat("ab", 32) // nor is this
	v1.Signature = ed25519.Sign(priv, v1.SignedMessage())
	require.NoError(t, e.VerifyReceipt(v1))

	h, err := New(Config{Engine: e, Links: f.signer, AppName: "Example Shop"})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := f.client()
	verify := func(rc personify.Receipt) string {
		t.Helper()
		resp, err := c.Get(srv.URL + "/privacy/verify")
		require.NoError(t, err)
		page, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		js, err := json.Marshal(rc)
		require.NoError(t, err)
		resp, err = c.PostForm(srv.URL+"/privacy/verify", url.Values{"csrf": {csrfOf(t, string(page))}, "receipt": {string(js)}})
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		m := verifyResultRE.FindStringSubmatch(string(b))
		require.NotNil(t, m, string(b))
		return html.UnescapeString(m[1])
	}
	got := verify(v1)
	assert.Equal(t, "valid (a legacy version-1 receipt: its signing key and log position are not covered by the signature)", got)
	assert.NotContains(t, got, "signed by")
	assert.NotContains(t, got, "purged")
	assert.NotContains(t, got, v1.SigningKey)
	// A version-2 receipt names its key and whether it was purged.
	assert.True(t, strings.HasPrefix(verify(v2), "valid, signed by "+v2.SigningKey+"; purged: "), verify(v2))
	// A version-1 receipt that was altered is not valid.
	bad := v1
	bad.Consents++
	assert.True(t, strings.HasPrefix(verify(bad), "not valid: "))
}

var verifyResultRE = regexp.MustCompile(`(?s)<p role="status" id="verify-result"[^>]*>(.*?)</p>`)
