package prefcenter

import (
	"bytes"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/cmd/personify/internal/link"
	"github.com/personify-go/personify/personify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var _ Engine = (*personify.Engine)(nil)

const (
	testKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	anaEmail   = "ana.privacy-test@example.com"
	boEmail    = "bo.privacy-test@example.com"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fixture is a preference center over a real engine, served by httptest.
type fixture struct {
	t       *testing.T
	e       *personify.Engine
	key     anonymize.Key
	signer  *link.Signer
	linkNow atomic.Pointer[time.Time] // the link signer's clock
	srv     *httptest.Server
	logs    *syncBuffer
	gpc     atomic.Int32
	ana     anonymize.Pseudonym
	person  personify.Person
	secrets []string // what no response or log line may contain
}

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, logs: &syncBuffer{}}
	f.linkNow.Store(&t0)
	key, err := anonymize.KeyFromHex(testKeyHex)
	require.NoError(t, err)
	f.key = key
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e, err := personify.New(personify.Options{Key: key, K: 2, Audit: log, Now: func() time.Time { return t0 }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	f.e = e
	require.NoError(t, e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut, Description: "Showing you things that fit what you do"}))
	require.NoError(t, e.DefinePurpose(personify.Purpose{Name: "advertising", Model: personify.OptOut, Description: "Ads shown to you by our partners"}))
	require.NoError(t, e.DefinePurpose(personify.Purpose{Name: "newsletter", Model: personify.OptIn, Description: "Choosing what our newsletter tells you about"}))
	require.NoError(t, e.Define(personify.Segment{Name: "runners", Purpose: "personalization", Retention: 90 * 24 * time.Hour, Description: "You logged a run in the last 90 days"}))
	require.NoError(t, e.Define(personify.Segment{Name: "bargain-hunters", Purpose: "advertising", Description: "You often buy things on sale"}))
	require.NoError(t, e.Define(personify.Segment{Name: "trail-news", Purpose: "newsletter", Description: "You read our trail running issues"}))
	require.NoError(t, e.Add("runners", anonymize.Email(anaEmail), anonymize.Email(boEmail)))
	require.NoError(t, e.Add("bargain-hunters", anonymize.Email(anaEmail), anonymize.Email(boEmail)))
	require.NoError(t, e.Add("trail-news", anonymize.Email(anaEmail)))
	require.NoError(t, e.DefineCap(personify.Cap{Name: "partner-ads", Purpose: "advertising", Max: 3, Window: personify.Window{Kind: personify.Lifetime}}))
	f.ana, err = e.Pseudonym(anonymize.Email(anaEmail))
	require.NoError(t, err)
	require.True(t, e.Allow(f.ana, "partner-ads"))
	f.person, err = e.Person(anonymize.Email(anaEmail))
	require.NoError(t, err)

	f.signer, err = link.New(key, func() time.Time { return *f.linkNow.Load() })
	require.NoError(t, err)
	h, err := New(Config{Engine: e, Links: f.signer, DoNotSell: []string{"advertising"}, Logger: log,
		Now: func() time.Time { return *f.linkNow.Load() }, OnGPC: func() { f.gpc.Add(1) }, AppName: "Example Shop"})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/privacy/", h)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	f.secrets = []string{anaEmail, boEmail, "ana.privacy-test", testKeyHex}
	t.Cleanup(func() {
		for _, s := range f.secrets {
			assert.NotContains(t, f.logs.String(), s, "the log holds a secret")
		}
	})
	return f
}

// token signs a link for ana with ttl.
func (f *fixture) token(ttl time.Duration) string {
	tok, _, err := f.signer.Sign(f.person, ttl)
	require.NoError(f.t, err)
	f.secrets = append(f.secrets, tok)
	return tok
}

func (f *fixture) client() *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(f.t, err)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

// response is a fetched response, checked for the headers every response
// carries and for secrets.
type response struct {
	status int
	header http.Header
	body   string
	url    *url.URL
}

func (f *fixture) check(resp *http.Response) response {
	f.t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	r := response{status: resp.StatusCode, header: resp.Header, body: string(b), url: resp.Request.URL}
	// The page that opens a link holds its token in the hidden field of
	// its form, and nowhere else.
	assert.LessOrEqual(f.t, len(openTokenRE.FindAllString(r.body, -1)), 1)
	body := openTokenRE.ReplaceAllString(r.body, "")
	for _, hs := range []*http.Response{resp, resp.Request.Response} {
		if hs == nil {
			continue
		}
		assert.Equal(f.t, "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'", hs.Header.Get("Content-Security-Policy"), hs.Request.URL.Path)
		assert.Equal(f.t, "nosniff", hs.Header.Get("X-Content-Type-Options"))
		assert.Equal(f.t, "no-referrer", hs.Header.Get("Referrer-Policy"))
		assert.Equal(f.t, "no-store", hs.Header.Get("Cache-Control"))
		assert.Equal(f.t, "DENY", hs.Header.Get("X-Frame-Options"))
	}
	// The session cookie holds the token (and nothing else may): the
	// headers are checked without it, and it for the identifiers.
	var hdr strings.Builder
	_ = resp.Header.Write(&hdr)
	noCookie := resp.Header.Clone()
	noCookie.Del("Set-Cookie")
	var rest strings.Builder
	_ = noCookie.Write(&rest)
	for i, s := range f.secrets {
		assert.NotContains(f.t, body, s, "the body of %s holds a secret", resp.Request.URL.Path)
		assert.NotContains(f.t, rest.String(), s, "the headers of %s hold a secret", resp.Request.URL.Path)
		if i < 4 {
			assert.NotContains(f.t, hdr.String(), s, "the headers of %s hold an identifier", resp.Request.URL.Path)
		}
		if resp.Request.Response != nil { // after a redirect
			assert.NotContains(f.t, r.url.String(), s, "the final URL holds a secret")
		}
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") && resp.Request.Method != http.MethodHead {
		assert.Contains(f.t, r.body, `<html lang="en">`)
		assert.NotContains(f.t, r.body, "<script")
		assert.NotContains(f.t, r.body, "style=")
	}
	return r
}

func (f *fixture) get(c *http.Client, path string, hdr ...string) response {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	require.NoError(f.t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(f.t, err)
	return f.check(resp)
}

func (f *fixture) post(c *http.Client, path string, form url.Values, hdr ...string) response {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(form.Encode()))
	require.NoError(f.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(f.t, err)
	return f.check(resp)
}

// open opens a fresh link in a new client and returns it and the page.
func (f *fixture) open(hdr ...string) (*http.Client, response) {
	f.t.Helper()
	c := f.client()
	r := f.openToken(c, f.token(0), hdr...)
	require.Equal(f.t, http.StatusOK, r.status, r.body)
	return c, r
}

var (
	openTokenRE = regexp.MustCompile(`<input type="hidden" name="t" value="[^"]*">`)
	openFormRE  = regexp.MustCompile(`(?s)<form method="post" action="/privacy/open" id="open-form">(.*?)</form>`)
	hiddenRE    = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// openForm reads the form of the page that opens a link: its fields.
func openForm(t *testing.T, body string) url.Values {
	t.Helper()
	m := openFormRE.FindStringSubmatch(body)
	require.NotNil(t, m, "no form that opens the link on the page:\n%s", body)
	v := url.Values{}
	for _, h := range hiddenRE.FindAllStringSubmatch(m[1], -1) {
		v.Add(h[1], html.UnescapeString(h[2]))
	}
	return v
}

// openToken opens link token tok in c as a person does: the link's page,
// then its button. It returns the page the button leads to.
func (f *fixture) openToken(c *http.Client, tok string, hdr ...string) response {
	f.t.Helper()
	r := f.get(c, "/privacy/?t="+url.QueryEscape(tok), hdr...)
	if r.status != http.StatusOK {
		return r
	}
	require.Contains(f.t, r.body, `id="open-button"`)
	return f.post(c, "/privacy/open", openForm(f.t, r.body), hdr...)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	require.NotNil(t, m, "no CSRF token on the page")
	return html.UnescapeString(m[1])
}

func (f *fixture) segments(purpose string) []string {
	return f.e.Segments(nil, f.ana, purpose)
}

func TestLinkBecomesCookieAndLeavesTheURL(t *testing.T) {
	f := newFixture(t)
	tok := f.token(10 * time.Minute)
	noFollow := f.client()
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// The link's page sets no cookie: its button does.
	r := f.get(noFollow, "/privacy/?t="+url.QueryEscape(tok))
	require.Equal(t, http.StatusOK, r.status)
	assert.Empty(t, r.header.Values("Set-Cookie"))
	assert.Contains(t, r.body, "<h1>Open your privacy settings</h1>")
	assert.NotContains(t, r.body, `id="replace-warning"`)
	assert.Equal(t, url.Values{"t": {tok}}, openForm(t, r.body))
	accessible(t, "open", r.body)
	r = f.post(noFollow, "/privacy/open", url.Values{"t": {tok}})
	require.Equal(t, http.StatusSeeOther, r.status)
	assert.Equal(t, "/privacy/", r.header.Get("Location"))
	cookies := (&http.Response{Header: r.header}).Cookies()
	require.Len(t, cookies, 1)
	c := cookies[0]
	assert.Equal(t, tok, c.Value)
	assert.True(t, c.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, c.SameSite)
	assert.Equal(t, "/privacy/", c.Path)
	assert.False(t, c.Secure)
	assert.True(t, c.Expires.Equal(t0.Add(10*time.Minute)), c.Expires)
	assert.Equal(t, 600, c.MaxAge)

	// A client that follows the redirect ends at /privacy/ with no token.
	cl := f.client()
	page := f.openToken(cl, tok)
	require.Equal(t, http.StatusOK, page.status)
	assert.Equal(t, "/privacy/", page.url.Path)
	assert.Empty(t, page.url.RawQuery)
	for _, want := range []string{"runners", "You logged a run in the last 90 days", "bargain-hunters", "You often buy things on sale",
		"trail-news", "You read our trail running issues", "personalization", "advertising", "newsletter",
		"Do not sell or share my personal information", "partner-ads", "1 of at most 3", "/privacy/report.json",
		f.ana.String(), f.key.Fingerprint().String(), "not your identifier", "Forget me"} {
		assert.Contains(t, page.body, want)
	}
	// trail-news has one member, below k: listed, but not used.
	assert.Regexp(t, `trail-news[\s\S]*?No: `, page.body)

	// The stylesheet is served by the handler, with the same headers.
	css := f.get(cl, "/privacy/style.css")
	assert.Equal(t, http.StatusOK, css.status)
	assert.Equal(t, "text/css; charset=utf-8", css.header.Get("Content-Type"))
	assert.Contains(t, css.body, ":focus-visible")
	assert.Equal(t, http.StatusNotFound, f.get(cl, "/privacy/nothing-here").status)
	assert.Equal(t, http.StatusMethodNotAllowed, f.post(cl, "/privacy/", url.Values{}).status)
	assert.Contains(t, f.logs.String(), "prefcenter.link_opened")
	assert.Contains(t, f.logs.String(), f.ana.String())

	// Secure: the cookie is marked Secure.
	h, err := New(Config{Engine: f.e, Links: f.signer, Secure: true})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/privacy/open", strings.NewReader(url.Values{"t": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusSeeOther, rec.Code)
	require.Len(t, rec.Result().Cookies(), 1)
	assert.True(t, rec.Result().Cookies()[0].Secure)
}

func TestLinksRefused(t *testing.T) {
	f := newFixture(t)
	tok := f.token(time.Minute)
	c := f.client()

	tampered := []byte(tok)
	tampered[len(tampered)/3] ^= 1
	f.secrets = append(f.secrets, string(tampered))
	r := f.get(c, "/privacy/?t="+url.QueryEscape(string(tampered)))
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Contains(t, r.body, "not valid")
	assert.Contains(t, r.body, "ask Example Shop for a new link")
	assert.Empty(t, (&http.Response{Header: r.header}).Cookies())
	// The button checks the token again.
	for _, bad := range []string{string(tampered), ""} {
		r = f.post(c, "/privacy/open", url.Values{"t": {bad}})
		assert.Equal(t, http.StatusForbidden, r.status)
		assert.Contains(t, r.body, "not valid")
		assert.Empty(t, (&http.Response{Header: r.header}).Cookies())
	}
	assert.Equal(t, http.StatusMethodNotAllowed, f.get(c, "/privacy/open").status)

	r = f.get(c, "/privacy/?t=")
	assert.Equal(t, http.StatusForbidden, r.status)

	// No session at all.
	r = f.get(c, "/privacy/")
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Contains(t, r.body, "open the link")

	// A session whose link expires is refused, and the cookie cleared.
	r = f.openToken(c, tok)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, "<h1>Your privacy settings</h1>")
	later := t0.Add(2 * time.Minute)
	f.linkNow.Store(&later)
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/privacy/", nil)
	req.AddCookie(&http.Cookie{Name: "pc_session", Value: tok}) // the jar dropped it already
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	r = f.check(resp)
	assert.Equal(t, http.StatusGone, r.status)
	assert.Contains(t, r.body, "expired")
	cl := (&http.Response{Header: r.header}).Cookies()
	require.Len(t, cl, 1)
	assert.Equal(t, -1, cl[0].MaxAge)

	// An expired link.
	r = f.get(f.client(), "/privacy/?t="+url.QueryEscape(tok))
	assert.Equal(t, http.StatusGone, r.status)
	assert.Contains(t, r.body, "new link")
	r = f.post(f.client(), "/privacy/open", url.Values{"t": {tok}})
	assert.Equal(t, http.StatusGone, r.status)
	assert.Contains(t, f.logs.String(), "expired")
}

func TestConsentWithdrawAndGrant(t *testing.T) {
	f := newFixture(t)
	c, page := f.open()
	require.Equal(t, []string{"runners"}, f.segments("personalization"))
	csrf := csrfOf(t, page.body)

	r := f.post(c, "/privacy/consent", url.Values{"csrf": {csrf}, "purpose": {"personalization"}, "granted": {"false"}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, "/privacy/", r.url.Path)
	assert.Empty(t, f.segments("personalization"))
	assert.Contains(t, r.body, "Your consent for personalization is withdrawn")
	assert.Contains(t, r.body, "Give consent for personalization")

	r = f.post(c, "/privacy/consent", url.Values{"csrf": {csrf}, "purpose": {"personalization"}, "granted": {"true"}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, []string{"runners"}, f.segments("personalization"))
	assert.Contains(t, r.body, "your consent for personalization is saved")

	// Unknown purpose, or no choice: 400, nothing changes.
	r = f.post(c, "/privacy/consent", url.Values{"csrf": {csrf}, "purpose": {"no-such-purpose"}, "granted": {"false"}})
	assert.Equal(t, http.StatusBadRequest, r.status)
	r = f.post(c, "/privacy/consent", url.Values{"csrf": {csrf}, "purpose": {"personalization"}, "granted": {"maybe"}})
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, []string{"runners"}, f.segments("personalization"))
	// A message that names an unknown purpose is not shown.
	r = f.get(c, "/privacy/?m=consent-granted&p=%3Cb%3Ex")
	assert.NotContains(t, r.body, "<b>x")
	assert.NotContains(t, r.body, "is saved")
	// A GET on a POST endpoint.
	assert.Equal(t, http.StatusMethodNotAllowed, f.get(c, "/privacy/consent").status)
	assert.Contains(t, f.logs.String(), "prefcenter.consent")
}

func TestCSRFAndCrossSiteRefused(t *testing.T) {
	f := newFixture(t)
	c, page := f.open()
	csrf := csrfOf(t, page.body)
	withdraw := func(token string) url.Values {
		v := url.Values{"purpose": {"personalization"}, "granted": {"false"}}
		if token != "" {
			v.Set("csrf", token)
		}
		return v
	}
	cases := []struct {
		name string
		form url.Values
		hdr  []string
	}{
		{"no token", withdraw(""), nil},
		{"wrong token", withdraw(csrfToken("someone else's session")), nil},
		{"token of another cookie", withdraw(csrf[:len(csrf)-2] + "AA"), nil},
		{"cross-site origin", withdraw(csrf), []string{"Origin", "https://evil.example"}},
		{"null origin", withdraw(csrf), []string{"Origin", "null"}},
		{"null origin, cross-site", withdraw(csrf), []string{"Origin", "null", "Sec-Fetch-Site", "cross-site"}},
		{"null origin, same-site", withdraw(csrf), []string{"Origin", "null", "Sec-Fetch-Site", "same-site"}},
		{"other port", withdraw(csrf), []string{"Origin", "http://127.0.0.1:1"}},
		{"sec-fetch-site cross-site", withdraw(csrf), []string{"Sec-Fetch-Site", "cross-site"}},
		{"sec-fetch-site same-site", withdraw(csrf), []string{"Sec-Fetch-Site", "same-site"}},
	}
	for _, tc := range cases {
		r := f.post(c, "/privacy/consent", tc.form, tc.hdr...)
		assert.Equal(t, http.StatusForbidden, r.status, tc.name)
		assert.Contains(t, r.body, "Request refused", tc.name)
		assert.Equal(t, []string{"runners"}, f.segments("personalization"), tc.name)
	}
	// The same for the opt-out and for forget.
	for _, path := range []string{"/privacy/donotsell", "/privacy/forget"} {
		r := f.post(c, path, url.Values{"on": {"true"}, "confirm": {"yes"}})
		assert.Equal(t, http.StatusForbidden, r.status, path)
		r = f.post(c, path, url.Values{"on": {"true"}, "confirm": {"yes"}, "csrf": {csrf}}, "Origin", "http://evil.example")
		assert.Equal(t, http.StatusForbidden, r.status, path)
	}
	assert.Equal(t, []string{"bargain-hunters"}, f.segments("advertising"))
	assert.Equal(t, []string{"runners"}, f.segments("personalization"))
	// Without a session, the token alone does nothing.
	r := f.post(f.client(), "/privacy/consent", withdraw(csrf))
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Equal(t, []string{"runners"}, f.segments("personalization"))

	// Same origin is accepted; so is the opaque origin browsers send under
	// Referrer-Policy: no-referrer, when they say it is same-origin.
	r = f.post(c, "/privacy/consent", withdraw(csrf), "Origin", f.srv.URL, "Sec-Fetch-Site", "same-origin")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Empty(t, f.segments("personalization"))
	grant := withdraw(csrf)
	grant.Set("granted", "true")
	r = f.post(c, "/privacy/consent", grant, "Origin", "null", "Sec-Fetch-Site", "same-origin")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, []string{"runners"}, f.segments("personalization"))
	r = f.post(c, "/privacy/consent", withdraw(csrf))
	assert.Equal(t, http.StatusOK, r.status)
	assert.Empty(t, f.segments("personalization"))

	// A body past 64 KiB is refused.
	big := withdraw(csrf)
	big.Set("pad", strings.Repeat("x", 70<<10))
	r = f.post(c, "/privacy/consent", big)
	assert.Equal(t, http.StatusRequestEntityTooLarge, r.status)
	assert.Contains(t, f.logs.String(), "csrf token missing or wrong")
}

func TestDoNotSellAndGlobalPrivacyControl(t *testing.T) {
	f := newFixture(t)
	c, page := f.open()
	csrf := csrfOf(t, page.body)
	require.Equal(t, []string{"bargain-hunters"}, f.segments("advertising"))
	assert.NotContains(t, page.body, "Global Privacy Control signal was honoured")
	assert.Contains(t, page.body, `data-on="false"`)

	// The toggle, on and off.
	r := f.post(c, "/privacy/donotsell", url.Values{"csrf": {csrf}, "on": {"true"}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Empty(t, f.segments("advertising"))
	assert.Contains(t, r.body, `data-on="true"`)
	assert.Equal(t, []string{"runners"}, f.segments("personalization"))
	r = f.post(c, "/privacy/donotsell", url.Values{"csrf": {csrf}, "on": {"false"}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, []string{"bargain-hunters"}, f.segments("advertising"))
	assert.Contains(t, r.body, `data-on="false"`)

	// Sec-GPC: 1 applies it, once, and the page says so.
	r = f.get(c, "/privacy/", "Sec-GPC", "1")
	require.Equal(t, http.StatusOK, r.status)
	assert.Empty(t, f.segments("advertising"))
	assert.Contains(t, r.body, "Your browser's Global Privacy Control signal was honoured: we do not sell or share your personal information")
	assert.Contains(t, r.body, `data-on="true"`)
	assert.Equal(t, int32(1), f.gpc.Load())
	r = f.get(c, "/privacy/", "Sec-GPC", "1")
	assert.Contains(t, r.body, "Global Privacy Control signal was honoured")
	assert.Equal(t, int32(1), f.gpc.Load(), "already applied: not counted again")
	assert.Contains(t, f.logs.String(), "prefcenter.gpc_applied")

	// While the browser sends it, the opt-out cannot be turned off.
	r = f.post(c, "/privacy/donotsell", url.Values{"csrf": {csrf}, "on": {"false"}}, "Sec-GPC", "1")
	require.Equal(t, http.StatusOK, r.status)
	assert.Empty(t, f.segments("advertising"))
	// A request without the signal can.
	r = f.post(c, "/privacy/donotsell", url.Values{"csrf": {csrf}, "on": {"false"}})
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, []string{"bargain-hunters"}, f.segments("advertising"))

	// Any request with a session applies it: the report download too.
	r = f.get(c, "/privacy/report.json", "Sec-GPC", "1")
	require.Equal(t, http.StatusOK, r.status)
	assert.Empty(t, f.segments("advertising"))
	assert.Equal(t, int32(2), f.gpc.Load())
	// Without a session, the header does nothing.
	r = f.get(f.client(), "/privacy/", "Sec-GPC", "1")
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Equal(t, int32(2), f.gpc.Load())

	// Suppressed for every purpose: the opt-out is on, and says why.
	require.NoError(t, f.e.Unsuppress(anonymize.Email(anaEmail), "advertising"))
	require.NoError(t, f.e.Suppress(anonymize.Email(anaEmail)))
	r = f.get(c, "/privacy/")
	assert.Contains(t, r.body, `data-on="true"`)
	assert.Contains(t, r.body, "opted out of every use of your data")
	assert.NotContains(t, r.body, `id="dns-off"`)
}

func TestReportJSON(t *testing.T) {
	f := newFixture(t)
	c, _ := f.open()
	r := f.get(c, "/privacy/report.json")
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, `attachment; filename="privacy-report.json"`, r.header.Get("Content-Disposition"))
	assert.Equal(t, "application/json; charset=utf-8", r.header.Get("Content-Type"))
	want, err := f.e.ExplainPerson(f.person)
	require.NoError(t, err)
	wantJSON, err := json.Marshal(want)
	require.NoError(t, err)
	assert.JSONEq(t, string(wantJSON), r.body)
	var got personify.Report
	require.NoError(t, json.Unmarshal([]byte(r.body), &got))
	assert.Len(t, got.Segments, 3)
	// Without a session: refused.
	assert.Equal(t, http.StatusForbidden, f.get(f.client(), "/privacy/report.json").status)
}

var preRE = regexp.MustCompile(`(?s)<pre id="receipt-json" class="receipt">(.*?)</pre>`)

func TestForgetReceiptAndVerify(t *testing.T) {
	f := newFixture(t)
	c, page := f.open()
	csrf := csrfOf(t, page.body)

	// Without the confirmation nothing is erased.
	r := f.post(c, "/privacy/forget", url.Values{"csrf": {csrf}})
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, []string{"runners"}, f.segments("personalization"))

	r = f.post(c, "/privacy/forget", url.Values{"csrf": {csrf}, "confirm": {"yes"}, "never": {"yes"}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Empty(t, f.segments("personalization"))
	assert.Empty(t, f.segments("advertising"))
	assert.False(t, f.e.In(f.ana, "runners"))
	var cleared bool
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		if ck.Name == "pc_session" {
			cleared = ck.MaxAge < 0
		}
	}
	assert.True(t, cleared, "the session cookie is cleared")

	m := preRE.FindStringSubmatch(r.body)
	require.NotNil(t, m, r.body)
	receiptJSON := html.UnescapeString(m[1])
	var rc personify.Receipt
	require.NoError(t, json.Unmarshal([]byte(receiptJSON), &rc))
	require.NoError(t, personify.VerifyReceipt(rc, f.e.ReceiptPublicKey()))
	assert.True(t, rc.DoNotReAdd)
	assert.Len(t, rc.Segments, 3)
	pub := rc.SigningKey
	assert.Contains(t, r.body, "personify verify-receipt --public-key "+pub+" receipt.json")
	assert.Contains(t, r.body, `<code class="key">`+pub+`</code>`)
	assert.Contains(t, r.body, `role="status"`)
	assert.Contains(t, f.logs.String(), "prefcenter.forgotten")

	// The session is over.
	assert.Equal(t, http.StatusForbidden, f.get(c, "/privacy/").status)

	// The download echoes a valid receipt back as an attachment.
	csrf2 := csrfOf(t, r.body)
	d := f.post(c, "/privacy/receipt.json", url.Values{"csrf": {csrf2}, "receipt": {receiptJSON}})
	require.Equal(t, http.StatusOK, d.status, d.body)
	assert.Equal(t, `attachment; filename="receipt.json"`, d.header.Get("Content-Disposition"))
	var back personify.Receipt
	require.NoError(t, json.Unmarshal([]byte(d.body), &back))
	assert.NoError(t, personify.VerifyReceipt(back, f.e.ReceiptPublicKey()))
	assert.JSONEq(t, receiptJSON, d.body)

	tamperedRc := rc
	tamperedRc.Consents++
	tb, _ := json.Marshal(tamperedRc)
	tampered := string(tb)
	d = f.post(c, "/privacy/receipt.json", url.Values{"csrf": {csrf2}, "receipt": {tampered}})
	assert.Equal(t, http.StatusBadRequest, d.status)
	assert.Empty(t, d.header.Get("Content-Disposition"))
	d = f.post(c, "/privacy/receipt.json", url.Values{"receipt": {receiptJSON}})
	assert.Equal(t, http.StatusForbidden, d.status)

	// The public verify form: no session needed, just its own CSRF cookie.
	v := f.client()
	vp := f.get(v, "/privacy/verify")
	require.Equal(t, http.StatusOK, vp.status)
	vcsrf := csrfOf(t, vp.body)
	res := f.post(v, "/privacy/verify", url.Values{"csrf": {vcsrf}, "receipt": {receiptJSON}})
	require.Equal(t, http.StatusOK, res.status)
	assert.Contains(t, res.body, "valid, signed by "+pub+"; purged: yes by "+rc.PurgeBy.UTC().Format(time.RFC3339))
	res = f.post(v, "/privacy/verify", url.Values{"csrf": {vcsrf}, "receipt": {tampered}})
	assert.Contains(t, res.body, "not valid: its signature does not match its contents")
	assert.NotContains(t, res.body, "valid, signed by")
	otherKey := tamperedRc
	otherKey.SigningKey = strings.Repeat("ab", 32)
	ob, _ := json.Marshal(otherKey)
	res = f.post(v, "/privacy/verify", url.Values{"csrf": {vcsrf}, "receipt": {string(ob)}})
	assert.Contains(t, res.body, "not valid: it does not name a signing key of this service")
	res = f.post(v, "/privacy/verify", url.Values{"csrf": {vcsrf}, "receipt": {"{not json"}})
	assert.Contains(t, res.body, "not valid: this is not the JSON of a receipt")
	res = f.post(v, "/privacy/verify", url.Values{"csrf": {vcsrf}, "receipt": {"  "}})
	assert.Contains(t, res.body, "not valid: no receipt was given")
	// The verify form is CSRF-protected too, and bounded.
	res = f.post(v, "/privacy/verify", url.Values{"receipt": {receiptJSON}})
	assert.Equal(t, http.StatusForbidden, res.status)
	res = f.post(v, "/privacy/verify", url.Values{"csrf": {vcsrf}, "receipt": {receiptJSON}}, "Origin", "https://evil.example")
	assert.Equal(t, http.StatusForbidden, res.status)
	res = f.post(v, "/privacy/verify", url.Values{"csrf": {vcsrf}, "receipt": {strings.Repeat(" ", 64<<10+1)}})
	assert.Equal(t, http.StatusRequestEntityTooLarge, res.status)

	// A new link (signed later: a link signed at the same second, for the
	// same person, is the same token, revoked) opens on a page that says
	// the person was forgotten.
	later := t0.Add(time.Minute)
	f.linkNow.Store(&later)
	_, again := f.open()
	assert.Contains(t, again.body, "<h1>You were forgotten</h1>")
	assert.Contains(t, again.body, "never to be added again")
	assert.NotContains(t, again.body, "<form")
}

func TestEngineErrors(t *testing.T) {
	f := newFixture(t)
	c, _ := f.open()

	// A key rotation: the link's Person is stale.
	next, err := anonymize.KeyFromHex(strings.Repeat("42", 32))
	require.NoError(t, err)
	require.NoError(t, f.e.RotateKey(next, 30*24*time.Hour))
	r := f.get(c, "/privacy/")
	assert.Equal(t, http.StatusGone, r.status)
	assert.Contains(t, r.body, "ask Example Shop for a new link")
	assert.NotContains(t, r.body, "personify:")
	assert.Contains(t, f.logs.String(), "prefcenter.engine_error")

	// A closed engine: 503.
	f.person, err = f.e.Person(anonymize.Email(anaEmail))
	require.NoError(t, err)
	c, _ = f.open()
	require.NoError(t, f.e.Close())
	r = f.get(c, "/privacy/")
	assert.Equal(t, http.StatusServiceUnavailable, r.status)
	assert.Contains(t, r.body, "Temporarily unavailable")
	assert.NotContains(t, r.body, "personify:")
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	_, err := New(Config{})
	assert.Error(t, err)
	f := newFixture(t)
	_, err = New(Config{Engine: f.e, Links: f.signer, DoNotSell: []string{""}})
	assert.Error(t, err)
	// Without DoNotSell, the section is not shown and its endpoint is absent.
	h, err := New(Config{Engine: f.e, Links: f.signer})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/privacy/donotsell", nil))
	assert.Equal(t, http.StatusNotFound, rec.Code)
	assert.NotEmpty(t, rec.Header().Get("Content-Security-Policy"))
}

var (
	headingRE = regexp.MustCompile(`<h([1-6])[ >]`)
	controlRE = regexp.MustCompile(`<(input|textarea|select)\b([^>]*)>`)
	idRE      = regexp.MustCompile(`\bid="([^"]+)"`)
)

// accessible checks a page's headings are in order and every control has a
// label.
func accessible(t *testing.T, name, body string) {
	t.Helper()
	assert.Contains(t, body, `<html lang="en">`, name)
	prev := 0
	for i, m := range headingRE.FindAllStringSubmatch(body, -1) {
		lvl := int(m[1][0] - '0')
		if i == 0 {
			assert.Equal(t, 1, lvl, "%s: the first heading is an h1", name)
		}
		assert.LessOrEqual(t, lvl, prev+1, "%s: heading h%d after h%d", name, lvl, prev)
		prev = lvl
	}
	for _, m := range controlRE.FindAllStringSubmatch(body, -1) {
		if strings.Contains(m[2], `type="hidden"`) {
			continue
		}
		id := idRE.FindStringSubmatch(m[2])
		if assert.NotNil(t, id, "%s: a control without an id: %s", name, m[0]) {
			assert.Contains(t, body, `<label for="`+id[1]+`"`, "%s: control %s has no label", name, id[1])
		}
	}
}

func TestPagesAccessible(t *testing.T) {
	f := newFixture(t)
	c, page := f.open()
	accessible(t, "settings", page.body)
	assert.Equal(t, 3, strings.Count(page.body, `action="/privacy/consent"`), "a form per purpose")
	csrf := csrfOf(t, page.body)
	vp := f.get(f.client(), "/privacy/verify")
	accessible(t, "verify", vp.body)
	accessible(t, "refused", f.get(f.client(), "/privacy/").body)
	r := f.post(c, "/privacy/forget", url.Values{"csrf": {csrf}, "confirm": {"yes"}})
	require.Equal(t, http.StatusOK, r.status)
	accessible(t, "receipt", r.body)
	css := f.get(c, "/privacy/style.css").body
	for _, want := range []string{"color: #1a1a1a", "background: #fff", "a { color: #0645ad; }", ":focus-visible"} {
		assert.Contains(t, css, want)
	}
	// HEAD works, with the headers.
	req, _ := http.NewRequest(http.MethodHead, f.srv.URL+"/privacy/verify", nil)
	resp, err := c.Do(req)
	require.NoError(t, err)
	f.check(resp)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
