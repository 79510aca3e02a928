package index

import (
	mrand "math/rand/v2"
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
// a table Get still finds every key in, and leaves the table readers
// already hold as it was.
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
	check := func(tab *Table) {
		t.Helper()
		for p, en := range want {
			got, ok := tab.Get(p)
			require.True(t, ok)
			require.Equal(t, en, got)
		}
	}
	fill := func() float64 { tab := d.Tab.Load(); return float64(tab.Used) / float64(len(tab.Slots)) }

	add(1000)
	assert.False(t, d.Fit(), "a table under fitMinSlots stays as it is")
	for fill() >= fitBelow || len(d.Tab.Load().Slots) < fitMinSlots {
		add(4096) // until a growth leaves the table under fitBelow
	}
	old := d.Tab.Load()
	require.True(t, d.Fit())
	assert.InDelta(t, load, fill(), 0.01)
	assert.Less(t, len(d.Tab.Load().Slots), len(old.Slots))
	check(d.Tab.Load())
	check(old) // a reader still on the old table finds what it held
	assert.False(t, d.Fit(), "once per growth")

	// Grown again by Reserve: fitted again; grown by Insert alone (which
	// grows to load 0.82 already): nothing to give back.
	for n := len(d.Tab.Load().Slots); len(d.Tab.Load().Slots) == n; {
		add(4096)
	}
	require.Less(t, fill(), fitBelow, "Reserve grows 1.5x from 0.9 full")
	assert.True(t, d.Fit())
	assert.InDelta(t, load, fill(), 0.01)
	check(d.Tab.Load())
	for range 3 {
		n := int(float64(len(d.Tab.Load().Slots))*maxLoad) - d.Tab.Load().Used + 1
		for range n {
			p := anonymize.Pseudonym(rng.Uint64() | 2)
			en := EmptyEntry(d.NewOrdinal())
			d.Insert(p, en)
			want[p] = en
		}
		assert.False(t, d.Fit(), "Insert's growth leaves nothing to fit")
	}
	check(d.Tab.Load())
}
