package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
)

// Every kind of bad input gets the right status and a message that names
// the problem, never the identifier it carried, and changes nothing.
func TestServeBadInput(t *testing.T) {
	st := newSetup(t)
	s := start(t, "--dir", st.dir, "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2", "--max-body", "65536", "--max-batch", "100")
	define(t, s)
	const secret = "secret.person@example.com"
	subjects := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"pseudonym":"%016x"}`, i+1)
		}
		return b.String()
	}
	cases := []struct {
		name, token, method, body string
		status                    int
		says                      string
	}{
		{"malformed JSON", lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":"` + secret + `"`, 400, "JSON ends early"},
		{"not JSON", lookupToken, "LookupService/Segments", `subject=` + secret, 400, "not valid JSON"},
		{"unknown field", lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":"x@example.org"}},"purpose":"personalization","` + secret + `":1}`, 400, "unknown field"},
		{"misspelt field", lookupToken, "LookupService/Segments", `{"subject":{"pseudonym":"0123456789abcdef"},"purpse":"personalization"}`, 400, "unknown field"},
		{"wrong type", lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":["` + secret + `"]}},"purpose":"personalization"}`, 400, "wrong type"},
		{"bad enum", lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"` + secret + `","value":"a@b.c"}},"purpose":"personalization"}`, 400, "enum"},
		{"invalid email", lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":"secret.person@@example.com"}},"purpose":"personalization"}`, 400, "invalid email"},
		{"invalid phone", privacyToken, "PrivacyService/Explain", `{"identifier":{"kind":"KIND_PHONE","value":"+99 secret 5550100"}}`, 400, "invalid phone"},
		{"no kind", privacyToken, "PrivacyService/Forget", `{"identifier":{"value":"` + secret + `"}}`, 400, "no kind"},
		{"no subject", lookupToken, "LookupService/Segments", `{"purpose":"personalization"}`, 400, "names no one"},
		{"bad pseudonym", lookupToken, "LookupService/In", `{"subject":{"pseudonym":"` + secret + `"},"segment":"runners"}`, 400, "not a pseudonym"},
		{"identifier too long", lookupToken, "LookupService/Pseudonymize", `{"identifier":{"kind":"KIND_USER_ID","value":"` + strings.Repeat("x", 2000) + `"}}`, 400, "more than 1024"},
		{"unknown segment", lookupToken, "LookupService/In", `{"subject":{"pseudonym":"0123456789abcdef"},"segment":"swimmers"}`, 404, "unknown segment"},
		{"unknown purpose", lookupToken, "LookupService/Segments", `{"subject":{"pseudonym":"0123456789abcdef"},"purpose":"marketing"}`, 404, "unknown purpose"},
		{"unknown purpose in consent", privacyToken, "PrivacyService/SetConsent", `{"identifier":{"kind":"KIND_EMAIL","value":"` + secret + `"},"purpose":"marketing"}`, 404, "unknown purpose"},
		{"oversized batch", lookupToken, "LookupService/BatchSegments", `{"subjects":[` + subjects(101) + `],"purpose":"personalization"}`, 400, "more than the limit of 100"},
		{"empty batch", lookupToken, "LookupService/BatchIn", `{"subjects":[],"segment":"runners"}`, 400, "empty"},
		{"oversized body", lookupToken, "LookupService/BatchSegments", `{"subjects":[` + subjects(3000) + `],"purpose":"personalization"}`, 413, "more than the limit of 65536"},
		{"bad request ID", privacyToken, "PrivacyService/Forget", `{"identifier":{"kind":"KIND_EMAIL","value":"` + secret + `"},"request_id":"` + secret + `"}`, 400, "RequestID"},
		{"bad receipt", privacyToken, "PrivacyService/VerifyReceipt", `{"receipt":"` + "eyJ2ZXJzaW9uIjoz" + `"}`, 400, "receipt is not valid JSON"},
		{"bad model", adminToken, "AdminService/DefinePurpose", `{"purpose":{"name":"p","model":"maybe"}}`, 400, "opt-in"},
		{"bad segment name", adminToken, "AdminService/Define", `{"segment":{"name":"no spaces allowed","purpose":"personalization"}}`, 400, "name"},
		{"link of one", privacyToken, "PrivacyService/Link", `{"identifiers":[{"kind":"KIND_EMAIL","value":"` + secret + `"}]}`, 400, "2 to 16"},
		{"link ttl", privacyToken, "PrivacyService/PreferenceLink", `{"identifier":{"kind":"KIND_EMAIL","value":"` + secret + `"},"ttl_seconds":"999999"}`, 400, "one day"},
	}
	for _, c := range cases {
		code, body := s.post(t, c.token, c.method, c.body)
		assert.Equal(t, c.status, code, "%s: %s", c.name, body)
		assert.Contains(t, body, c.says, c.name)
		assert.NotContains(t, body, "secret", "%s: the answer echoes the identifier: %s", c.name, body)
	}

	// Malformed and unknown-field protobuf over gRPC.
	ctx := ctxT(t)
	raw := func(msg []byte) error {
		var frame bytes.Buffer
		frame.WriteByte(0)
		frame.Write([]byte{0, 0, 0, byte(len(msg))})
		frame.Write(msg)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/personify.v1.LookupService/Segments", &frame)
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/grpc+proto")
		req.Header.Set("TE", "trailers")
		resp, err := h2c(lookupToken).Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return fmt.Errorf("grpc-status %s: %s", resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message"))
	}
	good, err := proto.Marshal(&pb.SegmentsRequest{Subject: &pb.Subject{Who: &pb.Subject_Pseudonym{Pseudonym: "0123456789abcdef"}}, Purpose: "personalization"})
	require.NoError(t, err)
	assert.Contains(t, raw(good).Error(), "grpc-status 0:")
	bad := append(append([]byte{}, good...), 0xff, 0xff) // a truncated varint
	err = raw(bad)
	assert.Contains(t, err.Error(), "grpc-status 3:") // InvalidArgument
	assert.Contains(t, err.Error(), "not a valid personify.v1.SegmentsRequest")
	unknown := protowire.AppendTag(append([]byte{}, good...), 99, protowire.BytesType)
	unknown = protowire.AppendString(unknown, secret)
	err = raw(unknown)
	assert.Contains(t, err.Error(), "grpc-status 3:")
	assert.Contains(t, err.Error(), "unknown field")
	assert.NotContains(t, err.Error(), "secret")

	// The generated client sees the same codes.
	_, err = s.lookup(lookupToken).In(ctx, connect.NewRequest(&pb.InRequest{Subject: &pb.Subject{Who: &pb.Subject_Pseudonym{Pseudonym: "0123456789abcdef"}}, Segment: "nope"}))
	assert.Equal(t, connect.CodeNotFound, connect.CodeOf(err))
	stream := s.admin(adminToken).Load(ctx)
	require.NoError(t, stream.Send(&pb.LoadRequest{Segment: "runners", Pseudonyms: []string{"0123456789abcdef", secret}}))
	_, err = stream.CloseAndReceive()
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
	assert.Contains(t, err.Error(), "pseudonyms[1] is not a pseudonym")
	assert.NotContains(t, err.Error(), "secret")

	// Nothing of it was stored, and no log line holds the identifier.
	var segs struct {
		Segments []string `json:"segments"`
	}
	s.postOK(t, lookupToken, "LookupService/Segments", `{"subject":{"identifier":{"kind":"KIND_EMAIL","value":"person001@example.com"}},"purpose":"personalization"}`, &segs)
	assert.Equal(t, []string{"runners"}, segs.Segments)
	stats, err := s.admin(adminToken).Stats(ctx, connect.NewRequest(&pb.StatsRequest{}))
	require.NoError(t, err)
	assert.EqualValues(t, 15, stats.Msg.GetMemberships(), "the refused load stored nothing")
	s.stop()
	assert.NotContains(t, s.errs(), "secret")
}
