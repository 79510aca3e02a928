package ops

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

func TestInspect(t *testing.T) {
	keyPath, key, keyHex := testKey(t)
	dir := t.TempDir()
	const email = "inspect.me@example.com"
	e, err := personify.Open(dir, personify.Options{Key: key, Durable: personify.DurableOptions{MaintenanceInterval: -1, PurgeWithin: 6 * time.Hour}})
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(personify.Purpose{Name: "ads", Model: personify.OptOut}))
	require.NoError(t, e.Define(personify.Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", anonymize.Email(email), anonymize.Email("bo@example.com")))
	p, err := e.Pseudonym(anonymize.Email(email))
	require.NoError(t, err)
	r, err := e.Forget(anonymize.Email(email))
	require.NoError(t, err)
	require.NoError(t, e.Close())

	out, _, err := runOps(t, "", "inspect", "--key-file", keyPath, dir)
	require.NoError(t, err)
	assert.Contains(t, out, "snapshot snapshot-0000000000000000.pfy")
	assert.Contains(t, out, "log log-0000000000000001.wal")
	assert.Contains(t, out, "forget 1")
	assert.Contains(t, out, "key "+key.Fingerprint().String()+" (current)")
	assert.Contains(t, out, "is the directory's current key")
	assert.Contains(t, out, "pending erasures: 1\n")
	assert.Contains(t, out, "purge by "+r.PurgeBy.UTC().Format(time.RFC3339))

	js, _, err := runOps(t, "", "inspect", "--json", dir)
	require.NoError(t, err)
	var info personify.DirInfo
	require.NoError(t, json.Unmarshal([]byte(js), &info))
	require.Len(t, info.PendingErasures, 1)
	assert.Equal(t, r.Seq, info.PendingErasures[0].Seq)
	assert.True(t, r.PurgeBy.Equal(info.PendingErasures[0].PurgeBy))

	for _, s := range []string{out, js} {
		for _, secret := range []string{email, "bo@example.com", keyHex, p.String()} {
			assert.False(t, strings.Contains(s, secret))
		}
	}

	// A truncated snapshot: a clear error naming the file, after the listing.
	snap := filepath.Join(dir, "snapshot-0000000000000000.pfy")
	b, err := os.ReadFile(snap)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(snap, b[:len(b)-7], 0o600))
	out, _, err = runOps(t, "", "inspect", dir)
	require.ErrorIs(t, err, personify.ErrCorrupt)
	assert.ErrorContains(t, err, snap)
	assert.Contains(t, out, "DAMAGED")
	assert.Contains(t, out, "log log-0000000000000001.wal")

	_, _, err = runOps(t, "", "inspect", filepath.Join(dir, "nope"))
	require.Error(t, err)
}
