package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/personify-go/personify/anonymize"
	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/personify"
)

func email(i int) string { return fmt.Sprintf("person%03d@example.com", i) }

func emailID(i int) *pb.Identifier { return &pb.Identifier{Kind: pb.Kind_KIND_EMAIL, Value: email(i)} }

// define defines two purposes and two segments and loads people 0-9 into
// runners and 0-4 into ads-seed, through the API.
func define(t *testing.T, s *proc) {
	t.Helper()
	s.postOK(t, adminToken, "AdminService/DefinePurpose", `{"purpose":{"name":"personalization","model":"opt-out","description":"Tailoring the site"}}`, nil)
	s.postOK(t, adminToken, "AdminService/DefinePurpose", `{"purpose":{"name":"advertising","model":"opt-out","description":"Sharing with ad partners"}}`, nil)
	s.postOK(t, adminToken, "AdminService/Define", `{"segment":{"name":"runners","purpose":"personalization","description":"You logged a run","retention_seconds":7776000}}`, nil)
	s.postOK(t, adminToken, "AdminService/Define", `{"segment":{"name":"ads-seed","purpose":"advertising","description":"Shared with partners"}}`, nil)

	// The bulk load is a client stream: a generated gRPC client.
	stream := s.admin(adminToken).Load(ctxT(t))
	var ids []*pb.Identifier
	for i := range 10 {
		ids = append(ids, emailID(i))
	}
	require.NoError(t, stream.Send(&pb.LoadRequest{Segment: "runners", Identifiers: ids[:6]}))
	require.NoError(t, stream.Send(&pb.LoadRequest{Segment: "runners", Identifiers: ids[6:]}))
	require.NoError(t, stream.Send(&pb.LoadRequest{Segment: "ads-seed", Identifiers: ids[:5]}))
	res, err := stream.CloseAndReceive()
	require.NoError(t, err)
	assert.EqualValues(t, 15, res.Msg.GetMembers())
	assert.EqualValues(t, 3, res.Msg.GetBatches())
}

func TestServeAsClientsUseIt(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2")
	define(t, s)

	// JSON over HTTP with a plain net/http client.
	var segs struct {
		Segments []string `json:"segments"`
	}
	s.postOK(t, lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":" Person001@Example.com "}},"purpose":"personalization"}`, &segs)
	assert.Equal(t, []string{"runners"}, segs.Segments)

	// The pseudonym is the library's, under the same key.
	e, err := personify.New(personify.Options{Key: st.key})
	require.NoError(t, err)
	defer e.Close()
	want, err := e.Pseudonym(anonymize.Email(email(1)))
	require.NoError(t, err)
	var ps struct {
		Pseudonym string `json:"pseudonym"`
	}
	s.postOK(t, lookupToken, "LookupService/Pseudonymize", `{"identifier":{"kind":"KIND_EMAIL","value":"person001@example.com"}}`, &ps)
	assert.Equal(t, want.String(), ps.Pseudonym)
	s.postOK(t, lookupToken, "LookupService/Segments", fmt.Sprintf(`{"subject":{"pseudonym":%q},"purpose":"advertising"}`, ps.Pseudonym), &segs)
	assert.Equal(t, []string{"ads-seed"}, segs.Segments)

	// A generated gRPC client.
	lc := s.lookup(lookupToken)
	ctx := ctxT(t)
	r, err := lc.Segments(ctx, connect.NewRequest(&pb.SegmentsRequest{Subject: &pb.Subject{Who: &pb.Subject_Pseudonym{Pseudonym: want.String()}}, Purpose: "personalization"}))
	require.NoError(t, err)
	assert.Equal(t, []string{"runners"}, r.Msg.GetSegments())
	var subjects []*pb.Subject
	for i := range 12 {
		subjects = append(subjects, &pb.Subject{Who: &pb.Subject_Identifier{Identifier: emailID(i)}})
	}
	br, err := lc.BatchSegments(ctx, connect.NewRequest(&pb.BatchSegmentsRequest{Subjects: subjects, Purpose: "advertising"}))
	require.NoError(t, err)
	require.Len(t, br.Msg.GetResults(), 12)
	for i, res := range br.Msg.GetResults() {
		if i < 5 {
			assert.Equal(t, []string{"ads-seed"}, res.GetSegments(), i)
		} else {
			assert.Empty(t, res.GetSegments(), i)
		}
	}
	bi, err := lc.BatchIn(ctx, connect.NewRequest(&pb.BatchInRequest{Subjects: subjects, Segment: "runners"}))
	require.NoError(t, err)
	assert.Equal(t, []bool{true, true, true, true, true, true, true, true, true, true, false, false}, bi.Msg.GetIn())
	bp, err := lc.BatchPseudonymize(ctx, connect.NewRequest(&pb.BatchPseudonymizeRequest{Identifiers: []*pb.Identifier{emailID(1), emailID(2)}}))
	require.NoError(t, err)
	assert.Equal(t, want.String(), bp.Msg.GetPseudonyms()[0])

	// Privacy: consent, explain, suppression, link, forget with a receipt.
	pc := s.privacy(privacyToken)
	_, err = pc.SetConsent(ctx, connect.NewRequest(&pb.SetConsentRequest{Identifier: emailID(2), Purpose: "personalization", Granted: false}))
	require.NoError(t, err)
	r, err = lc.Segments(ctx, connect.NewRequest(&pb.SegmentsRequest{Subject: &pb.Subject{Who: &pb.Subject_Identifier{Identifier: emailID(2)}}, Purpose: "personalization"}))
	require.NoError(t, err)
	assert.Empty(t, r.Msg.GetSegments(), "a withdrawal takes effect on the next lookup")
	ex, err := pc.Explain(ctx, connect.NewRequest(&pb.ExplainRequest{Identifier: emailID(2)}))
	require.NoError(t, err)
	require.Len(t, ex.Msg.GetReport().GetSegments(), 2)
	assert.Equal(t, "You logged a run", ex.Msg.GetReport().GetSegments()[1].GetDescription())
	_, err = pc.Suppress(ctx, connect.NewRequest(&pb.SuppressRequest{Identifier: emailID(3), Purposes: []string{"advertising"}}))
	require.NoError(t, err)
	s.postOK(t, lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":"person003@example.com"}},"purpose":"advertising"}`, &segs)
	assert.Empty(t, segs.Segments)
	_, err = pc.Link(ctx, connect.NewRequest(&pb.LinkRequest{Identifiers: []*pb.Identifier{emailID(4), {Kind: pb.Kind_KIND_DEVICE_ID, Value: "device-4"}}}))
	require.NoError(t, err)
	s.postOK(t, lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_DEVICE_ID","value":"device-4"}},"purpose":"personalization"}`, &segs)
	assert.Equal(t, []string{"runners"}, segs.Segments, "the device answers for the person")

	fr, err := pc.Forget(ctx, connect.NewRequest(&pb.ForgetRequest{Identifier: emailID(4), RequestId: "ticket-7"}))
	require.NoError(t, err)
	var rc personify.Receipt
	require.NoError(t, json.Unmarshal(fr.Msg.GetReceipt(), &rc))
	assert.NoError(t, e.VerifyReceipt(rc), "the receipt verifies with the public key derived from the same key, offline")
	assert.EqualValues(t, 2, fr.Msg.GetMemberships())
	assert.Len(t, rc.Linked, 2)
	vr, err := pc.VerifyReceipt(ctx, connect.NewRequest(&pb.VerifyReceiptRequest{Receipt: fr.Msg.GetReceipt()}))
	require.NoError(t, err)
	assert.True(t, vr.Msg.GetValid())
	tampered := strings.Replace(string(fr.Msg.GetReceipt()), `"ticket-7"`, `"ticket-8"`, 1)
	vr, err = pc.VerifyReceipt(ctx, connect.NewRequest(&pb.VerifyReceiptRequest{Receipt: []byte(tampered)}))
	require.NoError(t, err)
	assert.False(t, vr.Msg.GetValid())
	assert.Contains(t, vr.Msg.GetReason(), "signature")
	s.postOK(t, lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_DEVICE_ID","value":"device-4"}},"purpose":"personalization"}`, &segs)
	assert.Empty(t, segs.Segments, "forgotten under every linked identifier")

	link, err := pc.PreferenceLink(ctx, connect.NewRequest(&pb.PreferenceLinkRequest{Identifier: emailID(1)}))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(link.Msg.GetUrl(), "/privacy/?t="))
	assert.NotContains(t, link.Msg.GetUrl(), "person001")
	assert.WithinDuration(t, time.Now().Add(15*time.Minute), link.Msg.GetExpiresAt().AsTime(), time.Minute)

	stats, err := s.admin(adminToken).Stats(ctx, connect.NewRequest(&pb.StatsRequest{}))
	require.NoError(t, err)
	assert.EqualValues(t, 2, stats.Msg.GetSegments())
	assert.EqualValues(t, 1, stats.Msg.GetPendingErasures(), "the erasure is durable, its purge pending")

	// Health, readiness, metrics.
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		resp, err := http.Get(s.base + path)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Equal(t, want, string(b), path)
	}
	metrics := s.get(t, "/metrics")
	for _, m := range []string{`personify_lookups_total{method="segments",outcome="hit"}`, `personify_erasures_pending 1`,
		`personify_erasure_oldest_pending_age_seconds`, `personify_fsync_seconds_count`, `personify_replica_lag_seconds`, `personify_erasures_total 1`} {
		assert.Contains(t, metrics, m)
	}

	s.stop()
	// No identifier and no token reached the logs or the output.
	all := s.out() + s.errs()
	for _, secret := range []string{"person00", "example.com", "device-4", lookupToken, privacyToken, adminToken, testKeyHex, testKeyHex[:32]} {
		assert.NotContains(t, all, secret)
	}
}

// Each role's token is allowed where it belongs and refused elsewhere, in
// the caller's protocol: HTTP 401/403 over JSON, the gRPC codes over gRPC.
func TestServeRoles(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2")
	define(t, s)
	calls := map[string]struct {
		method, body string
		role         string
	}{
		"segments": {"LookupService/Segments", `{"subject":{"pseudonym":"0123456789abcdef"},"purpose":"personalization"}`, "lookup"},
		"explain":  {"PrivacyService/Explain", `{"identifier":{"kind":"KIND_EMAIL","value":"person001@example.com"}}`, "privacy"},
		"forget":   {"PrivacyService/Forget", `{"identifier":{"kind":"KIND_EMAIL","value":"person099@example.com"}}`, "privacy"},
		"link":     {"PrivacyService/PreferenceLink", `{"identifier":{"kind":"KIND_EMAIL","value":"person001@example.com"}}`, "privacy"},
		"define":   {"AdminService/Define", `{"segment":{"name":"x","purpose":"personalization"}}`, "admin"},
		"stats":    {"AdminService/Stats", `{}`, "admin"},
	}
	tokens := map[string]string{"lookup": lookupToken, "privacy": privacyToken, "admin": adminToken}
	for name, c := range calls {
		for role, tok := range tokens {
			code, body := s.post(t, tok, c.method, c.body)
			if role == c.role {
				assert.Equal(t, http.StatusOK, code, "%s with the %s token: %s", name, role, body)
			} else {
				assert.Equal(t, http.StatusForbidden, code, "%s with the %s token: %s", name, role, body)
				assert.Contains(t, body, "permission_denied")
			}
		}
		code, body := s.post(t, "", c.method, c.body)
		assert.Equal(t, http.StatusUnauthorized, code, "%s without a token: %s", name, body)
		code, _ = s.post(t, lookupToken+"x", c.method, c.body)
		assert.Equal(t, http.StatusUnauthorized, code, "%s with an unknown token", name)
	}
	// A token holding two roles has both.
	code, _ := s.post(t, bothToken, calls["segments"].method, calls["segments"].body)
	assert.Equal(t, http.StatusOK, code)
	code, _ = s.post(t, bothToken, calls["explain"].method, calls["explain"].body)
	assert.Equal(t, http.StatusOK, code)
	code, _ = s.post(t, bothToken, calls["stats"].method, calls["stats"].body)
	assert.Equal(t, http.StatusForbidden, code)

	// Over gRPC: a lookup token cannot erase or explain.
	ctx := ctxT(t)
	_, err := s.privacy(lookupToken).Forget(ctx, connect.NewRequest(&pb.ForgetRequest{Identifier: emailID(1)}))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err))
	_, err = s.privacy(lookupToken).Explain(ctx, connect.NewRequest(&pb.ExplainRequest{Identifier: emailID(1)}))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err))
	_, err = s.lookup("nobody-knows-this-token").Segments(ctx, connect.NewRequest(&pb.SegmentsRequest{}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
	var segs struct {
		Segments []string `json:"segments"`
	}
	s.postOK(t, lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":"person001@example.com"}},"purpose":"personalization"}`, &segs)
	assert.Equal(t, []string{"runners"}, segs.Segments, "the refused calls changed nothing")
}

// SIGTERM while clients write: the server finishes what is under way, and
// every write it acknowledged is there after a restart.
func TestServeSIGTERMLosesNoAcknowledgedWrite(t *testing.T) {
	st := newSetup(t)
	args := []string{"--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2"}
	s := start(t, args...)
	define(t, s)
	var (
		mu       sync.Mutex
		acked    []int
		next     atomic.Int64
		stopping atomic.Bool
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopping.Load() || next.Load() < 40 {
				i := int(next.Add(1))
				if i > 5000 {
					return
				}
				body := fmt.Sprintf(`{"identifier":{"kind":"KIND_USER_ID","value":"user-%d"},"purposes":["advertising"]}`, i)
				req, _ := http.NewRequest(http.MethodPost, s.base+"/personify.v1.PrivacyService/Suppress", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+privacyToken)
				resp, err := client.Do(req)
				if err != nil {
					return // the server has stopped
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					mu.Lock()
					acked = append(acked, i)
					mu.Unlock()
				}
			}
		}()
	}
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 50 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopping.Store(true)
	s.stop()
	wg.Wait()
	require.GreaterOrEqual(t, len(acked), 50)

	s = start(t, args...)
	ctx := ctxT(t)
	pc := s.privacy(privacyToken)
	for _, i := range acked {
		ex, err := pc.Explain(ctx, connect.NewRequest(&pb.ExplainRequest{Identifier: &pb.Identifier{Kind: pb.Kind_KIND_USER_ID, Value: fmt.Sprintf("user-%d", i)}}))
		require.NoError(t, err)
		assert.Equal(t, []string{"advertising"}, ex.Msg.GetReport().GetSuppressed(), "acknowledged suppression of user-%d lost", i)
	}
	t.Logf("%d acknowledged writes, all present after SIGTERM and a restart", len(acked))
}
