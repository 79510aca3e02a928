package personify

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// fakeClock is an injectable clock; tests advance it instead of sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type testEngine struct {
	*Engine
	t     *testing.T
	clock *fakeClock
	audit *bytes.Buffer
}

var testKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func mustKey(t testing.TB, hex string) anonymize.Key {
	t.Helper()
	k, err := anonymize.KeyFromHex(hex)
	require.NoError(t, err)
	return k
}

// newTestEngine returns an engine with a fake clock at t0, K = 3, an audit
// buffer, and the purposes "ads" (opt-out) and "email" (opt-in).
func newTestEngine(t *testing.T, mutate ...func(*Options)) *testEngine {
	t.Helper()
	clock := &fakeClock{t: t0}
	var audit bytes.Buffer
	opts := Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now,
		Audit: slog.New(slog.NewJSONHandler(&audit, nil))}
	for _, m := range mutate {
		m(&opts)
	}
	e, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	te := &testEngine{Engine: e, t: t, clock: clock, audit: &audit}
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut, Description: "personalized offers on the site"}))
	require.NoError(t, e.DefinePurpose(Purpose{Name: "email", Model: OptIn, Description: "newsletters"}))
	return te
}

func person(i int) anonymize.Identifier {
	return anonymize.Email(fmt.Sprintf("person%d@example.com", i))
}

func people(from, to int) []anonymize.Identifier {
	ids := make([]anonymize.Identifier, 0, to-from)
	for i := from; i < to; i++ {
		ids = append(ids, person(i))
	}
	return ids
}

func (te *testEngine) define(s Segment) {
	te.t.Helper()
	require.NoError(te.t, te.Define(s))
}

func (te *testEngine) add(seg string, ids ...anonymize.Identifier) {
	te.t.Helper()
	require.NoError(te.t, te.Add(seg, ids...))
}

func (te *testEngine) pseudonym(id anonymize.Identifier) anonymize.Pseudonym {
	te.t.Helper()
	p, err := te.Pseudonym(id)
	require.NoError(te.t, err)
	return p
}

// segs returns what Segments serves to id for purpose.
func (te *testEngine) segs(id anonymize.Identifier, purpose string) []string {
	te.t.Helper()
	return te.Segments(nil, te.pseudonym(id), purpose)
}

func TestNewValidates(t *testing.T) {
	_, err := New(Options{})
	assert.ErrorContains(t, err, "Options.Key is required")
	_, err = New(Options{Key: anonymize.GenerateKey(), K: -1})
	assert.ErrorContains(t, err, "cannot be negative")
	_, err = NewReceiptKey([]byte("short"))
	assert.ErrorContains(t, err, "receipt key")
	e, err := New(Options{Key: anonymize.GenerateKey()})
	require.NoError(t, err)
	assert.Equal(t, DefaultK, e.K())
}

func TestDefineValidates(t *testing.T) {
	te := newTestEngine(t)
	for _, tc := range []struct {
		name string
		seg  Segment
		want error
		msg  string
	}{
		{"empty name", Segment{Purpose: "ads"}, ErrInvalidName, "1 to 128"},
		{"space", Segment{Name: "high value", Purpose: "ads"}, ErrInvalidName, "character 5"},
		{"leading dash", Segment{Name: "-x", Purpose: "ads"}, ErrInvalidName, "character 1"},
		{"keyword", Segment{Name: "NOT", Purpose: "ads"}, ErrInvalidName, "keyword"},
		{"unknown purpose", Segment{Name: "runners", Purpose: "adds"}, ErrUnknownPurpose, `did you mean "ads"?`},
		{"no purpose", Segment{Name: "runners"}, ErrUnknownPurpose, "DefinePurpose"},
		{"negative retention", Segment{Name: "runners", Purpose: "ads", Retention: -time.Hour}, ErrInvalidDefinition, "negative"},
		{"negative min size", Segment{Name: "runners", Purpose: "ads", MinSize: -1}, ErrInvalidDefinition, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := te.Define(tc.seg)
			require.ErrorIs(t, err, tc.want)
			assert.ErrorContains(t, err, tc.msg)
		})
	}
	assert.ErrorIs(t, te.DefinePurpose(Purpose{Name: "x"}), ErrInvalidDefinition, "model required")
	err := te.Add("runers", person(1))
	require.ErrorIs(t, err, ErrUnknownSegment)
	assert.ErrorContains(t, err, "Engine.Define")
}

func TestTooManyPurposes(t *testing.T) {
	te := newTestEngine(t)
	for i := len(te.Purposes()); i < MaxPurposes; i++ {
		require.NoError(t, te.DefinePurpose(Purpose{Name: fmt.Sprintf("p%d", i), Model: OptOut}))
	}
	assert.ErrorIs(t, te.DefinePurpose(Purpose{Name: "one-more", Model: OptOut}), ErrTooManyPurposes)
	assert.NoError(t, te.DefinePurpose(Purpose{Name: "ads", Model: OptIn}), "redefining is not adding")
}

func TestSegmentsServesMembers(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.define(Segment{Name: "cyclists", Purpose: "ads"})
	te.define(Segment{Name: "readers", Purpose: "email"})
	te.add("runners", people(0, 5)...)
	te.add("cyclists", people(3, 8)...)
	te.add("readers", people(0, 8)...)

	assert.Equal(t, []string{"runners"}, te.segs(person(0), "ads"))
	assert.Equal(t, []string{"runners", "cyclists"}, te.segs(person(4), "ads"), "in order of definition")
	assert.Empty(t, te.segs(person(9), "ads"), "unknown person")
	assert.Empty(t, te.segs(person(0), "nope"), "unknown purpose")
	assert.True(t, te.In(te.pseudonym(person(0)), "runners"))
	assert.False(t, te.In(te.pseudonym(person(0)), "cyclists"))
	assert.False(t, te.In(te.pseudonym(person(0)), "nope"))

	dst := make([]string, 0, 4)
	dst = append(dst, "keep")
	assert.Equal(t, []string{"keep", "runners"}, te.Segments(dst, te.pseudonym(person(0)), "ads"), "appends to dst")

	require.NoError(t, te.Remove("runners", person(0)))
	require.NoError(t, te.Remove("runners", person(0)), "removing a non-member is fine")
	assert.Empty(t, te.segs(person(0), "ads"))
	n, err := te.Len("runners")
	require.NoError(t, err)
	assert.Equal(t, 4, n)
}

func TestConsentModels(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})   // opt-out purpose
	te.define(Segment{Name: "readers", Purpose: "email"}) // opt-in purpose
	te.add("runners", people(0, 5)...)
	te.add("readers", people(0, 5)...)

	assert.Equal(t, []string{"runners"}, te.segs(person(0), "ads"), "opt-out: allowed until withdrawn")
	assert.Empty(t, te.segs(person(0), "email"), "opt-in: nothing until granted")

	require.NoError(t, te.SetConsent(person(0), "email", true))
	assert.Equal(t, []string{"readers"}, te.segs(person(0), "email"))
	require.NoError(t, te.SetConsent(person(0), "ads", false))
	assert.Empty(t, te.segs(person(0), "ads"), "withdrawn")
	require.NoError(t, te.SetConsent(person(0), "ads", true))
	assert.Equal(t, []string{"runners"}, te.segs(person(0), "ads"), "granted again")
	require.NoError(t, te.SetConsent(person(0), "email", false))
	assert.Empty(t, te.segs(person(0), "email"))

	assert.ErrorIs(t, te.SetConsent(person(0), "emial", true), ErrUnknownPurpose)
	assert.ErrorIs(t, te.SetConsent(anonymize.Email("bad"), "email", true), anonymize.ErrInvalidIdentifier)

	// Changing the model keeps the recorded consent.
	require.NoError(t, te.SetConsent(person(1), "ads", true))
	require.NoError(t, te.DefinePurpose(Purpose{Name: "ads", Model: OptIn}))
	assert.Equal(t, []string{"runners"}, te.segs(person(1), "ads"), "person 1 granted")
	assert.Empty(t, te.segs(person(2), "ads"), "person 2 never granted")
}

func TestSensitiveNeedsExplicitOptIn(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "diabetes", Purpose: "ads", Sensitive: true}) // opt-out purpose
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("diabetes", people(0, 5)...)
	te.add("runners", people(0, 5)...)

	assert.Equal(t, []string{"runners"}, te.segs(person(0), "ads"), "opt-out model does not cover sensitive data")
	require.NoError(t, te.SetConsent(person(0), "ads", true))
	assert.Equal(t, []string{"diabetes", "runners"}, te.segs(person(0), "ads"), "explicit grant")
	require.NoError(t, te.SetConsent(person(0), "ads", false))
	assert.Empty(t, te.segs(person(0), "ads"))
}

func TestSuppression(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.define(Segment{Name: "readers", Purpose: "email"})
	te.add("runners", people(0, 5)...)
	te.add("readers", people(0, 5)...)
	for i := range 5 {
		require.NoError(t, te.SetConsent(person(i), "email", true))
	}

	// Per purpose: suppressed and consented, suppression wins.
	require.NoError(t, te.Suppress(person(0), "email"))
	assert.Empty(t, te.segs(person(0), "email"))
	assert.Equal(t, []string{"runners"}, te.segs(person(0), "ads"), "other purposes unaffected")

	// Global.
	require.NoError(t, te.Suppress(person(1)))
	assert.Empty(t, te.segs(person(1), "email"))
	assert.Empty(t, te.segs(person(1), "ads"))
	assert.True(t, te.In(te.pseudonym(person(1)), "runners"), "In is the raw fact")

	// Survives re-adding.
	te.add("runners", person(1))
	te.add("readers", person(0))
	assert.Empty(t, te.segs(person(1), "ads"))
	assert.Empty(t, te.segs(person(0), "email"))

	// A person suppressed before they are in any segment stays suppressed.
	require.NoError(t, te.Suppress(person(9)))
	te.add("runners", person(9))
	assert.Empty(t, te.segs(person(9), "ads"))

	require.NoError(t, te.Unsuppress(person(1)))
	assert.Equal(t, []string{"runners"}, te.segs(person(1), "ads"))
	require.NoError(t, te.Unsuppress(person(0), "email"))
	assert.Equal(t, []string{"readers"}, te.segs(person(0), "email"))
	require.NoError(t, te.Unsuppress(person(42)), "unknown person: nothing to lift")
	assert.ErrorIs(t, te.Suppress(person(0), "nope"), ErrUnknownPurpose)
	r, err := te.Explain(person(42))
	require.NoError(t, err)
	assert.False(t, r.Pseudonyms[0].Stored, "Unsuppress stores nothing")
}

func TestKAnonymityBoundary(t *testing.T) {
	for _, tc := range []struct {
		name    string
		k       int
		minSize int
		members int
		served  bool
	}{
		{"exactly k", 50, 0, 50, true},
		{"k-1", 50, 0, 49, false},
		{"MinSize raises k", 50, 60, 59, false},
		{"MinSize reached", 50, 60, 60, true},
		{"MinSize below K does not lower it", 50, 10, 49, false},
		{"default K", 0, 0, DefaultK - 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := newTestEngine(t, func(o *Options) { o.K = tc.k })
			te.define(Segment{Name: "runners", Purpose: "ads", MinSize: tc.minSize})
			te.add("runners", people(0, tc.members)...)
			got := te.segs(person(0), "ads")
			if tc.served {
				assert.Equal(t, []string{"runners"}, got)
			} else {
				assert.Empty(t, got)
			}
			// Removing one member below the bound stops serving at once.
			if tc.served {
				require.NoError(t, te.Remove("runners", person(tc.members-1)))
				assert.Empty(t, te.segs(person(0), "ads"))
			}
			// The person still sees their own membership.
			r, err := te.Explain(person(0))
			require.NoError(t, err)
			require.Len(t, r.Segments, 1)
			assert.Equal(t, "runners", r.Segments[0].Name)
		})
	}
}

func TestRetention(t *testing.T) {
	te := newTestEngine(t)
	// 32 hours: epochs of one hour.
	te.define(Segment{Name: "recent", Purpose: "ads", Retention: 32 * time.Hour})
	te.add("recent", people(0, 5)...)
	te.clock.Advance(10 * time.Hour)
	te.add("recent", person(5)) // added later: expires later

	te.clock.Advance(22*time.Hour - time.Nanosecond) // just before person 0's expiry
	assert.Equal(t, []string{"recent"}, te.segs(person(0), "ads"))
	te.clock.Advance(time.Nanosecond) // exactly at the cut-off: expired
	assert.Empty(t, te.segs(person(0), "ads"), "expired memberships are never served, even before Expire")
	assert.False(t, te.In(te.pseudonym(person(0)), "recent"))
	r, err := te.Explain(person(0))
	require.NoError(t, err)
	require.Len(t, r.Segments, 1)
	assert.Equal(t, "the membership has expired and will be deleted", r.Segments[0].Reason)

	// Re-adding refreshes.
	te.add("recent", person(1))
	assert.Equal(t, []string{"recent"}, te.segs(person(1), "ads"))

	n, err := te.Expire(te.clock.Now())
	require.NoError(t, err)
	assert.Equal(t, 4, n, "persons 0, 2, 3, 4 dropped")
	size, _ := te.Len("recent")
	assert.Equal(t, 2, size)
	r, err = te.Explain(person(0))
	require.NoError(t, err)
	assert.Empty(t, r.Segments)
	assert.False(t, r.Pseudonyms[0].Stored, "nothing left: the pseudonym goes too")

	r, err = te.Explain(person(5))
	require.NoError(t, err)
	require.Len(t, r.Segments, 1)
	assert.Equal(t, t0.Add(10*time.Hour), r.Segments[0].AddedAt)
	assert.Equal(t, t0.Add(42*time.Hour), r.Segments[0].ExpiresAt)

	// Expired and re-added: a new membership with a new clock.
	te.add("recent", person(0))
	assert.Equal(t, []string{"recent"}, te.segs(person(0), "ads"))
}

func TestRedefineKeepsMembers(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads", Description: "v1"})
	te.add("runners", people(0, 5)...)
	te.define(Segment{Name: "runners", Purpose: "ads", Description: "v2", Retention: 64 * time.Hour})
	n, _ := te.Len("runners")
	assert.Equal(t, 5, n)
	r, _ := te.Explain(person(0))
	assert.Equal(t, "v2", r.Segments[0].Description)
	assert.Equal(t, t0.Add(64*time.Hour), r.Segments[0].ExpiresAt, "adding a retention starts the clock now")

	te.define(Segment{Name: "runners", Purpose: "ads", Retention: 32 * time.Hour}) // new epochs
	r, _ = te.Explain(person(0))
	assert.Equal(t, t0.Add(32*time.Hour), r.Segments[0].ExpiresAt)

	te.define(Segment{Name: "runners", Purpose: "email"}) // new purpose, no retention
	assert.Empty(t, te.segs(person(0), "ads"))
	require.NoError(t, te.SetConsent(person(0), "email", true))
	assert.Equal(t, []string{"runners"}, te.segs(person(0), "email"))
	n, _ = te.Len("runners")
	assert.Equal(t, 5, n)

	require.NoError(t, te.Drop("runners"))
	assert.Empty(t, te.segs(person(0), "email"))
	assert.ErrorIs(t, te.Drop("runners"), ErrUnknownSegment)
	_, err := te.Len("runners")
	assert.ErrorIs(t, err, ErrUnknownSegment)
	assert.Empty(t, te.Definitions())
}
