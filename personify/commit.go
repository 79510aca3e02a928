package personify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/personify-go/personify/anonymize"
)

// commit makes a change: in memory it applies the op at once; a durable
// engine logs it (sharing the fsync with concurrent writers) and applies it
// only once it is on disk, so a change that fails to reach the disk is
// never seen.
func (e *Engine) commit(ctx context.Context, o *op) (opResult, error) {
	if e.closed.Load() {
		return opResult{}, ErrClosed
	}
	if err := ctx.Err(); err != nil { // nothing was logged or applied
		return opResult{}, wrapAs(errWrite, err)
	}
	if o.version == 0 {
		o.version = recVersion
	}
	if err := o.validate(); err != nil { // the checks every replica and every replay applies too
		return opResult{}, err
	}
	if e.store == nil && e.replica == nil {
		return e.apply(o)
	}
	if err := o.checkSize(); err != nil { // logged changes are bounded; memory ones are not
		return opResult{}, err
	}
	if e.store != nil {
		return e.store.commit(ctx, e, o)
	}
	return e.replica.commit(ctx, e, o)
}

// apply applies an op: the one code path for live writes and for replaying
// the log. Its outcome depends only on the op and the engine's state.
func (e *Engine) apply(o *op) (opResult, error) {
	switch o.kind {
	case opDefinePurpose:
		return e.applyDefinePurpose(o)
	case opDefine:
		return e.applyDefine(o)
	case opDrop:
		return e.applyDrop(o)
	case opAdd:
		return e.applyAdd(o)
	case opAddPseudonyms:
		return e.applyAddPseudonyms(o)
	case opRemove:
		return e.applyRemove(o)
	case opConsent:
		return e.applyConsent(o)
	case opSuppress:
		return e.applySuppress(o)
	case opForget:
		return e.applyForget(o)
	case opExpire:
		return e.applyExpire(o)
	case opRotateKey:
		return e.applyRotateKey(o)
	case opLink:
		return e.applyLink(o)
	case opUnlink:
		return e.applyUnlink(o)
	case opDefineCap:
		return e.applyDefineCap(o)
	case opDropCap:
		return e.applyDropCap(o)
	case opImpressions:
		return e.applyImpressions(o)
	}
	return opResult{}, fmt.Errorf("personify: internal error: op kind %d", o.kind)
}

// applyRead applies an op read back from the log or from a journal. It
// passes the same checks as a live change first; one that fails is refused
// (an audit event and a counter, Stats.RefusedChanges) and never applied,
// so that a damaged or forged change cannot reach the state, and every
// replica refuses it alike.
func (e *Engine) applyRead(o *op, source string) (opResult, error) {
	if err := o.validate(); err != nil {
		return opResult{}, e.refuse(o.seq, source, err)
	}
	return e.apply(o)
}

// refuse records that the change at seq (from source: "log" or
// "journal") was not applied, and returns the reason as an error wrapping
// ErrInvalidChange. The event is logged even while Open replays the log.
func (e *Engine) refuse(seq uint64, source string, err error) error {
	e.refused.Add(1)
	if !errors.Is(err, ErrInvalidChange) {
		err = wrapAs(ErrInvalidChange, err)
	}
	e.audit.LogAttrs(context.Background(), slog.LevelWarn, "personify.change_refused",
		slog.Uint64("seq", seq), slog.String("source", source), slog.String("reason", err.Error()))
	return err
}

// check reports the error that applying o now would return, if it can be
// known without applying it (an unknown segment or purpose, a key already
// in the keyring), so that a durable engine does not log a change that is
// bound to fail. Apply checks again: the outcome of a logged op that fails
// is the same when it is replayed.
func (e *Engine) check(o *op) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return ErrClosed
	}
	switch o.kind {
	case opDefinePurpose:
		return e.checkDefinePurposeLocked(o)
	case opDefine:
		if _, err := e.purposeLocked(o.seg.Purpose); err != nil {
			return inContext(err, "segment %q", o.seg.Name)
		}
	case opDrop, opAdd, opAddPseudonyms, opRemove:
		_, err := e.segmentLocked(o.name)
		return err
	case opConsent:
		_, err := e.purposeLocked(o.name)
		return err
	case opDefineCap:
		if _, err := e.purposeLocked(o.cap.Purpose); err != nil {
			return inContext(err, "cap %q", o.cap.Name)
		}
	case opDropCap:
		if _, ok := e.caps[o.name]; !ok {
			return e.unknownCapLocked(o.name)
		}
	case opSuppress:
		for _, n := range o.names {
			if _, err := e.purposeLocked(n); err != nil {
				return err
			}
		}
	case opRotateKey:
		for _, k := range e.keyring().Keys() {
			if k.Fingerprint == o.key {
				return fmt.Errorf("personify: RotateKey: %w: %s", anonymize.ErrKeyExists, o.key)
			}
		}
	}
	return nil
}

// errWrite marks errors of the durable store's writes.
var errWrite = errors.New("personify: the change was not made")
