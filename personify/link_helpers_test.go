package personify

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/require"
)

// linksDump describes the linked people (by their first pseudonym) and
// checks the link graph's invariants: every slot of a linked person holds
// the same segments and privacy state, the pseudonyms beyond one per
// person are exactly the linked ones, and keyGen holds each person under
// exactly the keys of their slots. Caller holds mu.
func linksDump(t testing.TB, e *Engine, byOrd map[uint32]anonymize.Pseudonym) string {
	t.Helper()
	tab := e.dir.Tab.Load()
	var lines []string
	extra := 0
	for ord, l := range e.links {
		require.GreaterOrEqual(t, len(l), 2, "links[%d] has %d pseudonyms", ord, len(l))
		extra += len(l) - 1
		var want string
		var parts []string
		for i, s := range l {
			en, ok := tab.Get(s.Pseudonym)
			require.True(t, ok, "linked pseudonym %s of %d has no slot", s.Pseudonym, ord)
			require.Equal(t, ord, en.Ord(), "linked pseudonym %s", s.Pseudonym)
			state, ids := tab.DecodeEntry(nil, en)
			slices.Sort(ids)
			got := fmt.Sprintf("%v %v", (*e.states.Load())[state], ids)
			if i == 0 {
				want = got
			}
			require.Equal(t, want, got, "slots of linked person %d differ", ord)
			parts = append(parts, fmt.Sprintf("%s:%s/%s", s.Kind, s.Pseudonym, s.Key))
			require.True(t, e.keyGen[s.Key] != nil && e.keyGen[s.Key].Contains(ord), "keyGen lacks %d under %s", ord, s.Key)
		}
		for fp, set := range e.keyGen {
			if set.Contains(ord) {
				require.True(t, slices.ContainsFunc(l, func(s LinkedPseudonym) bool { return s.Key == fp }), "keyGen holds %d under %s, which none of its slots is", ord, fp)
			}
		}
		lines = append(lines, fmt.Sprintf("linked %s: %s", byOrd[ord], strings.Join(parts, " ")))
	}
	require.Equal(t, e.dir.Slots()-e.dir.Len(), extra, "pseudonyms beyond one per person")
	sort.Strings(lines)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

// capsDump describes the caps and every counter, by person. Caller holds
// mu.
func capsDump(e *Engine, byOrd map[uint32]anonymize.Pseudonym) string {
	var lines []string
	for name, c := range e.caps {
		lines = append(lines, fmt.Sprintf("cap %s %+v id=%d", name, c.Cap, c.id))
		c.counts.eachWord(c, func(ord uint32, w capWord) {
			lines = append(lines, fmt.Sprintf("  %s %s %x/%d", name, byOrd[ord], w.counts, w.last))
		})
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// followedReplicas starts n replicas of j with opts, each with its own
// journal reader, which stops when the test ends.
func followedReplicas(t *testing.T, j *memJournal, n int, opts Options) []*Engine {
	t.Helper()
	stop := make(chan struct{})
	var done sync.WaitGroup
	t.Cleanup(func() { close(stop); done.Wait() })
	rs := make([]*Engine, n)
	for i := range rs {
		e, err := NewReplica(opts, j, ReplicaOptions{})
		require.NoError(t, err)
		rs[i] = e
		done.Go(func() { j.follow(t, e, stop) })
	}
	return rs
}

func device(i int) anonymize.Identifier { return anonymize.DeviceID(fmt.Sprintf("device-%d", i)) }
func userID(i int) anonymize.Identifier { return anonymize.UserID(fmt.Sprintf("user-%d", i)) }
func phone(i int) anonymize.Identifier  { return anonymize.Phone(fmt.Sprintf("+4420794609%02d", i)) }
