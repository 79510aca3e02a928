package personify

import (
	"sync/atomic"

	"github.com/personify-go/personify/anonymize"
)

// PreparedSegment is a segment name resolved once, for [PreparedSegment.In]
// on a request path: the shape of regexp.MustCompile or a prepared
// statement. Get one from [Engine.PrepareSegment] at start-up and keep it.
//
// It follows the name, not the definition it found: if the segment is
// dropped it answers false, as In does for an unknown name, and if a
// segment of that name is defined again it answers for the new one; a
// snapshot load (a replica catching up, Engine.LoadSnapshot) is followed
// too. The first call after such a change resolves the name again (a name
// lookup and a small allocation; calls racing it may each do so), and the
// calls after it hash nothing.
//
// The zero PreparedSegment is not usable: get one from PrepareSegment. A
// PreparedSegment is safe for concurrent use by multiple goroutines.
type PreparedSegment struct {
	e     *Engine
	name  string
	cache atomic.Pointer[preparedSeg]
}

// preparedSeg is what a PreparedSegment resolved, valid while rt is the
// engine's read table.
type preparedSeg struct {
	rt    *readTable
	id    uint32
	known bool
}

// PrepareSegment resolves a segment name for [PreparedSegment.In]. It
// returns an error wrapping ErrUnknownSegment (which suggests the name
// meant) if no such segment is defined, and ErrClosed once the engine is
// closed.
func (e *Engine) PrepareSegment(name string) (*PreparedSegment, error) {
	if err := e.defined(func() error { _, err := e.segmentLocked(name); return err }); err != nil {
		return nil, err
	}
	s := &PreparedSegment{e: e, name: name}
	s.resolve(e.rt.Load())
	return s, nil
}

// Name returns the segment's name.
func (s *PreparedSegment) Name() string { return s.name }

// String returns the segment's name, for logs.
func (s *PreparedSegment) String() string { return s.name }

// In reports what [Engine.In] reports for the segment: whether the person
// with pseudonym p is a member and the membership has not expired. It
// takes no lock and, but for the first call after a definition changes,
// allocates and hashes nothing: one probe of the directory, one cache miss
// for most people.
func (s *PreparedSegment) In(p anonymize.Pseudonym) bool {
	e := s.e
	g := e.gen.Load() // before rt: see Engine.inID
	rt := e.rt.Load()
	c := s.cache.Load()
	if c.rt != rt {
		c = s.resolve(rt)
	}
	return e.inID(g, p, rt, c.id, c.known, s.name)
}

// resolve looks the name up in rt and caches the result.
func (s *PreparedSegment) resolve(rt *readTable) *preparedSeg {
	id, ok := rt.byName.Get(s.name)
	c := &preparedSeg{rt: rt, id: id, known: ok}
	s.cache.Store(c)
	return c
}

// PreparedPurpose is a purpose name resolved once, for
// [PreparedPurpose.Segments] on a request path. Get one from
// [Engine.PreparePurpose] at start-up and keep it. Like [PreparedSegment]
// it follows the name across definitions and snapshot loads.
//
// The zero PreparedPurpose is not usable: get one from PreparePurpose. A
// PreparedPurpose is safe for concurrent use by multiple goroutines.
type PreparedPurpose struct {
	e     *Engine
	name  string
	cache atomic.Pointer[preparedPurpose]
}

type preparedPurpose struct {
	rt *readTable
	pu *readPurpose // nil: not defined in rt
}

// PreparePurpose resolves a purpose name for [PreparedPurpose.Segments].
// It returns an error wrapping ErrUnknownPurpose (which suggests the name
// meant) if no such purpose is defined, and ErrClosed once the engine is
// closed.
func (e *Engine) PreparePurpose(name string) (*PreparedPurpose, error) {
	if err := e.defined(func() error { _, err := e.purposeLocked(name); return err }); err != nil {
		return nil, err
	}
	pp := &PreparedPurpose{e: e, name: name}
	pp.resolve(e.rt.Load())
	return pp, nil
}

// Name returns the purpose's name.
func (pp *PreparedPurpose) Name() string { return pp.name }

// String returns the purpose's name, for logs.
func (pp *PreparedPurpose) String() string { return pp.name }

// Segments appends to dst what [Engine.Segments] appends for the purpose:
// the names of the segments that may be used now to personalize for the
// person with pseudonym p, in order of definition. It takes no lock and
// allocates nothing beyond growing dst.
func (pp *PreparedPurpose) Segments(dst []string, p anonymize.Pseudonym) []string {
	e := pp.e
	g := e.gen.Load() // before rt: see Engine.segmentsOf
	rt := e.rt.Load()
	c := pp.cache.Load()
	if c.rt != rt {
		c = pp.resolve(rt)
	}
	return e.segmentsOf(g, dst, p, rt, c.pu, pp.name)
}

func (pp *PreparedPurpose) resolve(rt *readTable) *preparedPurpose {
	c := &preparedPurpose{rt: rt, pu: rt.purposes[pp.name]}
	pp.cache.Store(c)
	return c
}

// defined runs lookup (segmentLocked or purposeLocked) under the read
// lock, for the Prepare methods: ErrClosed once the engine is closed.
func (e *Engine) defined(lookup func() error) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return ErrClosed
	}
	return lookup()
}
