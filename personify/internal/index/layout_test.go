package index

import (
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/personify-go/personify/anonymize"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Layout counts lines as the probe walks them: keys that share a home slot
// spill into the next slots, and into the next line past the line's end.
func TestLayoutCountsLines(t *testing.T) {
	tab := &Table{Slots: NewSlots(64), Arena: NewArena()}
	require.Zero(t, uintptr(unsafe.Pointer(&tab.Slots[0]))%64, "slots start on a line")
	// Home slot 4 (a line's first slot): keys with mulhi(p, 64) == 4.
	home4 := func(k uint64) uint64 { return 4<<58 | k } // mulhi(4<<58|k, 64) = 4
	for k := range uint64(3) {
		tab.Put(home4(k+2), EmptyEntry(uint32(k)))
	}
	var a Arena = *NewArena()
	over, _ := MakeEntry(&a, nil, 9, 0, []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	require.True(t, over.Overflow())
	tab.Put(40<<58|7, over) // alone at its home
	l := tab.Layout([]Bloom96{SegmentBloom96(3), SegmentBloom96(1000)})
	assert.Equal(t, 4, l.Keys)
	assert.Equal(t, 1, l.OffHomeLine, "slots 4 and 5 share a line; 6 is the next one")
	assert.Equal(t, 1+1+2+1, l.ProbeLines)
	assert.Equal(t, 1, l.Overflow)
	assert.Zero(t, l.OverflowOffHome)
	assert.InDelta(t, 0.5, l.InRecordReadsOnHome, 0.5, "segment 3's filter passes; 1000's may")
	assert.GreaterOrEqual(t, l.InRecordReadsOnHome, 0.5)
}

// A table rebuilt by growing holds every key where a lookup finds it, and
// fewer keys off their home line than filling it in slot order did (keys
// in pseudonym order: each cluster's later keys all past their home) or in
// random order would.
func TestGrowFillsByLines(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	d := NewDirectory()
	seen := map[uint64]bool{}
	var keys []uint64
	for i := range 200_000 {
		k := rng.Uint64() | 2
		if i%1000 == 0 {
			k = uint64(i / 1000 % 2) // the reserved values too
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
			d.Insert(anonymize.Pseudonym(k), EmptyEntry(uint32(i)))
		}
	}
	old := d.Tab.Load()
	grown := d.growTo(old, old.Arena, len(seen))
	for k := range seen {
		require.NotNil(t, grown.Slot(k), "key %d lost by growing", k)
	}
	fill := func(keys []uint64) Layout {
		tab := &Table{Slots: NewSlots(len(grown.Slots)), Arena: old.Arena}
		for i, k := range keys {
			tab.Put(k, EmptyEntry(uint32(i)))
		}
		return tab.Layout(nil)
	}
	random := fill(keys)
	slices.Sort(keys)
	sorted := fill(keys)
	lg := grown.Layout(nil)
	require.Equal(t, sorted.Keys, lg.Keys)
	require.Equal(t, sorted.ProbeLines, lg.ProbeLines, "the mean probe does not change")
	share := func(l Layout) float64 { return 100 * float64(l.OffHomeLine) / float64(l.Keys) }
	t.Logf("load %.2f: keys off the home line: %.1f%% filled by lines, %.1f%% in pseudonym order, %.1f%% in random order",
		float64(lg.Keys)/float64(lg.Slots), share(lg), share(sorted), share(random))
	require.Less(t, share(lg), 0.5*share(sorted))
	require.Less(t, share(lg), 0.9*share(random))
}

// A snapshot of an earlier release placed keys by mulhi(p, len(slots)),
// which lookups no longer start from: Load rebuilds such a table, and
// every key is found again; a later release's home function is refused.
func TestLoadRebuildsEarlierHomes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	n := 1 << 12
	slots := NewSlots(n)
	keys := map[uint64]uint32{}
	for i := range 3000 {
		p := rng.Uint64() | 2
		hi, _ := bits.Mul64(p, uint64(n)) // the earlier home
		for j := int(hi); ; j = (j + 1) % n {
			if slots[j].Key == SlotEmpty {
				slots[j] = Slot{Key: p, Meta: EmptyEntry(uint32(i)).Meta, Lo: LaneEmpty[0], Hi: LaneEmpty[0]}
				break
			}
		}
		keys[p] = uint32(i)
	}
	m := Meta{Next: 3000, Live: 3000, Slots: 3000}
	am := ArenaMeta{}
	load := func(m Meta) (*Directory, error) {
		b := slices.Clone(slotBytes(slots))
		return Load(m, am, b, [][]byte{make([]byte, 0)}, func(uint32, []uint32) error { return nil })
	}
	d, err := load(m)
	require.NoError(t, err)
	for p, ord := range keys {
		en, ok := d.Get(anonymize.Pseudonym(p))
		require.True(t, ok, "key lost")
		require.Equal(t, ord, en.Ord())
	}
	got, _, _ := d.Snapshot()
	assert.Equal(t, HomesLine, got.Homes, "snapshots name the home function")

	m.Homes = "quadratic"
	_, err = load(m)
	require.ErrorContains(t, err, `unknown home slots "quadratic"`)
}
