package ops

import (
	"fmt"
	"io"
	"os"
	"time"
)

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// progress writes a progress line (rows, rows per second, and the percent
// read of an input of known size) at most every progressEvery.
type progress struct {
	w           io.Writer
	on, tty     bool
	total       int64
	read        *countReader
	start, last time.Time
}

const progressEvery = 200 * time.Millisecond

// newProgress returns the progress of a command writing to stderr: on when
// stderr is a terminal or force is set, off with quiet.
func newProgress(stderr io.Writer, force, quiet bool, total int64, read *countReader) *progress {
	tty := isTerminal(stderr)
	now := time.Now()
	return &progress{w: stderr, on: !quiet && (force || tty), tty: tty, total: total, read: read, start: now, last: now}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// tick is called every few rows; it prints when the last line is old
// enough.
func (p *progress) tick(rows int64) {
	if !p.on {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < progressEvery {
		return
	}
	p.last = now
	p.print(rows, now)
}

func (p *progress) print(rows int64, now time.Time) {
	rate := float64(rows) / max(now.Sub(p.start).Seconds(), 1e-9)
	line := fmt.Sprintf("%d rows, %s rows/s", rows, humanRate(rate))
	if p.total > 0 && p.read != nil {
		line += fmt.Sprintf(", %3.0f%%", 100*float64(min(p.read.n, p.total))/float64(p.total))
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// done prints the final line.
func (p *progress) done(rows int64) {
	if !p.on {
		return
	}
	p.print(rows, time.Now())
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

func humanRate(r float64) string {
	switch {
	case r >= 1e6:
		return fmt.Sprintf("%.2fM", r/1e6)
	case r >= 1e3:
		return fmt.Sprintf("%.1fk", r/1e3)
	}
	return fmt.Sprintf("%.0f", r)
}
