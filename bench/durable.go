package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// DurableAdd measures acknowledged durable writes: each one an Add of one
// person, logged and fsynced before it returns, from writers goroutines at
// once (they share fsyncs: group commit). It reports writes per second.
func (s *Suite) DurableAdd(writers int) func(*testing.B) {
	return func(b *testing.B) {
		dir := b.TempDir()
		e, err := personify.Open(dir, personify.Options{Key: s.W.Key, Durable: personify.DurableOptions{MaintenanceInterval: -1}})
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		if err := e.DefinePurpose(personify.Purpose{Name: "ads", Model: personify.OptOut}); err != nil {
			b.Fatal(err)
		}
		if err := e.Define(personify.Segment{Name: "s", Purpose: "ads"}); err != nil {
			b.Fatal(err)
		}
		ids := make([]anonymize.Identifier, 1<<12)
		for i := range ids {
			ids[i] = anonymize.UserID(fmt.Sprintf("durable-%d", i))
		}
		b.ResetTimer()
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := w; i < b.N; i += writers {
					if err := e.Add("s", ids[i&(len(ids)-1)]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	}
}

// snapshotDir makes a durable directory holding the workload engine's
// state (personify.Open, then LoadSnapshot, which saves what it loads),
// once per process, and returns it with the size of its snapshot.
func (s *Suite) snapshotDir(b *testing.B) (string, int64) {
	s.snapOnce.Do(func() {
		s.snapDir, s.snapSize, s.snapErr = makeSnapshotDir(s.mustEngine(b), s.W.Key)
	})
	if s.snapErr != nil {
		b.Fatal(s.snapErr)
	}
	return s.snapDir, s.snapSize
}

func makeSnapshotDir(src *personify.Engine, key anonymize.Key) (dir string, size int64, err error) {
	dir, err = os.MkdirTemp("", "personify-bench-open-")
	if err != nil {
		return "", 0, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
			dir = ""
		}
	}()
	pr, pw := io.Pipe()
	go func() {
		_, err := src.WriteSnapshot(pw)
		pw.CloseWithError(err)
	}()
	e, err := personify.Open(dir, personify.Options{Key: key, Durable: personify.DurableOptions{MaintenanceInterval: -1}})
	if err != nil {
		pr.CloseWithError(err)
		return "", 0, err
	}
	err = e.LoadSnapshot(pr)
	if cerr := e.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, err
	}
	snaps, err := filepath.Glob(filepath.Join(dir, "snapshot-*.pfy"))
	if err != nil || len(snaps) != 1 {
		return "", 0, fmt.Errorf("bench: %d snapshots in %s: %v", len(snaps), dir, err)
	}
	fi, err := os.Stat(snaps[0])
	if err != nil {
		return "", 0, err
	}
	return dir, fi.Size(), nil
}

// WriteSnapshot measures Engine.WriteSnapshot of the workload engine to a
// file, in bytes per second.
func (s *Suite) WriteSnapshot(b *testing.B) {
	e := s.mustEngine(b)
	path := filepath.Join(b.TempDir(), "snap")
	var size int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer() // creating (and truncating the last run's) file is not writing the snapshot
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if size, err = e.WriteSnapshot(f); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		f.Close()
		b.StartTimer()
	}
	b.SetBytes(size)
}

// Open measures personify.Open of a directory holding the workload's
// snapshot (and no log): read, check and install the whole index.
func (s *Suite) Open(b *testing.B) {
	dir, size := s.snapshotDir(b)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		e, err := personify.Open(dir, personify.Options{Key: s.W.Key, Durable: personify.DurableOptions{MaintenanceInterval: -1}})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		e.Close()
		b.StartTimer()
	}
}
