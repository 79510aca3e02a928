package personify

import (
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDirectoryModel drives the directory with random assigns, removals and
// releases and checks it against a map after every step.
func TestDirectoryModel(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	d := newDirectory()
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
			ord, added := d.assign(p)
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
			require.True(t, d.remove(p))
			require.False(t, d.remove(p))
			d.release(ord)
			delete(model, p)
			delete(byOrd, ord)
		}
		if step%5000 == 0 {
			for p, ord := range model {
				require.Equal(t, ord, ordOf(t, d, p))
			}
			seen := 0
			tab := d.tab.Load()
			d.each(func(p anonymize.Pseudonym, ref, _ uint32) {
				require.Equal(t, model[p], tab.ord(ref), "each yields live entries only")
				seen++
			})
			require.Equal(t, len(model), seen)
		}
	}
	require.Equal(t, len(model), d.len())
	// Ordinals stay dense: released ones are reused before new ones.
	assert.LessOrEqual(t, d.ordinals(), len(model)+len(d.free))
	_, _, ok := d.lookup(anonymize.Pseudonym(12345678901))
	assert.False(t, ok)
}

// ordOf returns p's ordinal, failing if p is absent.
func ordOf(t *testing.T, d *directory, p anonymize.Pseudonym) uint32 {
	t.Helper()
	ref, _, ok := d.lookup(p)
	require.True(t, ok, "%v absent", p)
	return d.tab.Load().ord(ref)
}

func TestDirectoryRekeyAndUpdate(t *testing.T) {
	d := newDirectory()
	ord, _ := d.assign(100)
	ref, _, _ := d.lookup(100)
	d.update(100, ref, 7)
	d.rekey(100, 200)
	_, _, ok := d.lookup(100)
	assert.False(t, ok)
	assert.Equal(t, ord, ordOf(t, d, 200), "the record moves with the entry")
	_, bloom, _ := d.lookup(200)
	assert.Equal(t, uint32(7), bloom)
	d.assign(0) // a reserved slot value
	ref0, _, _ := d.lookup(0)
	d.update(0, ref0, 9)
	_, bloom, ok = d.lookup(0)
	require.True(t, ok)
	assert.Equal(t, uint32(9), bloom)
}

// TestDirectoryConcurrentReaders has readers look up a stable population
// while the writer inserts, removes and grows the table.
func TestDirectoryConcurrentReaders(t *testing.T) {
	d := newDirectory()
	stable := make([]anonymize.Pseudonym, 1000)
	want := map[anonymize.Pseudonym]uint32{}
	for i := range stable {
		stable[i] = anonymize.Pseudonym(mrand.Uint64() | 2)
		ord, _ := d.assign(stable[i])
		want[stable[i]] = ord
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(r), 9))
			for !stop.Load() {
				p := stable[rng.IntN(len(stable))]
				tab := d.tab.Load()
				ref, _, ok := tab.lookup(uint64(p))
				if !ok || tab.ord(ref) != want[p] {
					t.Errorf("lookup %v: %v, want ordinal %d", p, ok, want[p])
					return
				}
			}
		})
	}
	rng := mrand.New(mrand.NewPCG(5, 6))
	var churn []anonymize.Pseudonym
	for range 100_000 {
		if len(churn) > 0 && rng.IntN(3) == 0 {
			p := churn[len(churn)-1]
			churn = churn[:len(churn)-1]
			ref, _, _ := d.lookup(p)
			ord := d.tab.Load().ord(ref)
			d.remove(p)
			d.release(ord)
			continue
		}
		p := anonymize.Pseudonym(rng.Uint64() | 2)
		d.assign(p)
		churn = append(churn, p)
	}
	stop.Store(true)
	wg.Wait()
}
