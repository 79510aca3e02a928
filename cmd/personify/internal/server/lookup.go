package server

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	"github.com/personify-go/personify/anonymize"
	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
)

type lookupService struct{ s *Server }

// subjectAt is subject for subjects[i] of a batch: the field's name is
// only made for an error.
func (s *Server) subjectAt(sub *pb.Subject, i int) (anonymize.Pseudonym, error) {
	if p, ok := sub.GetWho().(*pb.Subject_Pseudonym); ok {
		if v, err := anonymize.ParsePseudonym(p.Pseudonym); err == nil {
			return v, nil
		}
	}
	return s.subject(sub, fmt.Sprintf("subjects[%d]", i))
}

// subject returns the pseudonym a subject names; where names its field in
// an error.
func (s *Server) subject(sub *pb.Subject, where string) (anonymize.Pseudonym, error) {
	switch w := sub.GetWho().(type) {
	case *pb.Subject_Pseudonym:
		p, err := anonymize.ParsePseudonym(w.Pseudonym)
		if err != nil {
			return 0, fmt.Errorf("%w: %s.pseudonym is not a pseudonym (16 hex digits)", errBadRequest, where)
		}
		return p, nil
	case *pb.Subject_Identifier:
		id, err := identifier(w.Identifier, where+".identifier")
		if err != nil {
			return 0, err
		}
		p, err := s.eng.Pseudonym(id)
		if err != nil {
			return 0, fmt.Errorf("%s.identifier: %w", where, err)
		}
		return p, nil
	}
	return 0, fmt.Errorf("%w: %s names no one: give a pseudonym or an identifier", errBadRequest, where)
}

func (s *Server) checkPurpose(name string) error {
	if name == "" {
		return fmt.Errorf("%w: purpose is missing", errBadRequest)
	}
	_, err := s.eng.Purpose(name)
	return err
}

func (s *Server) checkSegment(name string) error {
	if name == "" {
		return fmt.Errorf("%w: segment is missing", errBadRequest)
	}
	_, err := s.eng.Segment(name)
	return err
}

func (s *Server) checkBatch(n int, what string) error {
	if n == 0 {
		return fmt.Errorf("%w: %s is empty", errBadRequest, what)
	}
	if n > s.cfg.MaxBatch {
		return fmt.Errorf("%w: %s holds %d entries, more than the limit of %d: split the batch", errBatchTooLarge, what, n, s.cfg.MaxBatch)
	}
	return nil
}

func (l lookupService) Segments(_ context.Context, req *connect.Request[pb.SegmentsRequest]) (*connect.Response[pb.SegmentsResponse], error) {
	s, m := l.s, req.Msg
	if err := s.checkPurpose(m.GetPurpose()); err != nil {
		return nil, s.fail("segments", err)
	}
	p, err := s.subject(m.GetSubject(), "subject")
	if err != nil {
		return nil, s.fail("segments", err)
	}
	segs := s.eng.Segments(nil, p, m.GetPurpose())
	s.m.lookup("segments", len(segs) > 0)
	return connect.NewResponse(&pb.SegmentsResponse{Segments: segs}), nil
}

func (l lookupService) BatchSegments(_ context.Context, req *connect.Request[pb.BatchSegmentsRequest]) (*connect.Response[pb.BatchSegmentsResponse], error) {
	s, m := l.s, req.Msg
	if err := s.checkBatch(len(m.GetSubjects()), "subjects"); err != nil {
		return nil, s.fail("batch_segments", err)
	}
	if err := s.checkPurpose(m.GetPurpose()); err != nil {
		return nil, s.fail("batch_segments", err)
	}
	out := &pb.BatchSegmentsResponse{Results: make([]*pb.SegmentsResponse, len(m.GetSubjects()))}
	all := make([]pb.SegmentsResponse, len(m.GetSubjects()))
	var buf []string
	for i, sub := range m.GetSubjects() {
		p, err := s.subjectAt(sub, i)
		if err != nil {
			return nil, s.fail("batch_segments", err)
		}
		start := len(buf)
		buf = s.eng.Segments(buf, p, m.GetPurpose())
		all[i].Segments = buf[start:len(buf):len(buf)]
		out.Results[i] = &all[i]
		s.m.lookup("batch_segments", len(buf) > start)
	}
	return connect.NewResponse(out), nil
}

func (l lookupService) In(_ context.Context, req *connect.Request[pb.InRequest]) (*connect.Response[pb.InResponse], error) {
	s, m := l.s, req.Msg
	if err := s.checkSegment(m.GetSegment()); err != nil {
		return nil, s.fail("in", err)
	}
	p, err := s.subject(m.GetSubject(), "subject")
	if err != nil {
		return nil, s.fail("in", err)
	}
	in := s.eng.In(p, m.GetSegment())
	s.m.lookup("in", in)
	return connect.NewResponse(&pb.InResponse{In: in}), nil
}

func (l lookupService) BatchIn(_ context.Context, req *connect.Request[pb.BatchInRequest]) (*connect.Response[pb.BatchInResponse], error) {
	s, m := l.s, req.Msg
	if err := s.checkBatch(len(m.GetSubjects()), "subjects"); err != nil {
		return nil, s.fail("batch_in", err)
	}
	if err := s.checkSegment(m.GetSegment()); err != nil {
		return nil, s.fail("batch_in", err)
	}
	out := &pb.BatchInResponse{In: make([]bool, len(m.GetSubjects()))}
	for i, sub := range m.GetSubjects() {
		p, err := s.subjectAt(sub, i)
		if err != nil {
			return nil, s.fail("batch_in", err)
		}
		out.In[i] = s.eng.In(p, m.GetSegment())
		s.m.lookup("batch_in", out.In[i])
	}
	return connect.NewResponse(out), nil
}

func (l lookupService) Pseudonymize(_ context.Context, req *connect.Request[pb.PseudonymizeRequest]) (*connect.Response[pb.PseudonymizeResponse], error) {
	s := l.s
	id, err := identifier(req.Msg.GetIdentifier(), "identifier")
	if err != nil {
		return nil, s.fail("pseudonymize", err)
	}
	p, err := s.eng.Pseudonym(id)
	if err != nil {
		return nil, s.fail("pseudonymize", fmt.Errorf("identifier: %w", err))
	}
	s.m.lookup("pseudonymize", true)
	return connect.NewResponse(&pb.PseudonymizeResponse{Pseudonym: p.String()}), nil
}

func (l lookupService) BatchPseudonymize(_ context.Context, req *connect.Request[pb.BatchPseudonymizeRequest]) (*connect.Response[pb.BatchPseudonymizeResponse], error) {
	s, ids := l.s, req.Msg.GetIdentifiers()
	if err := s.checkBatch(len(ids), "identifiers"); err != nil {
		return nil, s.fail("batch_pseudonymize", err)
	}
	out := &pb.BatchPseudonymizeResponse{Pseudonyms: make([]string, len(ids))}
	for i, raw := range ids {
		where := fmt.Sprintf("identifiers[%d]", i)
		id, err := identifier(raw, where)
		if err != nil {
			return nil, s.fail("batch_pseudonymize", err)
		}
		p, err := s.eng.Pseudonym(id)
		if err != nil {
			return nil, s.fail("batch_pseudonymize", fmt.Errorf("%s: %w", where, err))
		}
		out.Pseudonyms[i] = p.String()
	}
	s.m.lookup("batch_pseudonymize", true)
	return connect.NewResponse(out), nil
}
