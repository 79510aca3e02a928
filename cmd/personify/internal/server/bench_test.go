package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/personify-go/personify/anonymize"
	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/cmd/personify/gen/personify/v1/personifyv1connect"
	"github.com/personify-go/personify/cmd/personify/internal/link"
	"github.com/personify-go/personify/personify"
)

// BenchmarkServeSegmentsJSON is one Segments call as JSON over HTTP/1.1 to
// a server in this process: the sidecar's own cost per call, without a
// second process (bench's BenchmarkSidecar measures the binary against
// Redis).
func BenchmarkServeSegmentsJSON(b *testing.B) {
	key, _ := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	e, err := personify.New(personify.Options{Key: key, K: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	_ = e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut})
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", anonymize.Email("ana@example.com"))
	p, _ := e.Pseudonym(anonymize.Email("ana@example.com"))
	var ts Tokens
	_ = ts.Add("lookup-token-0123456789", RoleLookup)
	links, _ := link.New(key, nil)
	s, err := New(Config{Tokens: &ts, Links: links})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Serve(e); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	body := `{"subject":{"pseudonym":"` + p.String() + `"},"purpose":"personalization"}`
	c := srv.Client()
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/personify.v1.LookupService/Segments", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer lookup-token-0123456789")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(out), "runners") {
			b.Fatal(resp.StatusCode, string(out))
		}
	}
}

// BenchmarkServeSegmentsGRPC is BenchmarkServeSegmentsJSON with the
// generated client speaking gRPC over h2c.
func BenchmarkServeSegmentsGRPC(b *testing.B) {
	key, _ := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	e, _ := personify.New(personify.Options{Key: key, K: 1})
	defer e.Close()
	_ = e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut})
	_ = e.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = e.Add("runners", anonymize.Email("ana@example.com"))
	p, _ := e.Pseudonym(anonymize.Email("ana@example.com"))
	var ts Tokens
	_ = ts.Add("lookup-token-0123456789", RoleLookup)
	links, _ := link.New(key, nil)
	s, _ := New(Config{Tokens: &ts, Links: links})
	if err := s.Serve(e); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	defer srv.Close()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	c := personifyv1connect.NewLookupServiceClient(&http.Client{Transport: tr}, srv.URL, connect.WithGRPC())
	req := &pb.SegmentsRequest{Subject: &pb.Subject{Who: &pb.Subject_Pseudonym{Pseudonym: p.String()}}, Purpose: "personalization"}
	b.ReportAllocs()
	for b.Loop() {
		r := connect.NewRequest(req)
		r.Header().Set("Authorization", "Bearer lookup-token-0123456789")
		resp, err := c.Segments(context.Background(), r)
		if err != nil || len(resp.Msg.GetSegments()) != 1 {
			b.Fatal(err)
		}
	}
}
