package main

import (
	"bytes"
	"errors"
	"testing"

	"github.com/personify-go/personify/pgstore/pgtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFleet(t *testing.T) {
	if _, err := pgtest.FindBin(); errors.Is(err, pgtest.ErrNoPostgres) {
		t.Skip(err)
	}
	var out bytes.Buffer
	require.NoError(t, run(&out, ""))
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		"batch load on replica 0: visible on replica 2: true",
		"consent withdrawn on replica 1: honoured on replica 2: true",
		"forgotten on replica 2: gone on replicas 0 and 1: true",
		"compacted: no row holds the person any more: true",
		"runners on replica 1: 99 members",
	} {
		assert.Contains(t, got, want)
	}
}
