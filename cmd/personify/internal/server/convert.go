package server

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/personify-go/personify/anonymize"
	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/personify"
)

// maxIdentifierLen bounds an identifier's value before it is normalized.
const maxIdentifierLen = 1024

// identifier converts an API identifier; where names it in an error
// ("identifiers[3]"), never its value.
func identifier(id *pb.Identifier, where string) (anonymize.Identifier, error) {
	if id == nil {
		return anonymize.Identifier{}, fmt.Errorf("%w: %s is missing", errBadRequest, where)
	}
	if len(id.GetValue()) > maxIdentifierLen {
		return anonymize.Identifier{}, fmt.Errorf("%w: %s is %d bytes long, more than %d", errBadRequest, where, len(id.GetValue()), maxIdentifierLen)
	}
	v := id.GetValue()
	switch id.GetKind() {
	case pb.Kind_KIND_EMAIL:
		return anonymize.Email(v), nil
	case pb.Kind_KIND_PHONE:
		if id.GetRegion() != "" {
			return anonymize.PhoneIn(id.GetRegion(), v), nil
		}
		return anonymize.Phone(v), nil
	case pb.Kind_KIND_USER_ID:
		return anonymize.UserID(v), nil
	case pb.Kind_KIND_DEVICE_ID:
		return anonymize.DeviceID(v), nil
	}
	return anonymize.Identifier{}, fmt.Errorf("%w: %s has no kind (KIND_EMAIL, KIND_PHONE, KIND_USER_ID or KIND_DEVICE_ID)", errBadRequest, where)
}

// checked normalizes an identifier now, so that an invalid one is refused
// with its place in the request named.
func checked(id *pb.Identifier, where string) (anonymize.Identifier, error) {
	out, err := identifier(id, where)
	if err != nil {
		return out, err
	}
	if _, err := out.Normalize(); err != nil {
		return out, fmt.Errorf("%s: %w", where, err)
	}
	return out, nil
}

func kindOf(k anonymize.Kind) pb.Kind {
	switch k {
	case anonymize.KindEmail:
		return pb.Kind_KIND_EMAIL
	case anonymize.KindPhone:
		return pb.Kind_KIND_PHONE
	case anonymize.KindUserID:
		return pb.Kind_KIND_USER_ID
	case anonymize.KindDeviceID:
		return pb.Kind_KIND_DEVICE_ID
	}
	return pb.Kind_KIND_UNSPECIFIED
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func reportPB(r personify.Report) *pb.Report {
	out := &pb.Report{GeneratedAt: ts(r.GeneratedAt), Suppressed: r.Suppressed, DoNotReAdd: r.DoNotReAdd, CollisionNote: r.CollisionNote}
	for _, p := range r.Pseudonyms {
		out.Pseudonyms = append(out.Pseudonyms, &pb.ReportPseudonym{Pseudonym: p.Pseudonym.String(), Key: p.Key.String(), Kind: kindOf(p.Kind), Stored: p.Stored, Linked: p.Linked})
	}
	for _, s := range r.Segments {
		out.Segments = append(out.Segments, &pb.SegmentReport{Name: s.Name, Purpose: s.Purpose, Description: s.Description, Sensitive: s.Sensitive,
			AddedAt: ts(s.AddedAt), ExpiresAt: ts(s.ExpiresAt), Used: s.Used, Reason: s.Reason})
	}
	for _, c := range r.Consent {
		out.Consent = append(out.Consent, &pb.ConsentReport{Purpose: c.Purpose, Description: c.Description, Model: c.Model.String(), Consent: c.Consent, Allowed: c.Allowed})
	}
	out.Caps = capsPB(r.Caps)
	return out
}

func capsPB(cs []personify.CapReport) []*pb.CapCounter {
	out := make([]*pb.CapCounter, 0, len(cs))
	for _, c := range cs {
		out = append(out, &pb.CapCounter{Cap: c.Cap, Purpose: c.Purpose, Count: int32(c.Count), Max: int32(c.Max), WindowEnd: ts(c.WindowEnd)})
	}
	return out
}
