package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/personify-go/personify/anonymize"
	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/cmd/personify/internal/receiptjson"
	"github.com/personify-go/personify/personify"
)

type privacyService struct{ s *Server }

// maxReceipt bounds a receipt given to VerifyReceipt.
const maxReceipt = 256 << 10

func (v privacyService) Explain(_ context.Context, req *connect.Request[pb.ExplainRequest]) (*connect.Response[pb.ExplainResponse], error) {
	s := v.s
	id, err := checked(req.Msg.GetIdentifier(), "identifier")
	if err != nil {
		return nil, s.fail("explain", err)
	}
	r, err := s.eng.Explain(id)
	if err != nil {
		return nil, s.fail("explain", err)
	}
	return connect.NewResponse(&pb.ExplainResponse{Report: reportPB(r)}), nil
}

func (v privacyService) SetConsent(ctx context.Context, req *connect.Request[pb.SetConsentRequest]) (*connect.Response[pb.SetConsentResponse], error) {
	s, m := v.s, req.Msg
	id, err := checked(m.GetIdentifier(), "identifier")
	if err != nil {
		return nil, s.fail("set_consent", err)
	}
	if err := s.checkPurpose(m.GetPurpose()); err != nil {
		return nil, s.fail("set_consent", err)
	}
	if err := s.eng.SetConsentContext(ctx, id, m.GetPurpose(), m.GetGranted()); err != nil {
		return nil, s.fail("set_consent", err)
	}
	return connect.NewResponse(&pb.SetConsentResponse{}), nil
}

func (v privacyService) Suppress(ctx context.Context, req *connect.Request[pb.SuppressRequest]) (*connect.Response[pb.SuppressResponse], error) {
	s, m := v.s, req.Msg
	id, err := checked(m.GetIdentifier(), "identifier")
	if err != nil {
		return nil, s.fail("suppress", err)
	}
	for _, p := range m.GetPurposes() {
		if err := s.checkPurpose(p); err != nil {
			return nil, s.fail("suppress", err)
		}
	}
	if m.GetLift() {
		err = s.eng.UnsuppressContext(ctx, id, m.GetPurposes()...)
	} else {
		err = s.eng.SuppressContext(ctx, id, m.GetPurposes()...)
	}
	if err != nil {
		return nil, s.fail("suppress", err)
	}
	return connect.NewResponse(&pb.SuppressResponse{}), nil
}

func (v privacyService) Link(ctx context.Context, req *connect.Request[pb.LinkRequest]) (*connect.Response[pb.LinkResponse], error) {
	s, raw := v.s, req.Msg.GetIdentifiers()
	if len(raw) < 2 || len(raw) > personify.MaxLinked {
		return nil, s.fail("link", fmt.Errorf("%w: link joins 2 to %d identifiers of one person, not %d", errBadRequest, personify.MaxLinked, len(raw)))
	}
	ids := make([]anonymize.Identifier, len(raw))
	for i, r := range raw {
		id, err := checked(r, fmt.Sprintf("identifiers[%d]", i))
		if err != nil {
			return nil, s.fail("link", err)
		}
		ids[i] = id
	}
	if err := s.eng.LinkContext(ctx, ids...); err != nil {
		return nil, s.fail("link", err)
	}
	return connect.NewResponse(&pb.LinkResponse{}), nil
}

func (v privacyService) Forget(ctx context.Context, req *connect.Request[pb.ForgetRequest]) (*connect.Response[pb.ForgetResponse], error) {
	s, m := v.s, req.Msg
	id, err := checked(m.GetIdentifier(), "identifier")
	if err != nil {
		return nil, s.fail("forget", err)
	}
	r, err := s.eng.ForgetContext(ctx, id, personify.ForgetOptions{DoNotReAdd: m.GetDoNotReAdd(), RequestID: m.GetRequestId()})
	if err != nil {
		return nil, s.fail("forget", err)
	}
	s.m.erasures.Inc()
	return connect.NewResponse(forgetResponse(r)), nil
}

func forgetResponse(r personify.Receipt) *pb.ForgetResponse {
	b, _ := json.Marshal(r) // a Receipt always marshals
	n := 0
	for _, seg := range r.Segments {
		n += seg.Memberships
	}
	return &pb.ForgetResponse{Receipt: b, ReceiptId: r.ID, Memberships: int32(n), PurgeBy: ts(r.PurgeBy)}
}

// decodeReceipt reads a receipt as the library writes it
// (receiptjson.Decode: unknown fields refused, nothing quoted).
func decodeReceipt(b []byte) (personify.Receipt, error) {
	r, err := receiptjson.Decode(b, maxReceipt)
	if err != nil {
		return r, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	return r, nil
}

func (v privacyService) VerifyReceipt(_ context.Context, req *connect.Request[pb.VerifyReceiptRequest]) (*connect.Response[pb.VerifyReceiptResponse], error) {
	s := v.s
	r, err := decodeReceipt(req.Msg.GetReceipt())
	if err != nil {
		return nil, s.fail("verify_receipt", err)
	}
	if err := s.eng.VerifyReceipt(r); err != nil {
		return connect.NewResponse(&pb.VerifyReceiptResponse{Valid: false, Reason: err.Error()}), nil
	}
	return connect.NewResponse(&pb.VerifyReceiptResponse{Valid: true, Purged: s.eng.Purged(r)}), nil
}

func (v privacyService) Caps(_ context.Context, req *connect.Request[pb.CapsRequest]) (*connect.Response[pb.CapsResponse], error) {
	s := v.s
	id, err := checked(req.Msg.GetIdentifier(), "identifier")
	if err != nil {
		return nil, s.fail("caps", err)
	}
	r, err := s.eng.Explain(id)
	if err != nil {
		return nil, s.fail("caps", err)
	}
	return connect.NewResponse(&pb.CapsResponse{Caps: capsPB(r.Caps)}), nil
}

func (v privacyService) PreferenceLink(_ context.Context, req *connect.Request[pb.PreferenceLinkRequest]) (*connect.Response[pb.PreferenceLinkResponse], error) {
	s, m := v.s, req.Msg
	id, err := checked(m.GetIdentifier(), "identifier")
	if err != nil {
		return nil, s.fail("preference_link", err)
	}
	if m.GetTtlSeconds() < 0 || m.GetTtlSeconds() > int64(24*time.Hour/time.Second) {
		return nil, s.fail("preference_link", fmt.Errorf("%w: ttl_seconds is %d: a link lives 1 s to one day (0: 15 minutes)", errBadRequest, m.GetTtlSeconds()))
	}
	p, err := s.eng.Person(id)
	if err != nil {
		return nil, s.fail("preference_link", err)
	}
	tok, exp, err := s.cfg.Links.Sign(p, time.Duration(m.GetTtlSeconds())*time.Second)
	if err != nil {
		return nil, s.fail("preference_link", fmt.Errorf("%w: %w", errBadRequest, err))
	}
	return connect.NewResponse(&pb.PreferenceLinkResponse{Url: "/privacy/?t=" + tok, Token: tok, ExpiresAt: ts(exp)}), nil
}
