package prefcenter

import (
	"net/url"
	"testing"
	"time"

	"github.com/personify-go/personify/cmd/personify/internal/browsertest"
	"github.com/stretchr/testify/assert"
)

// TestBrowser runs the preference center in a real headless Chromium.
func TestBrowser(t *testing.T) {
	browsertest.RequireChromium(t)
	f := newFixture(t)
	shots := browsertest.Shots(t)
	link := f.srv.URL + "/privacy/?t=" + url.QueryEscape(f.token(10*time.Minute))
	browsertest.Scenario(t, f.srv.URL, f.segments, link, shots)
	for _, p := range []string{"personalization", "advertising", "newsletter"} {
		assert.Empty(t, f.segments(p), "after the erasure, %s", p)
	}
	assert.Equal(t, int32(1), f.gpc.Load())
}
