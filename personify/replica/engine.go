package replica

import (
	"context"
	"crypto/ed25519"
	"io"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// The replica's API is the engine's (package personify documents each
// method), minus what would split it from its fleet: LoadSnapshot (a
// replica's snapshots come from its journal's reader, through Feed) and
// Compact (compaction is the journal's). Writes go through the journal and
// return once this replica has applied them; lookups are local and
// lock-free, as fast as an engine's.

// Add is [personify.Engine.Add] on the replica.
func (r *Replica) Add(segmentName string, ids ...anonymize.Identifier) error {
	return r.e.Add(segmentName, ids...)
}

// AddContext is [personify.Engine.AddContext] on the replica.
func (r *Replica) AddContext(ctx context.Context, segmentName string, ids ...anonymize.Identifier) error {
	return r.e.AddContext(ctx, segmentName, ids...)
}

// AddPseudonyms is [personify.Engine.AddPseudonyms] on the replica.
func (r *Replica) AddPseudonyms(segmentName string, ps []anonymize.Pseudonym) error {
	return r.e.AddPseudonyms(segmentName, ps)
}

// AddPseudonymsContext is [personify.Engine.AddPseudonymsContext] on the replica.
func (r *Replica) AddPseudonymsContext(ctx context.Context, segmentName string, ps []anonymize.Pseudonym) error {
	return r.e.AddPseudonymsContext(ctx, segmentName, ps)
}

// Audience is [personify.Engine.Audience] on the replica.
func (r *Replica) Audience(expr, purpose string) (personify.Audience, error) {
	return r.e.Audience(expr, purpose)
}

// Close is [personify.Engine.Close] on the replica.
func (r *Replica) Close() error { return r.e.Close() }

// Define is [personify.Engine.Define] on the replica.
func (r *Replica) Define(s personify.Segment) error { return r.e.Define(s) }

// DefineContext is [personify.Engine.DefineContext] on the replica.
func (r *Replica) DefineContext(ctx context.Context, s personify.Segment) error {
	return r.e.DefineContext(ctx, s)
}

// DefinePurpose is [personify.Engine.DefinePurpose] on the replica.
func (r *Replica) DefinePurpose(p personify.Purpose) error { return r.e.DefinePurpose(p) }

// DefinePurposeContext is [personify.Engine.DefinePurposeContext] on the replica.
func (r *Replica) DefinePurposeContext(ctx context.Context, p personify.Purpose) error {
	return r.e.DefinePurposeContext(ctx, p)
}

// Definitions is [personify.Engine.Definitions] on the replica.
func (r *Replica) Definitions() []personify.Segment { return r.e.Definitions() }

// Drop is [personify.Engine.Drop] on the replica.
func (r *Replica) Drop(name string) error { return r.e.Drop(name) }

// DropContext is [personify.Engine.DropContext] on the replica.
func (r *Replica) DropContext(ctx context.Context, name string) error {
	return r.e.DropContext(ctx, name)
}

// Expire is [personify.Engine.Expire] on the replica.
func (r *Replica) Expire(now time.Time) (int, error) { return r.e.Expire(now) }

// ExpireContext is [personify.Engine.ExpireContext] on the replica.
func (r *Replica) ExpireContext(ctx context.Context, now time.Time) (int, error) {
	return r.e.ExpireContext(ctx, now)
}

// Explain is [personify.Engine.Explain] on the replica.
func (r *Replica) Explain(id anonymize.Identifier) (personify.Report, error) { return r.e.Explain(id) }

// Forget is [personify.Engine.Forget] on the replica.
func (r *Replica) Forget(id anonymize.Identifier) (personify.Receipt, error) { return r.e.Forget(id) }

// ForgetContext is [personify.Engine.ForgetContext] on the replica.
func (r *Replica) ForgetContext(ctx context.Context, id anonymize.Identifier, opts personify.ForgetOptions) (personify.Receipt, error) {
	return r.e.ForgetContext(ctx, id, opts)
}

// ForgetWith is [personify.Engine.ForgetWith] on the replica.
func (r *Replica) ForgetWith(id anonymize.Identifier, opts personify.ForgetOptions) (personify.Receipt, error) {
	return r.e.ForgetWith(id, opts)
}

// In is [personify.Engine.In] on the replica.
func (r *Replica) In(p anonymize.Pseudonym, segmentName string) bool { return r.e.In(p, segmentName) }

// PrepareSegment is [personify.Engine.PrepareSegment] on the replica: the
// handle follows the name across the journal's definitions and snapshots.
func (r *Replica) PrepareSegment(name string) (*personify.PreparedSegment, error) {
	return r.e.PrepareSegment(name)
}

// PreparePurpose is [personify.Engine.PreparePurpose] on the replica.
func (r *Replica) PreparePurpose(name string) (*personify.PreparedPurpose, error) {
	return r.e.PreparePurpose(name)
}

// IndexStats is [personify.Engine.IndexStats] on the replica.
func (r *Replica) IndexStats() personify.IndexStats { return r.e.IndexStats() }

// K is [personify.Engine.K] on the replica.
func (r *Replica) K() int { return r.e.K() }

// KeyFingerprint is [personify.Engine.KeyFingerprint] on the replica.
func (r *Replica) KeyFingerprint() anonymize.Fingerprint { return r.e.KeyFingerprint() }

// Len is [personify.Engine.Len] on the replica.
func (r *Replica) Len(segmentName string) (int, error) { return r.e.Len(segmentName) }

// Pseudonym is [personify.Engine.Pseudonym] on the replica.
func (r *Replica) Pseudonym(id anonymize.Identifier) (anonymize.Pseudonym, error) {
	return r.e.Pseudonym(id)
}

// Purged is [personify.Engine.Purged] on the replica.
func (r *Replica) Purged(rc personify.Receipt) bool { return r.e.Purged(rc) }

// Purpose is [personify.Engine.Purpose] on the replica.
func (r *Replica) Purpose(name string) (personify.Purpose, error) { return r.e.Purpose(name) }

// Purposes is [personify.Engine.Purposes] on the replica.
func (r *Replica) Purposes() []personify.Purpose { return r.e.Purposes() }

// ReceiptPublicKey is [personify.Engine.ReceiptPublicKey] on the replica.
func (r *Replica) ReceiptPublicKey() ed25519.PublicKey { return r.e.ReceiptPublicKey() }

// ReceiptPublicKeys is [personify.Engine.ReceiptPublicKeys] on the replica.
func (r *Replica) ReceiptPublicKeys() []ed25519.PublicKey { return r.e.ReceiptPublicKeys() }

// Remove is [personify.Engine.Remove] on the replica.
func (r *Replica) Remove(segmentName string, id anonymize.Identifier) error {
	return r.e.Remove(segmentName, id)
}

// RemoveContext is [personify.Engine.RemoveContext] on the replica.
func (r *Replica) RemoveContext(ctx context.Context, segmentName string, id anonymize.Identifier) error {
	return r.e.RemoveContext(ctx, segmentName, id)
}

// RemovePseudonyms is [personify.Engine.RemovePseudonyms] on the replica.
func (r *Replica) RemovePseudonyms(segmentName string, ps []anonymize.Pseudonym) error {
	return r.e.RemovePseudonyms(segmentName, ps)
}

// RemovePseudonymsContext is [personify.Engine.RemovePseudonymsContext] on the replica.
func (r *Replica) RemovePseudonymsContext(ctx context.Context, segmentName string, ps []anonymize.Pseudonym) error {
	return r.e.RemovePseudonymsContext(ctx, segmentName, ps)
}

// RotateKey is [personify.Engine.RotateKey] on the replica.
func (r *Replica) RotateKey(next anonymize.Key, grace time.Duration) error {
	return r.e.RotateKey(next, grace)
}

// RotateKeyContext is [personify.Engine.RotateKeyContext] on the replica.
func (r *Replica) RotateKeyContext(ctx context.Context, next anonymize.Key, grace time.Duration) error {
	return r.e.RotateKeyContext(ctx, next, grace)
}

// Segment is [personify.Engine.Segment] on the replica.
func (r *Replica) Segment(name string) (personify.Segment, error) { return r.e.Segment(name) }

// Segments is [personify.Engine.Segments] on the replica.
func (r *Replica) Segments(dst []string, p anonymize.Pseudonym, purpose string) []string {
	return r.e.Segments(dst, p, purpose)
}

// SetConsent is [personify.Engine.SetConsent] on the replica.
func (r *Replica) SetConsent(id anonymize.Identifier, purpose string, granted bool) error {
	return r.e.SetConsent(id, purpose, granted)
}

// SetConsentContext is [personify.Engine.SetConsentContext] on the replica.
func (r *Replica) SetConsentContext(ctx context.Context, id anonymize.Identifier, purpose string, granted bool) error {
	return r.e.SetConsentContext(ctx, id, purpose, granted)
}

// Stats is [personify.Engine.Stats] on the replica.
func (r *Replica) Stats() personify.Stats { return r.e.Stats() }

// String is [personify.Engine.String] on the replica.
func (r *Replica) String() string { return r.e.String() }

// Suppress is [personify.Engine.Suppress] on the replica.
func (r *Replica) Suppress(id anonymize.Identifier, purposes ...string) error {
	return r.e.Suppress(id, purposes...)
}

// SuppressContext is [personify.Engine.SuppressContext] on the replica.
func (r *Replica) SuppressContext(ctx context.Context, id anonymize.Identifier, purposes ...string) error {
	return r.e.SuppressContext(ctx, id, purposes...)
}

// Unsuppress is [personify.Engine.Unsuppress] on the replica.
func (r *Replica) Unsuppress(id anonymize.Identifier, purposes ...string) error {
	return r.e.Unsuppress(id, purposes...)
}

// UnsuppressContext is [personify.Engine.UnsuppressContext] on the replica.
func (r *Replica) UnsuppressContext(ctx context.Context, id anonymize.Identifier, purposes ...string) error {
	return r.e.UnsuppressContext(ctx, id, purposes...)
}

// VerifyReceipt is [personify.Engine.VerifyReceipt] on the replica.
func (r *Replica) VerifyReceipt(rc personify.Receipt) error { return r.e.VerifyReceipt(rc) }

// WriteSnapshot is [personify.Engine.WriteSnapshot] on the replica.
func (r *Replica) WriteSnapshot(w io.Writer) (int64, error) { return r.e.WriteSnapshot(w) }

// Person is [personify.Engine.Person] on the replica.
func (r *Replica) Person(id anonymize.Identifier) (personify.Person, error) { return r.e.Person(id) }

// ExplainPerson is [personify.Engine.ExplainPerson] on the replica.
func (r *Replica) ExplainPerson(p personify.Person) (personify.Report, error) {
	return r.e.ExplainPerson(p)
}

// SetConsentPerson is [personify.Engine.SetConsentPerson] on the replica.
func (r *Replica) SetConsentPerson(ctx context.Context, p personify.Person, purpose string, granted bool) error {
	return r.e.SetConsentPerson(ctx, p, purpose, granted)
}

// SuppressPerson is [personify.Engine.SuppressPerson] on the replica.
func (r *Replica) SuppressPerson(ctx context.Context, p personify.Person, purposes ...string) error {
	return r.e.SuppressPerson(ctx, p, purposes...)
}

// UnsuppressPerson is [personify.Engine.UnsuppressPerson] on the replica.
func (r *Replica) UnsuppressPerson(ctx context.Context, p personify.Person, purposes ...string) error {
	return r.e.UnsuppressPerson(ctx, p, purposes...)
}

// ForgetPerson is [personify.Engine.ForgetPerson] on the replica.
func (r *Replica) ForgetPerson(ctx context.Context, p personify.Person, opts personify.ForgetOptions) (personify.Receipt, error) {
	return r.e.ForgetPerson(ctx, p, opts)
}
