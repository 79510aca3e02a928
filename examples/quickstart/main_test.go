package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQuickstart runs the quickstart and checks each step's outcome.
func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	s := out.String()
	for _, want := range []string{
		"sample of 200000 people: 194348 stored with 432885 memberships in 12 segments",
		"visitor email:[redacted] is stored as 9cb30c1dd635c681",
		"segments for personalization: [runners ios bargain-hunters]",
		"member of vip: true, but vip is not served: 233 members, below its MinSize of 500",
		`audience "newsletter-readers" (opt-in, consented only): 36071 people`,
		`audience "vip & swimmers & hikers": refused: true`,
		"after withdrawing consent: []",
		`not used: you withdrew consent for purpose "personalization"`,
		"personalization (opt-out): consent withdrawn, so not allowed",
		"receipt verifies with the engine's public key: true",
		"after forgetting: 0 segments held, in runners: false",
	} {
		assert.Contains(t, s, want)
	}
	assert.NotContains(t, strings.ToLower(s), "member000042", "the visitor's email never prints")
}
