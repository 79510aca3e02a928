package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/pgstore/pgtest"
)

// Two sidecars over one fleet on PostgreSQL: what one writes, the other
// serves; an erasure through either reaches both.
func TestServeFleet(t *testing.T) {
	pg, err := pgtest.Start()
	if errors.Is(err, pgtest.ErrNoPostgres) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { pg.Close() })
	st := newSetup(t)
	args := []string{"--postgres", pg.ConnString(), "--key-file", st.keyFile, "--tokens", st.tokens, "--k", "2"}
	a := start(t, args...)
	b := start(t, args...)
	define(t, a)

	ctx := ctxT(t)
	subject := &pb.Subject{Who: &pb.Subject_Identifier{Identifier: emailID(1)}}
	segmentsOn := func(s *proc) []string {
		r, err := s.lookup(lookupToken).Segments(ctx, connect.NewRequest(&pb.SegmentsRequest{Subject: subject, Purpose: "personalization"}))
		if err != nil {
			return []string{err.Error()}
		}
		return r.Msg.GetSegments()
	}
	require.Eventually(t, func() bool { return strings.Join(segmentsOn(b), ",") == "runners" }, 10*time.Second, 20*time.Millisecond,
		"replica B serves what A loaded")
	fr, err := b.privacy(privacyToken).Forget(ctx, connect.NewRequest(&pb.ForgetRequest{Identifier: emailID(1)}))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(segmentsOn(a)) == 0 }, 10*time.Second, 20*time.Millisecond,
		"an erasure through B reaches A")
	vr, err := a.privacy(privacyToken).VerifyReceipt(ctx, connect.NewRequest(&pb.VerifyReceiptRequest{Receipt: fr.Msg.GetReceipt()}))
	require.NoError(t, err)
	assert.True(t, vr.Msg.GetValid(), "a receipt signed by one replica verifies on another")
	assert.Contains(t, a.get(t, "/readyz"), "ready")
	assert.NotContains(t, a.get(t, "/metrics"), "personify_replica_applied 0\n")
	a.stop()
	b.stop()
	assert.NotContains(t, a.errs()+b.errs(), "person001")
}
