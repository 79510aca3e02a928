package pgstore

import (
	"context"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Links and frequency caps on a real fleet: a link made on one replica
// serves every replica; impressions counted on one reach the other within
// CapFlush, and a clean Close loses none of them.
func TestFleetLinksAndCaps(t *testing.T) {
	conn := newDB(t)
	flush := func(o *Options) { o.Engine.CapFlush = time.Hour } // flushed by Close and by hand
	a, b := openReplica(t, conn, flush), openReplica(t, conn, flush)
	defer b.Close()
	define(t, a)
	require.NoError(t, a.Add("runners", person(1), person(2)))
	require.NoError(t, a.DefineCap(personify.Cap{Name: "c", Purpose: "ads", Max: 3, Window: personify.Window{Kind: personify.Lifetime}}))
	device := anonymize.DeviceID("device-1")
	require.NoError(t, b.Link(person(1), device))
	p, err := a.Pseudonym(person(1))
	require.NoError(t, err)
	d, err := a.Pseudonym(device)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return a.In(d, "runners") }, 10*time.Second, 10*time.Millisecond, "the link reaches the other replica")

	require.True(t, a.Allow(p, "c"))
	require.True(t, a.Allow(d, "c"), "the device counts for the person")
	require.NoError(t, a.FlushCounts(context.Background()))
	count := func(r *Replica) int {
		rep, err := r.Explain(person(1))
		require.NoError(t, err)
		if len(rep.Caps) == 0 {
			return 0
		}
		return rep.Caps[0].Count
	}
	require.Eventually(t, func() bool { return count(b) == 2 }, 10*time.Second, 10*time.Millisecond)
	require.True(t, a.Allow(p, "c"))
	require.NoError(t, a.Close()) // not flushed by hand: Close does it
	require.Eventually(t, func() bool { return count(b) == 3 }, 10*time.Second, 10*time.Millisecond, "a clean Close loses no count")
	assert.False(t, b.Allow(d, "c"))

	r, err := b.Forget(device)
	require.NoError(t, err)
	assert.Equal(t, 1, r.Counters)
	assert.Len(t, r.Linked, 2)
}
