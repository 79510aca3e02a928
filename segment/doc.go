// Package segment holds sets of members: the dense uint32 ordinals that the
// engine's member directory assigns. It never sees identifiers,
// pseudonyms, keys or consent; the personify package maps those to
// ordinals and back.
//
// Reach for [Set] first: a Roaring bitmap with membership tests, bulk adds,
// in-place algebra (And, Or, AndNot, Xor), the many-input functions [And],
// [Or] and [Xor], and serialization in the portable Roaring format that
// CRoaring and Java RoaringBitmap also read. On dense ordinals a Set costs
// a few bytes per member and tens of nanoseconds per Contains.
//
// Around it:
//
//   - [Parse] turns an audience expression such as
//     `runners & (ios | android) & !churned` into an [Expr], with errors that
//     point at the column, and [Expr.Eval] computes it with bitmap algebra,
//     folding a & !b into AND NOT.
//   - [Timed] is a set whose memberships expire: members are bucketed by the
//     epoch they were last added in, and [Timed.ExpireBefore] drops whole
//     buckets.
//   - [Writer] and [Reader] write and read snapshots: a versioned,
//     checksummed container of named sets, Timed sets and opaque blobs, whose
//     byte layout is documented on [Writer]. [WriteSets] and [ReadSets]
//     cover the common case.
//
// # Goroutines
//
// Set and Timed are not safe for concurrent use when any goroutine mutates
// them; any number of goroutines may call the read methods of a Set or
// Timed that no goroutine mutates (copy-on-write is never enabled, so reads
// never write). To update shared sets, build new ones and publish them, for
// example through an atomic.Pointer. An Expr is immutable and safe to share.
// Writer and Reader are for one goroutine at a time.
//
// # Untrusted input
//
// Decoders (Set.UnmarshalBinary, Set.ReadFrom, Reader) validate everything
// before trusting it, never panic, and allocate in proportion to the input
// they have actually received. Their errors wrap the exported Err values, so
// callers can tell a truncated file (ErrTruncated) from a corrupt one
// (ErrChecksum, ErrCorrupt).
package segment
