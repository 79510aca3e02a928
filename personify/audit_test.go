package personify

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// auditEvents parses the JSON audit lines written since the last call.
func (te *testEngine) auditEvents() []map[string]any {
	te.t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(te.audit.String()))
	for sc.Scan() {
		var ev map[string]any
		require.NoError(te.t, json.Unmarshal(sc.Bytes(), &ev))
		out = append(out, ev)
	}
	te.audit.Reset()
	return out
}

func TestAuditEvents(t *testing.T) {
	te := newTestEngine(t)
	te.auditEvents()
	p := func() string { return te.pseudonym(person(1)).String() }
	for _, tc := range []struct {
		op     func()
		event  string
		fields map[string]any
	}{
		{func() { te.define(Segment{Name: "runners", Purpose: "ads", Retention: time.Hour}) }, "personify.define",
			map[string]any{"segment": "runners", "purpose": "ads", "redefined": false}},
		{func() { te.add("runners", people(0, 4)...) }, "personify.add", map[string]any{"segment": "runners", "count": 4.0}},
		{func() { require.NoError(t, te.Remove("runners", person(3))) }, "personify.remove", map[string]any{"count": 1.0}},
		{func() { require.NoError(t, te.SetConsent(person(1), "email", true)) }, "personify.consent",
			map[string]any{"purpose": "email", "granted": true, "pseudonym": p()}},
		{func() { require.NoError(t, te.Suppress(person(1), "email")) }, "personify.suppress", map[string]any{"purposes": "email"}},
		{func() { require.NoError(t, te.Unsuppress(person(1))) }, "personify.unsuppress", map[string]any{"purposes": "all"}},
		{func() { _, err := te.Audience("runners", "ads"); require.NoError(t, err) }, "personify.audience",
			map[string]any{"expr": "runners", "count": 3.0}},
		{func() { _, err := te.Audience("runners", "email"); require.Error(t, err) }, "personify.audience_refused",
			map[string]any{"expr": "runners", "purpose": "email"}},
		{func() {
			te.define(Segment{Name: "tiny", Purpose: "ads"})
			te.auditEvents()
			_, _ = te.Audience("tiny", "ads")
		},
			"personify.audience_refused", map[string]any{"expr": "tiny", "k": 3.0}},
		{func() { _, err := te.Explain(person(1)); require.NoError(t, err) }, "personify.explain", map[string]any{"pseudonym": p()}},
		{func() { _, err := te.Forget(person(2)); require.NoError(t, err) }, "personify.forget", map[string]any{"segments": 1.0}},
		{func() { te.clock.Advance(2 * time.Hour); _, err := te.Expire(te.clock.Now()); require.NoError(t, err) },
			"personify.expire", map[string]any{"memberships": 2.0}},
		{func() { require.NoError(t, te.Drop("tiny")) }, "personify.drop", map[string]any{"segment": "tiny"}},
	} {
		tc.op()
		evs := te.auditEvents()
		require.NotEmpty(t, evs, tc.event)
		ev := evs[len(evs)-1]
		assert.Equal(t, tc.event, ev["msg"])
		for k, v := range tc.fields {
			assert.Equal(t, v, ev[k], "%s: %s", tc.event, k)
		}
	}
}

// An expression that names something other than a defined segment (an
// identifier quoted by mistake, or a valid-looking name built from input)
// is refused, and neither the audit log nor the error repeats it: the log
// names the defined segments and counts the others.
func TestAudienceRefusalLogsNoIdentifier(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.auditEvents()
	for _, tc := range []struct {
		expr, secret string
		undefined    float64
	}{
		{`"jane.doe@example.com" & runners`, "jane.doe", 1},
		{`user-SECRET-8842 | runners`, "SECRET", 1},
		{`runners & !user-SECRET-8842 & "x@y.z"`, "SECRET", 2},
	} {
		_, err := te.Audience(tc.expr, "ads")
		require.ErrorIs(t, err, ErrUnknownSegment)
		assert.NotContains(t, err.Error(), tc.secret)
		assert.NotContains(t, te.audit.String(), tc.secret)
		evs := te.auditEvents()
		require.NotEmpty(t, evs)
		ev := evs[len(evs)-1]
		assert.Equal(t, "personify.audience_refused", ev["msg"])
		assert.Equal(t, tc.undefined, ev["undefined_names"], tc.expr)
		assert.Equal(t, []any{"runners"}, ev["segments"], tc.expr)
		assert.Nil(t, ev["expr"], tc.expr)
	}
	// An expression that does not parse: its length only.
	expr := `runners & ( "jane.doe@example.com"`
	_, err := te.Audience(expr, "ads")
	require.Error(t, err)
	assert.NotContains(t, te.audit.String(), "jane.doe")
	evs := te.auditEvents()
	assert.Equal(t, float64(len(expr)), evs[len(evs)-1]["expr_bytes"])
	// A purpose that is not defined is not repeated either.
	_, err = te.Audience("runners", "user-SECRET-8842")
	require.ErrorIs(t, err, ErrUnknownPurpose)
	assert.NotContains(t, te.audit.String(), "SECRET")
	// A refusal of a well-formed audience of defined segments logs it.
	_, err = te.Audience("runners", "ads")
	require.ErrorIs(t, err, ErrAudienceTooSmall)
	evs = te.auditEvents()
	assert.Equal(t, "runners", evs[len(evs)-1]["expr"])
}
