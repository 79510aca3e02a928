package index

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/require"
)

// inlineHas is In's test of an inline entry, by lane code.
func inlineHas(en Entry, id uint32) bool {
	if en.Code() == CodeEF {
		return EFHas(en.Lo, en.Hi, en.EFLow(), id)
	}
	c := en.Code()
	return uint64(id) <= LaneMax[c] && LaneMatch(en.Lo, en.Hi, c, uint64(id)*LaneLow[c], ^uint64(0))
}

func randomIDs(rng *rand.Rand, n int, universe uint32) []uint32 {
	set := map[uint32]bool{}
	for len(set) < n {
		set[rng.Uint32N(universe)] = true
	}
	ids := make([]uint32, 0, n)
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Every set of ids an entry holds inline decodes to itself, counts
// itself, and answers membership exactly, lanes or Elias-Fano; with 1,000
// segments, everyone in up to 16 fits inline.
func TestPackInlineRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, universe := range []uint32{16, 64, 1000, 1024, 2048, 40_000, 1 << 19, 1 << 21, 1<<32 - 2} {
		for range 3000 {
			n := rng.IntN(22)
			if uint32(n) > universe {
				n = int(universe)
			}
			ids := randomIDs(rng, n, universe)
			en, ok := PackInline(7, 3, ids)
			if universe <= 1024 && n <= 16 {
				require.True(t, ok, "%d of %d ids fit inline", n, universe)
			}
			if !ok {
				continue
			}
			require.Equal(t, uint32(7), en.Ord())
			require.Equal(t, uint32(3), en.State())
			require.False(t, en.Overflow())
			require.Equal(t, n, en.Count())
			require.Equal(t, ids, InlineIDs([]uint32{}, en), "universe %d", universe)
			probe := func(id uint32) {
				_, want := slices.BinarySearch(ids, id)
				require.Equal(t, want, inlineHas(en, id), "id %d of %v (code %d)", id, ids, en.Code())
			}
			for _, id := range ids {
				probe(id)
				probe(id + 1)
				probe(id - 1)
			}
			for range 50 {
				probe(rng.Uint32N(universe + 100))
			}
			probe(1<<32 - 1)
		}
	}
}

// ChangeInline moves an entry between lanes and Elias-Fano as ids come
// and go, and says when they no longer fit inline.
func TestChangeInlineAcrossCodes(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for range 200 {
		var ids []uint32
		en := EmptyEntry(5)
		for range 60 {
			add, remove := uint32(NoID), uint32(NoID)
			if rng.IntN(3) > 0 {
				add = rng.Uint32N(1000)
			}
			if (add == NoID || rng.IntN(4) == 0) && len(ids) > 0 { // a removal, or a swap
				remove = ids[rng.IntN(len(ids))]
			}
			next := append([]uint32{}, ids...)
			if add != NoID {
				if i, found := slices.BinarySearch(next, add); !found {
					next = slices.Insert(next, i, add)
				}
			}
			if remove != NoID {
				if i, found := slices.BinarySearch(next, remove); found {
					next = slices.Delete(next, i, i+1)
				}
			}
			got, ok := ChangeInline(en, add, remove)
			if len(next) > 16 {
				require.False(t, ok, "%d ids do not fit", len(next))
				break
			}
			require.True(t, ok, "%d ids fit", len(next))
			require.Equal(t, next, append([]uint32{}, InlineIDs(nil, got)...))
			require.Equal(t, uint32(5), got.Ord())
			en, ids = got, next
		}
	}
}

// A damaged Elias-Fano entry is refused by Load's checks, never decoded
// past its bits: too many ids, too wide low parts, ids out of order.
func TestEFDecodeBounds(t *testing.T) {
	var buf [efMaxIDs]uint32
	require.Equal(t, 16, EFDecode(buf[:], ^uint64(0), ^uint64(0), 15), "stops at the room it has")
	en := Entry{Meta: MakeMeta(1, 0, 15) | CodeEF<<CodeShift, Lo: ^uint64(0), Hi: ^uint64(0)}
	require.Equal(t, 32, en.Count())
	require.False(t, EFHas(0, 0, 6, 1<<20), "a high part past 15")
}

// FuzzLoadSlots feeds arbitrary slot bytes to Load (a snapshot's table
// whose checksums were forged): it refuses them or loads a table whose
// every entry decodes within its bounds; nothing panics.
func FuzzLoadSlots(f *testing.F) {
	ef, _ := PackInline(1, 0, []uint32{1, 5, 9, 40, 77, 100, 200, 300, 400, 500, 600, 700, 800, 900})
	seed := make([]byte, MinSlots*32)
	put := func(i int, s Slot) {
		copy(seed[i*32:], slotBytes([]Slot{s}))
	}
	put(0, Slot{Key: 99, Meta: ef.Meta, Lo: ef.Lo, Hi: ef.Hi})
	put(1, Slot{Key: 98, Meta: MakeMeta(2, 0, 15) | CodeEF<<CodeShift, Lo: ^uint64(0), Hi: ^uint64(0)})
	f.Add(seed, uint32(4))
	f.Fuzz(func(t *testing.T, b []byte, next uint32) {
		n := MinSlots * 32
		if len(b) > n {
			b = b[:n]
		}
		slots := make([]byte, n)
		copy(slots, b)
		live := 0
		for i := 0; i < n; i += 32 {
			if k := uint64(slots[i]) | uint64(slots[i+1])<<8; k > 1 || slots[i+7] != 0 {
				live++
			}
		}
		m := Meta{Next: next, Live: live, Slots: live, Homes: HomesLine}
		d, err := Load(m, ArenaMeta{}, slots, [][]byte{make([]byte, 0)}, func(uint32, []uint32) error { return nil })
		if err != nil {
			return
		}
		d.Tab.Load().Each(func(_ anonymize.Pseudonym, en Entry) {
			_, ids := d.Tab.Load().DecodeEntry(nil, en)
			require.LessOrEqual(t, len(ids), efMaxIDs+2*LanesPer[0])
		})
	})
}

// Load refuses an Elias-Fano entry that is not exactly packEF's encoding
// of its ids (a high part of 16 or more, say), on which In's test and
// Segments' decoding would disagree. (Found by review.)
func TestLoadRefusesNonCanonicalEF(t *testing.T) {
	slots := NewSlots(MinSlots)
	slots[0] = Slot{Key: 99, Meta: MakeMeta(0, 0, 0) | CodeEF<<CodeShift, Hi: 1 << (32 + 20)} // l = 0, id 20: high part 20
	_, err := Load(Meta{Next: 1, Live: 1, Slots: 1, Homes: HomesLine}, ArenaMeta{}, slices.Clone(slotBytes(slots)),
		[][]byte{{}}, func(uint32, []uint32) error { return nil })
	require.ErrorContains(t, err, "Elias-Fano")
	en, ok := PackInline(0, 0, []uint32{1, 5, 9, 40, 77, 100, 200, 300, 400, 500, 600, 700, 800})
	require.True(t, ok)
	require.Equal(t, CodeEF, en.Code())
	slots[0] = Slot{Key: 99, Meta: en.Meta, Lo: en.Lo, Hi: en.Hi}
	_, err = Load(Meta{Next: 1, Live: 1, Slots: 1, Homes: HomesLine}, ArenaMeta{}, slices.Clone(slotBytes(slots)),
		[][]byte{{}}, func(uint32, []uint32) error { return nil })
	require.NoError(t, err, "the canonical encoding loads")
}
