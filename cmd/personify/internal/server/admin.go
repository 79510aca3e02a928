package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	"github.com/personify-go/personify/anonymize"
	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/personify"
)

type adminService struct{ s *Server }

// maxLoadBatch bounds the members of one Load message.
const maxLoadBatch = 1 << 16

func (a adminService) Define(ctx context.Context, req *connect.Request[pb.DefineRequest]) (*connect.Response[pb.DefineResponse], error) {
	s, g := a.s, req.Msg.GetSegment()
	if g == nil {
		return nil, s.fail("define", fmt.Errorf("%w: segment is missing", errBadRequest))
	}
	if g.GetRetentionSeconds() < 0 || g.GetRetentionSeconds() > int64(100*365*24*time.Hour/time.Second) {
		return nil, s.fail("define", fmt.Errorf("%w: segment.retention_seconds is out of range (0 to 100 years)", errBadRequest))
	}
	seg := personify.Segment{Name: g.GetName(), Purpose: g.GetPurpose(), Description: g.GetDescription(),
		Retention: time.Duration(g.GetRetentionSeconds()) * time.Second, MinSize: int(g.GetMinSize()), Sensitive: g.GetSensitive()}
	if err := s.eng.DefineContext(ctx, seg); err != nil {
		return nil, s.fail("define", err)
	}
	return connect.NewResponse(&pb.DefineResponse{}), nil
}

func (a adminService) DefinePurpose(ctx context.Context, req *connect.Request[pb.DefinePurposeRequest]) (*connect.Response[pb.DefinePurposeResponse], error) {
	s, p := a.s, req.Msg.GetPurpose()
	if p == nil {
		return nil, s.fail("define_purpose", fmt.Errorf("%w: purpose is missing", errBadRequest))
	}
	var model personify.ConsentModel
	if err := model.UnmarshalText([]byte(p.GetModel())); err != nil {
		return nil, s.fail("define_purpose", fmt.Errorf("%w: purpose.model must be \"opt-in\" or \"opt-out\"", errBadRequest))
	}
	if err := s.eng.DefinePurposeContext(ctx, personify.Purpose{Name: p.GetName(), Model: model, Description: p.GetDescription()}); err != nil {
		return nil, s.fail("define_purpose", err)
	}
	return connect.NewResponse(&pb.DefinePurposeResponse{}), nil
}

func (a adminService) Load(ctx context.Context, st *connect.ClientStream[pb.LoadRequest]) (*connect.Response[pb.LoadResponse], error) {
	s := a.s
	var members, batches int64
	ps := make([]anonymize.Pseudonym, 0, 1024)
	for st.Receive() {
		m := st.Msg()
		n := len(m.GetPseudonyms()) + len(m.GetIdentifiers())
		if n > maxLoadBatch {
			return nil, s.fail("load", fmt.Errorf("%w: message %d holds %d members, more than the limit of %d: send smaller batches (%d members loaded before it)",
				errBatchTooLarge, batches, n, maxLoadBatch, members))
		}
		if err := s.checkSegment(m.GetSegment()); err != nil {
			return nil, s.fail("load", fmt.Errorf("message %d: %w (%d members loaded before it)", batches, err, members))
		}
		ps = ps[:0]
		for i, h := range m.GetPseudonyms() {
			p, err := anonymize.ParsePseudonym(h)
			if err != nil {
				return nil, s.fail("load", fmt.Errorf("%w: message %d: pseudonyms[%d] is not a pseudonym (16 hex digits); %d members loaded before it", errBadRequest, batches, i, members))
			}
			ps = append(ps, p)
		}
		ids := make([]anonymize.Identifier, 0, len(m.GetIdentifiers()))
		for i, raw := range m.GetIdentifiers() {
			id, err := checked(raw, fmt.Sprintf("message %d: identifiers[%d]", batches, i))
			if err != nil {
				return nil, s.fail("load", fmt.Errorf("%w; %d members loaded before it", err, members))
			}
			ids = append(ids, id)
		}
		var err error
		switch {
		case m.GetRemove():
			if len(ps) > 0 {
				err = s.eng.RemovePseudonymsContext(ctx, m.GetSegment(), ps)
			}
			for _, id := range ids {
				if err == nil {
					err = s.eng.RemoveContext(ctx, m.GetSegment(), id)
				}
			}
		default:
			if len(ps) > 0 {
				err = s.eng.AddPseudonymsContext(ctx, m.GetSegment(), ps)
			}
			if err == nil && len(ids) > 0 {
				err = s.eng.AddContext(ctx, m.GetSegment(), ids...)
			}
		}
		if err != nil {
			return nil, s.fail("load", fmt.Errorf("message %d: %w (%d members loaded before it)", batches, err, members))
		}
		members += int64(n)
		batches++
	}
	if err := st.Err(); err != nil && !errors.Is(err, io.EOF) {
		// A message over the limit, a broken stream: what came before it is
		// loaded.
		code := connect.CodeOf(err)
		if code == connect.CodeUnknown {
			code = connect.CodeInvalidArgument
		}
		return nil, s.fail("load", connect.NewError(code, fmt.Errorf("message %d: %w (%d members in %d messages loaded before it)", batches, err, members, batches)))
	}
	return connect.NewResponse(&pb.LoadResponse{Members: members, Batches: batches}), nil
}

func (a adminService) Stats(context.Context, *connect.Request[pb.StatsRequest]) (*connect.Response[pb.StatsResponse], error) {
	st := a.s.eng.Stats()
	return connect.NewResponse(&pb.StatsResponse{People: int64(st.People), Pseudonyms: int64(st.Pseudonyms), Segments: int64(st.Segments),
		Memberships: int64(st.Memberships), MemoryBytes: int64(st.MemoryBytes), CapCounters: int64(st.CapCounters),
		PendingErasures: int64(st.PendingErasures), OldestPendingErasure: ts(st.OldestPendingErasure), RefusedChanges: int64(st.RefusedChanges)}), nil
}
