package personify

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/personify-go/personify/segment"
)

// Segment describes a customer segment: a named group of people with a
// purpose. It is the unit of targeting; people are never targeted alone.
//
// The zero Segment has no name or purpose, which Define refuses. A Segment is
// a plain value, safe to share between goroutines.
type Segment struct {
	// Name is 1 to 128 characters of [A-Za-z0-9_.:-], not starting with
	// '.', ':' or '-', and not one of the expression keywords and, or, not.
	Name string `json:"name"`
	// Purpose is the declared purpose the segment's data was collected for
	// (required; see Engine.DefinePurpose).
	Purpose string `json:"purpose"`
	// Description tells people what membership means; Explain shows it.
	Description string `json:"description"`
	// Retention is how long a membership lasts after it was (last) added.
	// Zero keeps memberships until they are removed. Memberships are timed
	// in epochs of Retention/32, so one can expire up to that much early,
	// never late.
	Retention time.Duration `json:"retention"`
	// MinSize raises the minimum size (k) below which the segment is not
	// served; the engine's Options.K applies when it is lower.
	MinSize int `json:"min_size"`
	// Sensitive marks special categories of data (health, finance,
	// children...): the segment is used only for people who explicitly
	// granted consent for its purpose, whatever the purpose's model.
	Sensitive bool `json:"sensitive"`
}

// segState is a defined segment and its members. Guarded by Engine.mu.
type segState struct {
	Segment
	id      uint32
	purpose *purposeState
	set     *segment.Set   // members, when Retention is zero
	timed   *segment.Timed // members with their add times, when Retention > 0
	live    segLive        // counters the lookup index reads
	trimmed int            // the set's size when trimLocked last copied it
}

// trimLocked gives back the spare capacity bulk loads leave in the set:
// Roaring grows an array container to twice what it needs as batches merge
// into it (measured at 10M x 1000: 0.88 B a membership of spare capacity,
// on 1.81 B of members). It copies the set once it has grown by an eighth,
// or by writeChunk if more, since its last copy, so that copying costs O(1)
// per membership added; AddPseudonyms calls it after a batch of at least
// writeChunk. Sets with a retention are left as they are.
func (st *segState) trimLocked() {
	if st.set == nil {
		return
	}
	n := st.set.Len()
	if n-st.trimmed < max(writeChunk, st.trimmed/8) {
		return
	}
	st.set.Optimize()
	st.trimmed = n
}

const maxNameLen = 128

// validName checks a segment or purpose name.
func validName(kind, name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: %s name must be 1 to %d characters, got %d", ErrInvalidName, kind, maxNameLen, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' ||
			i > 0 && (c == '.' || c == ':' || c == '-')
		if !ok {
			// The name is not quoted: a string that is not a valid name may
			// be anything, an email address passed by mistake included.
			return fmt.Errorf("%w: %s name of %d bytes: character %d must be a letter, a digit or '_' (or '.', ':', '-' after the first)", ErrInvalidName, kind, len(name), i+1)
		}
	}
	switch strings.ToLower(name) {
	case "and", "or", "not":
		return fmt.Errorf("%w: %s name %q is an expression keyword", ErrInvalidName, kind, name)
	}
	return nil
}

// epochFor returns the epoch length of a segment's timed set: 1/32 of its
// retention, in whole seconds when that is at least a second.
func epochFor(retention time.Duration) time.Duration {
	epoch := retention / 32
	if epoch >= time.Second {
		epoch = epoch.Truncate(time.Second)
	}
	if epoch <= 0 {
		epoch = retention
	}
	return epoch
}

// Define defines a segment, or changes an existing one's purpose,
// description, retention, minimum size or sensitivity without losing its
// members. Shortening the retention takes effect at the next Expire; giving
// a segment a retention for the first time starts its members' clocks now.
func (e *Engine) Define(s Segment) error {
	return e.DefineContext(context.Background(), s)
}

// DefineContext is Define with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) DefineContext(ctx context.Context, s Segment) error {
	_, err := e.commit(ctx, &op{kind: opDefine, at: e.now(), seg: s}) // validated there: names, durations, sizes, UTF-8
	return err
}

// maxDescriptionLen bounds the description of a segment or purpose, which
// must be valid UTF-8.
const maxDescriptionLen = 64 << 10

func (e *Engine) applyDefine(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	s := o.seg
	ps, err := e.purposeLocked(s.Purpose)
	if err != nil {
		return opResult{}, inContext(err, "segment %q", s.Name)
	}
	st, redefined := e.segs[s.Name]
	if !redefined {
		st = &segState{id: e.nextSegID, set: segment.New()}
		e.nextSegID++
		e.segs[s.Name] = st
	}
	st.retime(s.Retention, o.at)
	if old := st.purpose; old != ps {
		if old != nil {
			old.segments = slices.DeleteFunc(old.segments, func(x *segState) bool { return x == st })
		}
		ps.segments = append(ps.segments, st)
	}
	st.Segment, st.purpose = s, ps
	slices.SortFunc(ps.segments, func(a, b *segState) int { return strings.Compare(a.Name, b.Name) })
	e.refreshLocked(st)
	e.publishLocked()
	e.event("define", slog.String("segment", s.Name), slog.String("purpose", s.Purpose),
		slog.Duration("retention", s.Retention), slog.Int("min_size", s.MinSize),
		slog.Bool("sensitive", s.Sensitive), slog.Bool("redefined", redefined))
	return opResult{}, nil
}

// retime moves the members to the storage that a retention needs.
func (st *segState) retime(retention time.Duration, now time.Time) {
	switch {
	case retention == 0 && st.timed != nil:
		st.set, st.timed = st.timed.Members().Clone(), nil
	case retention > 0 && st.timed == nil:
		st.timed = segment.NewTimed(epochFor(retention))
		st.timed.AddSet(st.set, now)
		st.set = nil
	case retention > 0 && st.timed.Epoch() != epochFor(retention):
		t := segment.NewTimed(epochFor(retention))
		for at, members := range st.timed.Epochs() {
			t.AddSet(members, at)
		}
		st.timed = t
	}
}

// Drop removes a segment and all its memberships.
func (e *Engine) Drop(name string) error {
	return e.DropContext(context.Background(), name)
}

// DropContext is Drop with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) DropContext(ctx context.Context, name string) error {
	_, err := e.commit(ctx, &op{kind: opDrop, at: e.now(), name: name})
	return err
}

func (e *Engine) applyDrop(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	st, err := e.segmentLocked(o.name)
	if err != nil {
		return opResult{}, err
	}
	n := st.len()
	delete(e.segs, o.name)
	st.purpose.segments = slices.DeleteFunc(st.purpose.segments, func(x *segState) bool { return x == st })
	e.publishLocked() // records keep the dropped id until compaction; lookups skip it
	e.event("drop", slog.String("segment", o.name), slog.Int("memberships", n))
	return opResult{n: n}, nil
}

// Definitions returns the defined segments, by name; none once the engine
// is closed.
func (e *Engine) Definitions() []Segment {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return nil
	}
	out := make([]Segment, 0, len(e.segs))
	for _, s := range e.segs {
		out = append(out, s.Segment)
	}
	slices.SortFunc(out, func(a, b Segment) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Segment returns the definition of the segment named name, or an error
// wrapping ErrUnknownSegment that suggests the closest defined name (In
// answers false for an unknown name; this says why).
func (e *Engine) Segment(name string) (Segment, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return Segment{}, ErrClosed
	}
	st, err := e.segmentLocked(name)
	if err != nil {
		return Segment{}, err
	}
	return st.Segment, nil
}

// Len returns the number of members of a segment, expired memberships that
// Expire has not dropped yet included.
func (e *Engine) Len(segmentName string) (int, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return 0, ErrClosed
	}
	st, err := e.segmentLocked(segmentName)
	if err != nil {
		return 0, err
	}
	return st.len(), nil
}

func (e *Engine) segmentLocked(name string) (*segState, error) {
	if st, ok := e.segs[name]; ok {
		return st, nil
	}
	return nil, unknownName(ErrUnknownSegment, "segment", name, "", "define it first with Engine.Define", e.segmentNamesLocked())
}

// segmentNamesLocked returns the defined segments' names.
func (e *Engine) segmentNamesLocked() []string {
	names := make([]string, 0, len(e.segs))
	for n := range e.segs {
		names = append(names, n)
	}
	return names
}

// members returns the segment's member set; read-only.
func (st *segState) members() *segment.Set {
	if st.timed != nil {
		return st.timed.Members()
	}
	return st.set
}

func (st *segState) len() int { return st.members().Len() }

func (st *segState) contains(ord uint32) bool { return st.members().Contains(ord) }

func (st *segState) add(ord uint32, now time.Time) {
	if st.timed != nil {
		st.timed.Add(ord, now)
	} else {
		st.set.Add(ord)
	}
}

func (st *segState) addMany(ords []uint32, now time.Time) {
	if st.timed != nil {
		st.timed.AddMany(ords, now)
	} else {
		st.set.AddMany(ords)
	}
}

func (st *segState) remove(ord uint32) bool {
	if st.timed != nil {
		return st.timed.Remove(ord)
	}
	return st.set.Remove(ord)
}

// addedAt returns when a membership was recorded (the start of its epoch)
// and when it expires; both zero for a segment without retention.
func (st *segState) addedAt(ord uint32) (added, expires time.Time) {
	if st.timed == nil {
		return time.Time{}, time.Time{}
	}
	added, _ = st.timed.AddedAt(ord)
	return added, added.Add(st.Retention)
}

// cutoff returns the time before which recorded memberships have expired at
// now. A membership lives during [added, added+Retention): at its ExpiresAt
// it is gone, hence the nanosecond.
func (st *segState) cutoff(now time.Time) time.Time { return now.Add(1 - st.Retention) }

// hasExpired reports whether the segment holds memberships that have
// expired at now but that Expire has not dropped yet.
func (st *segState) hasExpired(now time.Time) bool {
	if st.timed == nil {
		return false
	}
	oldest, ok := st.timed.Oldest()
	return ok && oldest.Before(st.cutoff(now))
}

// holds reports whether ord is a member whose membership has not expired.
func (st *segState) holds(ord uint32, now time.Time) bool {
	if !st.contains(ord) {
		return false
	}
	if !st.hasExpired(now) {
		return true
	}
	added, _ := st.timed.AddedAt(ord)
	return !added.Before(st.cutoff(now))
}

// liveMembers returns the members whose memberships have not expired at
// now; read-only (it is the stored set when nothing has expired).
func (st *segState) liveMembers(now time.Time) *segment.Set {
	if !st.hasExpired(now) {
		return st.members()
	}
	cut := st.cutoff(now)
	var keep []*segment.Set
	for at, members := range st.timed.Epochs() {
		if !at.Before(cut) {
			keep = append(keep, members)
		}
	}
	return segment.Or(keep...)
}
