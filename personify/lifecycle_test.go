package personify

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/segment"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ordOf returns p's ordinal, failing if p is absent.
func ordOf(t *testing.T, d *index.Directory, p anonymize.Pseudonym) uint32 {
	t.Helper()
	en, ok := d.Get(p)
	require.True(t, ok, "%v absent", p)
	return en.Ord()
}

func pseudonymsOf(a Audience) []anonymize.Pseudonym { return slices.Collect(a.Pseudonyms()) }

func TestAudience(t *testing.T) {
	te := newTestEngine(t, func(o *Options) { o.K = 5 })
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.define(Segment{Name: "ios", Purpose: "ads"})
	te.define(Segment{Name: "churned", Purpose: "ads"})
	te.define(Segment{Name: "readers", Purpose: "email"})
	te.add("runners", people(0, 30)...)
	te.add("ios", people(10, 40)...)
	te.add("churned", people(15, 20)...)
	te.add("readers", people(0, 30)...)

	a, err := te.Audience("runners & ios & !churned", "ads")
	require.NoError(t, err)
	assert.Equal(t, 15, a.Count, "10..29 minus 15..19")
	assert.Equal(t, "runners & ios & !churned", a.Expr)
	assert.Len(t, pseudonymsOf(a), 15)
	want := map[anonymize.Pseudonym]bool{}
	for _, i := range append(seq(10, 15), seq(20, 30)...) {
		want[te.pseudonym(person(i))] = true
	}
	for _, p := range pseudonymsOf(a) {
		assert.True(t, want[p], "unexpected member %v", p)
	}

	// !x needs the universe: everyone stored.
	a, err = te.Audience("!runners", "ads")
	require.NoError(t, err)
	assert.Equal(t, 10, a.Count, "people 30..39")

	// Suppressed and withdrawn people are not in an audience.
	require.NoError(t, te.Suppress(person(10)))
	require.NoError(t, te.Suppress(person(11), "ads"))
	require.NoError(t, te.SetConsent(person(12), "ads", false))
	a, err = te.Audience("runners & ios & !churned", "ads")
	require.NoError(t, err)
	assert.Equal(t, 12, a.Count)

	// Opt-in purposes count only those who granted consent.
	_, err = te.Audience("readers", "email")
	require.ErrorIs(t, err, ErrAudienceTooSmall)
	assert.NotContains(t, err.Error(), "0 people", "the size of a refused audience is not revealed")
	for i := range 5 {
		require.NoError(t, te.SetConsent(person(i), "email", true))
	}
	a, err = te.Audience("readers", "email")
	require.NoError(t, err)
	assert.Equal(t, 5, a.Count, "exactly k")
	require.NoError(t, te.SetConsent(person(4), "email", false))
	_, err = te.Audience("readers", "email")
	assert.ErrorIs(t, err, ErrAudienceTooSmall, "k-1")

	// Purpose limitation, unknown names, syntax errors.
	_, err = te.Audience("runners | readers", "ads")
	assert.ErrorIs(t, err, ErrPurposeMismatch)
	_, err = te.Audience("runers", "ads")
	assert.ErrorIs(t, err, ErrUnknownSegment)
	_, err = te.Audience("runners", "nope")
	assert.ErrorIs(t, err, ErrUnknownPurpose)
	_, err = te.Audience("runners &", "ads")
	assert.ErrorIs(t, err, segment.ErrSyntax)

	// The noisy count is near the exact one.
	a, err = te.Audience("runners", "ads")
	require.NoError(t, err)
	assert.InDelta(t, a.Count, a.NoisyCount(1), 20)
}

func TestAudienceSensitiveNeedsOptIn(t *testing.T) {
	te := newTestEngine(t, func(o *Options) { o.K = 2 })
	te.define(Segment{Name: "diabetes", Purpose: "ads", Sensitive: true})
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("diabetes", people(0, 5)...)
	te.add("runners", people(0, 10)...)
	_, err := te.Audience("runners & !diabetes", "ads")
	assert.ErrorIs(t, err, ErrAudienceTooSmall, "even a negated sensitive segment needs explicit consent")
	for i := range 7 {
		require.NoError(t, te.SetConsent(person(i), "ads", true))
	}
	a, err := te.Audience("runners & !diabetes", "ads")
	require.NoError(t, err)
	assert.Equal(t, 2, a.Count, "people 5 and 6")
}

func TestAudienceIgnoresExpiredAndForgotten(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "recent", Purpose: "ads", Retention: 32 * time.Hour})
	te.add("recent", people(0, 5)...)
	te.clock.Advance(16 * time.Hour)
	te.add("recent", people(5, 10)...)
	a, err := te.Audience("recent", "ads")
	require.NoError(t, err)
	assert.Equal(t, 10, a.Count)
	te.clock.Advance(16 * time.Hour)
	a, err = te.Audience("recent", "ads")
	require.NoError(t, err)
	assert.Equal(t, 5, a.Count, "expired memberships are out before Expire runs")

	gone := te.pseudonym(person(7))
	_, err = te.Forget(person(7))
	require.NoError(t, err)
	assert.NotContains(t, pseudonymsOf(a), gone, "an audience built before Forget skips the forgotten")
	assert.Len(t, pseudonymsOf(a), 4)
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestExplain(t *testing.T) {
	te := newTestEngine(t, func(o *Options) { o.K = 4 })
	te.define(Segment{Name: "runners", Purpose: "ads", Description: "You ran with us this season", Retention: 64 * time.Hour})
	te.define(Segment{Name: "vip", Purpose: "ads", Description: "Top customers"}) // below k
	te.define(Segment{Name: "diabetes", Purpose: "ads", Description: "Health programme", Sensitive: true})
	te.define(Segment{Name: "readers", Purpose: "email", Description: "Reads the newsletter"})
	te.add("runners", people(0, 10)...)
	te.add("vip", person(0))
	te.add("diabetes", people(0, 10)...)
	te.add("readers", people(0, 10)...)
	require.NoError(t, te.Suppress(person(0), "email"))

	r, err := te.Explain(anonymize.Email(" Person0@Example.com "))
	require.NoError(t, err)
	require.Len(t, r.Pseudonyms, 1)
	assert.Equal(t, te.pseudonym(person(0)), r.Pseudonyms[0].Pseudonym)
	assert.Equal(t, te.KeyFingerprint(), r.Pseudonyms[0].Key)
	assert.True(t, r.Pseudonyms[0].Stored)
	require.Len(t, r.Segments, 4, "every segment, even below k")
	byName := map[string]SegmentReport{}
	for _, s := range r.Segments {
		byName[s.Name] = s
	}
	assert.True(t, byName["runners"].Used)
	assert.Equal(t, "You ran with us this season", byName["runners"].Description)
	assert.Equal(t, t0.Add(64*time.Hour), byName["runners"].ExpiresAt)
	assert.False(t, byName["vip"].Used)
	assert.Contains(t, byName["vip"].Reason, "fewer than 4 members")
	assert.True(t, byName["vip"].ExpiresAt.IsZero())
	assert.Contains(t, byName["diabetes"].Reason, "explicit consent")
	assert.Contains(t, byName["readers"].Reason, `suppressed for purpose "email"`)
	assert.Equal(t, []string{"email"}, r.Suppressed)
	require.Len(t, r.Consent, 2)
	assert.Equal(t, ConsentReport{Purpose: "ads", Description: "personalized offers on the site", Model: OptOut, Consent: "not given", Allowed: true}, r.Consent[0])
	assert.Equal(t, "not given", r.Consent[1].Consent)
	assert.False(t, r.Consent[1].Allowed)
	assert.Contains(t, r.CollisionNote, "With 10 people stored")

	js, err := json.Marshal(r)
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, json.Unmarshal(js, &back))
	assert.Contains(t, string(js), `"model":"opt-out"`)
	assert.Contains(t, string(js), `"pseudonym":"`+r.Pseudonyms[0].Pseudonym.String()+`"`)
	text := r.String()
	assert.Contains(t, text, "runners (purpose ads): You ran with us this season")
	assert.Contains(t, text, "expires 2026-03-03")
	assert.Contains(t, text, "Suppressed for: email")

	empty, err := te.Explain(person(99))
	require.NoError(t, err)
	assert.Empty(t, empty.Segments)
	assert.False(t, empty.Pseudonyms[0].Stored)
	_, err = te.Explain(anonymize.Phone("12"))
	assert.ErrorIs(t, err, anonymize.ErrInvalidIdentifier)
}

func TestForget(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.define(Segment{Name: "readers", Purpose: "email"})
	te.add("runners", people(0, 10)...)
	te.add("readers", people(0, 10)...)
	require.NoError(t, te.SetConsent(person(3), "email", true))
	require.NoError(t, te.Suppress(person(3), "ads"))
	p := te.pseudonym(person(3))
	ord := ordOf(t, te.dir, p)

	r, err := te.ForgetWith(person(3), ForgetOptions{RequestID: "ticket-17"})
	require.NoError(t, err)
	assert.Equal(t, []ErasedSegment{{"readers", 1}, {"runners", 1}}, r.Segments)
	assert.Equal(t, 1, r.Consents)
	assert.Equal(t, 1, r.Suppressions)
	assert.Equal(t, "ticket-17", r.RequestID)
	assert.Equal(t, t0, r.ErasedAt)
	assert.Equal(t, te.KeyFingerprint(), r.Key)
	require.NoError(t, VerifyReceipt(r, te.ReceiptPublicKey()))

	// Gone everywhere.
	assert.False(t, te.In(p, "runners"))
	assert.Empty(t, te.Segments(nil, p, "ads"))
	ex, err := te.Explain(person(3))
	require.NoError(t, err)
	assert.Empty(t, ex.Segments)
	assert.Empty(t, ex.Suppressed)
	assert.False(t, ex.Pseudonyms[0].Stored)
	a, err := te.Audience("runners", "ads")
	require.NoError(t, err)
	assert.NotContains(t, pseudonymsOf(a), p)
	assert.Equal(t, 9, a.Count)

	// The ordinal was cleared from every set before it is reused.
	te.add("runners", person(100))
	newOrd := ordOf(t, te.dir, te.pseudonym(person(100)))
	assert.Equal(t, ord, newOrd, "freed ordinal reused")
	assert.Equal(t, []string{"runners"}, te.segs(person(100), "ads"), "no leftover suppression or readers membership")
	assert.Empty(t, te.segs(person(100), "email"), "no leftover consent")

	// Re-adding without DoNotReAdd works.
	te.add("runners", person(3))
	assert.Equal(t, []string{"runners"}, te.segs(person(3), "ads"))

	// With DoNotReAdd, later adds are skipped, by identifier and by pseudonym.
	r, err = te.ForgetWith(person(4), ForgetOptions{DoNotReAdd: true})
	require.NoError(t, err)
	assert.True(t, r.DoNotReAdd)
	te.add("runners", person(4))
	require.NoError(t, te.AddPseudonyms("readers", []anonymize.Pseudonym{te.pseudonym(person(4))}))
	assert.Empty(t, te.segs(person(4), "ads"))
	assert.False(t, te.In(te.pseudonym(person(4)), "readers"))
	ex, _ = te.Explain(person(4))
	assert.True(t, ex.DoNotReAdd)
	assert.Empty(t, ex.Segments)
	// Forgetting again without the option lifts it.
	_, err = te.Forget(person(4))
	require.NoError(t, err)
	te.add("runners", person(4))
	assert.Equal(t, []string{"runners"}, te.segs(person(4), "ads"))

	// Forgetting an unknown person: a valid receipt of nothing.
	r, err = te.Forget(person(999))
	require.NoError(t, err)
	assert.Empty(t, r.Segments)
	require.NoError(t, VerifyReceipt(r, te.ReceiptPublicKey()))
}

func TestVerifyReceiptRejects(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("runners", people(0, 3)...)
	r, err := te.Forget(person(0))
	require.NoError(t, err)

	for name, tamper := range map[string]func(*Receipt){
		"segments":   func(r *Receipt) { r.Segments = nil },
		"count":      func(r *Receipt) { r.Segments[0].Memberships = 2 },
		"time":       func(r *Receipt) { r.ErasedAt = r.ErasedAt.Add(time.Second) },
		"pseudonym":  func(r *Receipt) { r.Pseudonyms[0].Pseudonym++ },
		"request":    func(r *Receipt) { r.RequestID = "other" },
		"signature":  func(r *Receipt) { r.Signature[0] ^= 1 },
		"do-not-add": func(r *Receipt) { r.DoNotReAdd = true },
	} {
		t.Run(name, func(t *testing.T) {
			c := r
			c.Segments = slices.Clone(r.Segments)
			c.Pseudonyms = slices.Clone(r.Pseudonyms)
			c.Signature = slices.Clone(r.Signature)
			tamper(&c)
			assert.ErrorIs(t, VerifyReceipt(c, te.ReceiptPublicKey()), ErrBadReceipt)
		})
	}
	other, _, _ := ed25519.GenerateKey(nil)
	assert.ErrorIs(t, VerifyReceipt(r, other), ErrBadReceipt)
	assert.ErrorIs(t, VerifyReceipt(r, nil), ErrBadReceipt)

	// A receipt survives a JSON round trip and still verifies.
	js, err := json.Marshal(r)
	require.NoError(t, err)
	var back Receipt
	require.NoError(t, json.Unmarshal(js, &back))
	require.NoError(t, VerifyReceipt(back, te.ReceiptPublicKey()))

	// A stable ReceiptKey verifies across engines.
	_, priv, _ := ed25519.GenerateKey(nil)
	rk, err := NewReceiptKey(priv)
	require.NoError(t, err)
	te2 := newTestEngine(t, func(o *Options) { o.ReceiptKey = rk })
	r2, err := te2.Forget(person(1))
	require.NoError(t, err)
	require.NoError(t, VerifyReceipt(r2, priv.Public().(ed25519.PublicKey)))
}

func TestKeyRotationGracePeriod(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads", Retention: 64 * time.Hour})
	te.add("runners", people(0, 6)...)
	require.NoError(t, te.SetConsent(person(0), "email", true))
	oldP := te.pseudonym(person(0))
	oldFP := te.KeyFingerprint()

	next := mustKey(t, "ffeeddccbbaa99887766554433221100")
	require.NoError(t, te.RotateKey(next, 64*time.Hour))
	assert.Equal(t, next.Fingerprint(), te.KeyFingerprint())

	// Before re-keying, the person is found under the old key's pseudonym.
	assert.Equal(t, oldP, te.pseudonym(person(0)))
	assert.Equal(t, []string{"runners"}, te.segs(person(0), "ads"))

	// A write by identifier re-keys: same memberships, new pseudonym; the old
	// one keeps working for sessions that hold it. (Epochs are 2 hours: this
	// membership is recorded at t0+4h and lasts until t0+68h.)
	te.clock.Advance(4 * time.Hour)
	te.add("runners", person(0))
	newP := te.pseudonym(person(0))
	assert.NotEqual(t, oldP, newP)
	h := anonymize.SipHash(next)
	want, _ := h.Pseudonym(person(0))
	assert.Equal(t, want, newP, "stored under the new key")
	assert.True(t, te.In(newP, "runners"))
	assert.True(t, te.In(oldP, "runners"), "alias during the grace period")
	r, err := te.Explain(person(0))
	require.NoError(t, err)
	require.Len(t, r.Pseudonyms, 2)
	assert.True(t, r.Pseudonyms[0].Stored)
	assert.Equal(t, next.Fingerprint(), r.Pseudonyms[0].Key)
	assert.Equal(t, "granted", r.Consent[1].Consent, "consent moved with the person")

	// New people go under the new key; the old key's people stay findable.
	te.add("runners", person(50))
	assert.Equal(t, []string{"runners"}, te.segs(person(50), "ads"))
	assert.Equal(t, []string{"runners"}, te.segs(person(1), "ads"))

	// Forget during the grace period erases under both keys.
	rec, err := te.Forget(person(1))
	require.NoError(t, err)
	require.Len(t, rec.Pseudonyms, 2)
	assert.Equal(t, []ErasedSegment{{"runners", 1}}, rec.Segments)

	// When the grace period ends, Expire destroys the old key; whoever is
	// still stored only under it (persons 2..5, never re-keyed, memberships
	// already expired anyway) is gone, and the alias too.
	te.clock.Advance(60 * time.Hour) // t0+64h: the old key's grace period ends
	_, err = te.Expire(te.clock.Now())
	require.NoError(t, err)
	assert.False(t, te.In(oldP, "runners"), "alias gone with its key")
	assert.True(t, te.In(newP, "runners"), "re-keyed person kept")
	assert.True(t, te.In(te.pseudonym(person(50)), "runners"))
	assert.Empty(t, te.segs(person(2), "ads"))
	r, err = te.Explain(person(2))
	require.NoError(t, err)
	require.Len(t, r.Pseudonyms, 1, "only the current key is left")
	assert.False(t, r.Pseudonyms[0].Stored)
	assert.Contains(t, te.audit.String(), `"destroyed_key":"`+oldFP.String()+`"`)

	assert.Error(t, te.RotateKey(anonymize.Key{}, time.Hour))
	assert.Error(t, te.RotateKey(next, time.Hour), "same key again")
}

func TestPreviousKeysOption(t *testing.T) {
	old := mustKey(t, testKeyHex)
	cur := anonymize.GenerateKey()
	te := newTestEngine(t, func(o *Options) {
		o.Key = cur
		o.PreviousKeys = []PreviousKey{{Key: old, Until: t0.Add(time.Hour)}}
	})
	te.define(Segment{Name: "runners", Purpose: "ads"})
	oldP, _ := anonymize.SipHash(old).Pseudonym(person(1))
	require.NoError(t, te.AddPseudonyms("runners", []anonymize.Pseudonym{oldP}))
	for i := range 3 {
		require.NoError(t, te.AddPseudonyms("runners", []anonymize.Pseudonym{anonymize.Pseudonym(1000 + i)}))
	}
	assert.Equal(t, oldP, te.pseudonym(person(1)), "found under the previous key")
	assert.Equal(t, []string{"runners"}, te.segs(person(1), "ads"))
	_, err := New(Options{Key: cur, PreviousKeys: []PreviousKey{{Key: cur}}})
	assert.ErrorIs(t, err, anonymize.ErrKeyExists)
}

func TestClosedEngine(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("runners", people(0, 5)...)
	p := te.pseudonym(person(0))
	require.NoError(t, te.Close())
	assert.ErrorIs(t, te.Add("runners", person(1)), ErrClosed)
	assert.ErrorIs(t, te.Define(Segment{Name: "x", Purpose: "ads"}), ErrClosed)
	_, err := te.Pseudonym(person(0))
	assert.ErrorIs(t, err, ErrClosed)
	assert.False(t, te.In(p, "runners"))
	assert.Empty(t, te.Segments(nil, p, "ads"))
	_, err = te.Audience("runners", "ads")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = te.Forget(person(0))
	assert.ErrorIs(t, err, ErrClosed)
	_, err = te.Expire(t0)
	assert.ErrorIs(t, err, ErrClosed)
}

func TestAddPseudonymsBulk(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "warehouse", Purpose: "ads"})
	ps := make([]anonymize.Pseudonym, 3*writeChunk+7) // several chunks
	for i := range ps {
		ps[i] = anonymize.Pseudonym(uint64(i)*0x9E3779B97F4A7C15 + 2)
	}
	require.NoError(t, te.AddPseudonyms("warehouse", ps))
	require.NoError(t, te.AddPseudonyms("warehouse", ps[:10]), "idempotent")
	n, _ := te.Len("warehouse")
	assert.Equal(t, len(ps), n)
	assert.Equal(t, len(ps), te.Stats().People)
	assert.True(t, te.In(ps[len(ps)-1], "warehouse"))
	require.NoError(t, te.AddPseudonyms("warehouse", nil))
	assert.ErrorIs(t, te.AddPseudonyms("nope", nil), ErrUnknownSegment)
	require.NoError(t, te.RemovePseudonyms("warehouse", ps[:100]))
	n, _ = te.Len("warehouse")
	assert.Equal(t, len(ps)-100, n)
	assert.Contains(t, te.audit.String(), fmt.Sprintf(`"count":%d`, len(ps)))
}

// Between the end of a grace period and the Expire that destroys the old
// key, data under it is still stored: Explain shows it and Forget erases it.
func TestForgetAfterGraceBeforeExpire(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("runners", people(0, 4)...)
	require.NoError(t, te.RotateKey(anonymize.GenerateKey(), time.Hour))
	te.clock.Advance(2 * time.Hour) // grace over, Expire not run

	r, err := te.Explain(person(0))
	require.NoError(t, err)
	require.Len(t, r.Pseudonyms, 2)
	assert.True(t, r.Pseudonyms[1].Stored, "still stored under the old key")
	assert.Len(t, r.Segments, 1)

	rec, err := te.Forget(person(0))
	require.NoError(t, err)
	assert.Equal(t, []ErasedSegment{{"runners", 1}}, rec.Segments)
	n, _ := te.Len("runners")
	assert.Equal(t, 3, n)
}
