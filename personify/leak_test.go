package personify

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/require"
)

// TestNothingEmittedHoldsIdentifiers runs every flow of the engine with
// real-looking identifiers, captures everything it emits (audit lines,
// errors, reports, receipts, and fmt renderings of every exported type) and
// checks that no identifier, in raw or normalized form, and no key appears.
func TestNothingEmittedHoldsIdentifiers(t *testing.T) {
	_, receiptKey, _ := ed25519.GenerateKey(nil)
	rk, err := NewReceiptKey(receiptKey)
	require.NoError(t, err)
	te := newTestEngine(t, func(o *Options) { o.K = 2; o.ReceiptKey = rk })
	raw := []string{
		"Jane.Doe+shop@Gmail.com", "bob.smith@example.org", "Ana.Lopez@Empresa.es",
		"+1 (415) 555-0132", "+44 20 7946 0958",
		"cust-8842-XY", "AEBE52E7-03EE-455A-B3C4-E57283966239",
	}
	ids := []anonymize.Identifier{
		anonymize.Email(raw[0]), anonymize.Email(raw[1]), anonymize.Email(raw[2]),
		anonymize.Phone(raw[3]), anonymize.Phone(raw[4]),
		anonymize.UserID(raw[5]), anonymize.DeviceID(raw[6]),
	}
	// What must never appear: each identifier raw, normalized, and its
	// distinctive parts.
	forbidden := []string{"janedoe", "jane.doe", "bob.smith", "ana.lopez", "empresa", "14155550132", "442079460958",
		"4155550132", "7946 0958", "cust-8842", "aebe52e7", "AEBE52E7"}
	for _, id := range ids {
		n, err := id.Normalize()
		require.NoError(t, err)
		forbidden = append(forbidden, n)
	}
	forbidden = append(forbidden, raw...)
	forbidden = append(forbidden, testKeyHex[:16], hex.EncodeToString(receiptKey[:8]), hex.EncodeToString(receiptKey.Seed()[:8]))

	var out []string
	emit := func(vs ...any) {
		for _, v := range vs {
			switch v := v.(type) {
			case error:
				if v != nil {
					out = append(out, v.Error(), fmt.Sprintf("%+v", v))
				}
			case nil:
			default:
				js, _ := json.Marshal(v)
				out = append(out, string(js), fmt.Sprint(v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v))
			}
		}
	}

	emit(te.Define(Segment{Name: "runners", Purpose: "ads", Description: "Runs", Retention: 64 * time.Hour}))
	emit(te.Define(Segment{Name: "diabetes", Purpose: "email", Sensitive: true}))
	emit(te.Add("runners", ids...))
	emit(te.Add("diabetes", ids...))
	emit(te.Add("runers", ids[0]), te.Add("runners", anonymize.Email("not an email "+raw[1])))
	emit(te.SetConsent(ids[0], "email", true), te.SetConsent(ids[1], "emial", true))
	emit(te.Suppress(ids[2], "ads"), te.Suppress(ids[3]), te.Unsuppress(ids[3]))
	for _, id := range ids {
		p, err := te.Pseudonym(id)
		emit(err, p, te.Segments(nil, p, "ads"), te.In(p, "runners"))
		r, err := te.Explain(id)
		emit(err, r, r.String())
	}
	a, err := te.Audience("runners & !diabetes", "ads")
	emit(err, a, a.Expr)
	_, err = te.Audience("diabetes", "email")
	emit(err)
	_, err = te.Audience("runners &", "ads")
	emit(err)
	rec, err := te.ForgetWith(ids[0], ForgetOptions{DoNotReAdd: true, RequestID: "ticket-1"})
	emit(err, rec, string(rec.SignedMessage()))
	rec, err = te.Forget(ids[4])
	emit(err, rec)
	require.NoError(t, te.RotateKey(anonymize.GenerateKey(), time.Hour))
	emit(te.Add("runners", ids[1]))
	_, err = te.Expire(t0.Add(100 * time.Hour))
	emit(err)
	emit(te.Engine, te.Stats(), te.Definitions(), te.Purposes(),
		Options{Key: mustKey(t, testKeyHex), ReceiptKey: rk, PreviousKeys: []PreviousKey{{Key: mustKey(t, testKeyHex)}}},
		PreviousKey{Key: mustKey(t, testKeyHex)}, ForgetOptions{RequestID: "x"}, OptIn, Segment{Name: "x"},
		Purpose{Name: "x"}, ErasedSegment{}, SegmentReport{}, ConsentReport{}, ReportPseudonym{})
	_, err = NewReceiptKey(receiptKey[:10])
	emit(err)

	out = append(out, te.audit.String())
	all := strings.Join(out, "\n")
	require.Contains(t, all, "personify.forget", "the audit log was captured")
	require.Greater(t, strings.Count(all, "\n"), 100)
	assertNoneOf(t, all, forbidden)
}

// assertNoneOf fails for each forbidden string that text contains, in any
// case, showing only where.
func assertNoneOf(t *testing.T, text string, forbidden []string) {
	t.Helper()
	lower := strings.ToLower(text)
	for _, f := range forbidden {
		if i := strings.Index(lower, strings.ToLower(f)); i >= 0 {
			t.Errorf("%q appears in the output: ...%s...", f, text[max(0, i-60):min(len(text), i+len(f)+60)])
		}
	}
}
