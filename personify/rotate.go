package personify

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
)

// RotateKey makes next the current key. New pseudonyms are computed with it;
// the previous key stays usable for lookups for grace (make it at least the
// longest segment retention, at most 100 years), and people stored under
// it move to the new key the next time they are written by identifier.
// When the grace period ends, Expire destroys the engine's copy of the old
// key and erases whoever is still stored only under it (crypto-shredding;
// the copy in your secret store is yours to destroy). Receipts are signed
// with the key derived from next from then on; those signed before still
// verify (ReceiptPublicKeys).
//
// On a replica of a fleet whose journal knows the keys of the live
// replicas (pgstore's does), RotateKey refuses while a live replica lacks
// next: give every replica the key in Options.UpcomingKeys first.
func (e *Engine) RotateKey(next anonymize.Key, grace time.Duration) error {
	return e.RotateKeyContext(context.Background(), next, grace)
}

// RotateKeyContext is RotateKey with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) RotateKeyContext(ctx context.Context, next anonymize.Key, grace time.Duration) error {
	if next.IsZero() {
		return fmt.Errorf("personify: RotateKey: the new key is zero or destroyed")
	}
	if e.replica != nil {
		if kc, ok := e.replica.j.(fleet.KeyChecker); ok {
			ctx, cancel := context.WithTimeout(ctx, e.replica.timeout)
			err := kc.CheckKey(ctx, next.Fingerprint())
			cancel()
			if err != nil {
				return fmt.Errorf("personify: RotateKey: %w", err)
			}
		}
	}
	own := e.addKey(next) // replay, replicas and snapshots find it by fingerprint
	_, err := e.commit(ctx, &op{kind: opRotateKey, at: e.now(), key: own.Fingerprint(), grace: grace, next: own})
	return err
}

func (e *Engine) applyRotateKey(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	if o.next.IsZero() { // replayed or from another replica: the key is among those the engine was given
		o.next = e.key(o.key)
	}
	if o.next.IsZero() {
		return opResult{}, fmt.Errorf("personify: RotateKey to key %s: the key is not available (pass it in Options.Key or Options.PreviousKeys)", o.key)
	}
	old := e.keyring().Current()
	if err := e.keyring().Rotate(o.next, o.at, o.grace); err != nil {
		return opResult{}, fmt.Errorf("personify: RotateKey: %w", err)
	}
	e.keyGenSet(o.key)
	_, _ = e.receipt.remember(o.next) // the engine's own copy: not destroyed while current
	e.event("rotate_key", slog.String("from_key", old.String()), slog.String("to_key", o.key.String()),
		slog.Duration("grace", o.grace))
	return opResult{}, nil
}
