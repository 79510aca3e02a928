package personify

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Person acts for the person exactly as their identifier does, and holds
// nothing of it.
func TestPersonActsAsTheIdentifier(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", people(0, 5)...))
	require.NoError(t, e.Link(person(1), device(1)))
	ctx := context.Background()

	p, err := e.Person(person(1))
	require.NoError(t, err)
	b, err := json.Marshal(p)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "example", "a Person holds pseudonyms, not the identifier")
	assert.Equal(t, anonymize.KindEmail, p.Kind)
	require.Len(t, p.Pseudonyms, 1)
	assert.Equal(t, e.pseudonym(person(1)), p.Pseudonyms[0].Pseudonym)

	want, err := e.Explain(person(1))
	require.NoError(t, err)
	got, err := e.ExplainPerson(p)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Len(t, got.Pseudonyms, 2, "the linked device is listed too")

	require.NoError(t, e.SetConsentPerson(ctx, p, "ads", false))
	assert.Empty(t, e.segs(device(1), "ads"), "a withdrawal by Person reaches every linked identifier")
	require.NoError(t, e.SetConsentPerson(ctx, p, "ads", true))
	assert.Equal(t, []string{"runners"}, e.segs(person(1), "ads"))

	require.NoError(t, e.SuppressPerson(ctx, p, "ads"))
	assert.Empty(t, e.segs(person(1), "ads"))
	r, err := e.ExplainPerson(p)
	require.NoError(t, err)
	assert.Equal(t, []string{"ads"}, r.Suppressed)
	require.NoError(t, e.UnsuppressPerson(ctx, p, "ads"))
	assert.Equal(t, []string{"runners"}, e.segs(person(1), "ads"))
	assert.ErrorIs(t, e.SuppressPerson(ctx, p, "no-such-purpose"), ErrUnknownPurpose)

	rc, err := e.ForgetPerson(ctx, p, ForgetOptions{RequestID: "ticket-1", DoNotReAdd: true})
	require.NoError(t, err)
	require.NoError(t, VerifyReceipt(rc, e.ReceiptPublicKey()))
	assert.Equal(t, p.Pseudonyms, rc.Pseudonyms)
	assert.Len(t, rc.Linked, 2)
	assert.Equal(t, []ErasedSegment{{Name: "runners", Memberships: 1}}, rc.Segments)
	assert.False(t, e.In(e.pseudonym(person(1)), "runners"))
	assert.False(t, e.In(e.pseudonym(device(1)), "runners"))
	require.NoError(t, e.Add("runners", person(1)))
	assert.False(t, e.In(e.pseudonym(person(1)), "runners"), "do-not-re-add holds for a Person's erasure")
	_, err = e.ForgetPerson(ctx, p, ForgetOptions{RequestID: "bob@example.com"})
	assert.ErrorIs(t, err, ErrInvalidChange, "the request ID is checked as Forget checks it")
	assert.ErrorContains(t, err, "RequestID")
	assert.NotContains(t, err.Error(), "bob")
}

// A Person computed before the keyring changed is refused, never applied to
// the data it would miss, and a new one works.
func TestPersonRefusedAfterTheKeyringChanged(t *testing.T) {
	e := linkEngine(t)
	require.NoError(t, e.Add("runners", people(0, 5)...))
	ctx := context.Background()
	old, err := e.Person(person(1))
	require.NoError(t, err)

	require.NoError(t, e.RotateKey(mustKey(t, "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"), time.Hour))
	_, err = e.ExplainPerson(old)
	assert.ErrorIs(t, err, ErrKeyChanged)
	assert.ErrorIs(t, e.SetConsentPerson(ctx, old, "ads", false), ErrKeyChanged)
	assert.ErrorIs(t, e.SuppressPerson(ctx, old), ErrKeyChanged)
	_, err = e.ForgetPerson(ctx, old, ForgetOptions{})
	assert.ErrorIs(t, err, ErrKeyChanged)
	assert.Equal(t, []string{"runners"}, e.segs(person(1), "ads"), "nothing was applied")

	p, err := e.Person(person(1))
	require.NoError(t, err)
	require.Len(t, p.Pseudonyms, 2, "current and previous key")
	r, err := e.ExplainPerson(p)
	require.NoError(t, err)
	assert.Len(t, r.Segments, 1)
	rc, err := e.ForgetPerson(ctx, p, ForgetOptions{})
	require.NoError(t, err)
	assert.Len(t, rc.Pseudonyms, 2)
	assert.Empty(t, e.segs(person(1), "ads"))

	// Past the grace period a consent write names only the current key,
	// as a write by identifier does.
	q, err := e.Person(person(2))
	require.NoError(t, err)
	e.clock.Advance(2 * time.Hour)
	require.NoError(t, e.SetConsentPerson(ctx, q, "ads", false))
}

func TestPersonRefusesWhatNamesNoOne(t *testing.T) {
	e := linkEngine(t)
	ctx := context.Background()
	p, err := e.Person(person(1))
	require.NoError(t, err)
	for name, bad := range map[string]Person{
		"zero":      {},
		"no kind":   {Pseudonyms: p.Pseudonyms},
		"bad kind":  {Kind: 99, Pseudonyms: p.Pseudonyms},
		"no key":    {Kind: anonymize.KindEmail, Pseudonyms: []anonymize.KeyedPseudonym{{Pseudonym: 1}}},
		"twice":     {Kind: anonymize.KindEmail, Pseudonyms: append(append([]anonymize.KeyedPseudonym{}, p.Pseudonyms...), p.Pseudonyms...)},
		"too many":  {Kind: anonymize.KindEmail, Pseudonyms: make([]anonymize.KeyedPseudonym, maxPersonKeys+1)},
		"other key": {Kind: anonymize.KindEmail, Pseudonyms: []anonymize.KeyedPseudonym{{Pseudonym: 1, Key: anonymize.Fingerprint{1}}}},
	} {
		_, err := e.ExplainPerson(bad)
		assert.Error(t, err, name)
		assert.Error(t, e.SetConsentPerson(ctx, bad, "ads", false), name)
		_, err = e.ForgetPerson(ctx, bad, ForgetOptions{})
		assert.Error(t, err, name)
		if name != "other key" {
			assert.ErrorIs(t, err, ErrInvalidChange, name)
		} else {
			assert.ErrorIs(t, err, ErrKeyChanged, name)
		}
	}
	_, err = e.Person(anonymize.Email("not an email"))
	assert.ErrorIs(t, err, anonymize.ErrInvalidIdentifier)
}

// An erasure by Person is durable and complete across a restart, like one
// by identifier.
func TestPersonForgetSurvivesRestart(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(0, 5)...))
	p, err := e.Person(person(2))
	require.NoError(t, err)
	require.NoError(t, e.SetConsentPerson(context.Background(), p, "ads", false))
	rc, err := e.ForgetPerson(context.Background(), p, ForgetOptions{})
	require.NoError(t, err)
	require.NoError(t, e.Close())

	e = d.open(t)
	defer e.Close()
	require.NoError(t, e.VerifyReceipt(rc))
	ps, err := e.Pseudonym(person(2))
	require.NoError(t, err)
	assert.False(t, e.In(ps, "runners"))
	r, err := e.Explain(person(2))
	require.NoError(t, err)
	assert.Empty(t, r.Segments)
	for _, c := range r.Consent {
		assert.NotEqual(t, "withdrawn", c.Consent, "the withdrawal was erased with the person")
	}
}

// A made-up receipt given to VerifyReceipt is refused without quoting
// what it holds: its ID and signing key may be anything.
func TestVerifyReceiptQuotesNothingMadeUp(t *testing.T) {
	e := linkEngine(t)
	for _, r := range []Receipt{
		{ID: "secret.person@example.com"},
		{ID: "secret.person@example.com", Version: 99},
		{ID: "secret.person@example.com", Version: 3, SigningKey: "secret.person@example.com"},
		{ID: "secret.person@example.com", Version: 1, Linked: []LinkedPseudonym{{}}},
	} {
		err := e.VerifyReceipt(r)
		assert.ErrorIs(t, err, ErrBadReceipt)
		assert.NotContains(t, err.Error(), "secret")
		err = VerifyReceipt(r, e.ReceiptPublicKey())
		assert.ErrorIs(t, err, ErrBadReceipt)
		assert.NotContains(t, err.Error(), "secret")
	}
	rc, err := e.Forget(person(1))
	require.NoError(t, err)
	rc.Consents++
	assert.ErrorContains(t, e.VerifyReceipt(rc), rc.ID, "a real receipt is named by its id")
}
