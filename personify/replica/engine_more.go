package replica

import (
	"context"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// Link is [personify.Engine.Link] on the replica.
func (r *Replica) Link(ids ...anonymize.Identifier) error { return r.e.Link(ids...) }

// LinkContext is [personify.Engine.LinkContext] on the replica.
func (r *Replica) LinkContext(ctx context.Context, ids ...anonymize.Identifier) error {
	return r.e.LinkContext(ctx, ids...)
}

// LinkPseudonyms is [personify.Engine.LinkPseudonyms] on the replica.
func (r *Replica) LinkPseudonyms(people ...[]personify.LinkedPseudonym) error {
	return r.e.LinkPseudonyms(people...)
}

// LinkPseudonymsContext is [personify.Engine.LinkPseudonymsContext] on the replica.
func (r *Replica) LinkPseudonymsContext(ctx context.Context, people ...[]personify.LinkedPseudonym) error {
	return r.e.LinkPseudonymsContext(ctx, people...)
}

// Unlink is [personify.Engine.Unlink] on the replica.
func (r *Replica) Unlink(id anonymize.Identifier) error { return r.e.Unlink(id) }

// UnlinkContext is [personify.Engine.UnlinkContext] on the replica.
func (r *Replica) UnlinkContext(ctx context.Context, id anonymize.Identifier) error {
	return r.e.UnlinkContext(ctx, id)
}

// DefineCap is [personify.Engine.DefineCap] on the replica.
func (r *Replica) DefineCap(c personify.Cap) error { return r.e.DefineCap(c) }

// DefineCapContext is [personify.Engine.DefineCapContext] on the replica.
func (r *Replica) DefineCapContext(ctx context.Context, c personify.Cap) error {
	return r.e.DefineCapContext(ctx, c)
}

// DropCap is [personify.Engine.DropCap] on the replica.
func (r *Replica) DropCap(name string) error { return r.e.DropCap(name) }

// DropCapContext is [personify.Engine.DropCapContext] on the replica.
func (r *Replica) DropCapContext(ctx context.Context, name string) error {
	return r.e.DropCapContext(ctx, name)
}

// Caps is [personify.Engine.Caps] on the replica.
func (r *Replica) Caps() []personify.Cap { return r.e.Caps() }

// Allow is [personify.Engine.Allow] on the replica: exact for the
// impressions this replica counts, the others' counted within
// Options.CapFlush.
func (r *Replica) Allow(p anonymize.Pseudonym, capName string) bool { return r.e.Allow(p, capName) }

// AllowAt is [personify.Engine.AllowAt] on the replica.
func (r *Replica) AllowAt(p anonymize.Pseudonym, capName string, at time.Time) bool {
	return r.e.AllowAt(p, capName, at)
}

// CanShow is [personify.Engine.CanShow] on the replica.
func (r *Replica) CanShow(p anonymize.Pseudonym, capName string) bool { return r.e.CanShow(p, capName) }

// Record is [personify.Engine.Record] on the replica.
func (r *Replica) Record(p anonymize.Pseudonym, capName string) bool { return r.e.Record(p, capName) }

// FlushCounts is [personify.Engine.FlushCounts] on the replica: the
// impressions it counted reach the journal now. A journal closing its
// replica calls it first, so a clean shutdown loses none.
func (r *Replica) FlushCounts(ctx context.Context) error { return r.e.FlushCounts(ctx) }
