package main

import (
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/cmd/personify/internal/browsertest"
)

// The preference center of the real binary in a real headless Chromium:
// the app asks the privacy service for a link, the person opens it, sees
// their segments, withdraws a consent and the API's Segments changes,
// opts out by Global Privacy Control, forgets, and verifies the receipt.
func TestServePreferenceCenterInChromium(t *testing.T) {
	browsertest.RequireChromium(t)
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2", "--do-not-sell", "advertising")
	define(t, s)
	ctx := ctxT(t)
	link, err := s.privacy(privacyToken).PreferenceLink(ctx, connect.NewRequest(&pb.PreferenceLinkRequest{Identifier: emailID(1)}))
	require.NoError(t, err)
	ps, err := s.lookup(lookupToken).Pseudonymize(ctx, connect.NewRequest(&pb.PseudonymizeRequest{Identifier: emailID(1)}))
	require.NoError(t, err)
	segments := func(purpose string) []string {
		var out struct {
			Segments []string `json:"segments"`
		}
		s.postOK(t, lookupToken, "LookupService/Segments", fmt.Sprintf(`{"subject":{"pseudonym":%q},"purpose":%q}`, ps.Msg.GetPseudonym(), purpose), &out)
		return out.Segments
	}
	require.Equal(t, []string{"runners"}, segments("personalization"))
	require.Equal(t, []string{"ads-seed"}, segments("advertising"))

	browsertest.Scenario(t, s.base, segments, s.base+link.Msg.GetUrl(), browsertest.Shots(t))

	for _, p := range []string{"personalization", "advertising"} {
		assert.Empty(t, segments(p), "after the erasure, %s", p)
	}
	assert.Contains(t, s.get(t, "/metrics"), "personify_gpc_optouts_total 1")
	s.stop()
	all := s.out() + s.errs()
	for _, secret := range []string{"person001", "example.com", link.Msg.GetToken(), privacyToken, lookupToken} {
		assert.NotContains(t, all, secret)
	}
}
