package personify

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
)

// Counts are exact within one engine at once; they reach the log (durable
// mode) or the journal (a fleet) in batches, every Options.CapFlush, as
// one impressions change per cap. So a crash loses at most the last
// CapFlush of counts (plus the fsync in flight), and in a fleet every
// replica counts the others' impressions within CapFlush plus the
// journal's delivery: a cap can be exceeded by at most what the whole
// fleet shows one person within that time. Replay and the other replicas
// count a batch's impressions at their own times, so the windows agree.

// DefaultCapFlush is Options.CapFlush's default.
const DefaultCapFlush = time.Second

// capFlight is one cap's batches on their way to the log or journal,
// oldest first, guarded by the engine's mu; it is the cap name's, not a
// definition's, since a batch lands under the name. An erasure, a
// withdrawal or a suppression that drops a person's counters while their
// impressions are in flight moves those to the batch's redo, as does a
// redefinition that starts the cap's counters again (or drops it): when
// the batch comes back as this engine's own, its redo is counted by the
// rule every other replica (and a replay) applies to the whole batch, so
// that all agree.
type capFlight struct {
	batches []flightBatch
}

type flightBatch struct {
	sent       uint64 // the hash of what is logged (sentSum): a batch coming back is known by it
	imps, redo []impression
	order      uint64    // when it was put in flight, across all caps (Engine.flightOrder)
	stored     uint64    // its place in the journal, where it is known not to be applied yet (its wait timed out)
	unsure     time.Time // when its append ended without an answer (ErrNotApplied, no place), if it did
}

// unsureFor is how long a batch whose append ended without an answer is
// waited for: the journal stores such a change soon or never, and one not
// back by then is taken for never stored (its pseudonyms go with it).
var unsureFor = time.Minute

// forgetUnsureLocked removes the impressions whose pseudonym mine says is
// an erased person's from the batches whose append had no answer, which
// may never come back: nothing of them waits in memory on a journal.
// (Should such a batch land after all, and the person be stored again by
// then, the other replicas count what this one no longer has.) Caller
// holds mu.
func (e *Engine) forgetUnsureLocked(mine func(anonymize.Pseudonym) bool) {
	for _, f := range e.flights {
		for i := range f.batches {
			if b := &f.batches[i]; !b.unsure.IsZero() {
				b.imps = slices.DeleteFunc(b.imps, func(im impression) bool { return mine(im.p) })
				b.redo = slices.DeleteFunc(b.redo, func(im impression) bool { return mine(im.p) })
			}
		}
	}
}

// sentSum is the hash of a batch's impressions by which it is known when
// it comes back (a hash, so that a batch kept in flight holds no
// pseudonym but those it may still count).
func sentSum(imps []impression) uint64 {
	d := xxhash.New()
	var b [16]byte
	for _, im := range imps {
		binary.LittleEndian.PutUint64(b[:8], uint64(im.p))
		binary.LittleEndian.PutUint64(b[8:], uint64(im.at))
		_, _ = d.Write(b[:])
	}
	return d.Sum64()
}

// flightLocked returns cap name's batches in flight. Caller holds mu.
func (e *Engine) flightLocked(name string) *capFlight {
	f := e.flights[name]
	if f == nil {
		f = &capFlight{}
		e.flights[name] = f
	}
	return f
}

// redoFlightLocked moves every impression of cap name in flight to redo:
// the counters they were counted in are gone. Caller holds mu.
func (e *Engine) redoFlightLocked(name string) {
	if f := e.flights[name]; f != nil {
		for i := range f.batches {
			b := &f.batches[i]
			b.redo, b.imps = append(b.redo, b.imps...), nil
		}
	}
}

// dropTableLocked lets go of the counters of cap definition c, replaced
// or dropped: what waits to be logged is never logged (a replay never
// counted it either) and is cleared, and what is in flight is redone.
// Caller holds mu.
func (e *Engine) dropTableLocked(c *capState) {
	clear(c.counts.drain())
	e.redoFlightLocked(c.Name)
}

// takeFlightLocked removes from cap name's flight the batch that sent is
// (a batch coming back as this engine's own, at seq) and returns its redo,
// nil where no batch in flight is it: one with an answer first, then one
// whose append had none. The batches of every cap put in flight before
// it that have not come back never will (the journal stores one engine's
// changes in the order it appends them, or not at all): they go too.
// Caller holds mu.
func (e *Engine) takeFlightLocked(name string, sent []impression, seq uint64) []impression {
	f := e.flights[name]
	if f == nil {
		return nil
	}
	// A batch whose place is known is known by it; then by what it holds,
	// one waiting for its answer first.
	k := slices.IndexFunc(f.batches, func(b flightBatch) bool { return b.stored != 0 && b.stored == seq })
	if k < 0 {
		sum := sentSum(sent)
		if k = slices.IndexFunc(f.batches, func(b flightBatch) bool { return b.stored == 0 && b.unsure.IsZero() && b.sent == sum }); k < 0 {
			k = slices.IndexFunc(f.batches, func(b flightBatch) bool { return b.stored == 0 && b.sent == sum })
		}
	}
	if k < 0 {
		return nil
	}
	redo, order := f.batches[k].redo, f.batches[k].order
	e.leaveFlightLocked(func(b flightBatch) bool { return b.order <= order })
	return redo
}

// leaveFlightLocked removes the batches gone says are gone from every
// cap's flight, zeroing them. Caller holds mu.
func (e *Engine) leaveFlightLocked(gone func(flightBatch) bool) {
	for name, f := range e.flights {
		f.batches = slices.DeleteFunc(f.batches, gone) // (DeleteFunc zeroes what it removed)
		if len(f.batches) == 0 {
			delete(e.flights, name)
		}
	}
}

// capFlusher logs the counted impressions of a durable or fleet engine.
type capFlusher struct {
	every time.Duration
	stop  chan struct{}
	done  sync.WaitGroup
	mu    sync.Mutex // one flush at a time
}

// startCapFlusher starts the batching of impressions (durable and fleet
// engines); every <= 0 takes the default.
func (e *Engine) startCapFlusher(every time.Duration) {
	if every <= 0 {
		every = DefaultCapFlush
	}
	f := &capFlusher{every: every, stop: make(chan struct{})}
	e.capFlush = f // before the engine is handed out: no caller counts yet
	f.done.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-t.C:
				_ = e.FlushCounts(context.Background())
			}
		}
	})
}

// stopCapFlusher stops the batching and logs what is left, before Close
// closes the log or journal.
func (e *Engine) stopCapFlusher() {
	if f := e.capFlush; f != nil {
		select {
		case <-f.stop:
			return
		default:
		}
		close(f.stop)
		f.done.Wait()
		_ = e.FlushCounts(context.Background())
	}
}

// FlushCounts logs the impressions counted since the last flush now (a
// durable or fleet engine does it every Options.CapFlush by itself, and
// on Close); in memory it does nothing. Counts that cannot be logged stay
// exact in this engine until it stops.
func (e *Engine) FlushCounts(ctx context.Context) error {
	f := e.capFlush
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e.mu.Lock()
	now := time.Now()
	e.leaveFlightLocked(func(b flightBatch) bool { return !b.unsure.IsZero() && now.Sub(b.unsure) >= unsureFor })
	e.mu.Unlock()
	for _, c := range e.capList() {
		// Taken from the shards and put in flight in one step under mu, so
		// that an erasure, withdrawal or suppression (under mu) finds every
		// impression either waiting or in flight.
		e.mu.Lock()
		if cur := e.caps[c.Name]; cur != nil { // the definition as it is now (a redefinition cleared the old one's)
			c = cur
		} else {
			e.mu.Unlock()
			continue // dropped
		}
		imps := c.counts.drain()
		var batches [][]impression
		for len(imps) > 0 {
			n := min(len(imps), maxImpressionsPerChange)
			batches, imps = append(batches, imps[:n]), imps[n:]
		}
		fl := e.flightLocked(c.Name)
		first := e.flightOrder + 1
		for _, b := range batches {
			e.flightOrder++
			fl.batches = append(fl.batches, flightBatch{sent: sentSum(b), imps: slices.Clone(b), order: e.flightOrder})
		}
		e.mu.Unlock()
		for i, b := range batches {
			// Applied as this engine's own, the batch leaves the flight.
			if res, err := e.commit(ctx, &op{kind: opImpressions, at: e.now(), name: c.Name, imps: b, self: true}); err != nil {
				this := first + uint64(i)
				// No answer: it is in the journal (res.seq, waiting for this
				// replica to apply it) and stays in flight until it lands, or
				// it may yet be stored, and stays until it lands, a later
				// batch does, or unsureFor passes.
				stays := errors.Is(err, fleet.ErrNotApplied)
				e.mu.Lock()
				e.leaveFlightLocked(func(b flightBatch) bool { return b.order > this || b.order == this && !stays }) // not logged
				if stays {
					for k := range fl.batches {
						if b := &fl.batches[k]; b.order == this {
							if b.stored = res.seq; b.stored == 0 {
								b.unsure = time.Now()
							}
						}
					}
				}
				e.mu.Unlock()
				return err
			}
		}
	}
	return nil
}

// drain takes every impression waiting to be logged, shard by shard,
// leaving no pseudonym behind in the shards' spare capacity.
func (t *capTable) drain() []impression {
	var imps []impression
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		imps = append(imps, sh.pending...)
		t.pending.Add(-int64(len(sh.pending)))
		clear(sh.pending)
		sh.pending = sh.pending[:0]
		sh.mu.Unlock()
	}
	return imps
}

// maxImpressionsPerChange keeps one batch well inside a change's size.
const maxImpressionsPerChange = 1 << 16

// capList returns the defined caps, by name.
func (e *Engine) capList() []*capState {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]*capState, 0, len(e.caps))
	for _, c := range e.caps {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *capState) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// applyImpressions counts a batch read back from the log or from another
// replica (this engine's own batches were counted when they happened).
// An impression of someone no longer stored, or whom the purpose may no
// longer use, is not counted.
func (e *Engine) applyImpressions(o *op) (opResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	imps := o.imps
	if o.self { // counted when they happened, but for those dropped in flight
		imps = e.takeFlightLocked(o.name, o.imps, o.seq)
	}
	c := e.caps[o.name]
	if c == nil {
		return opResult{}, nil // dropped since: nothing to count
	}
	n := 0
	for _, im := range imps {
		ord, _, ok := e.resolveLocked(im.p)
		if !ok || !e.allowsLocked(c.purpose, ord, false) {
			continue
		}
		t := c.counts
		sh := t.shard(ord)
		sh.mu.Lock()
		w, _ := t.get(c, ord)
		w = c.advance(w, im.at)
		t.put(c, ord, c.add(w, im.at))
		sh.mu.Unlock()
		n++
	}
	return opResult{n: n}, nil
}

// dropCountsLocked erases person ord's counters (of every cap, or of the
// caps of purpose ps) and their impressions not yet logged, those whose
// pseudonym mine says is the person's (nil: those that resolve to ord).
// Writers call it after they have published the change that stops the
// person's counting (an erasure, a withdrawal, a suppression): a
// lock-free Allow reads the person's entry again under the shard lock
// before it counts, so it either sees the change or counts before this
// drop, which then takes it. It returns how many counters it erased.
// Caller holds mu.
func (e *Engine) dropCountsLocked(ord uint32, ps *purposeState, mine func(anonymize.Pseudonym) bool) int {
	if mine == nil {
		mine = func(q anonymize.Pseudonym) bool {
			o, _, ok := e.resolveLocked(q)
			return ok && o == ord
		}
	}
	n := 0
	for _, c := range e.caps {
		if ps != nil && c.purpose != ps {
			continue
		}
		sh := c.counts.shard(ord)
		sh.mu.Lock()
		if c.counts.del(ord) {
			n++
		}
		sh.mu.Unlock()
		if f := e.flights[c.Name]; f != nil {
			for i := range f.batches {
				b := &f.batches[i]
				b.imps = slices.DeleteFunc(b.imps, func(im impression) bool {
					if mine(im.p) {
						b.redo = append(b.redo, im)
						return true
					}
					return false
				})
			}
		}
		if c.counts.pending.Load() == 0 {
			continue // nothing waits to be logged (always so in memory): no shard to scan
		}
		for i := range c.counts.shards { // a Link may have moved the person since: any shard
			s := &c.counts.shards[i]
			s.mu.Lock()
			k := len(s.pending)
			s.pending = slices.DeleteFunc(s.pending, func(im impression) bool { return mine(im.p) })
			c.counts.pending.Add(int64(len(s.pending) - k)) // (DeleteFunc zeroes what it removed)
			s.mu.Unlock()
		}
	}
	return n
}

// reattributeLocked gives pseudonym to the impressions of pseudonym from
// not logged yet (from leaves the person: Unlink, a device moving, an
// alias dropped), so that replay and the other replicas count them for
// the person they were counted for. Caller holds mu.
func (e *Engine) reattributeLocked(from, to anonymize.Pseudonym) {
	for _, c := range e.caps {
		if c.counts.pending.Load() == 0 {
			continue
		}
		for i := range c.counts.shards {
			s := &c.counts.shards[i]
			s.mu.Lock()
			for k := range s.pending {
				if s.pending[k].p == from {
					s.pending[k].p = to
				}
			}
			s.mu.Unlock()
		}
	}
}

// mergeCountsLocked folds person src's counters into person dst's (Link
// joined them). Caller holds mu.
func (e *Engine) mergeCountsLocked(dst, src uint32) {
	for _, c := range e.caps {
		t := c.counts
		a, b := t.shard(dst), t.shard(src)
		a.mu.Lock()
		if b != a {
			b.mu.Lock()
		}
		if ws, ok := t.get(c, src); ok {
			if wd, ok := t.get(c, dst); ok {
				ws = c.combine(wd, ws)
			}
			t.del(src)
			t.put(c, dst, ws)
		}
		if b != a {
			b.mu.Unlock()
		}
		a.mu.Unlock()
	}
}

// expireCountsLocked drops the counters whose window has passed. Caller
// holds mu.
func (e *Engine) expireCountsLocked(now time.Time) int {
	n := 0
	for _, c := range e.caps {
		if c.Window.Kind != Lifetime {
			n += c.counts.expire(c, now.UnixNano())
		}
	}
	return n
}

// CapReport is one of a person's counters in a Report.
//
// A CapReport is a plain value, safe to share between goroutines; its
// zero value is an empty entry.
type CapReport struct {
	Cap       string    `json:"cap"`
	Purpose   string    `json:"purpose"`
	Count     int       `json:"count"`               // impressions counted in the current window
	Max       int       `json:"max"`                 // the cap's limit
	WindowEnd time.Time `json:"window_end,omitzero"` // when the newest impression stops counting; zero for a lifetime cap
}

// explainCapsLocked adds person ord's counters to r. Caller holds mu.
func (e *Engine) explainCapsLocked(r *Report, ord uint32, now time.Time) {
	for _, c := range e.caps {
		sh := c.counts.shard(ord)
		sh.mu.Lock()
		w, ok := c.counts.get(c, ord)
		sh.mu.Unlock()
		if !ok {
			continue
		}
		w = c.advance(w, now.UnixNano())
		if n := c.total(w); n > 0 {
			r.Caps = append(r.Caps, CapReport{Cap: c.Name, Purpose: c.Purpose, Count: n, Max: c.Max, WindowEnd: c.windowEnd(w)})
		}
	}
	slices.SortFunc(r.Caps, func(a, b CapReport) int { return strings.Compare(a.Cap, b.Cap) })
}
