package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
)

// A Load stream is bounded per message, not as a whole: a bulk load of
// many messages each under --max-body loads them all (it was cut off at
// the first 64 KiB, after some were applied).
func TestServeReviewLoadStreamTotalCapped(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2", "--max-body", "65536")
	define(t, s)
	ctx := ctxT(t)
	stream := s.admin(adminToken).Load(ctx)
	const msgs, per = 10, 2000 // each message ~36 KB, well under the 64 KiB per-message limit
	for i := range msgs {
		var ps []string
		for j := range per {
			ps = append(ps, fmt.Sprintf("%016x", i*per+j+1))
		}
		if err := stream.Send(&pb.LoadRequest{Segment: "runners", Pseudonyms: ps}); err != nil {
			break
		}
	}
	res, err := stream.CloseAndReceive()
	stats, serr := s.admin(adminToken).Stats(ctx, connect.NewRequest(&pb.StatsRequest{}))
	require.NoError(t, serr)
	t.Logf("load err=%v; memberships now %d (15 before)", err, stats.Msg.GetMemberships())
	require.NoError(t, err, "a stream of messages each under --max-body must load")
	assert.EqualValues(t, msgs*per, res.Msg.GetMembers())
}

// An oversized body is 413 however it is sent: with a declared length,
// chunked, or gzip-compressed and inflating past the limit (Connect's own
// answer, 429, would tell a client to retry what can never succeed).
func TestServeReviewOversizedStatusInconsistent(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2", "--max-body", "65536")
	big := `{"subject":{"pseudonym":"0123456789abcdef"},"purpose":"` + strings.Repeat("a", 200000) + `"}`
	for _, c := range []struct {
		name    string
		body    []byte
		chunked bool
		enc     string
	}{
		{"declared length", []byte(big), false, ""},
		{"chunked", []byte(big), true, ""},
		{"gzip", gz([]byte(big)), false, "gzip"},
	} {
		var body io.Reader = bytes.NewReader(c.body)
		if c.chunked {
			body = io.MultiReader(body)
		}
		req, err := http.NewRequest(http.MethodPost, s.base+"/personify.v1.LookupService/Segments", body)
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+lookupToken)
		if c.enc != "" {
			req.Header.Set("Content-Encoding", c.enc)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "%s: %s", c.name, b)
	}
	// and the refusals are counted as body_too_large, not internal errors
	m := s.get(t, "/metrics")
	assert.NotContains(t, m, `personify_refusals_total{rule="internal"}`, "a size refusal is not an internal error")
}

// VerifyReceipt's reason never repeats what a made-up receipt holds (its
// id was quoted verbatim).
func TestServeReviewVerifyReceiptEchoes(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2")
	for _, receipt := range []string{
		`{"id":"secret.person@example.com"}`,
		`{"version":99,"id":"secret.person@example.com"}`,
		`{"version":3,"id":"secret.person@example.com","signing_key":"00"}`,
	} {
		var out struct {
			Valid  bool   `json:"valid"`
			Reason string `json:"reason"`
		}
		s.postOK(t, privacyToken, "PrivacyService/VerifyReceipt", fmt.Sprintf(`{"receipt":%q}`, b64(receipt)), &out)
		assert.False(t, out.Valid)
		assert.NotContains(t, out.Reason, "secret", "the reason echoes the receipt's content: %s", out.Reason)
	}
}

// BatchSegments: results are not aliased across subjects, in every
// combination of hits and misses (checked against Segments one by one).
func TestServeReviewBatchSegmentsNoAliasing(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2")
	define(t, s)
	ctx := ctxT(t)
	ac := s.admin(adminToken)
	for _, name := range []string{"a1", "a2", "a3"} {
		_, err := ac.Define(ctx, connect.NewRequest(&pb.DefineRequest{Segment: &pb.Segment{Name: name, Purpose: "personalization"}}))
		require.NoError(t, err)
	}
	stream := ac.Load(ctx)
	for i := range 30 {
		for k, name := range []string{"a1", "a2", "a3"} {
			if i%(k+2) == 0 {
				require.NoError(t, stream.Send(&pb.LoadRequest{Segment: name, Identifiers: []*pb.Identifier{emailID(i)}}))
			}
		}
	}
	_, err := stream.CloseAndReceive()
	require.NoError(t, err)
	lc := s.lookup(lookupToken)
	var subjects []*pb.Subject
	for i := range 30 {
		subjects = append(subjects, &pb.Subject{Who: &pb.Subject_Identifier{Identifier: emailID(i)}})
	}
	br, err := lc.BatchSegments(ctx, connect.NewRequest(&pb.BatchSegmentsRequest{Subjects: subjects, Purpose: "personalization"}))
	require.NoError(t, err)
	for i, sub := range subjects {
		one, err := lc.Segments(ctx, connect.NewRequest(&pb.SegmentsRequest{Subject: sub, Purpose: "personalization"}))
		require.NoError(t, err)
		assert.Equal(t, one.Msg.GetSegments(), br.Msg.GetResults()[i].GetSegments(), "subject %d", i)
	}
}

// SIGTERM while a Load stream is open: the stream finishes and every
// acknowledged member is there after a restart.
func TestServeReviewSigtermDuringLoad(t *testing.T) {
	st := newSetup(t)
	args := []string{"--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2"}
	s := start(t, args...)
	define(t, s)
	ctx := ctxT(t)
	stream := s.admin(adminToken).Load(ctx)
	require.NoError(t, stream.Send(&pb.LoadRequest{Segment: "runners", Identifiers: []*pb.Identifier{emailID(20)}}))
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	time.Sleep(300 * time.Millisecond)
	serr := stream.Send(&pb.LoadRequest{Segment: "runners", Identifiers: []*pb.Identifier{emailID(21)}})
	res, err := stream.CloseAndReceive()
	t.Logf("send after SIGTERM: %v; close: res=%v err=%v", serr, res, err)
	select {
	case werr := <-s.done:
		t.Logf("exit: %v\nstdout:%s\nstderr:%s", werr, s.out(), s.errs())
		assert.NoError(t, werr)
	case <-time.After(40 * time.Second):
		t.Fatal("did not exit")
	}
	s2 := start(t, args...)
	var segs struct {
		Segments []string `json:"segments"`
	}
	for _, i := range []int{20, 21} {
		s2.postOK(t, lookupToken, "LookupService/Segments", fmt.Sprintf(`{"subject":{"identifier":{"kind":"KIND_EMAIL","value":%q}},"purpose":"personalization"}`, email(i)), &segs)
		if err == nil {
			assert.Equal(t, []string{"runners"}, segs.Segments, "acknowledged member %d lost", i)
		}
		t.Logf("member %d after restart: %v", i, segs.Segments)
	}
	s2.stop()
}

// A second server on the same --dir exits non-zero with a clear error.
func TestServeReviewSecondServerSameDir(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2")
	cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0", "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens)
	cmd.Env = append(os.Environ(), "PERSONIFY_KEY=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("second server: err=%v\nstdout:%s\nstderr:%s", err, out.String(), errb.String())
		assert.Error(t, err)
		assert.Contains(t, errb.String(), "in use by another engine")
		assert.NotContains(t, out.String(), "ready")
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		t.Fatal("the second server did not exit")
	}
	s.stop()
}

// A oneof given twice (both subject.pseudonym and subject.identifier) is
// refused with a message that names the conflict, and no identifier.
func TestServeReviewOneofConflictMessage(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2")
	define(t, s)
	code, body := s.post(t, lookupToken, "LookupService/Segments", `{"subject":{"pseudonym":"0123456789abcdef","identifier":{"kind":"KIND_EMAIL","value":"secret.person@example.com"}},"purpose":"personalization"}`)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.NotContains(t, body, "secret")
	assert.Regexp(t, `oneof|both|pseudonym or an identifier|twice`, body, "the message should name the conflict")
}

// A link lives at least the TTL asked for (the expiry was truncated to the
// second, downwards: a 1 s link lived 43 ms).
func TestServeReviewLinkTTLTruncated(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2")
	define(t, s)
	pc := s.privacy(privacyToken)
	ctx := ctxT(t)
	minLeft := time.Hour
	for range 8 {
		l, err := pc.PreferenceLink(ctx, connect.NewRequest(&pb.PreferenceLinkRequest{Identifier: emailID(1), TtlSeconds: 1}))
		require.NoError(t, err)
		if left := time.Until(l.Msg.GetExpiresAt().AsTime()); left < minLeft {
			minLeft = left
		}
		time.Sleep(130 * time.Millisecond)
	}
	assert.GreaterOrEqual(t, minLeft, 900*time.Millisecond, "a 1 s link lived only %v", minLeft)
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	_, _ = w.Write(b)
	_ = w.Close()
	return out.Bytes()
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
