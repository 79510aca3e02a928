package bench

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWorkloadIsDeterministic(t *testing.T) {
	a := Generate("t", 5000, 50, 7)
	b := Generate("t", 5000, 50, 7)
	assert.Equal(t, a.Emails, b.Emails)
	assert.Equal(t, a.Pseudonyms, b.Pseudonyms)
	assert.Equal(t, a.Members, b.Members)
	assert.Equal(t, a.Probes[:1000], b.Probes[:1000])
	c := Generate("t", 5000, 50, 8)
	assert.NotEqual(t, a.Members, c.Members, "another seed, other data")
}

func TestWorkloadShape(t *testing.T) {
	w, err := Load("tiny")
	require.NoError(t, err)
	want := float64(w.People*w.Segments) * Share
	assert.InDelta(t, want, w.Memberships(), 5*want/100, "about 1%% of people per segment")
	for _, m := range w.Members {
		require.True(t, slices.IsSorted(m))
		for i := 1; i < len(m); i++ {
			require.NotEqual(t, m[i-1], m[i])
		}
	}
	seen := map[uint64]bool{}
	for _, p := range w.Pseudonyms {
		seen[uint64(p)] = true
	}
	assert.Len(t, seen, w.People, "distinct pseudonyms")
	for _, pr := range w.Probes[:1000] {
		assert.Equal(t, w.Pseudonyms[pr.Person], pr.P)
		assert.Equal(t, w.Emails[pr.Person], pr.Email)
	}
}

// TestEngineAnswersTheWorkload checks the loaded engine against the
// workload's own membership lists, and the baselines against each other.
func TestEngineAnswersTheWorkload(t *testing.T) {
	w, err := Load("tiny")
	require.NoError(t, err)
	s := NewSuite(w)
	e, err := s.Engine()
	require.NoError(t, err)
	in := make([]map[uint32]bool, w.Segments)
	byPerson := map[uint32][]string{}
	for seg, members := range w.Members {
		in[seg] = map[uint32]bool{}
		for _, person := range members {
			in[seg][person] = true
			byPerson[person] = append(byPerson[person], w.SegNames[seg])
		}
	}
	bms := s.RoaringBaseline().Value
	emails := s.EmailBaseline().Value
	m := s.MapBaseline().Value
	fair := s.Fair().Value
	segs, pu, err := s.Prepared()
	require.NoError(t, err)
	for _, pr := range w.Probes[:20000] {
		want := in[pr.Segment][pr.Person]
		require.Equal(t, want, e.Value.In(pr.P, w.SegNames[pr.Segment]))
		require.Equal(t, want, segs[pr.Segment].In(pr.P), "PreparedSegment.In")
		require.Equal(t, byPerson[pr.Person], pu.Segments(nil, pr.P), "PreparedPurpose.Segments")
		require.Equal(t, byPerson[pr.Person], fair.Segments(nil, pr.P), "the fair baseline answers as Segments does")
		require.Equal(t, want, bms[pr.Segment].Contains(uint32(pr.P)))
		got := e.Value.Segments(nil, pr.P, Purpose)
		require.Equal(t, byPerson[pr.Person], got, "Segments lists exactly the person's segments, in definition order")
		require.Equal(t, byPerson[pr.Person], emails[pr.Email])
		_, ok := m[uint64(pr.P)]
		require.True(t, ok)
	}
	assert.Equal(t, w.Memberships(), e.Value.Stats().Memberships)
}
