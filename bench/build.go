package bench

import (
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/personify-go/personify/personify"
)

// Built is something built from a workload, with what building it cost.
type Built[T any] struct {
	Value     T
	Took      time.Duration
	HeapBytes uint64 // growth of the live heap (after GC) while building it
}

// measure builds something and records its time and live-heap growth. The
// heap is measured after a full GC on both sides, so it is what the thing
// keeps, not what building it churned through.
func measure[T any](build func() (T, error)) (Built[T], error) {
	before := liveHeap()
	start := time.Now()
	v, err := build()
	took := time.Since(start)
	after := liveHeap()
	var grew uint64
	if after > before {
		grew = after - before
	}
	return Built[T]{Value: v, Took: took, HeapBytes: grew}, err
}

func liveHeap() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// NewEngine returns an empty engine for the workload: its key, k = 50, one
// opt-out purpose and the segments defined (no retention).
func NewEngine(w *Workload) (*personify.Engine, error) {
	e, err := personify.New(personify.Options{Key: w.Key})
	if err != nil {
		return nil, err
	}
	if err := e.DefinePurpose(personify.Purpose{Name: Purpose, Model: personify.OptOut}); err != nil {
		return nil, err
	}
	for _, name := range w.SegNames {
		if err := e.Define(personify.Segment{Name: name, Purpose: Purpose}); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Ingest loads every segment's members into e with AddPseudonyms, one call
// per segment, pseudonyms in random order.
func Ingest(e *personify.Engine, w *Workload) error {
	for s, name := range w.SegNames {
		if err := e.AddPseudonyms(name, w.PseudonymsOf(s)); err != nil {
			return err
		}
	}
	return nil
}

// BuildEngine builds the engine for the workload. The workload's
// per-segment pseudonym lists (8 bytes a membership, kept by the workload
// for every later load) are made before the measurement starts, so that
// the heap it reports is the engine's alone.
func BuildEngine(w *Workload) (Built[*personify.Engine], error) {
	w.PseudonymsOf(0)
	return measure(func() (*personify.Engine, error) {
		e, err := NewEngine(w)
		if err != nil {
			return nil, err
		}
		return e, Ingest(e, w)
	})
}

// BuildMapUint64 builds the first baseline: a Go map holding every
// pseudonym, the cost of one hash-table lookup.
func BuildMapUint64(w *Workload) Built[map[uint64]struct{}] {
	b, _ := measure(func() (map[uint64]struct{}, error) {
		m := make(map[uint64]struct{}, w.People)
		for _, p := range w.Pseudonyms {
			m[uint64(p)] = struct{}{}
		}
		return m, nil
	})
	return b
}

// BuildRoaringHashed builds the naive Roaring design: one bitmap per
// segment of the members' 32-bit hashed IDs (the low half of the
// pseudonym), which is what a service gets when it puts hashed IDs
// straight into Roaring.
func BuildRoaringHashed(w *Workload) Built[[]*roaring.Bitmap] {
	b, _ := measure(func() ([]*roaring.Bitmap, error) {
		bms := make([]*roaring.Bitmap, w.Segments)
		parallel(w.Segments, func(lo, hi int) {
			for s := lo; s < hi; s++ {
				vals := make([]uint32, len(w.Members[s]))
				for i, person := range w.Members[s] {
					vals[i] = uint32(w.Pseudonyms[person])
				}
				bms[s] = roaring.BitmapOf(vals...)
			}
		})
		return bms, nil
	})
	return b
}

// BuildRawEmailMap builds the naive approach that keeps PII: a map from
// each person's normalized email to the names of their segments.
func BuildRawEmailMap(w *Workload) Built[map[string][]string] {
	b, _ := measure(func() (map[string][]string, error) {
		m := make(map[string][]string, w.People)
		for s, members := range w.Members {
			for _, person := range members {
				email := w.Emails[person]
				names, ok := m[email]
				if !ok {
					email = strings.Clone(email) // the service owns its copy of the PII
				}
				m[email] = append(names, w.SegNames[s])
			}
		}
		return m, nil
	})
	return b
}
