package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWarehouse(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	got := out.String()
	t.Log("\n" + got)
	assert.Contains(t, got, "loaded high-value         429 members")
	assert.Contains(t, got, "loaded churn-risk         600 members")
	assert.Contains(t, got, "loaded weekend-shoppers  1500 members")
	// customer0042 is divisible by 7 and by 2, not by 5.
	assert.Contains(t, got, "segments: [high-value weekend-shoppers]")
	assert.NotContains(t, got, "customer0042", "the email never prints")
}

func TestReadExportRejectsBadRows(t *testing.T) {
	_, err := readExport(strings.NewReader("pseudonym,segment\nnot-hex,runners\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 2")
}
