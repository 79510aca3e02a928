package index

import (
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ordOf returns p's ordinal, failing if p is absent.
func ordOf(t *testing.T, d *Directory, p anonymize.Pseudonym) uint32 {
	t.Helper()
	en, ok := d.Get(p)
	require.True(t, ok, "%v absent", p)
	return en.Ord()
}

// TestDirectoryModel drives the Directory with random assigns, removals and
// releases and checks it against a map.
func TestDirectoryModel(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	d := NewDirectory()
	model := map[anonymize.Pseudonym]uint32{}
	byOrd := map[uint32]anonymize.Pseudonym{}
	var keys []anonymize.Pseudonym
	for step := range 200_000 {
		switch op := rng.IntN(10); {
		case op < 6 || len(keys) == 0: // assign a new or existing key
			var p anonymize.Pseudonym
			if len(keys) > 0 && rng.IntN(4) == 0 {
				p = keys[rng.IntN(len(keys))]
			} else {
				p = anonymize.Pseudonym(rng.Uint64() >> uint(rng.IntN(3)*30)) // some small values too
				if rng.IntN(100) == 0 {
					p = anonymize.Pseudonym(rng.IntN(2)) // the reserved slot values
				}
			}
			ord, added := d.Assign(p)
			want, had := model[p]
			if had {
				require.False(t, added)
				require.Equal(t, want, ord, "step %d", step)
				continue
			}
			require.True(t, added)
			_, taken := byOrd[ord]
			require.False(t, taken, "ordinal %d handed out twice", ord)
			model[p], byOrd[ord] = ord, p
			keys = append(keys, p)
		default: // forget one
			i := rng.IntN(len(keys))
			p := keys[i]
			keys[i] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
			ord := model[p]
			require.Equal(t, ord, ordOf(t, d, p))
			require.True(t, d.Remove(p))
			require.False(t, d.Remove(p))
			d.Release(ord)
			delete(model, p)
			delete(byOrd, ord)
		}
		if step%5000 == 0 {
			for p, ord := range model {
				require.Equal(t, ord, ordOf(t, d, p))
				en, ok, stuck := d.Tab.Load().Read(uint64(p))
				require.True(t, ok && !stuck)
				require.Equal(t, ord, en.Ord())
			}
			seen := 0
			d.Tab.Load().Each(func(p anonymize.Pseudonym, en Entry) {
				require.Equal(t, model[p], en.Ord(), "each yields live entries only")
				seen++
			})
			require.Equal(t, len(model), seen)
		}
	}
	require.Equal(t, len(model), d.Len())
	// Ordinals stay dense: released ones are reused before new ones, so
	// assigning as many people as there are free ordinals adds none.
	next, free := d.Ordinals(), len(d.free)
	for i := range free {
		d.Assign(anonymize.Pseudonym(1<<62 + i))
	}
	assert.Equal(t, next, d.Ordinals(), "new ordinals assigned while released ones were free")
	assert.Empty(t, d.free)
	_, ok := d.Get(anonymize.Pseudonym(12345678901))
	assert.False(t, ok)
}

func TestDirectoryRekeyAndSet(t *testing.T) {
	d := NewDirectory()
	ord, _ := d.Assign(100)
	d.Set(100, Entry{Meta: MakeMeta(ord, 3, 1), Lo: 42})
	d.Rekey(100, 200)
	_, ok := d.Get(100)
	assert.False(t, ok)
	en, ok := d.Get(200)
	require.True(t, ok)
	assert.Equal(t, ord, en.Ord(), "the entry moves with the key")
	assert.Equal(t, uint32(3), en.State())
	assert.Equal(t, uint64(42), en.Lo)
	for _, p := range []anonymize.Pseudonym{0, 1} { // the reserved slot values
		o, _ := d.Assign(p)
		d.Set(p, Entry{Meta: MakeMeta(o, 5, 0), Hi: 9})
		en, ok, _ := d.Tab.Load().Read(uint64(p))
		require.True(t, ok)
		assert.Equal(t, uint32(5), en.State())
		assert.Equal(t, uint64(9), en.Hi)
		assert.True(t, d.Remove(p))
		_, ok = d.Get(p)
		assert.False(t, ok)
	}
}

func TestDirectorySequenceWraps(t *testing.T) {
	d := NewDirectory()
	ord, _ := d.Assign(7)
	for i := range 70_000 { // more than the 16-bit sequence counts
		d.Set(7, Entry{Meta: MakeMeta(ord, uint32(i%200), i%15), Lo: uint64(i), Hi: ^uint64(i)})
		en, ok, stuck := d.Tab.Load().Read(7)
		require.True(t, ok && !stuck)
		require.Equal(t, ord, en.Ord(), "sequence must not carry into the ordinal or state")
		require.Equal(t, uint32(i%200), en.State())
		require.Equal(t, i%15, en.Count())
	}
}

// TestDirectorySnapshotsAreConsistent has readers take snapshots of entries
// while the writer rewrites them; every snapshot must be one the writer
// wrote whole (lo and hi derived from the same value), never a mix. It also
// runs assigns, removals and growth meanwhile. Run with -race.
func TestDirectorySnapshotsAreConsistent(t *testing.T) {
	d := NewDirectory()
	stable := make([]anonymize.Pseudonym, 500)
	for i := range stable {
		stable[i] = anonymize.Pseudonym(mrand.Uint64() | 2)
		ord, _ := d.Assign(stable[i])
		d.Set(stable[i], Entry{Meta: MakeMeta(ord, 0, 0), Lo: 0, Hi: ^uint64(0)})
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var snapshots atomic.Int64
	for r := range 3 {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(r), 9))
			for !stop.Load() {
				p := stable[rng.IntN(len(stable))]
				en, ok, stuck := d.Tab.Load().Read(uint64(p))
				if !ok {
					t.Errorf("%v vanished", p)
					return
				}
				if stuck {
					continue // the writer was descheduled mid-update: callers take the lock
				}
				if en.Hi != ^en.Lo || uint64(en.State()) != en.Lo%200 {
					t.Errorf("torn snapshot %+v", en)
					return
				}
				snapshots.Add(1)
			}
		})
	}
	rng := mrand.New(mrand.NewPCG(5, 6))
	var churn []anonymize.Pseudonym
	for i := range 200_000 {
		p := stable[rng.IntN(len(stable))]
		en, _ := d.Get(p)
		v := uint64(i)
		d.Set(p, Entry{Meta: MakeMeta(en.Ord(), uint32(v%200), 0), Lo: v, Hi: ^v})
		switch {
		case i%3 == 0:
			q := anonymize.Pseudonym(rng.Uint64() | 2)
			d.Assign(q)
			churn = append(churn, q)
		case i%5 == 0 && len(churn) > 0:
			q := churn[len(churn)-1]
			churn = churn[:len(churn)-1]
			en, _ := d.Get(q)
			d.Remove(q)
			d.Release(en.Ord())
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d consistent snapshots", snapshots.Load())
	require.Positive(t, snapshots.Load())
}

// Fit gives back the room Reserve's 1.5x growth left, once per growth, to
// a table Get still finds every key in, leaving room for headroom keys;
// it leaves alone tables that Reserve did not grow.
func TestFitGivesBackReservedRoom(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	d := NewDirectory()
	want := map[anonymize.Pseudonym]Entry{}
	add := func(n int) {
		d.Reserve(n)
		for range n {
			p := anonymize.Pseudonym(rng.Uint64() | 2)
			en := Entry{Meta: MakeMeta(d.NewOrdinal(), 0, 0), Lo: rng.Uint64(), Hi: rng.Uint64()}
			d.Insert(p, en)
			want[p] = en
		}
	}
	check := func() {
		t.Helper()
		tab := d.Tab.Load()
		for p, en := range want {
			got, ok := tab.Get(p)
			require.True(t, ok)
			require.Equal(t, en, got)
		}
		n := 0
		tab.Each(func(anonymize.Pseudonym, Entry) { n++ })
		require.Equal(t, len(want), n)
	}
	fill := func() float64 { tab := d.Tab.Load(); return float64(tab.Used) / float64(len(tab.Slots)) }
	slots := func() int { return len(d.Tab.Load().Slots) }

	add(1000)
	assert.False(t, d.Fit(0), "the table would be under fitMinSlots")
	for fill() >= fitBelow || TableSize(len(want)) < 2*fitMinSlots {
		add(4096) // until a growth leaves the table under fitBelow
	}
	before := slots()
	require.True(t, d.Fit(4096))
	assert.Equal(t, TableSize(len(want)+4096), slots())
	assert.Less(t, slots(), before)
	check()
	tab := d.Tab.Load()
	d.Reserve(4096)
	assert.Same(t, tab, d.Tab.Load(), "the headroom: a chunk of known people does not grow the table again")
	assert.False(t, d.Fit(4096), "once per growth")

	// Grown again by Reserve: fitted again.
	for n := slots(); slots() == n; {
		add(4096)
	}
	require.Less(t, fill(), fitBelow, "Reserve grows 1.5x from 0.9 full")
	assert.True(t, d.Fit(0))
	assert.InDelta(t, load, fill(), 0.01)
	check()

	// Under fitBelow for want of a growth (people removed): left alone.
	for p := range want {
		require.True(t, d.Remove(p))
		delete(want, p)
		if float64(len(want)) < 0.5*float64(slots()) {
			break
		}
	}
	require.Less(t, float64(d.slots), 0.5*float64(slots()))
	assert.False(t, d.Fit(0), "Reserve did not grow it")
	// Insert's growth (to load 0.82 already) leaves nothing to fit either.
	for range 3 {
		n := int(float64(slots())*maxLoad) - d.Tab.Load().Used + 1
		for range n {
			p := anonymize.Pseudonym(rng.Uint64() | 2)
			en := EmptyEntry(d.NewOrdinal())
			d.Insert(p, en)
			want[p] = en
		}
		assert.False(t, d.Fit(0))
	}
	check()

	// Compact rebuilds at load 0.82: nothing left for Fit.
	for n := slots(); slots() == n; {
		add(4096)
	}
	d.Compact(func(uint32) bool { return true })
	assert.False(t, d.Fit(0))
	for p, en := range want { // Compact re-encodes the random ids; the keys stay
		got, ok := d.Get(p)
		require.True(t, ok)
		require.Equal(t, en.Ord(), got.Ord())
	}
}

// A table that a snapshot stored under fitBelow full is loaded as stored
// and may be fitted; one that was full enough may not.
func TestFitAfterLoad(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(5, 6))
	for _, sparse := range []bool{true, false} {
		d := NewDirectory()
		for d.Tab.Load().Used == 0 || (float64(d.slots) >= fitBelow*float64(len(d.Tab.Load().Slots))) == sparse || TableSize(d.slots) < fitMinSlots {
			d.Reserve(4096)
			for range 4096 {
				d.Insert(anonymize.Pseudonym(rng.Uint64()|2), EmptyEntry(d.NewOrdinal()))
			}
		}
		m, am, b := d.Snapshot()
		l, err := Load(m, am, slices.Clone(b), [][]byte{make([]byte, 0)}, func(uint32, []uint32) error { return nil })
		require.NoError(t, err)
		assert.Equal(t, sparse, l.Fit(0), "sparse %v", sparse)
	}
}

// A population that stays constant while it turns over (removed, new
// people added in bulk) keeps its table's size: Reserve rebuilds a table
// full of tombstones at the same size instead of growing it 1.5x, a
// table Fit left too (whose size TableSize rounded down).
func TestReserveDropsTombstones(t *testing.T) {
	for _, fitted := range []bool{false, true} {
		rng := mrand.New(mrand.NewPCG(7, 8))
		d := NewDirectory()
		var keys []anonymize.Pseudonym
		add := func(n int) {
			d.Reserve(n)
			for range n {
				p := anonymize.Pseudonym(rng.Uint64() | 2)
				d.Insert(p, EmptyEntry(d.NewOrdinal()))
				keys = append(keys, p)
			}
		}
		add(100_000)
		if fitted {
			for d.Fit(4096) == false {
				add(4096)
			}
		}
		size := len(d.Tab.Load().Slots)
		for range 200 {
			add(4096) // then the oldest removed: the population the fit was for, plus a chunk
			for _, p := range keys[:4096] {
				require.True(t, d.Remove(p))
			}
			keys = keys[4096:]
			if fitted {
				require.Equal(t, size, len(d.Tab.Load().Slots), "the fitted table keeps its size")
				require.False(t, d.fit)
			}
		}
		assert.LessOrEqual(t, len(d.Tab.Load().Slots), size*3/2, "grown at most once")
		for _, p := range keys {
			_, ok := d.Get(p)
			require.True(t, ok)
		}
	}
}

// Compact and a Load of a table full enough leave nothing for Fit, even
// once removals take the table under fitBelow: Reserve did not grow it.
func TestFitFlagClearedByCompactAndLoad(t *testing.T) {
	for _, via := range []string{"compact", "load"} {
		rng := mrand.New(mrand.NewPCG(11, 12))
		d := NewDirectory()
		var keys []anonymize.Pseudonym
		for TableSize(len(keys)) < 2*fitMinSlots || !d.fit {
			d.Reserve(4096)
			for range 4096 {
				p := anonymize.Pseudonym(rng.Uint64() | 2)
				d.Insert(p, EmptyEntry(d.NewOrdinal()))
				keys = append(keys, p)
			}
		}
		switch via {
		case "compact":
			d.Compact(func(uint32) bool { return true })
		case "load":
			d.Fit(0) // full enough when stored
			m, am, b := d.Snapshot()
			var err error
			d, err = Load(m, am, slices.Clone(b), [][]byte{make([]byte, 0)}, func(uint32, []uint32) error { return nil })
			require.NoError(t, err)
		}
		for _, p := range keys[:len(keys)/3] {
			require.True(t, d.Remove(p))
		}
		require.Less(t, float64(d.slots), fitBelow*float64(len(d.Tab.Load().Slots)))
		assert.False(t, d.Fit(0), via)
	}
}
