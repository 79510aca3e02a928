package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/personify-go/personify/anonymize"
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
	// 334 customers have a phone: each a second pseudonym of one person
	// (1,971 customers are in a segment; the 115 with a phone and none
	// are stored by the link, holding nothing yet).
	assert.Contains(t, got, "linked 334 phone numbers: 2086 people under 2420 pseudonyms")
	assert.Equal(t, 2, strings.Count(got, "segments: [high-value weekend-shoppers]"), "by phone as by email")
	assert.NotContains(t, got, "7946", "the phone number never prints")
	assert.NotContains(t, got, "customer0042", "the email never prints")
	assert.NotContains(t, got, keyHex[:16], "nor the key")
}

// TestWarehouseHoldsOnlyTheSubkey checks that the export, computed under the
// HMAC subkey, is what the engine's hasher computes from the key, and that
// the key itself would give other pseudonyms: the warehouse needs the
// subkey, and the subkey only.
func TestWarehouseHoldsOnlyTheSubkey(t *testing.T) {
	key, err := anonymize.KeyFromHex(keyHex)
	require.NoError(t, err)
	want, err := anonymize.HMACSHA256(key).Pseudonym(anonymize.Email("customer0000@example.com"))
	require.NoError(t, err)
	firstRow := func(k []byte) string {
		return strings.Split(strings.Split(warehouseExport(k), "\n")[1], ",")[0]
	}
	assert.Equal(t, want.String(), firstRow(anonymize.HMACSubkey(key).Bytes()))
	assert.NotEqual(t, want.String(), firstRow(key.Bytes()))
}

func TestReadExportRejectsBadRows(t *testing.T) {
	_, err := readExport(strings.NewReader("pseudonym,segment\nnot-hex,runners\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 2")
}
