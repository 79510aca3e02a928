package segment

import "errors"

// Errors callers branch on. Every error the package returns for bad input
// wraps one of them, so errors.Is works through the added context (section
// index, byte offset, column).
var (
	// ErrCorrupt is returned when encoded data is well framed (its checksums,
	// if any, match) but does not decode: an invalid Roaring bitmap, an
	// unknown section kind, overlapping Timed buckets, a duplicate name.
	ErrCorrupt = errors.New("segment: corrupt data")

	// ErrSyntax is returned, wrapped in a *SyntaxError, when Parse rejects an
	// expression.
	ErrSyntax = errors.New("segment: expression syntax error")

	// ErrNoUniverse is returned by Expr.Eval when the expression needs a
	// complement (a NOT that cannot be folded into AND NOT) and the universe
	// is nil.
	ErrNoUniverse = errors.New("segment: expression needs a universe")

	// ErrBadMagic is returned when the input does not start like a snapshot.
	ErrBadMagic = errors.New("segment: not a snapshot")

	// ErrVersion is returned when a snapshot was written in a format version,
	// or with format flags, that this package does not know.
	ErrVersion = errors.New("segment: unsupported snapshot version")

	// ErrTruncated is returned when a snapshot ends early, including one that
	// ends cleanly at a section boundary without its trailer.
	ErrTruncated = errors.New("segment: snapshot truncated")

	// ErrLength is returned when a snapshot length field is impossible: over
	// its documented maximum, or past the end of the input when the input's
	// size is known.
	ErrLength = errors.New("segment: impossible length in snapshot")

	// ErrChecksum is returned when a snapshot header, section header, payload
	// or trailer does not match its checksum.
	ErrChecksum = errors.New("segment: snapshot checksum mismatch")
)

// dataError is the error for bad encoded data: where it was found, what was
// wrong, and the sentinel (plus an optional cause) it unwraps to.
type dataError struct {
	kind   error  // one of the sentinels above
	where  string // "set encoding", `snapshot: section 3 "x" at byte 120`
	detail string
	cause  error // optional, e.g. io.ErrUnexpectedEOF
}

func (e *dataError) Error() string {
	return "segment: " + e.where + ": " + e.detail
}

func (e *dataError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}
