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
// # One person, many identifiers
//
// A visitor arrives as an anonymous device cookie, signs in with an
// account ID, and is known to the warehouse by an email and to the call
// centre by a phone number. [Engine.Link] joins such identifiers of one
// person (and [Engine.LinkPseudonyms] does it for pseudonyms computed in a
// warehouse): each keeps its own pseudonym, and every one of them finds
// the same person, by the same one-probe lookup. The engine keeps no
// identity graph of identifiers, only which pseudonyms belong together.
//
//   - Memberships, consent and suppression are the person's: a segment
//     holds one member per person, so audiences and k-anonymity count
//     people, and a write through any linked identifier is the person's.
//   - Joining two people keeps the more restrictive state: memberships
//     are the union (a timed one keeps the later time), a withdrawal or a
//     suppression on either side holds, and a consent stays granted only
//     where both had granted it.
//   - No over-merging through shared devices: a device ID belongs to at
//     most one person, and linking it to someone else moves it, carrying
//     none of its memberships or grants across (an anonymous device-only
//     person's withdrawals and suppressions do come along, and that person
//     is gone once their last device moves). Two people who each have an
//     email, phone number or user ID are joined only by a Link naming
//     identifiers of both. The reason: a shared laptop, a family tablet or
//     a kiosk is the usual way two people meet one device, and merging
//     through it would serve one person's segments, and show one person's
//     data in Explain, to another; an explicit Link of two such
//     identifiers is the app vouching that they are one person.
//   - Explain through any linked identifier lists every pseudonym with its
//     kind; Forget through any erases all of them, under every key, lists
//     each in the receipt (Receipt.Linked) and, with DoNotReAdd, keeps each
//     off the segments (under the keys it was stored under: see
//     ForgetOptions.DoNotReAdd for what a rotation does to that). Unlink detaches one identifier (a mistaken
//     link, a phone number given up), which then holds nothing.
//   - Limits: MaxLinked identifiers per person (ErrTooManyLinked). During a
//     key rotation, a linked identifier moves to the new key when it is
//     next written by identifier (Link included); one that is not before
//     the old key's grace period ends is dropped with the key, the person
//     and their other identifiers staying. A do-not-re-add list holds a
//     linked person's pseudonyms under the keys in the keyring; the
//     upcoming keys (Options.UpcomingKeys) cover the identifier Forget was
//     called with only.
//   - Links are changes like any other: validated, logged, replicated and
//     kept in snapshots. A fleet must run a release that knows them on
//     every replica before the first Link: an older one refuses the change
//     (an audit event, Stats.RefusedChanges) and would serve the person
//     without it.
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
