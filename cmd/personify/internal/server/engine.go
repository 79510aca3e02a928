package server

import (
	"context"
	"crypto/ed25519"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// Engine is what the sidecar serves: a *personify.Engine (in memory or
// over a durable directory) or a fleet's *pgstore.Replica.
type Engine interface {
	Pseudonym(id anonymize.Identifier) (anonymize.Pseudonym, error)
	Segments(dst []string, p anonymize.Pseudonym, purpose string) []string
	In(p anonymize.Pseudonym, segmentName string) bool
	Segment(name string) (personify.Segment, error)
	Purpose(name string) (personify.Purpose, error)
	Purposes() []personify.Purpose

	Explain(id anonymize.Identifier) (personify.Report, error)
	SetConsentContext(ctx context.Context, id anonymize.Identifier, purpose string, granted bool) error
	SuppressContext(ctx context.Context, id anonymize.Identifier, purposes ...string) error
	UnsuppressContext(ctx context.Context, id anonymize.Identifier, purposes ...string) error
	LinkContext(ctx context.Context, ids ...anonymize.Identifier) error
	ForgetContext(ctx context.Context, id anonymize.Identifier, opts personify.ForgetOptions) (personify.Receipt, error)
	VerifyReceipt(r personify.Receipt) error
	Purged(r personify.Receipt) bool
	ReceiptPublicKeys() []ed25519.PublicKey

	Person(id anonymize.Identifier) (personify.Person, error)
	ExplainPerson(p personify.Person) (personify.Report, error)
	SetConsentPerson(ctx context.Context, p personify.Person, purpose string, granted bool) error
	SuppressPerson(ctx context.Context, p personify.Person, purposes ...string) error
	UnsuppressPerson(ctx context.Context, p personify.Person, purposes ...string) error
	ForgetPerson(ctx context.Context, p personify.Person, opts personify.ForgetOptions) (personify.Receipt, error)

	DefineContext(ctx context.Context, s personify.Segment) error
	DefinePurposeContext(ctx context.Context, p personify.Purpose) error
	AddContext(ctx context.Context, segmentName string, ids ...anonymize.Identifier) error
	AddPseudonymsContext(ctx context.Context, segmentName string, ps []anonymize.Pseudonym) error
	RemoveContext(ctx context.Context, segmentName string, id anonymize.Identifier) error
	RemovePseudonymsContext(ctx context.Context, segmentName string, ps []anonymize.Pseudonym) error
	Stats() personify.Stats
	Close() error
}
