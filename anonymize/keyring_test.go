package anonymize

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyringRotation(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k1, k2, k3 := GenerateKey(), GenerateKey(), GenerateKey()
	r := NewKeyring(k1, nil)
	id := Email("jane@example.com")
	p1, _ := SipHash(k1).Pseudonym(id)
	p2, _ := SipHash(k2).Pseudonym(id)
	p3, _ := SipHash(k3).Pseudonym(id)

	got, err := r.AppendPseudonyms(nil, id, t0)
	require.NoError(t, err)
	assert.Equal(t, []KeyedPseudonym{{p1, k1.Fingerprint()}}, got)

	require.NoError(t, r.Rotate(k2, t0, 30*24*time.Hour))
	require.ErrorIs(t, r.Rotate(k1, t0, time.Hour), ErrKeyExists, "a previous key cannot come back as current")
	assert.Equal(t, k2.Fingerprint(), r.Current())
	p, err := r.Pseudonym(id)
	require.NoError(t, err)
	assert.Equal(t, p2, p, "new pseudonyms use the new key")

	require.NoError(t, r.Rotate(k3, t0.Add(10*24*time.Hour), 30*24*time.Hour))
	got, err = r.AppendPseudonyms(nil, id, t0.Add(11*24*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, []KeyedPseudonym{{p3, k3.Fingerprint()}, {p2, k2.Fingerprint()}, {p1, k1.Fingerprint()}}, got, "current first, then newest previous")

	// Exactly at the end of k1's grace period it is no longer consulted.
	got, err = r.AppendPseudonyms(got[:0], id, t0.Add(30*24*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, []KeyedPseudonym{{p3, k3.Fingerprint()}, {p2, k2.Fingerprint()}}, got)

	keys := r.Keys()
	require.Len(t, keys, 3)
	assert.True(t, keys[0].Current)
	assert.True(t, keys[0].Until.IsZero())
	assert.Equal(t, t0.Add(30*24*time.Hour), keys[2].Until)

	fp1, fp2 := k1.Fingerprint(), k2.Fingerprint()
	assert.Empty(t, r.Prune(t0.Add(30*24*time.Hour-time.Nanosecond)))
	gone := r.Prune(t0.Add(30 * 24 * time.Hour))
	assert.Equal(t, []Fingerprint{fp1}, gone)
	assert.True(t, k1.IsZero(), "pruned keys are destroyed")
	assert.Len(t, r.Keys(), 2)
	assert.Equal(t, []Fingerprint{fp2}, r.Prune(t0.Add(100*24*time.Hour)))
	assert.Len(t, r.Keys(), 1)
	assert.False(t, k3.IsZero(), "the current key is never pruned")
}

func TestKeyringAddPrevious(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cur, old, older := GenerateKey(), GenerateKey(), GenerateKey()
	r := NewKeyring(cur, HMACSHA256)
	require.NoError(t, r.Add(older, t0.Add(time.Hour)))
	require.NoError(t, r.Add(old, t0.Add(2*time.Hour)))
	require.ErrorIs(t, r.Add(old, t0), ErrKeyExists)
	// A zero time would make a second current key, one that lookups never
	// expire and Prune destroys at once.
	require.Error(t, r.Add(GenerateKey(), time.Time{}))
	current := 0
	for _, k := range r.Keys() {
		if k.Current {
			current++
		}
	}
	assert.Equal(t, 1, current)
	fps, hs := r.Hashers()
	assert.Equal(t, []Fingerprint{cur.Fingerprint(), old.Fingerprint(), older.Fingerprint()}, fps)
	want, _ := HMACSHA256(old).Pseudonym(UserID("u1"))
	got, _ := hs[1].Pseudonym(UserID("u1"))
	assert.Equal(t, want, got, "the keyring's hasher constructor is used for every key")
	_, err := r.AppendPseudonyms(nil, Email("not an email"), t0)
	assert.ErrorIs(t, err, ErrInvalidIdentifier)
	assert.Error(t, r.Rotate(GenerateKey(), t0, -time.Second))
}

func TestKeyringConcurrent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := NewKeyring(GenerateKey(), nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			var buf []KeyedPseudonym
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				buf, err = r.AppendPseudonyms(buf[:0], UserID("u"), t0)
				if err != nil || len(buf) == 0 {
					t.Errorf("lookup during rotation: %v %d", err, len(buf))
					return
				}
			}
		})
	}
	for i := range 50 {
		require.NoError(t, r.Rotate(GenerateKey(), t0.Add(time.Duration(i)*time.Minute), time.Minute))
		r.Prune(t0.Add(time.Duration(i) * time.Minute))
	}
	close(stop)
	wg.Wait()
}
