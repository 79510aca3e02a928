package personify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// linkEngine has segments "runners" (ads, opt-out) and "news" (email,
// opt-in) and k = 3 (newTestEngine).
func linkEngine(t *testing.T) *testEngine {
	e := newTestEngine(t)
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Define(Segment{Name: "news", Purpose: "email"}))
	require.NoError(t, e.Define(Segment{Name: "browsing", Purpose: "ads"}))
	return e
}

func TestLinkServesThePersonByEveryIdentifier(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), person(2), person(3)))
	require.NoError(t, e.Link(person(1), device(1), phone(1), userID(1)))
	for _, id := range []anonymize.Identifier{person(1), device(1), phone(1), userID(1)} {
		p := e.mustPseudonym(t, id)
		assert.True(t, e.In(p, "runners"), "%s", id.Kind())
		assert.Equal(t, []string{"runners"}, e.Segments(nil, p, "ads"), "%s", id.Kind())
		assert.Zero(t, testing.AllocsPerRun(100, func() { e.In(p, "runners") }))
	}
	// Memberships are the person's: segments and audiences count people.
	s := e.Stats()
	assert.Equal(t, 3, s.People)
	assert.Equal(t, 6, s.Pseudonyms)
	assert.Equal(t, 3, s.Memberships)
	a, err := e.Audience("runners", "ads")
	require.NoError(t, err)
	assert.Equal(t, 3, a.Count)
	var ps []anonymize.Pseudonym
	for p := range a.Pseudonyms() {
		ps = append(ps, p)
	}
	assert.Len(t, ps, 3, "one pseudonym per person")
	assert.Contains(t, ps, e.mustPseudonym(t, person(1)), "a linked person is listed by their email, not their device")

	// A write through any identifier is the person's.
	require.NoError(t, e.Add("browsing", device(1)))
	require.NoError(t, e.Add("browsing", person(2), person(3)))
	assert.True(t, e.In(e.mustPseudonym(t, person(1)), "browsing"))
	require.NoError(t, e.Remove("runners", phone(1)))
	assert.False(t, e.In(e.mustPseudonym(t, userID(1)), "runners"))
	require.NoError(t, e.SetConsent(userID(1), "ads", false))
	assert.Empty(t, e.Segments(nil, e.mustPseudonym(t, device(1)), "ads"))
	require.NoError(t, e.SetConsent(device(1), "ads", true))
	assert.Equal(t, []string{"browsing"}, e.Segments(nil, e.mustPseudonym(t, person(1)), "ads"))
	require.NoError(t, e.Suppress(phone(1)))
	assert.Empty(t, e.Segments(nil, e.mustPseudonym(t, person(1)), "ads"))

	// Linking again what is linked changes nothing.
	require.NoError(t, e.Link(device(1), person(1)))
	assert.Equal(t, 6, e.Stats().Pseudonyms)
	_ = stateDump(t, e.Engine) // the link graph's invariants hold
}

func TestLinkMergesTheMoreRestrictiveState(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Define(Segment{Name: "vip", Purpose: "email"}))
	// person 1: runners, granted email; user 1: news, withdrew ads;
	// phone 1: vip, granted email, suppressed for email.
	require.NoError(t, e.Add("runners", person(1)))
	require.NoError(t, e.SetConsent(person(1), "email", true))
	require.NoError(t, e.Add("news", userID(1)))
	require.NoError(t, e.SetConsent(userID(1), "ads", false))
	require.NoError(t, e.SetConsent(phone(1), "email", true))
	require.NoError(t, e.Add("vip", phone(1)))
	require.NoError(t, e.Suppress(phone(1), "email"))

	require.NoError(t, e.Link(person(1), userID(1)))
	p := e.mustPseudonym(t, person(1))
	assert.True(t, e.In(p, "runners") && e.In(p, "news"), "memberships are the union")
	r, err := e.Explain(userID(1))
	require.NoError(t, err)
	consent := map[string]string{}
	for _, c := range r.Consent {
		consent[c.Purpose] = c.Consent
	}
	assert.Equal(t, "withdrawn", consent["ads"], "a withdrawal on either side holds")
	assert.Equal(t, "not given", consent["email"], "a grant holds only where both granted")
	assert.Empty(t, e.Segments(nil, p, "ads"))

	require.NoError(t, e.SetConsent(person(1), "email", true))
	require.NoError(t, e.Link(phone(1), userID(1)))
	r, err = e.Explain(person(1))
	require.NoError(t, err)
	assert.Equal(t, []string{"email"}, r.Suppressed, "a suppression on either side holds")
	assert.Equal(t, 1, e.Stats().People)
	_ = stateDump(t, e.Engine)
}

func TestLinkTimedMembershipsKeepTheLaterTime(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Define(Segment{Name: "recent", Purpose: "ads", Retention: 10 * 24 * time.Hour}))
	require.NoError(t, e.Add("recent", person(1)))
	e.clock.Advance(5 * 24 * time.Hour)
	require.NoError(t, e.Add("recent", userID(1)))
	require.NoError(t, e.Link(person(1), userID(1)))
	e.clock.Advance(6 * 24 * time.Hour) // person 1's own membership would have expired
	_, err := e.Expire(e.clock.Now())
	require.NoError(t, err)
	assert.True(t, e.In(e.mustPseudonym(t, person(1)), "recent"), "the later membership is kept")
}

func TestSharedDeviceMoves(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1), person(3), person(4)))
	require.NoError(t, e.Add("news", person(2), person(3), person(4)))
	require.NoError(t, e.SetConsent(person(2), "email", true))
	require.NoError(t, e.Link(person(1), device(9)))
	d := e.mustPseudonym(t, device(9))
	assert.True(t, e.In(d, "runners"))

	// Someone else signs in on the same device: it moves to them, and
	// the two people are not joined.
	require.NoError(t, e.Link(person(2), device(9)))
	assert.False(t, e.In(d, "runners"), "the device no longer serves the first person")
	assert.True(t, e.In(d, "news"))
	assert.True(t, e.In(e.mustPseudonym(t, person(1)), "runners"), "the first person keeps their own")
	assert.False(t, e.In(e.mustPseudonym(t, person(2)), "runners"), "no membership crosses with the device")
	assert.Equal(t, 4, e.Stats().People)

	// An anonymous device's own memberships and grants stay behind; its
	// withdrawals and suppressions come along.
	require.NoError(t, e.Add("browsing", device(5)))
	require.NoError(t, e.SetConsent(device(5), "ads", false))
	require.NoError(t, e.SetConsent(device(5), "email", true))
	require.NoError(t, e.Suppress(device(5), "email"))
	require.NoError(t, e.Link(person(3), device(5)))
	p3 := e.mustPseudonym(t, person(3))
	assert.False(t, e.In(p3, "browsing"))
	r, err := e.Explain(device(5))
	require.NoError(t, err)
	assert.Equal(t, []string{"email"}, r.Suppressed)
	for _, c := range r.Consent {
		assert.NotEqual(t, "granted", c.Consent, c.Purpose)
	}
	assert.Equal(t, 4, e.Stats().People, "the device-only person is gone")

	// An anonymous visitor who signs up keeps what the device held.
	require.NoError(t, e.Add("browsing", device(6)))
	require.NoError(t, e.Link(userID(6), device(6)))
	assert.True(t, e.In(e.mustPseudonym(t, userID(6)), "browsing"))
	_ = stateDump(t, e.Engine)
}

func TestLinkNeedsAPersonAndStaysInItsLimits(t *testing.T) {
	e := linkEngine(t)
	require.ErrorIs(t, e.Link(person(1)), ErrInvalidChange)
	require.ErrorIs(t, e.Link(device(1), device(2)), ErrInvalidChange)
	require.ErrorIs(t, e.Link(person(1), person(1)), ErrInvalidChange)
	require.ErrorAs(t, e.Link(person(1), anonymize.Email("not an email")), new(*anonymize.IdentifierError))

	ids := []anonymize.Identifier{person(1)}
	for i := range MaxLinked - 1 {
		ids = append(ids, device(i))
	}
	require.NoError(t, e.Link(ids...))
	before := stateDump(t, e.Engine)
	err := e.Link(person(1), userID(1))
	require.ErrorIs(t, err, ErrTooManyLinked)
	assert.Contains(t, err.Error(), fmt.Sprint(MaxLinked))
	assert.Equal(t, before, stateDump(t, e.Engine), "a refused link changes nothing")
	require.NoError(t, e.Link(person(2), userID(2)))
	require.ErrorIs(t, e.Link(person(1), person(2)), ErrTooManyLinked)
	assert.Equal(t, 2, e.Stats().People)
}

func TestUnlink(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", person(1)))
	require.NoError(t, e.Link(person(1), phone(1), device(1)))
	require.NoError(t, e.Unlink(phone(1)))
	ph := e.mustPseudonym(t, phone(1))
	assert.False(t, e.In(ph, "runners"), "a detached identifier is a stranger")
	assert.True(t, e.In(e.mustPseudonym(t, device(1)), "runners"), "the person keeps the rest")
	r, err := e.Explain(phone(1))
	require.NoError(t, err)
	assert.Empty(t, r.Segments)
	require.ErrorIs(t, e.Unlink(phone(1)), ErrNotLinked)
	require.NoError(t, e.Unlink(device(1)))
	require.ErrorIs(t, e.Unlink(person(1)), ErrNotLinked, "the only identifier left")
	assert.True(t, e.In(e.mustPseudonym(t, person(1)), "runners"))
	assert.Equal(t, Stats{People: 1, Pseudonyms: 1}, Stats{People: e.Stats().People, Pseudonyms: e.Stats().Pseudonyms})
	_ = stateDump(t, e.Engine)
}

func TestForgetThroughAnyIdentifierErasesEveryPseudonym(t *testing.T) {
	for _, via := range []anonymize.Identifier{person(1), device(1), phone(1)} {
		t.Run(via.Kind().String(), func(t *testing.T) {
			e := linkEngine(t)
			require.NoError(t, e.Add("runners", person(1), person(2)))
			require.NoError(t, e.Link(person(1), phone(1), device(1)))
			ids := map[anonymize.Pseudonym]anonymize.Kind{
				e.mustPseudonym(t, person(1)): anonymize.KindEmail,
				e.mustPseudonym(t, phone(1)):  anonymize.KindPhone,
				e.mustPseudonym(t, device(1)): anonymize.KindDeviceID,
			}
			r, err := e.ForgetWith(via, ForgetOptions{DoNotReAdd: true})
			require.NoError(t, err)
			require.NoError(t, e.VerifyReceipt(r))
			require.Len(t, r.Linked, 3)
			for _, l := range r.Linked {
				assert.Equal(t, ids[l.Pseudonym], l.Kind, "%s", l.Pseudonym)
			}
			for p := range ids {
				assert.False(t, e.In(p, "runners"))
			}
			assert.Equal(t, 1, e.Stats().People)
			assert.Equal(t, 1, e.Stats().Pseudonyms)
			// Every identifier is on the do-not-re-add list.
			for _, id := range []anonymize.Identifier{person(1), device(1), phone(1)} {
				require.NoError(t, e.Add("runners", id))
				assert.False(t, e.In(e.mustPseudonym(t, id), "runners"), "%s re-added", id.Kind())
				rep, err := e.Explain(id)
				require.NoError(t, err)
				assert.True(t, rep.DoNotReAdd)
			}
			require.ErrorIs(t, e.Link(person(1), device(7)), ErrDoNotReAdd)

			// The receipt's signature covers the linked list.
			forged := r
			forged.Linked = forged.Linked[:2]
			require.ErrorIs(t, e.VerifyReceipt(forged), ErrBadReceipt)
			old := r
			old.Version = 2
			require.ErrorIs(t, e.VerifyReceipt(old), ErrBadReceipt, "a version 2 receipt cannot carry a linked list")
			js, err := json.Marshal(r)
			require.NoError(t, err)
			assert.Contains(t, string(js), `"kind":"device"`)
			var back Receipt
			require.NoError(t, json.Unmarshal(js, &back))
			require.NoError(t, e.VerifyReceipt(back))
			_ = stateDump(t, e.Engine)
		})
	}
}

func TestExplainListsEveryLinkedPseudonym(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", device(1)))
	require.NoError(t, e.Link(userID(1), device(1), person(1)))
	r, err := e.Explain(device(1))
	require.NoError(t, err)
	kinds := map[anonymize.Kind]bool{}
	for _, p := range r.Pseudonyms {
		kinds[p.Kind] = true
		assert.True(t, p.Stored)
	}
	assert.Equal(t, map[anonymize.Kind]bool{anonymize.KindEmail: true, anonymize.KindUserID: true, anonymize.KindDeviceID: true}, kinds)
	assert.Len(t, r.Segments, 1)
	assert.Contains(t, r.String(), "linked email pseudonym")
	js, err := json.Marshal(r)
	require.NoError(t, err)
	assert.Contains(t, string(js), `"kind":"user"`)
	assert.NotContains(t, string(js), "example.com")
}

func TestKAnonymityCountsPeopleAfterAMerge(t *testing.T) {
	e := linkEngine(t) // k = 3
	require.NoError(t, e.Add("runners", person(1), person(2), person(3)))
	p := e.mustPseudonym(t, person(1))
	assert.Equal(t, []string{"runners"}, e.Segments(nil, p, "ads"))
	require.NoError(t, e.Link(person(1), person(2))) // two identifiers of one person
	assert.Empty(t, e.Segments(nil, p, "ads"), "two people are too few, however many identifiers they have")
	_, err := e.Audience("runners", "ads")
	require.ErrorIs(t, err, ErrAudienceTooSmall)
}

func TestLinksSurviveRestartSnapshotAndRotation(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", person(1), person(2)))
	require.NoError(t, e.Link(person(1), device(1), userID(1)))
	require.NoError(t, e.Link(person(2), device(2)))
	require.NoError(t, e.Unlink(device(2)))
	want := stateDump(t, e)
	require.NoError(t, e.Close())
	e = d.open(t) // replayed from the log
	assert.Equal(t, want, stateDump(t, e))
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	e = d.open(t) // from the snapshot
	assert.Equal(t, want, stateDump(t, e))
	assert.True(t, e.In(e.mustPseudonym(t, device(1)), "runners"))

	// A rotation: identifiers written by identifier move to the new key;
	// the device, never written again, is dropped when the old key goes,
	// and the person stays.
	require.NoError(t, e.RotateKey(mustKey(t, fuzzKey2), time.Hour))
	require.NoError(t, e.Add("runners", person(1), userID(1)))
	d.clock.Advance(2 * time.Hour)
	_, err := e.Expire(d.clock.Now())
	require.NoError(t, err)
	assert.True(t, e.In(e.mustPseudonym(t, person(1)), "runners"))
	assert.True(t, e.In(e.mustPseudonym(t, userID(1)), "runners"))
	r, err := e.Explain(person(1))
	require.NoError(t, err)
	assert.Len(t, r.Pseudonyms, 2, "email and user ID, under the new key")
	want = stateDump(t, e)
	require.NoError(t, e.Compact()) // the old key's data leaves the files
	require.NoError(t, e.Close())
	d.opts.Key = mustKey(t, fuzzKey2)
	e = d.open(t)
	assert.Equal(t, want, stateDump(t, e))
	require.NoError(t, e.Close())
}

func TestLinkPseudonymsFromAWarehouse(t *testing.T) {
	e := linkEngine(t)
	pseudo := func(id anonymize.Identifier) anonymize.Pseudonym {
		p, err := e.Pseudonym(id)
		require.NoError(t, err)
		return p
	}
	require.NoError(t, e.AddPseudonyms("runners", []anonymize.Pseudonym{pseudo(person(1)), pseudo(person(2)), pseudo(person(3))}))
	require.NoError(t, e.LinkPseudonyms(
		[]LinkedPseudonym{{Kind: anonymize.KindEmail, Pseudonym: pseudo(person(1))}, {Kind: anonymize.KindPhone, Pseudonym: pseudo(phone(1))}},
		[]LinkedPseudonym{{Kind: anonymize.KindEmail, Pseudonym: pseudo(person(2))}, {Kind: anonymize.KindDeviceID, Pseudonym: pseudo(device(2))}},
	))
	assert.True(t, e.In(pseudo(phone(1)), "runners"))
	assert.True(t, e.In(pseudo(device(2)), "runners"))
	err := e.LinkPseudonyms([]LinkedPseudonym{{Kind: anonymize.KindEmail, Pseudonym: 1, Key: anonymize.Fingerprint{1}}, {Kind: anonymize.KindPhone, Pseudonym: 2}})
	require.ErrorIs(t, err, ErrKeyChanged)
	require.ErrorIs(t, e.LinkPseudonyms([]LinkedPseudonym{{Kind: 9, Pseudonym: 1}, {Kind: anonymize.KindEmail, Pseudonym: 2}}), ErrInvalidChange)
	_ = stateDump(t, e.Engine)
}

func TestReplicasConvergeOnLinks(t *testing.T) {
	j := newMemJournal()
	clock := &fakeClock{t: t0}
	replicas := followedReplicas(t, j, 2, Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now})
	a, b := replicas[0], replicas[1]
	require.NoError(t, a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, a.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, a.Add("runners", person(1), person(2)))
	require.NoError(t, b.Link(person(1), device(1)))
	require.NoError(t, a.Link(person(2), device(1))) // moves
	require.NoError(t, b.Link(person(2), userID(2)))
	require.NoError(t, a.Unlink(userID(2)))
	rec, err := b.Forget(device(1))
	require.NoError(t, err)
	assert.Len(t, rec.Linked, 2)
	last := uint64(len(j.log))
	require.Eventually(t, func() bool { return a.Applied() == last && b.Applied() == last }, 5*time.Second, time.Millisecond)
	assert.Equal(t, stateDump(t, a), stateDump(t, b))

	// A link change that does not validate is refused alike everywhere.
	bad := &op{kind: opLink, at: t0, links: [][]linkID{{{kind: anonymize.KindDeviceID, kps: []anonymize.KeyedPseudonym{{Pseudonym: 5, Key: a.keyring().Current()}}},
		{kind: anonymize.KindDeviceID, kps: []anonymize.KeyedPseudonym{{Pseudonym: 6, Key: a.keyring().Current()}}}}}, version: recVersion}
	var buf bytes.Buffer
	buf.Write(appendChange(nil, bad))
	decoded, err := decodeChange(buf.Bytes(), recVersion)
	require.NoError(t, err)
	_, err = a.applyRead(&decoded, "journal")
	require.ErrorIs(t, err, ErrInvalidChange)
	assert.True(t, strings.Contains(err.Error(), "only device IDs"))
}

// A change by identifier that names a key outside the keyring (forged, or
// computed before that key left it) is refused, whatever its kind: it
// would leave an entry under a key that never expires.
func TestKeyedChangesNameKeysOfTheRingOnly(t *testing.T) {
	e := linkEngine(t)
	cur := e.keyring().Current()
	foreign := anonymize.Fingerprint{7}
	kps := []anonymize.KeyedPseudonym{{Pseudonym: 11, Key: cur}, {Pseudonym: 12, Key: foreign}}
	for _, o := range []*op{
		{kind: opAdd, name: "runners", people: [][]anonymize.KeyedPseudonym{kps}},
		{kind: opConsent, name: "ads", people: [][]anonymize.KeyedPseudonym{kps}},
		{kind: opRemove, name: "runners", people: [][]anonymize.KeyedPseudonym{kps}},
		{kind: opLink, links: [][]linkID{{{kind: anonymize.KindEmail, kps: kps}, {kind: anonymize.KindDeviceID, kps: []anonymize.KeyedPseudonym{{Pseudonym: 13, Key: cur}}}}}},
	} {
		o.at, o.version = e.clock.Now(), recVersion
		_, err := e.applyRead(o, "journal")
		require.ErrorIs(t, err, ErrKeyChanged, "%s", o.kind)
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	assert.Nil(t, e.keyGen[foreign], "no entry under the foreign key")
	assert.Zero(t, e.dir.Len())
}
