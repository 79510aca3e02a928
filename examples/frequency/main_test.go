package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFrequency(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	got := out.String()
	t.Log("\n" + got)
	assert.Contains(t, got, "Dec 1 21:00 CET  banner: true\nDec 1 21:40 CET  banner: true\nDec 1 22:20 CET  banner: true\nDec 1 23:00 CET  banner: false\n")
	assert.Contains(t, got, "Dec 1 23:00 CET  banner: false\nDec 2 00:20 CET  banner: true", "a new day at midnight in Berlin, not 24 hours later")
	assert.Contains(t, got, "welcome email without consent: false")
	assert.Contains(t, got, "welcome email with consent: true, again: false")
	assert.Contains(t, got, "explain: winter-sale 1 of 3, window ends Dec 3 00:00 CET")
	assert.Contains(t, got, "explain: welcome-email 1 of 1, window ends never")
	assert.Contains(t, got, "forgotten: 2 counters erased")
	assert.Contains(t, got, "banner for the forgotten pseudonym: false")
	assert.NotContains(t, got, "jane@", "the email never prints")
}
