package bench

import (
	"math/bits"
	"testing"
	"unsafe"
)

// FloorTable is the machine's floor for a lookup: an open-addressing table
// of the workload's pseudonyms with the footprint and layout of the
// engine's lookup directory (32-byte slots at a load of 0.82, home slot
// 2*mulhi(p, n/2), linear probing, huge pages where the kernel gives them).
// One probe is one random cache miss and almost no other work, so
// consecutive probes overlap their misses as far as the core allows
// (memory-level parallelism): ProbeFloor is what a lookup costs at best on
// this machine, and In's distance to it is the engine's own work and what
// that work costs the overlap. It fits the last-level cache exactly when
// the directory does. (The CI gate uses the map instead: measured here,
// per-round ratios to the floor spread twice as wide.)
type FloorTable struct {
	slots []floorSlot
}

type floorSlot struct{ key, a, b, c uint64 }

// floorLoad is the directory's load factor right after it grows.
const floorLoad = 0.82

// BuildFloor builds the floor table for w.
func BuildFloor(w *Workload) Built[*FloorTable] {
	b, _ := measure(func() (*FloorTable, error) {
		n := int(float64(w.People)/floorLoad) + 1
		t := &FloorTable{slots: make([]floorSlot, n)}
		adviseHugePages(unsafe.Pointer(&t.slots[0]), uintptr(n)*unsafe.Sizeof(floorSlot{}))
		for _, p := range w.Pseudonyms {
			i := t.home(uint64(p))
			for t.slots[i].key != 0 {
				if i++; i == len(t.slots) {
					i = 0
				}
			}
			t.slots[i].key = uint64(p)
		}
		return t, nil
	})
	return b
}

func (t *FloorTable) home(p uint64) int { // the directory's: the first slot of a line
	hi, _ := bits.Mul64(p, uint64(len(t.slots)>>1))
	return int(hi) << 1
}

// Has reports whether p is in the table.
func (t *FloorTable) Has(p uint64) bool {
	i := t.home(p)
	for {
		switch k := t.slots[i].key; k {
		case p:
			return true
		case 0:
			return false
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// Floor returns the floor table, building it once.
func (s *Suite) Floor() Built[*FloorTable] {
	s.floorOnce.Do(func() { s.floor = BuildFloor(s.W) })
	return s.floor
}

// ProbeFloor measures one probe of the floor table: a lookup's cost at
// best on this machine, with the engine's footprint (see FloorTable).
func (s *Suite) ProbeFloor(b *testing.B) {
	t, w := s.Floor().Value, s.W
	b.ReportAllocs()
	b.ResetTimer()
	hits := 0
	for i := range b.N {
		if t.Has(uint64(w.Probes[i&probeMask].P)) {
			hits++
		}
	}
	sink.Add(int64(hits))
}
