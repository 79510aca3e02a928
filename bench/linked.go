package bench

import (
	"fmt"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// linkChunk is how many people one LinkPseudonyms call links.
const linkChunk = 1 << 16

// Linked returns, for every probe, the pseudonym of a device ID linked to
// the probe's person: on first use it links one device ID to each person
// the probes name (LinkPseudonyms, the email's pseudonym with the
// device's), so that In/linked asks about the same people, in the same
// order, as In, by their device. The engine keeps those links for the
// benchmarks that run after; the report links before any of them runs
// and after it measures the engine's memory.
func (s *Suite) Linked() ([]anonymize.Pseudonym, error) {
	s.linkOnce.Do(func() {
		e, err := s.Engine()
		if err != nil {
			s.linkErr = err
			return
		}
		w := s.W
		h := anonymize.SipHash(w.Key)
		device := map[uint32]anonymize.Pseudonym{}
		s.linked = make([]anonymize.Pseudonym, len(w.Probes))
		var people [][]personify.LinkedPseudonym
		flush := func() {
			if s.linkErr == nil && len(people) > 0 {
				s.linkErr = e.Value.LinkPseudonyms(people...)
			}
			people = people[:0]
		}
		for i, pr := range w.Probes {
			d, ok := device[pr.Person]
			if !ok {
				if d, err = h.Pseudonym(anonymize.DeviceID(fmt.Sprintf("device-%d", pr.Person))); err != nil {
					s.linkErr = err
					return
				}
				device[pr.Person] = d
				people = append(people, []personify.LinkedPseudonym{
					{Kind: anonymize.KindEmail, Pseudonym: pr.P}, {Kind: anonymize.KindDeviceID, Pseudonym: d}})
				if len(people) == linkChunk {
					flush()
				}
			}
			s.linked[i] = d
		}
		flush()
	})
	return s.linked, s.linkErr
}

// InLinked measures Engine.In by the linked device's pseudonym, on In's
// probes: the same people and segments (the report's In/linked).
func (s *Suite) InLinked(b *testing.B) {
	e, w := s.mustEngine(b), s.W
	ps, err := s.Linked()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	hits := 0
	for i := range b.N {
		if e.In(ps[i&probeMask], w.SegNames[w.Probes[i&probeMask].Segment]) {
			hits++
		}
	}
	sink.Add(int64(hits))
}

// SegmentsLinked measures Engine.Segments by the linked device's
// pseudonym (the report's Segments/linked).
func (s *Suite) SegmentsLinked(b *testing.B) {
	e := s.mustEngine(b)
	ps, err := s.Linked()
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]string, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := range b.N {
		dst = e.Segments(dst[:0], ps[i&probeMask], Purpose)
		n += len(dst)
	}
	sink.Add(int64(n))
}
