package anonymize

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var destroyIDs = []Identifier{
	Email("Jane.Doe@Example.com"), Phone("+1 (234) 567-8901"), UserID("customer-42"), DeviceID("AEBE52E7-03EE-455A-B3C4-E57283966239"),
	Email("not an email"), {}, // invalid ones too: a destroyed key says so first
}

// TestHashersRefuseDestroyedKey checks that after Destroy every hasher
// returns ErrKeyDestroyed on every call, never a pseudonym: HMAC-SHA256 too
// once the garbage collector has emptied its pool of states, which is when
// a state built afresh from zeroed material would compute under the zero
// key.
func TestHashersRefuseDestroyedKey(t *testing.T) {
	for name, ctor := range hasherConstructors {
		t.Run(name, func(t *testing.T) {
			k := GenerateKey()
			fp := k.Fingerprint()
			h := ctor(k.Clone())
			h2 := ctor(k) // made from the key itself, destroyed through a copy
			cp := k
			for _, id := range destroyIDs[:4] {
				_, err := h2.Pseudonym(id)
				require.NoError(t, err)
			}
			cp.Destroy()
			for gc := range 3 {
				for _, id := range destroyIDs {
					p, err := h2.Pseudonym(id)
					require.ErrorIs(t, err, ErrKeyDestroyed, "after %d GCs", gc)
					assert.Zero(t, p)
					assert.Contains(t, err.Error(), fp.String(), "the error names the key")
				}
				runtime.GC()
			}
			_, err := h.Pseudonym(destroyIDs[0])
			assert.NoError(t, err, "a hasher made from a clone is not affected")
		})
	}
}

// TestDestroyWhileHashing destroys a key while goroutines hash with it (run
// it with -race): each call returns the right pseudonym or ErrKeyDestroyed,
// never anything else, and once a goroutine has seen ErrKeyDestroyed it
// sees nothing else.
func TestDestroyWhileHashing(t *testing.T) {
	for name, ctor := range hasherConstructors {
		t.Run(name, func(t *testing.T) {
			k := GenerateKey()
			h := ctor(k)
			id := Email("jane@example.com")
			want, err := h.Pseudonym(id)
			require.NoError(t, err)
			const workers = 4
			var hashed atomic.Int64
			var wg sync.WaitGroup
			for g := range workers {
				wg.Go(func() {
					destroyed := 0
					for destroyed < 100 {
						p, err := h.Pseudonym(id)
						switch {
						case err == nil && p == want && destroyed == 0:
							hashed.Add(1)
						case p == 0 && errors.Is(err, ErrKeyDestroyed):
							destroyed++
						default:
							t.Errorf("goroutine %d: %v, %v after %d destroyed errors", g, p, err, destroyed)
							return
						}
					}
				})
			}
			// The key's other methods race with Destroy too.
			wg.Go(func() {
				for !k.IsZero() {
					_ = k.Fingerprint()
					_ = k.String()
					_ = k.Equal(k)
					_ = k.Clone()
				}
			})
			for hashed.Load() < 1000 {
				runtime.Gosched()
			}
			k.Destroy()
			wg.Wait()
		})
	}
}

func TestKeyringPrunedKeysRefuse(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, ctor := range hasherConstructors {
		t.Run(name, func(t *testing.T) {
			old, cur := GenerateKey(), GenerateKey()
			r := NewKeyring(old, ctor)
			require.NoError(t, r.Rotate(cur, t0, time.Hour))
			_, hs := r.Hashers() // held by a reader across the Prune
			id := UserID("u1")
			want, err := ctor(cur).Pseudonym(id)
			require.NoError(t, err)

			// A lookup that began before the Prune skips the key it
			// destroyed, as it skips an expired one.
			old.Destroy()
			got, err := r.AppendPseudonyms(nil, id, t0)
			require.NoError(t, err)
			assert.Equal(t, []KeyedPseudonym{{want, cur.Fingerprint()}}, got)

			assert.Len(t, r.Prune(t0.Add(time.Hour)), 1)
			_, err = hs[1].Pseudonym(id)
			assert.ErrorIs(t, err, ErrKeyDestroyed)
			_, err = hs[0].Pseudonym(id)
			assert.NoError(t, err)

			cur.Destroy() // the current key destroyed by hand: lookups fail loudly
			_, err = r.AppendPseudonyms(nil, id, t0)
			assert.ErrorIs(t, err, ErrKeyDestroyed)
			_, err = r.Pseudonym(id)
			assert.ErrorIs(t, err, ErrKeyDestroyed)
		})
	}
}
