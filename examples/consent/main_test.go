package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConsent(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		// Before any consent: opt-out serves, opt-in and sensitive do not.
		"  ana  personalization=[runners] email-marketing=[] ad-sharing=[lookalike-seed]",
		// Explicit opt-in unlocks the sensitive segment.
		"  ana  personalization=[runners diabetes-care] email-marketing=[sale-alerts] ad-sharing=[lookalike-seed]",
		// Withdrawal, "do not sell or share", global suppression.
		"  di   personalization=[] email-marketing=[] ad-sharing=[lookalike-seed]",
		"  bo   personalization=[runners diabetes-care] email-marketing=[sale-alerts] ad-sharing=[]",
		"  cy   personalization=[] email-marketing=[] ad-sharing=[]",
		"ad-sharing=[] (suppression survives)",
		// Only ana and di may be shared: below k = 3, refused.
		"audience lookalike-seed for ad-sharing: personify: audience below the minimum size",
		"audience sale-alerts for email-marketing: personify: audience below the minimum size",
		"  suppressed for: [ad-sharing]",
	} {
		assert.Contains(t, got, want)
	}
}
