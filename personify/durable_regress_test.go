package personify

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/wal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for faults a review found in the durable and replica
// paths.

// seqFailFS fails the failAt-th SyncDir call (counting from 1), or every
// one while failAll is set.
type seqFailFS struct {
	wal.OS
	calls   atomic.Int32
	failAt  atomic.Int32
	failAll atomic.Bool
}

func (f *seqFailFS) SyncDir(name string) error {
	if n := f.calls.Add(1); n == f.failAt.Load() || f.failAll.Load() {
		return errors.New("syncdir: input/output error")
	}
	return f.OS.SyncDir(name)
}

func (f *seqFailFS) failNth(n int32) {
	f.calls.Store(0)
	f.failAt.Store(n)
}

// A compaction with nothing new since the last one must not touch the
// active log; one whose new log cannot be created must leave the old one
// in use: either way, later writes survive a reopen.
func TestCompactFailureKeepsWrites(t *testing.T) {
	// A compaction syncs the directory twice: after creating the next log,
	// then after renaming the snapshot into place.
	for _, n := range []int32{1, 2} {
		t.Run(fmt.Sprintf("sync %d fails", n), func(t *testing.T) {
			d := newDurableEnv(t)
			fs := &seqFailFS{}
			e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, fs: fs}))
			require.NoError(t, err)
			require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
			require.NoError(t, e.Compact())
			require.NoError(t, e.Compact()) // nothing new: the active log stays
			require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
			fs.failNth(n)
			require.Error(t, e.Compact())
			require.NoError(t, e.Add("runners", people(0, 10)...))
			want := stateDump(t, e)
			require.NoError(t, e.Close())
			e = d.open(t)
			defer e.Close()
			assert.Equal(t, want, stateDump(t, e))
		})
	}
}

// Purged must not report an erasure done while a file still holds it.
func TestPurgedOnlyWhenFilesAreGone(t *testing.T) {
	d := newDurableEnv(t)
	fs := &seqFailFS{}
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, fs: fs}))
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(0, 10)...))
	p := e.mustPseudonym(t, person(3))
	r, err := e.Forget(person(3))
	require.NoError(t, err)
	var le [8]byte
	for i := range 8 {
		le[i] = byte(uint64(p) >> (8 * i))
	}
	fs.failNth(2) // the snapshot is renamed into place, but the directory sync fails
	require.Error(t, e.Compact())
	require.True(t, dirHolds(t, d.dir, le[:]), "the old log still holds the person")
	assert.False(t, e.Purged(r))
	fs.failAll.Store(true)
	_ = e.store.compactIfNeeded(e, false) // a quiet maintenance tick while syncs keep failing
	require.True(t, dirHolds(t, d.dir, le[:]), "nothing is removed before the snapshot is known durable")
	assert.False(t, e.Purged(r))
	fs.failAll.Store(false)
	require.NoError(t, e.store.compactIfNeeded(e, false)) // the next tick syncs, then removes
	assert.True(t, e.Purged(r))
	assert.False(t, dirHolds(t, d.dir, le[:]))
}

// A write that Close made fail must not come back after a reopen, and a
// write acknowledged before Close must.
func TestCloseDuringWrites(t *testing.T) {
	for round := range 20 {
		d := newDurableEnv(t)
		e := d.open(t)
		require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
		require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
		var wg sync.WaitGroup
		var mu sync.Mutex
		outcome := map[int]error{}
		for i := range 32 {
			wg.Go(func() {
				err := e.Add("runners", person(i))
				mu.Lock()
				outcome[i] = err
				mu.Unlock()
			})
		}
		require.NoError(t, e.Close())
		wg.Wait()
		e = d.open(t)
		for i, err := range outcome {
			in := e.In(e.mustPseudonym(t, person(i)), "runners")
			if err == nil {
				assert.True(t, in, "round %d: acknowledged Add(%d) lost", round, i)
			} else {
				require.ErrorIs(t, err, ErrClosed)
				assert.False(t, in, "round %d: Add(%d) failed with ErrClosed but is stored", round, i)
			}
		}
		require.NoError(t, e.Close())
	}
}

// A durable LoadSnapshot whose state cannot be saved refuses writes until
// it is, so nothing is acknowledged on top of a state a restart would lose.
func TestLoadSnapshotUnsavedRefusesWrites(t *testing.T) {
	src, err := New(Options{Key: mustKey(t, testKeyHex), K: 1})
	require.NoError(t, err)
	require.NoError(t, src.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, src.Define(Segment{Name: "runners", Purpose: "ads"}))
	var buf bytes.Buffer
	_, err = src.WriteSnapshot(&buf)
	require.NoError(t, err)

	d := newDurableEnv(t)
	fs := &faultFS{budget: -1}
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, fs: fs}))
	require.NoError(t, err)
	fs.set(100, false) // the disk is full
	require.Error(t, e.LoadSnapshot(bytes.NewReader(buf.Bytes())))
	require.ErrorIs(t, e.Add("runners", people(0, 5)...), errWrite)
	fs.set(-1, false) // space is back: the next write saves the loaded state first
	require.NoError(t, e.Add("runners", people(0, 5)...))
	want := stateDump(t, e)
	require.NoError(t, e.Close())
	e = d.open(t)
	defer e.Close()
	assert.Equal(t, want, stateDump(t, e))
}

// A log is created under a temporary name and renamed once its header is
// durable, so a log whose header is zeros was damaged after it was made:
// corruption, reported, and the file left as it is.
func TestOpenZeroedLogIsCorrupt(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	lf := logFile(t, d.dir)
	zeros := make([]byte, wal.LogHeaderLen+100)
	require.NoError(t, os.WriteFile(lf, zeros, 0o600))
	_, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), lf)
	after, err := os.ReadFile(lf)
	require.NoError(t, err)
	assert.Equal(t, zeros, after)
}

// A torn final frame is dropped whole: a batch is kept or lost as a unit,
// even when a later part of it reached the disk and an earlier part did not.
func TestTornBatchIsDroppedWhole(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	want := stateDump(t, e)
	require.NoError(t, e.Close())
	// Append a frame of two records by hand, then zero its first record
	// (a lost sector) while the second stays intact.
	lf := logFile(t, d.dir)
	b, err := os.ReadFile(lf)
	require.NoError(t, err)
	seq := e.store.seq
	frame := wal.StartFrame(nil)
	frame = appendRecord(frame, seq+1, &op{kind: opDefine, at: t0, seg: Segment{Name: "a", Purpose: "ads"}})
	second := len(frame)
	frame = appendRecord(frame, seq+2, &op{kind: opDefine, at: t0, seg: Segment{Name: "b", Purpose: "ads"}})
	frame = wal.EndFrame(frame, 0)
	clear(frame[wal.FrameHeaderLen:second])
	require.NoError(t, os.WriteFile(lf, append(b, frame...), 0o600))
	e = d.open(t)
	defer e.Close()
	assert.Equal(t, want, stateDump(t, e))
}

// A change bigger than the log's record limit is refused before it is
// logged, instead of being acknowledged and lost on replay.
func TestOversizedChangeIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 1 GiB change")
	}
	d := newDurableEnv(t)
	e := d.open(t)
	defer e.Close()
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	big := &op{kind: opRemove, at: t0, name: "runners", people: [][]anonymize.KeyedPseudonym{make([]anonymize.KeyedPseudonym, maxRecordLen/16+1)}}
	_, err := e.commit(t.Context(), big)
	require.ErrorIs(t, err, errWrite)
	assert.Contains(t, err.Error(), "split it")
	require.NoError(t, e.Add("runners", person(1)))
}

// RotateKey works on a replica, and a durable engine finds the key it
// rotated to in its own snapshots.
func TestRotateKeyOnReplicaAndSnapshot(t *testing.T) {
	j := newMemJournal()
	e, err := NewReplica(Options{Key: mustKey(t, testKeyHex), K: 1}, j, ReplicaOptions{WriteTimeout: 5 * time.Second})
	require.NoError(t, err)
	stop := make(chan struct{})
	defer close(stop)
	go j.follow(t, e, stop)
	next := mustKey(t, "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100")
	require.NoError(t, e.RotateKey(next, time.Hour))
	assert.Equal(t, next.Fingerprint(), e.KeyFingerprint())

	d := newDurableEnv(t)
	de := d.open(t)
	defer de.Close()
	require.NoError(t, de.RotateKey(next, time.Hour))
	var buf bytes.Buffer
	_, err = de.WriteSnapshot(&buf)
	require.NoError(t, err)
	require.NoError(t, de.LoadSnapshot(bytes.NewReader(buf.Bytes())))
	printed := fmt.Sprintf("%v %+v %#v %s", de, de, de, de)
	for _, k := range []string{testKeyHex, "ffeeddccbbaa99887766554433221100"} {
		assert.NotContains(t, printed, k)
	}
	assert.Contains(t, printed, next.Fingerprint().String())
}

// Segments must not index a privacy-state table that a LoadSnapshot
// replaced (and shrank) in the middle of the lookup.
func TestSegmentsDuringLoadSnapshot(t *testing.T) {
	build := func(consents bool) []byte {
		e, err := New(Options{Key: mustKey(t, testKeyHex), K: 1})
		require.NoError(t, err)
		for i := range 6 {
			require.NoError(t, e.DefinePurpose(Purpose{Name: fmt.Sprintf("p%d", i), Model: OptOut}))
		}
		require.NoError(t, e.Define(Segment{Name: "s", Purpose: "p0"}))
		require.NoError(t, e.Add("s", people(0, 40)...))
		if consents { // many distinct privacy states
			for i := range 40 {
				for b := range 6 {
					if (i>>b)&1 == 1 {
						require.NoError(t, e.SetConsent(person(i), fmt.Sprintf("p%d", b), true))
					}
				}
			}
		}
		var buf bytes.Buffer
		_, err = e.WriteSnapshot(&buf)
		require.NoError(t, err)
		return buf.Bytes()
	}
	snaps := [][]byte{build(true), build(false)}
	e, err := New(Options{Key: mustKey(t, testKeyHex), K: 1})
	require.NoError(t, err)
	require.NoError(t, e.LoadSnapshot(bytes.NewReader(snaps[0])))
	p := e.mustPseudonym(t, person(39))
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			var dst []string
			for !stop.Load() {
				dst = e.Segments(dst[:0], p, "p0")
			}
		})
	}
	for i := range 300 {
		require.NoError(t, e.LoadSnapshot(bytes.NewReader(snaps[i%2])))
	}
	stop.Store(true)
	wg.Wait()
}
