package personify

import (
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/require"
)

// TestConcurrentReadersAndWriters runs lookups, audiences and reports while
// two writers each make 1000 changes: add, remove, change consent, suppress,
// forget, bulk-load, expire and redefine.
// People 0..99 keep their "ads" memberships and consent throughout, so
// every read of them must give the same answer, while a third writer keeps
// rewriting their entries (membership of a segment of another purpose), so
// that lookups meet entries in the middle of an update. Run with -race.
func TestConcurrentReadersAndWriters(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "stable", Purpose: "ads"})
	te.define(Segment{Name: "churn", Purpose: "ads", Retention: 32 * time.Hour})
	te.add("stable", people(0, 100)...)
	te.add("churn", people(0, 100)...)
	te.define(Segment{Name: "toggled", Purpose: "email"})
	stable := make([]anonymize.Pseudonym, 100)
	for i := range stable {
		stable[i] = te.pseudonym(person(i))
	}
	want := []string{"stable", "churn"} // definition order

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	for r := range 4 {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(r), 1))
			var dst []string
			for !stop.Load() {
				i := rng.IntN(len(stable))
				switch rng.IntN(20) {
				case 0:
					a, err := te.Audience("stable", "ads")
					if err != nil || a.Count < 100 {
						t.Errorf("audience: %v %d", err, a.Count)
						return
					}
				case 1:
					rep, err := te.Explain(person(i))
					if err != nil || len(rep.Segments) < 2 {
						t.Errorf("explain %d: %v %d", i, err, len(rep.Segments))
						return
					}
				default:
					dst = te.Segments(dst[:0], stable[i], "ads")
					if !slices.Equal(dst, want) || !te.In(stable[i], "stable") {
						t.Errorf("person %d: %v", i, dst)
						return
					}
				}
				reads.Add(1)
			}
		})
	}
	var writers sync.WaitGroup
	for w := range 2 {
		writers.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(w), 2))
			for n := range 1000 {
				id := person(1000 + rng.IntN(500))
				var err error
				switch rng.IntN(8) {
				case 0, 1:
					err = te.Add("churn", id)
				case 2:
					err = te.Remove("churn", id)
				case 3:
					err = te.SetConsent(id, "ads", rng.IntN(2) == 0)
				case 4:
					err = te.Suppress(id, "ads")
				case 5:
					_, err = te.Forget(id)
				case 6:
					ps := make([]anonymize.Pseudonym, 50)
					for i := range ps {
						ps[i] = anonymize.Pseudonym(rng.Uint64())
					}
					err = te.AddPseudonyms("churn", ps)
				case 7:
					if w == 0 {
						_, err = te.Expire(te.clock.Now())
					} else {
						err = te.Define(Segment{Name: "churn", Purpose: "ads", Retention: 32 * time.Hour, Description: fmt.Sprint(n)})
					}
				}
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	toggles := make(chan struct{})
	go func() { // rewrites the stable people's entries until the other writers finish
		defer close(toggles)
		for n := 0; !stop.Load(); n++ {
			id := person(n % len(stable))
			var err error
			if n/len(stable)%2 == 0 {
				err = te.Add("toggled", id)
			} else {
				err = te.Remove("toggled", id)
			}
			if err != nil {
				t.Errorf("toggler: %v", err)
				return
			}
		}
	}()
	writers.Wait()
	stop.Store(true)
	<-toggles
	wg.Wait()
	require.Positive(t, reads.Load())
	t.Logf("%d reads", reads.Load())
}
