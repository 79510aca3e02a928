package personify

import (
	"errors"
	"fmt"

	"github.com/personify-go/personify/anonymize"
)

// commit makes a change: in memory it applies the op at once; a durable
// engine logs it (sharing the fsync with concurrent writers) and applies it
// only once it is on disk, so a change that fails to reach the disk is
// never seen.
func (e *Engine) commit(o *op) (opResult, error) {
	if e.closed.Load() {
		return opResult{}, ErrClosed
	}
	if e.store == nil && e.replica == nil {
		return e.apply(o)
	}
	if err := o.checkSize(); err != nil { // logged changes are bounded; memory ones are not
		return opResult{}, err
	}
	if e.store != nil {
		return e.store.commit(e, o)
	}
	return e.replica.commit(e, o)
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
	}
	return opResult{}, fmt.Errorf("personify: internal error: op kind %d", o.kind)
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
			return fmt.Errorf("segment %q: %w", o.seg.Name, err)
		}
	case opDrop, opAdd, opAddPseudonyms, opRemove:
		_, err := e.segmentLocked(o.name)
		return err
	case opConsent:
		_, err := e.purposeLocked(o.name)
		return err
	case opSuppress:
		for _, n := range o.names {
			if _, err := e.purposeLocked(n); err != nil {
				return err
			}
		}
	case opRotateKey:
		for _, k := range e.ring.Keys() {
			if k.Fingerprint == o.key {
				return fmt.Errorf("personify: RotateKey: %w: %s", anonymize.ErrKeyExists, o.key)
			}
		}
	}
	return nil
}

// errWrite marks errors of the durable store's writes.
var errWrite = errors.New("personify: the change was not made")
