package bench

import (
	"fmt"
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

// snapshotDir writes the workload engine's snapshot into a fresh durable
// directory, once per process, and returns the directory and the
// snapshot's size.
func (s *Suite) snapshotDir(b *testing.B) (string, int64) {
	s.snapOnce.Do(func() {
		e := s.mustEngine(b)
		dir, err := os.MkdirTemp("", "personify-bench-open-")
		if err != nil {
			s.snapErr = err
			return
		}
		f, err := os.Create(filepath.Join(dir, "snapshot-0000000000000000.pfy"))
		if err != nil {
			s.snapErr = err
			return
		}
		s.snapSize, s.snapErr = e.WriteSnapshot(f)
		if err := f.Close(); s.snapErr == nil {
			s.snapErr = err
		}
		s.snapDir = dir
	})
	if s.snapErr != nil {
		b.Fatal(s.snapErr)
	}
	return s.snapDir, s.snapSize
}

// WriteSnapshot measures Engine.WriteSnapshot of the workload engine to a
// file, in bytes per second.
func (s *Suite) WriteSnapshot(b *testing.B) {
	e := s.mustEngine(b)
	path := filepath.Join(b.TempDir(), "snap")
	var size int64
	b.ResetTimer()
	for range b.N {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if size, err = e.WriteSnapshot(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
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
