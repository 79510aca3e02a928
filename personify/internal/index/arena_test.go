package index

import (
	mrand "math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLanes packs random sorted id lists of every size and range into
// lanes and checks the decoding and the SWAR membership test against the
// list itself, for member and non-member ids, at every lane code's bounds.
func TestLanes(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	maxIDs := []uint32{10, 1021, 1022, 1023, 4093, 4094, 4095, 65533, 65534, 1<<21 - 2, 1<<21 - 1, 1<<32 - 3}
	codesSeen := map[int]bool{}
	for trial := range 20000 {
		top := maxIDs[trial%len(maxIDs)]
		n := min(rng.IntN(14), int(top)+1)
		set := map[uint32]bool{}
		for len(set) < n {
			set[uint32(rng.Uint64N(uint64(top)+1))] = true
		}
		if n > 0 && trial%2 == 0 {
			set[top] = true // the largest id the list may hold
		}
		ids := make([]uint32, 0, len(set))
		for id := range set {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		lo, hi, c, ok := PackLanes(ids)
		if !ok {
			require.True(t, len(ids) > 12 || uint64(ids[len(ids)-1]) > LaneMax[len(LaneMax)-1] ||
				len(ids) > 2*LanesPer[codeFor(ids[len(ids)-1])], "%v should fit", ids)
			continue
		}
		codesSeen[c] = true
		for k, id := range ids {
			require.Equal(t, id, LaneID(lo, hi, c, k))
		}
		candidates := append(slices.Clone(ids), 0, 1, top, top-1, uint32(LaneMax[c]), uint32(LaneMax[c])+1, uint32(LaneMax[c])+2)
		for range 20 {
			candidates = append(candidates, uint32(rng.Uint64N(uint64(top)+2)))
		}
		for _, id := range candidates {
			var pattern, fits uint64
			if uint64(id) <= LaneMax[c] {
				pattern, fits = uint64(id)*LaneLow[c], ^uint64(0)
			}
			require.Equal(t, set[id], LaneMatch(lo, hi, c, pattern, fits), "ids %v code %d id %d", ids, c, id)
		}
	}
	require.Len(t, codesSeen, LaneCodes, "every lane code exercised")
}

// codeFor returns the narrowest lane code whose lanes hold id.
func codeFor(id uint32) int {
	for c := range LaneCodes {
		if uint64(id) <= LaneMax[c] {
			return c
		}
	}
	return LaneCodes - 1
}

func TestOverflowRecordsRoundTrip(t *testing.T) {
	a := NewArena()
	ids := []uint32{1, 5, 300, 70000, 1 << 30}
	en, _ := MakeEntry(a, nil, 77, 300, ids) // state 300 does not fit inline
	require.True(t, en.Overflow())
	require.Equal(t, uint32(77), en.Ord())
	tab := &Table{Arena: a}
	state, got := tab.DecodeEntry(nil, en)
	require.Equal(t, uint32(300), state)
	require.Equal(t, ids, got)
	f := Bloom96{uint32(en.Lo >> 32), en.Hi}
	for _, id := range ids {
		require.True(t, f.Covers(SegmentBloom96(id)), "no false negatives")
	}
	en, _ = MakeEntry(a, nil, 78, 3, ids[:4])
	require.False(t, en.Overflow(), "small lists and states go inline")
	state, got = tab.DecodeEntry(nil, en)
	require.Equal(t, uint32(3), state)
	require.Equal(t, ids[:4], got)
}

// An overflow entry keeps its state id inline too where it fits (a consent
// check then needs no second miss), and the record has it either way.
func TestOverflowEntryKeepsItsStateInline(t *testing.T) {
	a := NewArena()
	ids := make([]uint32, 40)
	for i := range ids {
		ids[i] = uint32(i * 7)
	}
	for _, state := range []uint32{0, 5, StateOverflow - 1, StateOverflow, 300} {
		en, _ := MakeEntry(a, nil, 9, state, ids)
		if !en.Overflow() {
			t.Fatalf("40 ids inline")
		}
		want := state
		if state >= StateOverflow {
			want = StateOverflow
		}
		if en.State() != want {
			t.Errorf("state %d: the entry says %d, want %d", state, en.State(), want)
		}
		if r := ViewRecord(a.Record(en.Ref())); r.State != state {
			t.Errorf("state %d: the record says %d", state, r.State)
		}
	}
}
