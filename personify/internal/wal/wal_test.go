package wal

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRecordAndFrameRoundTrip(t *testing.T) {
	var b []byte
	b = StartFrame(b)
	for seq := uint64(1); seq <= 3; seq++ {
		b = AppendRecord(b, seq, func(d []byte) []byte { return append(d, bytes.Repeat([]byte{byte(seq)}, int(seq))...) })
	}
	b = EndFrame(b, 0)
	payload, size, err := DecodeFrame(b)
	require.NoError(t, err)
	require.Equal(t, len(b), size)
	for seq := uint64(1); len(payload) > 0; seq++ {
		got, p, n, err := DecodeRecord(payload)
		require.NoError(t, err)
		assert.Equal(t, seq, got)
		assert.Equal(t, bytes.Repeat([]byte{byte(seq)}, int(seq)), p)
		payload = payload[n:]
	}
	// Every truncation and every bit flip of the frame is refused.
	for cut := range len(b) {
		_, _, err := DecodeFrame(b[:cut])
		require.ErrorIs(t, err, ErrFrame, cut)
	}
	for bit := range 8 * len(b) {
		c := bytes.Clone(b)
		c[bit/8] ^= 1 << (bit % 8)
		if _, _, err := DecodeFrame(c); err == nil {
			t.Fatalf("flipping bit %d went unnoticed", bit)
		}
	}
}

// A log with a torn last frame replays up to it and is cut back there;
// the same damage in a log that is not the last, or followed by a valid
// frame, is corruption naming the file and offset.
func TestReplayTornTail(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(OS{}, dir)
	require.NoError(t, err)
	defer d.Close()
	l, err := createLog(OS{}, dir, d.LogPath(1), 1, [8]byte{1})
	require.NoError(t, err)
	frame := func(seq uint64) []byte {
		return EndFrame(AppendRecord(StartFrame(nil), seq, func(d []byte) []byte { return append(d, "change"...) }), 0)
	}
	require.NoError(t, l.Append(frame(1)))
	require.NoError(t, l.Append(frame(2)))
	good := l.Size()
	require.NoError(t, l.Append(frame(3)[:10])) // torn
	require.NoError(t, l.Close())

	var seqs []uint64
	record := func(_ int, seq uint64, _ []byte, _ int64) error { seqs = append(seqs, seq); return nil }
	key := func(string, [8]byte) error { return nil }
	_, err = d.Replay(1, false, key, record, func(string, int64, int, error) {})
	require.ErrorIs(t, err, ErrCorrupt, "not the last log: damage is corruption")
	seqs = nil
	var dropped int
	l, err = d.Replay(1, true, key, record, func(_ string, _ int64, n int, _ error) { dropped = n })
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2}, seqs)
	assert.Equal(t, 10, dropped)
	assert.Equal(t, good, l.Size())
	require.NoError(t, l.Append(frame(3)))
	require.NoError(t, l.Close())
	fi, err := os.Stat(d.LogPath(1))
	require.NoError(t, err)
	assert.Equal(t, good+int64(len(frame(3))), fi.Size(), "cut back, then appended")

	// A damaged frame followed by a valid one is never a torn write.
	b, err := os.ReadFile(d.LogPath(1))
	require.NoError(t, err)
	b[LogHeaderLen+FrameHeaderLen+2] ^= 0xff
	require.NoError(t, os.WriteFile(d.LogPath(1), b, 0o600))
	_, err = d.Replay(1, true, key, record, func(string, int64, int, error) {})
	var ce *CorruptError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, d.LogPath(1), ce.File)
	assert.Equal(t, int64(LogHeaderLen), ce.Offset)
	assert.Contains(t, err.Error(), "not a torn write")
}

func TestGroupCommitBatches(t *testing.T) {
	var g Group[*int]
	var flushes, items, first atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range 50 {
		wg.Go(func() {
			v := i
			g.Do(&v, func(batch []*int) {
				if flushes.Add(1) == 1 {
					first.Store(int64(len(batch)))
					<-gate // the first leader holds on while the others queue
				}
				items.Add(int64(len(batch)))
			})
		})
	}
	// Wait for the first leader, then for two writes queued behind it
	// (or all the rest, if fewer), so that sharing is certain rather
	// than a matter of scheduling.
	for first.Load() == 0 || int64(g.Queued()) < min(2, 50-first.Load()) {
		runtime.Gosched()
	}
	close(gate)
	wg.Wait()
	assert.Equal(t, int64(50), items.Load(), "every write flushed exactly once")
	assert.Less(t, flushes.Load(), int64(50), "writes shared flushes")
	ran := false
	require.NoError(t, g.Exclusive(func() error { ran = true; return nil }))
	assert.True(t, ran)
}

// A queued write whose context ends leaves the queue unflushed; one a
// leader already took is flushed, and its caller told so.
func TestGroupDoContext(t *testing.T) {
	var g Group[int]
	var flushed []int
	var mu sync.Mutex
	flush := func(b []int) { mu.Lock(); flushed = append(flushed, b...); mu.Unlock() }
	hold, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = g.Exclusive(func() error { close(hold); <-release; return nil })
	}()
	<-hold
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.DoContext(ctx, 1, flush) }()
	kept := make(chan error, 1)
	go func() { kept <- g.DoContext(context.Background(), 2, flush) }()
	queued := func(n int) {
		for g.Queued() != n {
			runtime.Gosched()
		}
	}
	queued(2) // both wait behind the exclusive function
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled, "the wait ends with the context, while the exclusive function still runs")
	close(release)
	require.NoError(t, <-kept)
	assert.Equal(t, []int{2}, flushed, "the abandoned write was never flushed")
	require.ErrorIs(t, g.DoContext(ctx, 3, flush), context.Canceled, "an ended context queues nothing")
	assert.Equal(t, []int{2}, flushed)

	// Taken by a leader, a write is flushed even if its context ends.
	hold, release = make(chan struct{}), make(chan struct{})
	go g.Do(0, func([]int) { close(hold); <-release })
	<-hold
	ctx, cancel = context.WithCancel(context.Background())
	go func() { errc <- g.DoContext(ctx, 4, func(b []int) { flush(b); cancel() }) }()
	queued(1)
	close(release)
	require.NoError(t, <-errc)
	assert.Equal(t, []int{2, 4}, flushed)
}

// failFS fails renames into place of *.pfy while failRename is set.
type failFS struct {
	OS
	failRename bool
}

func (f *failFS) Rename(o, n string) error {
	if f.failRename && strings.HasSuffix(n, ".pfy") {
		return errors.New("rename: input/output error")
	}
	return f.OS.Rename(o, n)
}

// Compact makes the next log before the snapshot is in place, and a
// failed rename leaves the appends where they were.
func TestCompactOrder(t *testing.T) {
	dir := t.TempDir()
	fs := &failFS{}
	d, err := OpenDir(fs, dir)
	require.NoError(t, err)
	defer d.Close()
	write := func(w io.Writer) error { _, err := w.Write([]byte("state")); return err }
	c, err := d.Compact(0, [8]byte{1}, nil, write)
	require.NoError(t, err)
	require.True(t, c.Installed && c.Synced)
	assert.Equal(t, uint64(1), c.Log.Start())
	assert.FileExists(t, d.SnapshotPath(0))
	assert.FileExists(t, d.LogPath(1))

	fs.failRename = true
	c2, err := d.Compact(5, [8]byte{1}, c.Log, write)
	require.Error(t, err)
	assert.Same(t, c.Log, c2.Log, "appends go on in the current log")
	assert.NoFileExists(t, d.SnapshotPath(5))
	assert.NoFileExists(t, d.LogPath(6), "the new log was removed again")
	fs.failRename = false
	c3, err := d.Compact(5, [8]byte{1}, c2.Log, write)
	require.NoError(t, err)
	assert.Equal(t, uint64(6), c3.Log.Start())
	assert.True(t, d.RemoveStale(5, c3.Log))
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	assert.ElementsMatch(t, []string{filepath.Join(dir, "LOCK"), d.SnapshotPath(5), d.LogPath(6)}, names)
	require.NoError(t, c3.Log.Close())
}

func TestOpenDirLocks(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(OS{}, dir)
	require.NoError(t, err)
	_, err = OpenDir(OS{}, dir)
	require.ErrorIs(t, err, ErrLocked)
	require.NoError(t, d.Close())
	d, err = OpenDir(OS{}, dir)
	require.NoError(t, err)
	require.NoError(t, d.Close())
}
