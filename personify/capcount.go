package personify

import (
	"time"

	"github.com/personify-go/personify/anonymize"
)

// The counters of one cap: per person (by ordinal) one capWord, in shards
// so that concurrent callers for different people rarely share a lock,
// and one caller's whole critical section is a map lookup and a store.
// Only people who were counted hold a word; Expire drops the words whose
// window has passed.

const (
	capSubWindows = 8 // a rolling window's counts: the current sub-window and the 7 before it
	// calendarBias keeps a calendar period's index positive for any time
	// a change can carry (a day before 1970-01-01 in a zone west of UTC).
	calendarBias = 16
)

// rollingSub is the sub-window of a rolling window of length d: d/7, so
// that the seven full sub-windows before the current one span the window,
// and an impression counts for between d and 8/7 d.
func rollingSub(d time.Duration) int64 { return int64(d+capSubWindows-2) / (capSubWindows - 1) }

// capWord is one person's count. Rolling: counts holds the impressions of
// the eight sub-windows (one byte each, by sub-window index mod 8) and
// last is the newest sub-window's index. Calendar: counts is the count of
// period last. Lifetime: counts is the count. (The table stores it
// smaller, see captable.go.)
type capWord struct {
	counts uint64
	last   uint32
}

// impression is one counted impression not yet logged (durable and fleet
// engines batch them, see capflush.go).
type impression struct {
	p  anonymize.Pseudonym
	at int64 // Unix ns
}

// count applies mode to person ord's word at time now (Unix ns) and
// reports the answer. p is what the caller asked by, for the log.
func (e *Engine) count(c *capState, ord uint32, p anonymize.Pseudonym, now time.Time, mode capMode) bool {
	sh := c.counts.shard(ord)
	sh.mu.Lock()
	ok := e.countLocked(c, sh, ord, p, now, mode)
	sh.mu.Unlock()
	return ok
}

// countLocked is count with ord's shard (sh) locked. Allow answers true
// only when it counted: a time outside the person's window (older than
// their newest impression's window, or a count that can grow no more)
// answers false, so that a late or wrong time never lets anyone through
// uncounted; CanShow answers whether Allow would.
func (e *Engine) countLocked(c *capState, sh *capShard, ord uint32, p anonymize.Pseudonym, now time.Time, mode capMode) bool {
	at := now.UnixNano()
	t := c.counts
	w, ref := t.find(c, ord)
	had := ref.pg != nil
	w = c.advance(w, at)
	ok := mode == capRecord || c.total(w) < c.Max
	var w2 capWord
	if ok {
		w2 = c.add(w, at)
		ok = w2 != w // counted
	}
	switch {
	case ok && mode != capCheck:
		t.replace(c, ord, ref, w2) // in place: no second lookup of the page on the request path
		if e.capFlush != nil {     // durable or fleet: the impression is logged in the next batch
			sh.pending = append(sh.pending, impression{p, at})
			t.pending.Add(1)
		}
	case had && w.counts == 0:
		t.del(ord) // an expired word goes as soon as it is seen
	}
	return ok
}

// period returns the index of the window at (Unix ns) falls in: the
// rolling sub-window, the calendar period in the cap's time zone (days
// since 1970-01-01 there, weeks since the Monday 1969-12-29, months since
// January 1970), or 0 for lifetime.
func (c *capState) period(at int64) uint32 {
	switch c.Window.Kind {
	case Rolling:
		q := at / c.sub
		if at < 0 && at%c.sub != 0 {
			q--
		}
		return uint32(q)
	case Calendar:
		t := time.Unix(0, at).In(c.loc)
		y, m, d := t.Date()
		// The local date's day number, by the time package: noon UTC of
		// that date, in whole days since 1970 (never negative here).
		days := floorDiv(time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Unix(), 24*60*60)
		switch c.Window.Period {
		case Week:
			return uint32(floorDiv(days+3, 7) + calendarBias) // 1970-01-01 was a Thursday
		case Month:
			return uint32(int64((y-1970)*12+int(m)-1) + calendarBias)
		}
		return uint32(days + calendarBias)
	}
	return 0
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// advance brings w up to time at: a rolling window's sub-windows that have
// left it are emptied, a calendar period that ended restarts.
func (c *capState) advance(w capWord, at int64) capWord {
	switch c.Window.Kind {
	case Rolling:
		w = shiftTo(w, c.period(at))
	case Calendar:
		if cur := c.period(at); cur != w.last {
			if int32(cur-w.last) > 0 {
				w.counts, w.last = 0, cur
			}
		}
	}
	return w
}

// shiftTo moves a rolling word's newest sub-window forward to cur,
// emptying the sub-windows that leave the count.
func shiftTo(w capWord, cur uint32) capWord {
	age := int32(cur - w.last)
	switch {
	case age <= 0:
		return w
	case age >= capSubWindows:
		w.counts = 0
	default:
		for k := w.last + 1; k != cur+1; k++ {
			w.counts &^= 0xff << (8 * (k % capSubWindows))
		}
	}
	w.last = cur
	return w
}

// combine is the word of a person made of two (Link merged them): the
// impressions of both, in one window.
func (c *capState) combine(a, b capWord) capWord {
	switch c.Window.Kind {
	case Rolling:
		last := a.last
		if int32(b.last-a.last) > 0 {
			last = b.last
		}
		a, b = shiftTo(a, last), shiftTo(b, last)
		for k := range capSubWindows {
			shift := 8 * uint(k)
			n := min(a.counts>>shift&0xff+b.counts>>shift&0xff, 0xff)
			a.counts = a.counts&^(0xff<<shift) | n<<shift
		}
		return a
	case Calendar:
		switch d := int32(b.last - a.last); {
		case d > 0:
			return b
		case d < 0:
			return a
		}
	}
	a.counts = min(a.counts+b.counts, 1<<32-1)
	return a
}

// total is the count in the window w was advanced to.
func (c *capState) total(w capWord) int {
	if c.Window.Kind != Rolling {
		return int(w.counts)
	}
	n := 0
	for x := w.counts; x != 0; x >>= 8 {
		n += int(x & 0xff)
	}
	return n
}

// add counts one impression at time at (w advanced to at or later: an
// impression replayed from the log or another replica may be older than
// the word's newest, and counts where it fell, if still in the window).
func (c *capState) add(w capWord, at int64) capWord {
	switch c.Window.Kind {
	case Rolling:
		k := c.period(at)
		if age := int32(w.last - k); age < 0 || age >= capSubWindows {
			return w // outside the window
		}
		shift := 8 * (k % capSubWindows)
		if b := w.counts >> shift & 0xff; b < 0xff {
			w.counts += 1 << shift
		}
	case Calendar:
		if c.period(at) != w.last {
			return w // another period
		}
		if w.counts < 1<<32-1 {
			w.counts++
		}
	default:
		if w.counts < 1<<32-1 {
			w.counts++
		}
	}
	return w
}

// windowEnd is when the count of w stops holding its newest impression:
// the end of the rolling window from its newest sub-window, the end of
// the calendar period, zero for lifetime.
func (c *capState) windowEnd(w capWord) time.Time {
	switch c.Window.Kind {
	case Rolling:
		return time.Unix(0, (int64(w.last)+capSubWindows)*c.sub).UTC() // when the newest sub-window leaves the count
	case Calendar: // the start of the next period, computed as a date (a missing local midnight is Go's to resolve)
		next := int64(w.last) - calendarBias + 1
		var start time.Time
		switch c.Window.Period {
		case Day:
			start = civilDate(next, c.loc)
		case Week:
			start = civilDate(next*7-3, c.loc)
		case Month:
			start = time.Date(1970, time.Month(next+1), 1, 0, 0, 0, 0, c.loc) // Date normalizes the month
		}
		return start.UTC()
	}
	return time.Time{}
}

// civilDate is midnight, in loc, of the day days after 1970-01-01.
func civilDate(days int64, loc *time.Location) time.Time {
	return time.Date(1970, 1, 1+int(days), 0, 0, 0, 0, loc)
}
