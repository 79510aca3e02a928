package personify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	_ "time/tzdata" // calendar caps' time zones, the same on every machine of a fleet

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
)

// Frequency caps: how often one person may be shown something. A Cap is
// defined like a segment (a name, a purpose, logged, replicated, in
// snapshots) and answers on the request path, lock-free but for one short
// per-shard lock, with no allocation:
//
//	ok := e.Allow(p, "spring-sale") // may they see it now? if so, counted
//
// The counters are the person's data, under the same rules as their
// memberships: nothing is counted without the cap's purpose allowing it,
// Explain shows them, Forget erases them, and they leave with their window.

// Window kinds.
const (
	// Rolling counts the impressions of the last Length (a sliding
	// window, like "3 per 24 hours").
	Rolling WindowKind = iota + 1
	// Calendar counts the impressions of the current calendar Period
	// (day, week from Monday, month) in TimeZone, so that "per day" means
	// the person's day, as Braze counts it, not a rolling 24 hours.
	Calendar
	// Lifetime counts every impression, for good (until Forget).
	Lifetime
)

// WindowKind is how a cap's window is measured. The zero value is
// invalid; a WindowKind is a plain value, safe for concurrent use.
type WindowKind uint8

func (k WindowKind) String() string {
	switch k {
	case Rolling:
		return "rolling"
	case Calendar:
		return "calendar"
	case Lifetime:
		return "lifetime"
	}
	return fmt.Sprintf("WindowKind(%d)", uint8(k))
}

// Period is a calendar window's length. The zero value is invalid; a
// Period is a plain value, safe for concurrent use.
type Period uint8

// The calendar periods.
const (
	Day Period = iota + 1
	Week
	Month
)

func (p Period) String() string {
	switch p {
	case Day:
		return "day"
	case Week:
		return "week"
	case Month:
		return "month"
	}
	return fmt.Sprintf("Period(%d)", uint8(p))
}

// Limits of a cap.
const (
	// MaxCapCount is the largest Cap.Max: an impression count fits in six
	// bits of each of a rolling window's eight sub-windows.
	MaxCapCount = 63
	// MaxCapWindow is the longest rolling window, 90 days (Campaign
	// Manager 360's longest).
	MaxCapWindow = 90 * 24 * time.Hour
	// MinCapWindow is the shortest rolling window.
	MinCapWindow = time.Minute
	// MaxCaps is the most caps an engine holds.
	MaxCaps = 1024
)

// ErrUnknownCap is returned for a cap name that is not defined.
var ErrUnknownCap = errors.New("personify: unknown cap")

// Cap is a frequency cap: at most Max impressions per Window for one
// person, counted only where Purpose may use the person's data.
//
// The zero Cap is not valid (it has no name). A Cap is a plain value,
// safe for concurrent reads.
type Cap struct {
	Name        string `json:"name"`
	Purpose     string `json:"purpose"`
	Description string `json:"description,omitempty"`
	Max         int    `json:"max"` // 1 to MaxCapCount
	Window      Window `json:"window"`
}

// Window is a cap's window: Rolling with Length, Calendar with Period and
// TimeZone (an IANA name such as "Europe/Berlin"; empty: UTC), or
// Lifetime.
//
// A rolling window is counted in sub-windows of Length/7, and an
// impression counts until seven full sub-windows after its own have
// passed: for between Length and 8/7 Length. So a cap is never exceeded
// within any window of Length, and it lets the person see the next
// impression at most Length/7 later than an exact sliding log would.
// TimeZone names an IANA zone as Area/Location ("Europe/Berlin") or "UTC";
// it loads from the machine's time-zone database, or from the copy
// embedded in the library where the machine has none (replicas of a fleet
// should run with the same database).
//
// The zero Window is not valid. A Window is a plain value, safe for
// concurrent reads.
type Window struct {
	Kind     WindowKind    `json:"kind"`
	Length   time.Duration `json:"length,omitempty"`    // Rolling
	Period   Period        `json:"period,omitempty"`    // Calendar
	TimeZone string        `json:"time_zone,omitempty"` // Calendar
}

// capState is a defined cap and its counters.
type capState struct {
	Cap
	id      uint32
	purpose *purposeState
	loc     *time.Location // calendar
	sub     int64          // rolling: sub-window length, ns
	counts  *capTable      // shared by the copies lock-free callers read

	// Set on the copies publishCapsLocked makes for lock-free callers.
	bit   uint8
	optIn bool
}

// checkCap validates a cap definition (not its purpose's existence).
func checkCap(c Cap) (*time.Location, error) {
	if err := validName("cap", c.Name); err != nil {
		return nil, err
	}
	if err := validName("purpose", c.Purpose); err != nil {
		return nil, inContext(err, "cap %q", c.Name)
	}
	if c.Max < 1 || c.Max > MaxCapCount {
		return nil, fmt.Errorf("%w: cap %q: Max is %d: it must be between 1 and %d", ErrInvalidDefinition, c.Name, c.Max, MaxCapCount)
	}
	if err := checkDescription("cap", c.Name, c.Description); err != nil {
		return nil, err
	}
	w := c.Window
	switch w.Kind {
	case Rolling:
		if w.Length < MinCapWindow || w.Length > MaxCapWindow || w.Period != 0 || w.TimeZone != "" {
			return nil, fmt.Errorf("%w: cap %q: a rolling window needs a Length from %v to %v, and no Period or TimeZone",
				ErrInvalidDefinition, c.Name, MinCapWindow, MaxCapWindow)
		}
	case Calendar:
		if w.Period < Day || w.Period > Month || w.Length != 0 {
			return nil, fmt.Errorf("%w: cap %q: a calendar window needs a Period (Day, Week or Month), and no Length", ErrInvalidDefinition, c.Name)
		}
		loc, err := time.LoadLocation(w.TimeZone)
		if err != nil || !ianaZoneName(w.TimeZone) {
			return nil, fmt.Errorf("%w: cap %q: TimeZone is not an IANA time zone name (such as \"Europe/Berlin\")", ErrInvalidDefinition, c.Name)
		}
		return loc, nil
	case Lifetime:
		if w.Length != 0 || w.Period != 0 || w.TimeZone != "" {
			return nil, fmt.Errorf("%w: cap %q: a lifetime window takes no Length, Period or TimeZone", ErrInvalidDefinition, c.Name)
		}
	default:
		return nil, fmt.Errorf("%w: cap %q: Window.Kind must be Rolling, Calendar or Lifetime", ErrInvalidDefinition, c.Name)
	}
	return nil, nil
}

// ianaZoneName reports whether name is a time zone every machine knows
// alike: empty or "UTC", or Area/Location in one of the IANA database's
// areas (not "Local", "localtime", "posixrules", "posix/..." or
// "right/...", which depend on the machine's files).
func ianaZoneName(name string) bool {
	if name == "" || name == "UTC" {
		return true
	}
	area, _, ok := strings.Cut(name, "/")
	if !ok {
		return false
	}
	switch area {
	case "Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific", "Etc":
		return true
	}
	return false
}

// DefineCap defines a frequency cap, or redefines one: a redefinition
// with the same window and purpose keeps the counts (a new Max applies at
// once); one with another window, or for another purpose (counts kept for
// one purpose are not used for another), starts them afresh. The purpose
// must be defined.
func (e *Engine) DefineCap(c Cap) error { return e.DefineCapContext(context.Background(), c) }

// DefineCapContext is DefineCap with a context that bounds how long it
// waits (see the package doc).
func (e *Engine) DefineCapContext(ctx context.Context, c Cap) error {
	_, err := e.commit(ctx, &op{kind: opDefineCap, at: e.now(), cap: c})
	return err
}

// DropCap removes a cap and every count of it.
func (e *Engine) DropCap(name string) error { return e.DropCapContext(context.Background(), name) }

// DropCapContext is DropCap with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) DropCapContext(ctx context.Context, name string) error {
	_, err := e.commit(ctx, &op{kind: opDropCap, at: e.now(), name: name})
	return err
}

// Caps returns the defined caps, by name.
func (e *Engine) Caps() []Cap {
	caps := e.capList()
	out := make([]Cap, len(caps))
	for i, c := range caps {
		out[i] = c.Cap
	}
	return out
}

func (e *Engine) applyDefineCap(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	c := o.cap
	loc, err := checkCap(c)
	if err != nil {
		return opResult{}, err
	}
	ps, err := e.purposeLocked(c.Purpose)
	if err != nil {
		return opResult{}, inContext(err, "cap %q", c.Name)
	}
	old := e.caps[c.Name]
	if old == nil && len(e.caps) >= MaxCaps {
		return opResult{}, fmt.Errorf("%w: cap %q: an engine holds at most %d caps", ErrInvalidDefinition, c.Name, MaxCaps)
	}
	st := &capState{Cap: c, purpose: ps, loc: loc, counts: newCapTable()}
	if c.Window.Kind == Rolling {
		st.sub = rollingSub(c.Window.Length)
	}
	if old != nil {
		st.id = old.id
		if old.Window == c.Window && old.Purpose == c.Purpose {
			st.counts = old.counts
		} else {
			e.dropTableLocked(old) // counters and waiting impressions go; those in flight are counted as a replay will
		}
	} else {
		st.id = e.nextCapID
		e.nextCapID++
	}
	e.caps[c.Name] = st
	e.publishCapsLocked()
	e.event("define_cap", slog.String("cap", c.Name), slog.String("purpose", c.Purpose), slog.Int("max", c.Max),
		slog.String("window", c.Window.Kind.String()))
	return opResult{}, nil
}

func (e *Engine) applyDropCap(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	old, ok := e.caps[o.name]
	if !ok {
		return opResult{}, e.unknownCapLocked(o.name)
	}
	delete(e.caps, o.name)
	e.dropTableLocked(old) // those in flight: a replay counts them into a cap of that name defined before they land
	e.publishCapsLocked()
	e.event("drop_cap", slog.String("cap", o.name))
	return opResult{}, nil
}

func (e *Engine) unknownCapLocked(name string) error {
	names := make([]string, 0, len(e.caps))
	for n := range e.caps {
		names = append(names, n)
	}
	return unknownName(ErrUnknownCap, "cap", name, "", "define it first with Engine.DefineCap", names)
}

// publishCapsLocked makes the current caps visible to lock-free callers.
// Each is a copy with its purpose's bit and model (a purpose redefined
// republishes them); the counters are shared.
func (e *Engine) publishCapsLocked() {
	m := make(map[string]*capState, len(e.caps))
	for n, c := range e.caps {
		cp := *c
		cp.bit, cp.optIn = c.purpose.bit, c.purpose.Model == OptIn
		m[n] = &cp
	}
	e.capsRead.Store(&m)
}

// Allow reports whether the person with pseudonym p may be shown what cap
// limits, now, and if so counts the impression: at most Max calls return
// true per window (the rate.Limiter.Allow shape). It answers false, and
// counts nothing, for an undefined cap, a person the engine does not
// store (Add them to a segment, or Link their device, to cap them), and a
// person the cap's purpose may not use: no consent under the purpose's
// model, or suppressed. It takes no engine lock and allocates nothing; any
// number of goroutines may call it, and concurrent calls for one person
// never let more than Max through within an engine.
func (e *Engine) Allow(p anonymize.Pseudonym, capName string) bool {
	return e.capCall(p, capName, capAllow, time.Time{})
}

// AllowAt is Allow at time at, for a caller that has the request's time
// already (reading the clock is a good part of Allow's cost on some
// machines) or replays impressions. A time counts where it falls, in the
// person's own window: one older than the window of their newest
// impression counts nothing, and AllowAt answers false for it (a late
// or wrong time never lets anyone through uncounted); a time far ahead
// moves only that person's window (and holds them back until the clock
// gets there).
func (e *Engine) AllowAt(p anonymize.Pseudonym, capName string, at time.Time) bool {
	return e.capCall(p, capName, capAllow, at)
}

// CanShow is Allow without counting: whether an impression now would be
// within the cap.
func (e *Engine) CanShow(p anonymize.Pseudonym, capName string) bool {
	return e.capCall(p, capName, capCheck, time.Time{})
}

// Record counts an impression decided elsewhere (an ad server that showed
// it), even past Max; it counts nothing, like Allow, where the purpose may
// not use the person's data. It reports whether it counted.
func (e *Engine) Record(p anonymize.Pseudonym, capName string) bool {
	return e.capCall(p, capName, capRecord, time.Time{})
}

type capMode uint8

const (
	capAllow capMode = iota
	capCheck
	capRecord
)

func (e *Engine) capCall(p anonymize.Pseudonym, capName string, mode capMode, at time.Time) bool {
	g := e.gen.Load()
	m := e.capsRead.Load()
	if g&1 != 0 || m == nil {
		return false
	}
	c, ok := (*m)[capName]
	if !ok || !at.IsZero() && (at.Before(minChangeTime) || !at.Before(maxChangeTime)) {
		return false // a time no change can carry (see checkTime) counts nothing
	}
	t := e.dir.Tab.Load()
	en, ok, stuck := t.Read(uint64(p))
	if stuck || (!ok && e.hasAliases.Load()) {
		return e.capCallLocked(p, c, mode, at)
	}
	if !ok {
		return false
	}
	// The counter's page is fetched while the consent rule and the clock
	// are read: its shard is locked first, so that its page is known.
	ord := en.Ord()
	sh := c.counts.shard(ord)
	sh.mu.Lock()
	c.counts.prefetch(ord)
	// The entry again, under the lock: a writer that erases the person,
	// withdraws their consent or suppresses them publishes it before it
	// drops their counters under this lock (dropCountsLocked), so what is
	// counted here is either refused here or dropped there.
	t = e.dir.Tab.Load()
	en, ok, stuck = t.Read(uint64(p))
	if stuck || !ok || en.Ord() != ord || e.gen.Load() != g {
		sh.mu.Unlock() // the locked path takes mu, which is taken before a shard's lock
		return e.capCallLocked(p, c, mode, at)
	}
	if !e.allowsEntry(t, en, c) {
		sh.mu.Unlock()
		return false
	}
	if at.IsZero() {
		at = e.now()
	}
	ok = e.countLocked(c, sh, ord, p, at, mode)
	sh.mu.Unlock()
	return ok
}

// capCallLocked is capCall's path for aliases and snapshot loads. It
// takes the shard's lock before it lets go of mu, so that no writer
// changes the person in between.
func (e *Engine) capCallLocked(p anonymize.Pseudonym, c *capState, mode capMode, at time.Time) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if c = e.caps[c.Name]; c == nil { // the cap as it is now (a snapshot may have replaced it)
		return false
	}
	ord, _, ok := e.resolveLocked(p)
	if !ok || !e.allowsLocked(c.purpose, ord, false) {
		return false
	}
	if at.IsZero() {
		at = e.now()
	}
	return e.count(c, ord, p, at, mode)
}

// allowsEntry is the consent rule on an index entry's privacy state, for
// the cap's purpose. t is the table the entry was read from: its record
// is in t's arena (a compaction meanwhile publishes another).
func (e *Engine) allowsEntry(t *index.Table, en index.Entry, c *capState) bool {
	state := en.State()
	if en.Overflow() && state == index.StateOverflow { // a state id too large for the entry: in the record only
		state = index.ViewRecord(t.Arena.Record(en.Ref())).State
	}
	bit := uint64(1) << c.bit
	optIn := c.optIn
	if state == 0 {
		return !optIn
	}
	states := *e.states.Load()
	if int(state) >= len(states) {
		return false
	}
	s := &states[state]
	if s.all || s.suppressed&bit != 0 || s.denied&bit != 0 {
		return false
	}
	return !optIn || s.granted&bit != 0
}
