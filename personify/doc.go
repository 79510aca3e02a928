// Package personify is the engine for segment-based personification:
// serving people relevant experiences because they belong to a customer
// segment ("runners", "lapsed buyers"), never because the app knows who they
// are, and carrying the privacy duties that come with the data.
//
// Start with [New] and an [Options] holding the pseudonymization key, declare
// purposes and segments, load members, and ask per request:
//
//	e, _ := personify.New(personify.Options{Key: key})
//	e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut})
//	e.Define(personify.Segment{Name: "runners", Purpose: "personalization", Retention: 90 * 24 * time.Hour})
//	e.Add("runners", anonymize.Email("jane@example.com"))
//
//	p, _ := e.Pseudonym(anonymize.Email(visitorEmail)) // once per session
//	names := e.Segments(nil, p, "personalization")      // per request
//
// Identifiers become keyed 64-bit pseudonyms at the boundary (package
// anonymize); the engine maps each pseudonym to a dense member ordinal and
// keeps segments as Roaring bitmaps of ordinals (package segment). It never
// stores or prints an identifier, and its audit events, errors, reports and
// receipts carry pseudonyms and counts only.
//
// The rules Segments and Audience apply, so that doing the right thing
// costs the app nothing:
//
//   - Purpose: every segment has one, declared with a consent model: opt-in
//     (nothing until the person grants consent) or opt-out (allowed until they
//     withdraw). Sensitive segments need explicit opt-in whatever the model.
//     An audience uses segments of its own purpose only.
//   - Suppression: Suppress (for some purposes or all) wins over membership
//     and consent, and survives re-adding.
//   - k-anonymity: a segment smaller than max(Options.K, Segment.MinSize) is
//     never served, and a smaller audience is refused (ErrAudienceTooSmall).
//   - Retention: memberships expire after their segment's Retention; expired
//     ones are never served, and Expire drops them.
//   - Transparency: Explain reports everything held under a person's
//     pseudonyms, with the reasons each segment is or is not used.
//   - Erasure: Forget removes the person everywhere at once and returns a
//     Receipt signed with Ed25519 that anyone can check with VerifyReceipt.
//   - Accountability: every change and audience query is an audit event on
//     Options.Audit (log/slog).
//
// # Durable mode
//
// [Open] is New with a directory: every change is logged (CRC-32C per
// record) and fsynced before it returns, concurrent writers share fsyncs
// (group commit), and the state is snapshotted from time to time in the
// segment codec, after which the log starts afresh. Open loads the newest
// snapshot and replays the log; a torn frame at the end of the log (a
// crash mid-write) is dropped with a warning, other damage (a missing log
// included) is an error naming the file and offset ([ErrCorrupt]), data
// under another key is refused ([ErrWrongKey]), and a directory another
// engine holds is refused ([ErrLocked]). Every change read back passes the
// same checks as the API; one that fails is refused, never applied.
// Forget's receipt says when the erasure became durable and by when no file
// will hold the person; that deadline is logged with the erasure, so it
// holds across restarts, and [Engine.Purged] says whether it has been met.
// A background goroutine applies retention, ends key grace periods and
// compacts until Close.
//
// For fleets, [Engine.WriteSnapshot] and [Engine.LoadSnapshot] move the
// whole state between processes; lookups see the old state or the new one,
// never a mix.
//
// # Contexts
//
// Every write has a twin that takes a context.Context (Add and AddContext,
// Forget and ForgetContext, ...), in the way of database/sql's QueryContext:
// the plain form keeps the in-memory engine's calls short, and the Context
// form bounds the wait where a write blocks, on an fsync in durable mode or
// on the fleet's database. A context that is done before the change is
// logged (or appended to a fleet's journal) returns its error and changes
// nothing; a durable write that has reached its fsync waits for it (a few
// milliseconds); in a fleet, a context that ends once the change may be
// in the journal returns replica.ErrNotApplied: the outcome is unknown, and
// a change that was stored takes effect when the replicas apply it.
// Lookups never block and take no context.
//
// An Engine is safe for concurrent use. Lookups never wait for a long write:
// bulk loads are applied in chunks.
package personify
