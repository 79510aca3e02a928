package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	s := out.String()
	assert.Contains(t, s, "b5c5d75051e3f3aa", "Jane's pseudonym")
	assert.Equal(t, 2, strings.Count(s, "b5c5d75051e3f3aa"), "both spellings of Jane are one pseudonym")
	assert.Contains(t, s, "rejected: anonymize: invalid email")
	assert.Contains(t, s, "email:[redacted]")
	assert.NotContains(t, s, "000102030405", "the key never prints")
}
