package personify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// inspectFixture makes a closed directory holding a snapshot, a log with a
// definition, members and an erasure whose purge is pending.
func inspectFixture(t testing.TB) (dir string, key anonymize.Key, r Receipt) {
	dir = t.TempDir()
	key = anonymize.GenerateKey()
	e, err := Open(dir, Options{Key: key, Durable: DurableOptions{MaintenanceInterval: -1, PurgeWithin: time.Hour}})
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", anonymize.Email("inspect.me@example.com"), anonymize.Email("bo@example.com")))
	r, err = e.Forget(anonymize.Email("inspect.me@example.com"))
	require.NoError(t, err)
	require.NoError(t, e.Close())
	return dir, key, r
}

func TestInspectDir(t *testing.T) {
	dir, key, r := inspectFixture(t)
	info, err := InspectDir(dir)
	require.NoError(t, err)
	require.Len(t, info.Snapshots, 1)
	require.Len(t, info.Logs, 1)
	l := info.Logs[0]
	assert.Equal(t, "log-0000000000000001.wal", l.File)
	assert.Equal(t, uint64(1), l.First)
	assert.Equal(t, r.Seq, l.Last)
	assert.Equal(t, 1, l.Changes["forget"])
	assert.Equal(t, 1, l.Changes["add"])
	assert.Equal(t, key.Fingerprint(), l.Key)
	assert.Equal(t, r.Seq, info.Seq)
	require.Len(t, info.PendingErasures, 1)
	assert.Equal(t, r.Seq, info.PendingErasures[0].Seq)
	assert.True(t, r.PurgeBy.Equal(info.PendingErasures[0].PurgeBy))
	require.Len(t, info.Keys, 1)
	assert.Equal(t, key.Fingerprint(), info.Keys[0].Fingerprint)
	assert.True(t, info.Keys[0].Current)

	// After a compaction the snapshot holds the members and the erasure is
	// complete.
	e, err := Open(dir, Options{Key: key, Durable: DurableOptions{MaintenanceInterval: -1, PurgeWithin: time.Hour}})
	require.NoError(t, err)
	p, err := e.Pseudonym(anonymize.Email("inspect.me@example.com"))
	require.NoError(t, err)
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	info, err = InspectDir(dir)
	require.NoError(t, err)
	require.Len(t, info.Snapshots, 1)
	s := info.Snapshots[0]
	assert.Equal(t, r.Seq, s.Seq)
	assert.Equal(t, 3, s.Format, "line-homed tables: releases reading up to format 2 refuse it")
	assert.Equal(t, 1, s.People)
	assert.Equal(t, []DirSegment{{Name: "runners", Purpose: "ads", Members: 1}}, s.Segments)
	assert.Equal(t, []string{"ads"}, s.Purposes)
	assert.Empty(t, info.PendingErasures)
	assert.Equal(t, []string{r.SigningKey}, info.ReceiptKeys)

	b, err := json.Marshal(info)
	require.NoError(t, err)
	for _, secret := range []string{"inspect.me", p.String(), fmt.Sprintf("%x", key.Bytes())} {
		assert.NotContains(t, string(b), secret)
	}
}

func TestInspectDirNamesDamagedFiles(t *testing.T) {
	dir, _, _ := inspectFixture(t)
	snap := filepath.Join(dir, "snapshot-0000000000000000.pfy")
	b, err := os.ReadFile(snap)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(snap, b[:len(b)/2], 0o600))
	info, err := InspectDir(dir)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), snap)
	assert.NotEmpty(t, info.Snapshots[0].Problem)
	assert.Equal(t, 1, info.Logs[0].Changes["forget"], "the log is read all the same")

	log := filepath.Join(dir, "log-0000000000000001.wal")
	b, err = os.ReadFile(log)
	require.NoError(t, err)
	b[30] ^= 0xff // inside the first frame, which others follow
	require.NoError(t, os.WriteFile(log, b, 0o600))
	_, err = InspectDir(dir)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), log)

	require.NoError(t, os.WriteFile(log, b[:10], 0o600))
	_, err = InspectDir(dir)
	assert.Contains(t, err.Error(), log+" at offset 0: not a personify log header")
}

func TestInspectDirReportsATornTail(t *testing.T) {
	dir, _, _ := inspectFixture(t)
	log := filepath.Join(dir, "log-0000000000000001.wal")
	f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("PFYB\x10\x00\x00\x00torn")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	info, err := InspectDir(dir)
	require.NoError(t, err)
	assert.Equal(t, int64(12), info.Logs[0].TornBytes)
}

// InspectDir never panics, whatever the files hold.
func FuzzInspectDir(f *testing.F) {
	dir, _, _ := inspectFixture(f)
	snap, err := os.ReadFile(filepath.Join(dir, "snapshot-0000000000000000.pfy"))
	require.NoError(f, err)
	log, err := os.ReadFile(filepath.Join(dir, "log-0000000000000001.wal"))
	require.NoError(f, err)
	f.Add(snap, log)
	f.Add(snap[:len(snap)-3], log[:len(log)-5])
	f.Add([]byte{}, []byte(strings.Repeat("PFYB", 10)))
	f.Fuzz(func(t *testing.T, snap, log []byte) {
		s := DirSnapshot{Seq: 0, sets: map[string]int{}}
		if err := s.read("snapshot", bytes.NewReader(snap)); err != nil {
			assert.ErrorIs(t, err, ErrCorrupt)
		}
		for _, last := range []bool{false, true} {
			l := DirLog{Start: 1, Changes: map[string]int{}}
			if _, err := l.read("log", log, last); err != nil {
				assert.ErrorIs(t, err, ErrCorrupt)
			}
		}
	})
}
