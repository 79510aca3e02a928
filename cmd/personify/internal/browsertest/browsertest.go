// Package browsertest drives the preference center through a person's
// visit in a real headless Chromium (Debian's chromium package), for the
// preference center's own tests and the command's end-to-end tests.
package browsertest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/personify-go/personify/personify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ChromiumPath is where Debian's chromium package puts the browser.
const ChromiumPath = "/usr/bin/chromium"

// RequireChromium skips t where Chromium is not installed, unless
// PERSONIFY_REQUIRE_CHROMIUM is set (CI sets it): then it fails.
func RequireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		if os.Getenv("PERSONIFY_REQUIRE_CHROMIUM") != "" {
			t.Fatalf("PERSONIFY_REQUIRE_CHROMIUM is set, but %s is missing: %v", ChromiumPath, err)
		}
		t.Skipf("no Chromium at %s", ChromiumPath)
	}
}

// Shots returns the directory for a test's screenshots:
// PERSONIFY_SCREENSHOTS if set, else the test's artifact directory.
func Shots(t *testing.T) string {
	if s := os.Getenv("PERSONIFY_SCREENSHOTS"); s != "" {
		return filepath.Join(s, t.Name())
	}
	return t.ArtifactDir()
}

// Scenario drives a preference center at base (scheme and host)
// through a person's visit in headless Chromium: link is their signed link,
// segments(purpose) what the engine serves them for purpose now, shots the
// directory that receives a full-page PNG of every page seen. It opens the
// link as a person does from their webmail (a click on a page of another
// site, then the link's "Open your privacy settings" button), checks the
// segments are listed, withdraws a consent by clicking, then in a second
// browser context that sends Sec-GPC: 1 on every request opens the link
// again and sees the do-not-sell opt-out applied and the notice, and
// finally forgets the person and checks the receipt shown, with the page's
// verify form and with personify.VerifyReceipt and the public keys the
// page publishes; after that the link, used to erase, opens nothing.
func Scenario(t *testing.T, base string, segments func(purpose string) []string, link string, shots string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(shots, 0o755))
	t.Logf("screenshots in %s", shots)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ChromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()

	// Start the browser and the first tab under bctx itself: a tab belongs
	// to the context of its first action.
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate("about:blank")), "start Chromium")
	n := 0
	shot := func(c context.Context, name string) {
		t.Helper()
		png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
		require.NoError(t, err, "screenshot %s", name)
		n++
		p := filepath.Join(shots, twoDigits(n)+"-"+name+".png")
		require.NoError(t, os.WriteFile(p, png, 0o644))
	}
	do := func(c context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sc, cancel := context.WithTimeout(c, 15*time.Second)
		defer cancel()
		if err := chromedp.Do(sc, actions...); err != nil {
			loc, _ := chromedp.Run(c, chromedp.Location())
			h, _ := chromedp.Run(c, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("%s: %v (at %s)\n%s", what, err, loc, h)
		}
	}
	text := func(c context.Context, sel string) string {
		t.Helper()
		s, err := chromedp.Run(c, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, "text of %s", sel)
		return s
	}
	attrs := func(c context.Context, sel string) []map[string]string {
		t.Helper()
		a, err := chromedp.Run(c, chromedp.AttributesAll(chromedp.CSSAll(sel), chromedp.AtLeast(0)))
		require.NoError(t, err, "attributes of %s", sel)
		return a
	}
	noToken := func(c context.Context) {
		t.Helper()
		loc, err := chromedp.Run(c, chromedp.Location())
		require.NoError(t, err)
		u, err := url.Parse(loc)
		require.NoError(t, err)
		assert.Equal(t, "/privacy/", u.Path)
		assert.False(t, u.Query().Has("t"), "the token left the address bar")
		assert.True(t, strings.HasPrefix(loc, base), loc)
	}

	// 1. Open the link from a page of another site (the person's webmail):
	// the link's page has a button, which turns the token into a cookie
	// (SameSite=Strict, set by a same-origin POST, so sent on what
	// follows); the settings page lists the segments.
	mail := webmail(t, base, link)
	do(bctx, "open the webmail", chromedp.Navigate(mail), chromedp.WaitVisible(chromedp.CSS("#mail-link")))
	do(bctx, "follow the link", chromedp.Click(chromedp.CSS("#mail-link")), chromedp.WaitVisible(chromedp.CSS("#open-button")))
	assert.Equal(t, "Open your privacy settings", text(bctx, "h1"))
	shot(bctx, "open-link")
	do(bctx, "open the settings", chromedp.Click(chromedp.CSS("#open-button")), chromedp.WaitVisible(chromedp.CSS("form.consent")))
	assert.Equal(t, "Your privacy settings", text(bctx, "h1"))
	noToken(bctx)
	shot(bctx, "settings")
	var purposes, dnsPurposes []string
	for _, a := range attrs(bctx, "form.consent") {
		purposes = append(purposes, a["data-purpose"])
	}
	for _, a := range attrs(bctx, "li.dns-purpose") {
		dnsPurposes = append(dnsPurposes, a["data-purpose"])
	}
	require.NotEmpty(t, purposes, "the page shows no consent form")
	segText := text(bctx, "main")
	for _, p := range purposes {
		for _, s := range segments(p) {
			assert.Contains(t, segText, s, "segment %s of %s is on the page", s, p)
		}
	}

	// 2. Withdraw a consent by clicking: a purpose that serves segments now
	// and is not one of the do-not-sell ones (step 3 checks those).
	var target string
	for _, a := range attrs(bctx, "button.withdraw") {
		p := a["data-purpose"]
		if len(segments(p)) > 0 && !slices.Contains(dnsPurposes, p) {
			target = p
			break
		}
	}
	require.NotEmpty(t, target, "no purpose to withdraw consent from")
	before := segments(target)
	do(bctx, "withdraw "+target,
		chromedp.Click(chromedp.CSS(`button.withdraw[data-purpose="`+target+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button.grant[data-purpose="`+target+`"]`)),
	)
	noToken(bctx)
	assert.Contains(t, text(bctx, "#status"), target)
	after := segments(target)
	assert.NotEqual(t, before, after, "withdrawing consent for %s changed nothing", target)
	assert.Empty(t, after)
	shot(bctx, "consent-withdrawn")

	// 3. A second browser context whose every request says Sec-GPC: 1.
	gctx, cancelG := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer cancelG()
	_, err := chromedp.Call(gctx, network.Enable, network.EnableParams{})
	require.NoError(t, err)
	_, err = chromedp.Call(gctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Sec-GPC": "1"}})
	require.NoError(t, err)
	do(gctx, "open the link with Global Privacy Control", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#open-button")),
		chromedp.Click(chromedp.CSS("#open-button")), chromedp.WaitVisible(chromedp.CSS("#gpc-notice")))
	noToken(gctx)
	assert.Contains(t, text(gctx, "#gpc-notice"), "Your browser's Global Privacy Control signal was honoured: we do not sell or share your personal information")
	on, err := chromedp.Run(gctx, chromedp.AttributeValue(chromedp.CSS("#dns-state"), "data-on"))
	require.NoError(t, err)
	assert.Equal(t, "true", on.Value)
	require.NotEmpty(t, dnsPurposes)
	for _, p := range dnsPurposes {
		assert.Empty(t, segments(p), "GPC opts out of %s", p)
	}
	shot(gctx, "global-privacy-control")

	// 4. Forget, and check the receipt.
	do(gctx, "forget",
		chromedp.Click(chromedp.CSS("#forget-confirm")),
		chromedp.Click(chromedp.CSS("#forget-button")),
		chromedp.WaitVisible(chromedp.CSS("#receipt-json")),
	)
	receiptText := text(gctx, "#receipt-json")
	keys := strings.Fields(text(gctx, "#public-keys"))
	command := text(gctx, "#verify-command")
	shot(gctx, "receipt")
	for _, p := range purposes {
		assert.Empty(t, segments(p), "after the erasure, %s", p)
	}
	var rc personify.Receipt
	require.NoError(t, json.Unmarshal([]byte(receiptText), &rc), receiptText)
	require.Contains(t, keys, rc.SigningKey, "the receipt's key is published on the page")
	pub, err := hex.DecodeString(rc.SigningKey)
	require.NoError(t, err)
	require.NoError(t, personify.VerifyReceipt(rc, pub))
	assert.Equal(t, "personify verify-receipt --public-key "+rc.SigningKey+" receipt.json", strings.TrimSpace(command))

	// The download button (a form, no script) saves the verified receipt.
	downloads := t.TempDir()
	yes := true
	_, err = chromedp.CallBrowser(gctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, BrowserContextID: chromedp.FromContext(gctx).BrowserContextID,
		DownloadPath: downloads, EventsEnabled: &yes})
	require.NoError(t, err)
	do(gctx, "download receipt.json", chromedp.Click(chromedp.CSS("#receipt-download-button")))
	var saved []byte
	require.Eventually(t, func() bool {
		saved, err = os.ReadFile(filepath.Join(downloads, "receipt.json"))
		return err == nil && json.Valid(saved)
	}, 10*time.Second, 50*time.Millisecond, "receipt.json was not downloaded")
	var got personify.Receipt
	require.NoError(t, json.Unmarshal(saved, &got))
	assert.NoError(t, personify.VerifyReceipt(got, pub))
	assert.Equal(t, rc.ID, got.ID)

	// The page's own verify form, for the receipt and a tampered one.
	do(gctx, "verify the receipt in the page",
		chromedp.SetValue(chromedp.CSS("#verify-receipt"), receiptText),
		chromedp.Click(chromedp.CSS("#verify-button")),
		chromedp.WaitVisible(chromedp.CSS(`#verify-result[data-valid="true"]`)),
	)
	result := text(gctx, "#verify-result")
	assert.True(t, strings.HasPrefix(result, "valid, signed by "+rc.SigningKey+"; purged: "), result)
	shot(gctx, "receipt-valid")
	tampered := rc
	tampered.Segments = nil
	tb, err := json.Marshal(tampered)
	require.NoError(t, err)
	do(gctx, "verify a tampered receipt in the page",
		chromedp.SetValue(chromedp.CSS("#verify-receipt"), string(tb)),
		chromedp.Click(chromedp.CSS("#verify-button")),
		chromedp.WaitVisible(chromedp.CSS(`#verify-result[data-valid="false"]`)),
	)
	result = text(gctx, "#verify-result")
	assert.True(t, strings.HasPrefix(result, "not valid: "), result)
	shot(gctx, "receipt-tampered")

	// The link was used to erase: the first context's session on it, and
	// the link itself, open nothing any more.
	do(bctx, "reload", chromedp.Navigate(base+"/privacy/"), chromedp.WaitVisible(chromedp.CSS("#problem")))
	assert.Equal(t, "This link was used to erase your data", text(bctx, "h1"))
	shot(bctx, "session-after-erasure")
	do(gctx, "re-open the link", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#problem")))
	assert.Equal(t, "This link was used to erase your data", text(gctx, "h1"))
	buttons, err := chromedp.Run(gctx, chromedp.Nodes(chromedp.CSS("#open-button"), chromedp.AtLeast(0)))
	require.NoError(t, err)
	assert.Empty(t, buttons, "a link used to erase still has an open button")
	shot(gctx, "link-after-erasure")
}

// webmail serves, for the rest of t, a page on another site than base's
// (localhost for 127.0.0.1, else 127.0.0.1) with link as #mail-link, and
// returns its URL.
func webmail(t *testing.T, base, link string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, `<!doctype html><html lang="en"><title>Webmail</title><h1>Your mail</h1><p><a id="mail-link" href="`+html.EscapeString(link)+`">Your privacy settings</a></p></html>`)
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	b, err := url.Parse(base)
	require.NoError(t, err)
	host := "127.0.0.1"
	if b.Hostname() == "127.0.0.1" {
		host = "localhost"
	}
	u.Host = host + ":" + u.Port()
	return u.String()
}

func twoDigits(n int) string {
	return string([]byte{byte('0' + n/10%10), byte('0' + n%10)})
}
