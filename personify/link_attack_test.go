package personify

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/stretchr/testify/require"
)

// attackInvariants checks, beyond stateDump/linksDump, that the engine's
// bookkeeping is consistent: every slot's ordinal is live, every live
// ordinal has exactly the slots links says (one if unlinked), keyGen holds
// exactly the keys of the slots (exactly one key for an unlinked person),
// no dead ordinal lingers anywhere, aliases point at live slots of their
// person, the free list has no duplicates and no live ordinal, and the
// directory's counters match the table.
func attackInvariants(t testing.TB, e *Engine) {
	t.Helper()
	e.mu.RLock()
	defer e.mu.RUnlock()
	tab := e.dir.Tab.Load()
	slotsOf := map[uint32][]anonymize.Pseudonym{}
	n := 0
	tab.Each(func(p anonymize.Pseudonym, en index.Entry) {
		n++
		slotsOf[en.Ord()] = append(slotsOf[en.Ord()], p)
	})
	require.Equal(t, n, e.dir.Slots(), "dir.Slots() vs the table")
	require.Equal(t, len(slotsOf), e.dir.Len(), "dir.Len() vs the ordinals in the table")
	require.Equal(t, e.live.Len(), e.dir.Len(), "live set vs dir.Len()")
	for ord, ps := range slotsOf {
		require.True(t, e.live.Contains(ord), "ordinal %d has slots but is not live", ord)
		if l, ok := e.links[ord]; ok {
			var want []anonymize.Pseudonym
			for _, s := range l {
				want = append(want, s.Pseudonym)
			}
			require.ElementsMatch(t, want, ps, "slots of linked person %d", ord)
			// devices last
			seenDev := false
			for _, s := range l {
				if isDevice(s.Kind) {
					seenDev = true
				} else {
					require.False(t, seenDev, "links[%d]: a non-device after a device: %v", ord, l)
				}
			}
			require.LessOrEqual(t, len(l), MaxLinked, "links[%d]", ord)
		} else {
			require.Len(t, ps, 1, "unlinked ordinal %d has %d slots", ord, len(ps))
			keys := 0
			for _, s := range e.keyGen {
				if s.Contains(ord) {
					keys++
				}
			}
			require.Equal(t, 1, keys, "unlinked ordinal %d is under %d keys", ord, keys)
		}
	}
	for ord := range e.links {
		require.True(t, e.live.Contains(ord), "links[%d] for a dead ordinal", ord)
	}
	inRing := map[anonymize.Fingerprint]bool{}
	for _, k := range e.ringKeys() {
		inRing[k.Fingerprint] = true
	}
	for fp, s := range e.keyGen {
		require.True(t, inRing[fp], "keyGen under %s, not in the ring", fp)
		for o := range s.All() {
			require.True(t, e.live.Contains(o), "keyGen[%s] holds dead ordinal %d", fp, o)
		}
	}
	for _, st := range e.segs {
		for o := range st.members().All() {
			require.True(t, e.live.Contains(o), "segment %s holds dead ordinal %d", st.Name, o)
		}
	}
	for _, ps := range e.purposeByBit {
		for o := range ps.granted.All() {
			require.True(t, e.live.Contains(o), "granted holds dead %d", o)
		}
		for o := range ps.denied.All() {
			require.True(t, e.live.Contains(o), "denied holds dead %d", o)
			require.False(t, ps.granted.Contains(o), "granted and denied %d", o)
		}
		for o := range ps.suppressed.All() {
			require.True(t, e.live.Contains(o), "suppressed holds dead %d", o)
		}
	}
	for o := range e.suppressedAll.All() {
		require.True(t, e.live.Contains(o), "suppressedAll holds dead %d", o)
	}
	for q, a := range e.aliases {
		require.True(t, e.live.Contains(a.ord), "alias %s of dead ordinal %d", q, a.ord)
		en, ok := tab.Get(a.primary)
		require.True(t, ok, "alias %s: primary %s has no slot", q, a.primary)
		require.Equal(t, a.ord, en.Ord(), "alias %s: primary %s holds another person", q, a.primary)
		_, clash := tab.Get(q)
		require.False(t, clash, "alias %s also has a slot", q)
		require.True(t, inRing[a.key], "alias %s under %s, not in the ring", q, a.key)
	}
	m, _, _ := e.dir.Snapshot()
	seen := map[uint32]bool{}
	for _, o := range m.Free {
		require.False(t, seen[o], "ordinal %d released twice", o)
		seen[o] = true
		require.False(t, e.live.Contains(o), "free ordinal %d is live", o)
	}
	require.Equal(t, int(m.Next), len(m.Free)+e.dir.Len(), "ordinals: next %d, free %d, live %d", m.Next, len(m.Free), e.dir.Len())
}

// attackPseudonymFor returns what Pseudonym returns (an older key's
// pseudonym during a grace period, if the person is stored under it) when
// lookup is true, else the current key's.
func attackPseudonymFor(t testing.TB, e *Engine, id anonymize.Identifier, lookup bool) anonymize.Pseudonym {
	t.Helper()
	if lookup {
		return attackPseudonym(t, e, id)
	}
	p, err := e.keyring().Pseudonym(id)
	require.NoError(t, err)
	return p
}

func attackPseudonym(t testing.TB, e *Engine, id anonymize.Identifier) anonymize.Pseudonym {
	t.Helper()
	p, err := e.Pseudonym(id)
	require.NoError(t, err)
	return p
}

func attackSnapshotRoundTrip(t testing.TB, e *Engine, opts Options) *Engine {
	t.Helper()
	var buf bytes.Buffer
	_, err := e.WriteSnapshot(&buf)
	require.NoError(t, err)
	f, err := New(opts)
	require.NoError(t, err)
	require.NoError(t, f.LoadSnapshot(bytes.NewReader(buf.Bytes())))
	require.Equal(t, stateDump(t, e), stateDump(t, f), "snapshot round trip")
	attackInvariants(t, f)
	return f
}

// attackRotated returns a link engine whose key was rotated to fuzzKey2
// with a day's grace, with person 1 (runners) and device 1 linked before
// the rotation.
func attackRotated(t *testing.T) *testEngine {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), person(2), person(3)))
	require.NoError(t, e.Link(person(1), device(1)))
	require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), 24*time.Hour))
	return e
}

// Link's doc: "It returns ErrTooManyLinked past MaxLinked identifiers
// [...]; in both cases nothing changes." After a rotation, the refused
// Link has re-keyed the identifiers it named (aliases added, slots
// moved) before it counted.
func TestAttackTooManyLinkedAfterRotationChangesNothing(t *testing.T) {
	e := linkEngine(t)
	ids := []anonymize.Identifier{person(1)}
	for i := range MaxLinked - 1 {
		ids = append(ids, device(i))
	}
	require.NoError(t, e.Link(ids...))
	require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), 24*time.Hour))
	before := stateDump(t, e.Engine)
	require.ErrorIs(t, e.Link(person(1), device(0), userID(1)), ErrTooManyLinked)
	attackInvariants(t, e.Engine)
	require.Equal(t, before, stateDump(t, e.Engine), "a refused link changes nothing")
}

// LinkPseudonyms with a pseudonym that is stored under the previous key
// (a warehouse table computed before the rotation, as AddPseudonyms
// accepts during grace): the slot is recorded in links as under the
// current key, keyGen still holds it under the old key, and when the old
// key is destroyed the old-key pseudonym outlives it; Forget by the
// identifier no longer finds it.
func TestAttackLinkPseudonymsOldKeySlotOutlivesItsKey(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), person(2), person(3)))
	first := attackPseudonym(t, e.Engine, person(1))
	require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), time.Hour))
	// Pseudonym, during the grace period, answers the first key's
	// pseudonym of a person not re-keyed yet: what a caller passes on.
	old := attackPseudonym(t, e.Engine, person(1))
	require.Equal(t, first, old)
	ph := attackPseudonym(t, e.Engine, phone(1)) // under the new key
	before := stateDump(t, e.Engine)
	if err := e.LinkPseudonyms([]LinkedPseudonym{{Kind: anonymize.KindEmail, Pseudonym: old}, {Kind: anonymize.KindPhone, Pseudonym: ph}}); err != nil {
		require.ErrorIs(t, err, ErrKeyChanged) // refusing it is a fix
		require.Equal(t, before, stateDump(t, e.Engine))
		return
	}
	e.clock.Advance(2 * time.Hour)
	_, err := e.Expire(e.clock.Now())
	require.NoError(t, err)
	// The person asks to be forgotten, by their email: the receipt
	// erases nothing, and the person stays stored, their email under the
	// destroyed key's pseudonym, linked to their phone.
	r, err := e.Forget(person(1))
	require.NoError(t, err)
	e.mu.RLock()
	_, stillThere := e.dir.Get(old)
	e.mu.RUnlock()
	require.False(t, stillThere && len(r.Segments) == 0, "Forget(email) erased nothing: the old-key slot is still stored, in runners=%v", e.In(ph, "runners"))
}

// attackKeys are the keys random workloads rotate through, in order.
func attackKeys(t testing.TB) []anonymize.Key {
	var ks []anonymize.Key
	for i := range 8 {
		b := make([]byte, 32)
		for j := range b {
			b[j] = byte(0x80 + i*13 + j*3) // none of the test keys
		}
		k, err := anonymize.KeyFromBytes(b)
		require.NoError(t, err)
		ks = append(ks, k)
	}
	return ks
}

func attackID(r *rand.Rand, pool int) anonymize.Identifier {
	i := r.IntN(pool)
	switch r.IntN(4) {
	case 0:
		return person(i)
	case 1:
		return phone(i)
	case 2:
		return userID(i)
	}
	return device(i)
}

func attackStrong(r *rand.Rand, pool int) anonymize.Identifier {
	for {
		if id := attackID(r, pool); id.Kind() != anonymize.KindDeviceID {
			return id
		}
	}
}

// attackOK fails on an error a random workload does not expect.
func attackOK(t testing.TB, err error, allowed ...error) {
	t.Helper()
	if err == nil {
		return
	}
	if attackFleet && (errors.Is(err, ErrKeyChanged) || errors.Is(err, ErrUnknownSegment)) { // a rotation or a redefinition another replica made, not seen yet
		return
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return
		}
	}
	require.NoError(t, err)
}

// attackExtraSegs: segments s0, s1, ... the workload adds to as well
// (attackDefine defines them), so that people overflow their slot.
var attackExtraSegs int

// attackFleet: the workload runs on replicas, whose writes may race a
// rotation.
var attackFleet bool

// attackWorkload applies a random mix of every change, links,
// rotations and expiry included, to e; check runs after each step.
func attackWorkload(t testing.TB, eng func() *Engine, clock *fakeClock, seed uint64, rounds int, oldPseudonyms bool, check func(step int, what string)) {
	r := rand.New(rand.NewPCG(seed, seed*7+1))
	keys := attackKeys(t)
	nextKey := 0
	segs := []string{"runners", "recent", "news"}
	for i := range attackExtraSegs {
		segs = append(segs, fmt.Sprintf("s%d", i))
	}
	purposes := []string{"ads", "email"}
	const pool = 12
	var old []anonymize.Pseudonym // pseudonyms computed under earlier keys
	for i := range rounds {
		e := eng()
		clock.Advance(time.Duration(r.IntN(5)) * time.Hour)
		var what string
		k := r.IntN(21)
		if attackFleet && k == 20 {
			k = 0 // replicas would race the redefinition
		}
		switch k {
		case 20:
			name := segs[r.IntN(len(segs))]
			what = "drop and define " + name
			def, err := e.Segment(name)
			require.NoError(t, err)
			attackOK(t, e.Drop(name))
			attackOK(t, e.Define(def))
		case 0, 1, 2:
			n := 1 + r.IntN(4)
			var ids []anonymize.Identifier
			for range n {
				ids = append(ids, attackID(r, pool))
			}
			what = fmt.Sprintf("add %v", ids)
			times := 1
			if attackExtraSegs > 0 {
				times = 1 + r.IntN(10)
			}
			for range times {
				attackOK(t, e.Add(segs[r.IntN(len(segs))], ids...))
			}
		case 3:
			id := attackID(r, pool)
			what = fmt.Sprintf("remove %v", id)
			attackOK(t, e.Remove(segs[r.IntN(len(segs))], id))
		case 4:
			id := attackID(r, pool)
			what = fmt.Sprintf("consent %v", id)
			attackOK(t, e.SetConsent(id, purposes[r.IntN(2)], r.IntN(2) == 0))
		case 5:
			id := attackID(r, pool)
			what = fmt.Sprintf("suppress %v", id)
			if r.IntN(2) == 0 {
				attackOK(t, e.Suppress(id, purposes[r.IntN(2)]))
			} else {
				attackOK(t, e.Unsuppress(id))
			}
		case 6, 7, 8, 9:
			n := 2 + r.IntN(3)
			ids := []anonymize.Identifier{attackStrong(r, pool)}
			for len(ids) < n {
				id := attackID(r, pool)
				if !slices.ContainsFunc(ids, func(x anonymize.Identifier) bool { return x.Kind() == id.Kind() && x.String() == id.String() }) {
					ids = append(ids, id)
				}
			}
			r.Shuffle(len(ids), func(a, b int) { ids[a], ids[b] = ids[b], ids[a] })
			what = fmt.Sprintf("link %v", ids)
			attackOK(t, e.Link(ids...), ErrTooManyLinked, ErrDoNotReAdd)
		case 10, 11:
			id := attackID(r, pool)
			what = fmt.Sprintf("unlink %v", id)
			attackOK(t, e.Unlink(id), ErrNotLinked)
		case 12:
			id := attackID(r, pool)
			what = fmt.Sprintf("forget %v", id)
			_, err := e.ForgetWith(id, ForgetOptions{DoNotReAdd: r.IntN(3) == 0})
			attackOK(t, err)
		case 13:
			if nextKey < len(keys) && r.IntN(2) == 0 {
				for _, id := range []anonymize.Identifier{person(r.IntN(pool)), device(r.IntN(pool)), phone(r.IntN(pool))} {
					p, err := e.Pseudonym(id)
					require.NoError(t, err)
					old = append(old, p)
				}
				what = "rotate"
				attackOK(t, e.RotateKey(keys[nextKey], time.Duration(1+r.IntN(10))*time.Hour))
				nextKey++
			} else {
				what = "expire"
				_, err := e.Expire(clock.Now())
				attackOK(t, err)
			}
		case 14:
			clock.Advance(time.Duration(r.IntN(30)) * time.Hour)
			what = "expire"
			_, err := e.Expire(clock.Now())
			attackOK(t, err)
		case 15, 16:
			var ps []anonymize.Pseudonym
			for range 1 + r.IntN(4) {
				if oldPseudonyms && len(old) > 0 && r.IntN(3) == 0 {
					ps = append(ps, old[r.IntN(len(old))])
					continue
				}
				p, err := e.Pseudonym(attackID(r, pool))
				require.NoError(t, err)
				ps = append(ps, p)
			}
			what = fmt.Sprintf("add-pseudonyms %v", ps)
			attackOK(t, e.AddPseudonyms(segs[r.IntN(len(segs))], ps))
		case 17:
			var people [][]LinkedPseudonym
			for range 1 + r.IntN(2) {
				ids := []anonymize.Identifier{attackStrong(r, pool), attackID(r, pool)}
				var g []LinkedPseudonym
				for _, id := range ids {
					p := attackPseudonymFor(t, e, id, oldPseudonyms)
					if slices.ContainsFunc(g, func(x LinkedPseudonym) bool { return x.Pseudonym == p }) {
						continue
					}
					g = append(g, LinkedPseudonym{Kind: id.Kind(), Pseudonym: p})
				}
				if len(g) == 2 {
					people = append(people, g)
				}
			}
			if len(people) == 0 {
				continue
			}
			what = fmt.Sprintf("link-pseudonyms %v", people)
			attackOK(t, e.LinkPseudonyms(people...), ErrTooManyLinked, ErrKeyChanged) // ErrKeyChanged: a fix refuses old-key pseudonyms
		case 18:
			var ps []anonymize.Pseudonym
			for range 1 + r.IntN(3) {
				p, err := e.Pseudonym(attackID(r, pool))
				require.NoError(t, err)
				ps = append(ps, p)
			}
			what = "remove-pseudonyms"
			attackOK(t, e.RemovePseudonyms(segs[r.IntN(len(segs))], ps))
		case 19:
			what = "audience"
			a, err := e.Audience("runners", "ads")
			if err == nil {
				seen := map[anonymize.Pseudonym]bool{}
				n := 0
				for p := range a.Pseudonyms() {
					require.False(t, seen[p])
					seen[p] = true
					n++
				}
				require.Equal(t, a.Count, n, "an audience lists one pseudonym per person")
			} else {
				attackOK(t, err, ErrAudienceTooSmall)
			}
		}
		if check != nil {
			check(i, what)
		}
	}
}

func attackDefine(t testing.TB, e *Engine) {
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.DefinePurpose(Purpose{Name: "email", Model: OptIn}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Define(Segment{Name: "recent", Purpose: "ads", Retention: 20 * time.Hour}))
	require.NoError(t, e.Define(Segment{Name: "news", Purpose: "email"}))
	for i := range attackExtraSegs {
		require.NoError(t, e.Define(Segment{Name: fmt.Sprintf("s%d", i), Purpose: []string{"ads", "email"}[i%2]}))
	}
}

func attackMemOptions(t testing.TB, clock *fakeClock) Options {
	return Options{Key: mustKey(t, testKeyHex), K: 1, Now: clock.Now, UpcomingKeys: attackKeys(t)}
}

// A random workload keeps every invariant after every step, and every
// state survives a snapshot round trip.
func TestAttackRandomWorkloadInvariants(t *testing.T) {
	seeds, rounds := uint64(20), 300
	if s := os.Getenv("ATTACK_SEEDS"); s != "" {
		fmt.Sscan(s, &seeds)
		rounds = 600
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clock := &fakeClock{t: t0}
			opts := attackMemOptions(t, clock)
			e, err := New(opts)
			require.NoError(t, err)
			defer e.Close()
			attackDefine(t, e)
			var last string
			attackWorkload(t, func() *Engine { return e }, clock, seed, rounds, os.Getenv("ATTACK_OLD") != "", func(step int, what string) {
				t.Helper()
				ok := t.Run("", func(t *testing.T) {
					attackInvariants(t, e)
					_ = stateDump(t, e)
					if step%25 == 0 {
						f := attackSnapshotRoundTrip(t, e, opts)
						f.Close()
					}
				})
				if !ok {
					t.Fatalf("step %d (%s) broke an invariant; the step before: %s", step, what, last)
				}
				last = what
			})
		})
	}
}

// attackAliasedDevice: person 1 (runners, news) linked with device 1
// under the first key; the key rotated; device 1 written by identifier,
// so re-keyed: its first-key pseudonym is an alias. It returns the
// device's current pseudonym and its alias.
func attackAliasedDevice(t *testing.T) (e *testEngine, cur, alias anonymize.Pseudonym) {
	e = linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), person(2), person(3)))
	require.NoError(t, e.Add("news", person(1)))
	require.NoError(t, e.Link(person(1), device(1)))
	alias = attackPseudonym(t, e.Engine, device(1))
	require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), 24*time.Hour))
	require.NoError(t, e.Add("browsing", device(1))) // re-keys the device's slot
	require.NoError(t, e.Add("runners", person(2)))  // and person 2's
	cur = attackPseudonym(t, e.Engine, device(1))
	require.NotEqual(t, alias, cur)
	e.mu.RLock()
	_, isAlias := e.aliases[alias]
	e.mu.RUnlock()
	require.True(t, isAlias)
	attackInvariants(t, e.Engine)
	return e, cur, alias
}

// LinkPseudonyms naming, for one person, a device's current pseudonym and
// its older key's pseudonym (a warehouse identity table that kept both
// across the rotation): both resolve to the same slot of person 1; the
// first moves the device, the second then takes person 1 for an
// anonymous device-only person (their links entry is gone) and drops
// them by the device's pseudonym: the ordinal is released while person
// 1's email slot still holds it, the moved device's new slot is deleted,
// and person 1's memberships are gone.
func TestAttackLinkPseudonymsDeviceAndItsAliasCorruptsThePerson(t *testing.T) {
	e, cur, alias := attackAliasedDevice(t)
	p2 := attackPseudonym(t, e.Engine, person(2))
	before := stateDump(t, e.Engine)
	err := e.LinkPseudonyms([]LinkedPseudonym{
		{Kind: anonymize.KindEmail, Pseudonym: p2},
		{Kind: anonymize.KindDeviceID, Pseudonym: cur},
		{Kind: anonymize.KindDeviceID, Pseudonym: alias},
	})
	if err != nil {
		require.ErrorIs(t, err, ErrKeyChanged) // refusing it is a fix
		require.Equal(t, before, stateDump(t, e.Engine))
		return
	}
	// Person 1's email slot still holds the released ordinal: the next
	// new person gets it, and forgetting person 1 erases them.
	require.NoError(t, e.Add("news", person(9)))
	_, err = e.Forget(person(1))
	require.NoError(t, err)
	r, err := e.Explain(person(9))
	require.NoError(t, err)
	require.Len(t, r.Segments, 1, "forgetting person 1 erased person 9's membership")
	attackInvariants(t, e.Engine)
}

// The same with the alias alone: the device moves to person 2, but its
// slot is now its first key's pseudonym, recorded under the current key:
// Pseudonym(device) (its current pseudonym) finds no one, and the old
// key's pseudonym outlives that key.
func TestAttackLinkPseudonymsAliasReplacesTheCurrentSlot(t *testing.T) {
	e, cur, alias := attackAliasedDevice(t)
	p2 := attackPseudonym(t, e.Engine, person(2))
	before := stateDump(t, e.Engine)
	if err := e.LinkPseudonyms([]LinkedPseudonym{
		{Kind: anonymize.KindEmail, Pseudonym: p2},
		{Kind: anonymize.KindDeviceID, Pseudonym: alias},
	}); err != nil {
		require.ErrorIs(t, err, ErrKeyChanged) // refusing it is a fix
		require.Equal(t, before, stateDump(t, e.Engine))
		return
	}
	attackInvariants(t, e.Engine)
	_ = stateDump(t, e.Engine)
	require.True(t, e.In(cur, "runners"), "the device, by its current pseudonym, no longer finds person 2")
}

// A durable engine replays its log, and loads its snapshot, to the state
// it had, through links, rotations and expiry.
func TestAttackDurableReplayDeterminism(t *testing.T) {
	seeds, rounds := uint64(4), 250
	if s := os.Getenv("ATTACK_SEEDS"); s != "" {
		fmt.Sscan(s, &seeds)
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			d := newDurableEnv(t)
			d.opts.UpcomingKeys = attackKeys(t)
			d.opts.K = 1
			e := d.open(t)
			defer func() { e.Close() }()
			attackDefine(t, e)
			r := rand.New(rand.NewPCG(seed, 99))
			attackWorkload(t, func() *Engine { return e }, d.clock, seed, rounds, os.Getenv("ATTACK_OLD") != "", func(step int, what string) {
				if r.IntN(15) != 0 {
					return
				}
				want := stateDump(t, e)
				compacted := r.IntN(2) == 0
				if compacted {
					require.NoError(t, e.Compact())
				}
				attackReopenKeys(t, e, &d.opts)
				require.NoError(t, e.Close())
				e = d.open(t)
				require.Equal(t, want, stateDump(t, e), "step %d (%s), reopened (compacted: %v)", step, what, compacted)
				attackInvariants(t, e)
			})
		})
	}
}

// attackReopenKeys sets opts' keys to e's keyring: its current key as Key,
// the others as PreviousKeys.
func attackReopenKeys(t testing.TB, e *Engine, opts *Options) {
	opts.PreviousKeys = nil
	cur := e.keyring().Current()
	opts.UpcomingKeys = nil
	for _, k := range append(attackKeys(t), mustKey(t, testKeyHex)) {
		if k.Fingerprint() != cur {
			opts.UpcomingKeys = append(opts.UpcomingKeys, k) // older snapshots may name destroyed keys
		}
	}
	for _, k := range e.ringKeys() {
		key := e.key(k.Fingerprint)
		require.False(t, key.IsZero())
		if k.Current {
			opts.Key = key
		} else {
			opts.PreviousKeys = append(opts.PreviousKeys, PreviousKey{Key: key, Until: k.Until})
		}
	}
}

// Replicas of a fleet, written to alternately, converge through links,
// rotations and expiry.
func TestAttackReplicasConverge(t *testing.T) {
	seeds := uint64(3)
	if s := os.Getenv("ATTACK_SEEDS"); s != "" {
		fmt.Sscan(s, &seeds)
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			j := newMemJournal()
			clock := &fakeClock{t: t0}
			stop := make(chan struct{})
			var readers []chan struct{}
			var replicas []*Engine
			for range 2 {
				e, err := NewReplica(attackMemOptions(t, clock), j, ReplicaOptions{})
				require.NoError(t, err)
				replicas = append(replicas, e)
				done := make(chan struct{})
				readers = append(readers, done)
				go func() { defer close(done); j.follow(t, e, stop) }()
			}
			defer func() {
				close(stop)
				for _, d := range readers {
					<-d
				}
			}()
			attackDefine(t, replicas[0])
			defs := uint64(len(j.log))
			require.Eventually(t, func() bool { return replicas[1].Applied() == defs }, 5*time.Second, time.Millisecond)
			attackFleet = true
			defer func() { attackFleet = false }()
			n := 0
			attackWorkload(t, func() *Engine { n++; return replicas[n%2] }, clock, seed, 200, false, nil)
			last := uint64(len(j.log))
			require.Eventually(t, func() bool { return replicas[0].Applied() == last && replicas[1].Applied() == last }, 10*time.Second, time.Millisecond)
			require.Equal(t, stateDump(t, replicas[0]), stateDump(t, replicas[1]))
			t.Logf("%d changes, %+v", last, replicas[0].Stats())
			attackInvariants(t, replicas[0])
		})
	}
}

// The same workload with people in many segments (overflow records,
// copied per slot) and compaction whenever there is garbage.
func TestAttackRandomWorkloadOverflowAndCompaction(t *testing.T) {
	attackExtraSegs = 24
	minGarbage := compactMinGarbage
	compactMinGarbage = 0
	defer func() { attackExtraSegs, compactMinGarbage = 0, minGarbage }()
	seeds := uint64(8)
	if s := os.Getenv("ATTACK_SEEDS"); s != "" {
		fmt.Sscan(s, &seeds)
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clock := &fakeClock{t: t0}
			opts := attackMemOptions(t, clock)
			e, err := New(opts)
			require.NoError(t, err)
			defer e.Close()
			attackDefine(t, e)
			attackWorkload(t, func() *Engine { return e }, clock, seed+1000, 400, false, func(step int, what string) {
				attackInvariants(t, e)
				_ = stateDump(t, e)
				if step%50 == 0 {
					attackSnapshotRoundTrip(t, e, opts).Close()
				}
			})
			over := 0
			e.dir.Tab.Load().Each(func(_ anonymize.Pseudonym, en index.Entry) {
				if en.Overflow() {
					over++
				}
			})
			t.Logf("%d overflow entries, %+v", over, e.Stats())
		})
	}
}

// Lock-free lookups, Explain, Audience, Stats and snapshots by any
// linked pseudonym while Link, Unlink, Forget and writes run (go test
// -race).
func TestAttackConcurrentLookupsDuringLinks(t *testing.T) {
	e := linkEngine(t)
	var ps []anonymize.Pseudonym
	var ids []anonymize.Identifier
	for i := range 6 {
		for _, id := range []anonymize.Identifier{person(i), device(i), phone(i), userID(i)} {
			ids = append(ids, id)
			ps = append(ps, attackPseudonym(t, e.Engine, id))
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	for g := range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			var buf []string
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := ps[(i+g)%len(ps)]
				_ = e.In(p, "runners")
				buf = e.Segments(buf[:0], p, "ads")
				if i%50 == 0 {
					_, _ = e.Explain(ids[i%len(ids)])
					if a, err := e.Audience("runners", "ads"); err == nil {
						for range a.Pseudonyms() {
						}
					}
					_ = e.Stats()
				}
				if g == 0 && i%200 == 0 {
					var b bytes.Buffer
					_, _ = e.WriteSnapshot(&b)
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 1500 {
		k := r.IntN(6)
		switch r.IntN(6) {
		case 0, 1:
			attackOK(t, e.Link(person(k), device(r.IntN(6)), phone(k)), ErrTooManyLinked, ErrDoNotReAdd)
		case 2:
			attackOK(t, e.Unlink(ids[r.IntN(len(ids))]), ErrNotLinked)
		case 3:
			_, err := e.Forget(ids[r.IntN(len(ids))])
			attackOK(t, err)
		default:
			attackOK(t, e.Add([]string{"runners", "news", "browsing"}[r.IntN(3)], ids[r.IntN(len(ids))], ids[r.IntN(len(ids))]))
		}
		if i == 700 {
			require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), time.Hour))
		}
	}
	close(stop)
	for range 3 {
		<-done
	}
	attackInvariants(t, e.Engine)
	_ = stateDump(t, e.Engine)
}

// attackApplyCrafted encodes o, decodes it as a journal would, and applies
// it as a change read back; it must never panic.
func attackApplyCrafted(t *testing.T, e *Engine, o *op) (err error) {
	t.Helper()
	o.version = recVersion
	if o.at.IsZero() {
		o.at = t0
	}
	b := appendChange(nil, o)
	d, err := decodeChange(b, recVersion)
	if err != nil {
		return err
	}
	d.version = recVersion
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic applying a crafted change: %v", r)
		}
	}()
	_, err = e.applyRead(&d, "journal")
	return err
}

func attackLinkID(kind anonymize.Kind, kps ...anonymize.KeyedPseudonym) linkID {
	return linkID{kind: kind, kps: kps}
}

// Crafted link changes the validation refuses, and none that panics.
func TestAttackHostileLinkChangesRefused(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), person(2)))
	cur := e.keyring().Current()
	kp := func(p anonymize.Pseudonym) anonymize.KeyedPseudonym {
		return anonymize.KeyedPseudonym{Pseudonym: p, Key: cur}
	}
	p1 := attackPseudonym(t, e.Engine, person(1))
	bad := map[string]*op{
		"no one":                 {kind: opLink, links: [][]linkID{}},
		"one id":                 {kind: opLink, links: [][]linkID{{attackLinkID(anonymize.KindEmail, kp(p1))}}},
		"kind 0":                 {kind: opLink, links: [][]linkID{{attackLinkID(0, kp(1)), attackLinkID(anonymize.KindEmail, kp(p1))}}},
		"kind 5":                 {kind: opLink, links: [][]linkID{{attackLinkID(5, kp(1)), attackLinkID(anonymize.KindEmail, kp(p1))}}},
		"kind 255":               {kind: opLink, links: [][]linkID{{attackLinkID(255, kp(1)), attackLinkID(anonymize.KindEmail, kp(p1))}}},
		"devices only":           {kind: opLink, links: [][]linkID{{attackLinkID(anonymize.KindDeviceID, kp(1)), attackLinkID(anonymize.KindDeviceID, kp(2))}}},
		"twice":                  {kind: opLink, links: [][]linkID{{attackLinkID(anonymize.KindEmail, kp(p1)), attackLinkID(anonymize.KindDeviceID, kp(p1))}}},
		"no pseudonym":           {kind: opLink, links: [][]linkID{{attackLinkID(anonymize.KindEmail), attackLinkID(anonymize.KindDeviceID, kp(2))}}},
		"zero key":               {kind: opLink, links: [][]linkID{{attackLinkID(anonymize.KindEmail, anonymize.KeyedPseudonym{Pseudonym: 7}), attackLinkID(anonymize.KindDeviceID, kp(2))}}},
		"zero key, by pseudonym": {kind: opLink, flag: true, links: [][]linkID{{attackLinkID(anonymize.KindEmail, anonymize.KeyedPseudonym{Pseudonym: 7}), attackLinkID(anonymize.KindDeviceID, kp(2))}}},
		"two keys, by pseudonym": {kind: opLink, flag: true, links: [][]linkID{{attackLinkID(anonymize.KindEmail, kp(7), anonymize.KeyedPseudonym{Pseudonym: 8, Key: anonymize.Fingerprint{9}}), attackLinkID(anonymize.KindDeviceID, kp(2))}}},
		"unlink no one":          {kind: opUnlink, people: [][]anonymize.KeyedPseudonym{nil}},
	}
	var many []linkID
	for i := range MaxLinked + 1 {
		many = append(many, attackLinkID(anonymize.KindEmail, kp(anonymize.Pseudonym(100+i))))
	}
	bad["17 ids"] = &op{kind: opLink, links: [][]linkID{many}}
	before := stateDump(t, e.Engine)
	for name, o := range bad {
		err := attackApplyCrafted(t, e.Engine, o)
		require.ErrorIs(t, err, ErrInvalidChange, name)
	}
	// Under another key: refused at apply, not applied.
	other := anonymize.Fingerprint{1, 2, 3}
	err := attackApplyCrafted(t, e.Engine, &op{kind: opLink, links: [][]linkID{{attackLinkID(anonymize.KindEmail, anonymize.KeyedPseudonym{Pseudonym: 5, Key: other}), attackLinkID(anonymize.KindDeviceID, kp(2))}}})
	require.True(t, errors.Is(err, ErrKeyChanged) || errors.Is(err, ErrInvalidChange), "%v", err)
	err = attackApplyCrafted(t, e.Engine, &op{kind: opLink, flag: true, links: [][]linkID{{attackLinkID(anonymize.KindEmail, anonymize.KeyedPseudonym{Pseudonym: 5, Key: other}), attackLinkID(anonymize.KindDeviceID, kp(2))}}})
	require.True(t, errors.Is(err, ErrKeyChanged) || errors.Is(err, ErrInvalidChange), "%v", err)
	require.Equal(t, before, stateDump(t, e.Engine))

	// Huge counts and truncations decode to errors.
	good := appendChange(nil, &op{kind: opLink, at: t0, links: [][]linkID{{attackLinkID(anonymize.KindEmail, kp(p1)), attackLinkID(anonymize.KindDeviceID, kp(2))}}})
	for i := range len(good) {
		_, err := decodeChange(good[:i], recVersion)
		require.Error(t, err, "truncated at %d", i)
	}
	huge := append(good[:10:10], 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f)
	_, err = decodeChange(huge, recVersion)
	require.Error(t, err)
	attackInvariants(t, e.Engine)
}

// A crafted link (a journal row written by hand) whose second device
// names, as its older key's pseudonym, the slot the first device names:
// the second re-keys the slot the first was resolved to, the first then
// drops a person whose slot has moved, and the second drops them again:
// the ordinal is released twice, and two people later share it.
func TestAttackCraftedLinkReleasesAnOrdinalTwice(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), device(1)))
	cur := e.keyring().Current()
	kp := func(p anonymize.Pseudonym) anonymize.KeyedPseudonym {
		return anonymize.KeyedPseudonym{Pseudonym: p, Key: cur}
	}
	p1 := attackPseudonym(t, e.Engine, person(1))
	d1 := attackPseudonym(t, e.Engine, device(1))
	err := attackApplyCrafted(t, e.Engine, &op{kind: opLink, links: [][]linkID{{
		attackLinkID(anonymize.KindEmail, kp(p1)),
		attackLinkID(anonymize.KindDeviceID, kp(d1)),
		attackLinkID(anonymize.KindDeviceID, kp(12345), anonymize.KeyedPseudonym{Pseudonym: d1, Key: anonymize.Fingerprint{7}}),
	}}})
	t.Logf("applied: %v", err)
	e.mu.RLock()
	m, _, _ := e.dir.Snapshot()
	n := map[uint32]int{}
	e.dir.Tab.Load().Each(func(_ anonymize.Pseudonym, en index.Entry) { n[en.Ord()]++ })
	e.mu.RUnlock()
	seen := map[uint32]bool{}
	for _, o := range m.Free {
		require.False(t, seen[o], "ordinal %d released twice", o)
		seen[o] = true
		require.Zero(t, n[o], "released ordinal %d still has a slot", o)
	}
	require.Equal(t, len(n), e.dir.Len(), "people counted vs ordinals in the table")
}

// A crafted link (as a crafted Add could) naming, beyond the ring's keys,
// a pseudonym under a key the engine never had: the slot is re-keyed and
// an alias (and keyGen entry) is kept under a key that never expires.
func TestAttackCraftedLinkKeyOutsideTheRing(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), device(1)))
	cur := e.keyring().Current()
	p1 := attackPseudonym(t, e.Engine, person(1))
	d1 := attackPseudonym(t, e.Engine, device(1))
	err := attackApplyCrafted(t, e.Engine, &op{kind: opLink, links: [][]linkID{{
		attackLinkID(anonymize.KindEmail, anonymize.KeyedPseudonym{Pseudonym: p1, Key: cur}),
		attackLinkID(anonymize.KindDeviceID, anonymize.KeyedPseudonym{Pseudonym: 12345, Key: cur}, anonymize.KeyedPseudonym{Pseudonym: d1, Key: anonymize.Fingerprint{7}}),
	}}})
	if err != nil {
		return // refused: fine
	}
	attackInvariants(t, e.Engine)
}

// Two people, each re-keyed (aliases), merged; Forget through one of them
// (by identifier, so under every key) erases every slot and alias, the
// receipt lists each with its kind, and do-not-re-add covers each.
func TestAttackMergeWithAliasesThenForget(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), person(2), person(3), phone(1)))
	require.NoError(t, e.Link(person(1), device(1)))
	old := map[anonymize.Pseudonym]anonymize.Kind{}
	for _, id := range []anonymize.Identifier{person(1), device(1), phone(1)} {
		old[attackPseudonym(t, e.Engine, id)] = id.Kind()
	}
	require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), 24*time.Hour))
	require.NoError(t, e.Add("news", person(1), phone(1))) // both re-keyed; device 1 not
	require.NoError(t, e.Link(phone(1), person(1)))        // merge: phone's person is the target
	attackInvariants(t, e.Engine)
	_ = stateDump(t, e.Engine)
	r, err := e.ForgetWith(device(1), ForgetOptions{DoNotReAdd: true})
	require.NoError(t, err)
	require.NoError(t, e.VerifyReceipt(r))
	got := map[anonymize.Pseudonym]anonymize.Kind{}
	for _, l := range r.Linked {
		require.NotZero(t, l.Kind, "receipt lists %s with no kind", l.Pseudonym)
		got[l.Pseudonym] = l.Kind
	}
	for p, k := range old {
		require.Equal(t, k, got[p], "old-key pseudonym %s", p)
	}
	for _, id := range []anonymize.Identifier{person(1), phone(1)} {
		p, err := e.keyring().Pseudonym(id)
		require.NoError(t, err)
		require.Equal(t, id.Kind(), got[p], "%s", id.Kind())
	}
	require.Len(t, r.Linked, 5, "3 slots (email, phone under the new key; device under the old) and 2 aliases")
	require.Equal(t, 2, e.Stats().People)
	require.Equal(t, 2, e.Stats().Pseudonyms)
	attackInvariants(t, e.Engine)
	// DoNotReAdd holds through the expiry for the two written under the
	// new key.
	e.clock.Advance(48 * time.Hour)
	_, err = e.Expire(e.clock.Now())
	require.NoError(t, err)
	require.NoError(t, e.Add("runners", person(1), phone(1)))
	require.False(t, e.In(attackPseudonym(t, e.Engine, person(1)), "runners"))
	require.False(t, e.In(attackPseudonym(t, e.Engine, phone(1)), "runners"))
}

// A device re-keyed in person 1 moves to person 2: its alias goes with
// it... or rather, is dropped (the device's slot is new); nothing of it
// stays with person 1.
func TestAttackDeviceWithAliasMoves(t *testing.T) {
	e, cur, alias := attackAliasedDevice(t)
	require.NoError(t, e.Link(person(2), device(1)))
	attackInvariants(t, e.Engine)
	_ = stateDump(t, e.Engine)
	require.False(t, e.In(cur, "news"), "the device no longer serves person 1")
	require.False(t, e.In(alias, "news"), "the device's old pseudonym no longer serves person 1")
	r, err := e.Forget(person(1))
	require.NoError(t, err)
	for _, l := range r.Linked {
		require.NotEqual(t, alias, l.Pseudonym)
		require.NotEqual(t, cur, l.Pseudonym)
	}
	require.True(t, e.In(cur, "runners"), "person 2's device")
}

// Unlink of an identifier stored only under the previous key.
func TestAttackUnlinkUnderTheOldKey(t *testing.T) {
	e := attackRotated(t)
	d := attackPseudonym(t, e.Engine, device(1)) // the first key's
	require.NoError(t, e.Unlink(device(1)))
	attackInvariants(t, e.Engine)
	_ = stateDump(t, e.Engine)
	require.False(t, e.In(d, "runners"))
	require.True(t, e.In(attackPseudonym(t, e.Engine, person(1)), "runners"))
	require.ErrorIs(t, e.Unlink(person(1)), ErrNotLinked)
	e.clock.Advance(48 * time.Hour)
	_, err := e.Expire(e.clock.Now())
	require.NoError(t, err)
	attackInvariants(t, e.Engine)
	require.Equal(t, 0, e.Stats().People, "no one was re-keyed: all shredded with the key")
}

// Forget during the grace period of a person with slots under both keys
// erases every slot and alias.
func TestAttackForgetDuringGraceErasesEveryKey(t *testing.T) {
	e := attackRotated(t)
	require.NoError(t, e.Link(person(1), phone(1))) // person 1 re-keyed, phone new under the new key; device 1 under the old
	before := e.Stats()
	require.Equal(t, 3, before.Pseudonyms-before.People+1)
	r, err := e.Forget(phone(1))
	require.NoError(t, err)
	require.Len(t, r.Linked, 4, "email (new), phone (new), device (old), email alias (old)")
	require.Equal(t, 2, e.Stats().People)
	require.Equal(t, 2, e.Stats().Pseudonyms)
	e.mu.RLock()
	require.Empty(t, e.aliases)
	require.Empty(t, e.links)
	e.mu.RUnlock()
	attackInvariants(t, e.Engine)
}

// Expire releases people with nothing stored; a linked person with no
// membership or consent yet (a visitor who signed in) loses their links:
// what the device does next no longer reaches the account.
func TestAttackExpireUndoesALinkWithNothingStored(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Link(userID(1), device(1)))
	_, err := e.Expire(e.clock.Now())
	require.NoError(t, err)
	require.NoError(t, e.Add("browsing", device(1)))
	require.True(t, e.In(attackPseudonym(t, e.Engine, userID(1)), "browsing"), "the link was undone by Expire")
}

// An audience built before a device moves keeps yielding the device's
// pseudonym, which now belongs to a person who is suppressed and was
// never in the audience (mergeLocked and detachSlotLocked bump
// e.forgets, but Pseudonyms only skips pseudonyms no longer stored).
func TestAttackAudienceYieldsAMovedDevice(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), person(3), person(4), device(1)))
	require.NoError(t, e.Suppress(person(2)))
	a, err := e.Audience("runners", "ads")
	require.NoError(t, err)
	d := attackPseudonym(t, e.Engine, device(1))
	require.NoError(t, e.Link(person(2), device(1))) // the anonymous device was person 2's, who is suppressed
	require.Empty(t, e.Segments(nil, d, "ads"))
	for p := range a.Pseudonyms() {
		require.NotEqual(t, d, p, "the audience yields a suppressed person's device")
	}
}

// Link's doc: "It returns ErrTooManyLinked past MaxLinked identifiers";
// a Link naming more than MaxLinked returns ErrInvalidChange.
func TestAttackLinkOfTooManyIdentifiersErrTooManyLinked(t *testing.T) {
	e := linkEngine(t)
	ids := []anonymize.Identifier{person(1)}
	for i := range MaxLinked {
		ids = append(ids, device(i))
	}
	require.ErrorIs(t, e.Link(ids...), ErrTooManyLinked)
}
