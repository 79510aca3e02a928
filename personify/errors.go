package personify

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Errors callers branch on. Each is wrapped with the details of the case;
// test for them with errors.Is.
var (
	// ErrUnknownSegment is returned when a segment name is not defined.
	ErrUnknownSegment = errors.New("personify: unknown segment")
	// ErrUnknownPurpose is returned when a purpose name is not defined.
	ErrUnknownPurpose = errors.New("personify: unknown purpose")
	// ErrInvalidName is returned when a segment or purpose name is malformed.
	ErrInvalidName = errors.New("personify: invalid name")
	// ErrInvalidDefinition is returned by Define and DefinePurpose for
	// settings that make no sense, such as a negative retention.
	ErrInvalidDefinition = errors.New("personify: invalid definition")
	// ErrAudienceTooSmall is returned by Audience when fewer people than the
	// minimum audience size (k-anonymity) would be in it.
	ErrAudienceTooSmall = errors.New("personify: audience below the minimum size")
	// ErrPurposeMismatch is returned by Audience when an expression uses a
	// segment collected for another purpose.
	ErrPurposeMismatch = errors.New("personify: segment of another purpose")
	// ErrTooManyPurposes is returned by DefinePurpose past MaxPurposes.
	ErrTooManyPurposes = errors.New("personify: too many purposes")
	// ErrClosed is returned by every method of a closed Engine.
	ErrClosed = errors.New("personify: engine is closed")
)

// unknownName builds an ErrUnknownSegment or ErrUnknownPurpose error that
// says what to do and suggests the closest defined name. shown is how the
// error refers to the name; empty means the name itself, quoted, if it is
// a valid name (a string that is not may be anything, an email address
// passed by mistake included, and is not echoed).
func unknownName(sentinel error, kind, name, shown, how string, defined []string) error {
	hint := ""
	if best := closest(name, defined); best != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", best)
	} else if len(defined) == 0 {
		hint = fmt.Sprintf(" (no %s is defined yet)", kind)
	}
	if shown == "" && validName(kind, name) == nil {
		shown = strconv.Quote(name)
	} else if shown == "" {
		shown = fmt.Sprintf("(a string of %d bytes that is not a valid %s name)", len(name), kind)
	}
	return fmt.Errorf("%w %s: %s%s", sentinel, shown, how, hint)
}

// closest returns the defined name nearest to name by edit distance, if it
// is near enough to be a typo.
func closest(name string, defined []string) string {
	sort.Strings(defined)
	best, bestD := "", 1+len(name)/3
	for _, d := range defined {
		if dist := editDistance(strings.ToLower(name), strings.ToLower(d)); dist < bestD {
			best, bestD = d, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// The package's errors say "personify: " once: an error that wraps another
// of the package's (or names what it was about) prints the inner message
// without its prefix, and stays errors.Is-able as both.

const errPrefix = "personify: "

// contextError names what err was about, after the prefix.
type contextError struct {
	err  error
	what string
}

func (c *contextError) Error() string {
	return errPrefix + c.what + ": " + strings.TrimPrefix(c.err.Error(), errPrefix)
}

func (c *contextError) Unwrap() error { return c.err }

// inContext returns err naming what it was about:
// "personify: segment \"runners\": unknown purpose ...".
func inContext(err error, format string, args ...any) error {
	return &contextError{err: err, what: fmt.Sprintf(format, args...)}
}

// bothError is an outer sentinel and the inner error that caused it.
type bothError struct{ outer, inner error }

func (b *bothError) Error() string {
	return b.outer.Error() + ": " + strings.TrimPrefix(b.inner.Error(), errPrefix)
}

func (b *bothError) Unwrap() []error { return []error{b.outer, b.inner} }

// wrapAs returns an error that is both outer and inner (errors.Is finds
// either), printed "personify: <outer>: <inner without its prefix>".
func wrapAs(outer, inner error) error { return &bothError{outer, inner} }
