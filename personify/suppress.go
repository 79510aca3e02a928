package personify

import (
	"context"
	"log/slog"
	"strings"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/segment"
)

// Suppress puts the person identified by id on a suppression list: for the
// given purposes (for example "do-not-sell" style purposes or "email"), or
// for every purpose when none is given. Suppression wins over membership and
// consent, and stays when the person is added to segments again; it ends
// only with Unsuppress or Forget.
func (e *Engine) Suppress(id anonymize.Identifier, purposes ...string) error {
	return e.setSuppressed(context.Background(), id, true, purposes)
}

// SuppressContext is Suppress with a context that bounds how long it waits
// (see the package doc).
func (e *Engine) SuppressContext(ctx context.Context, id anonymize.Identifier, purposes ...string) error {
	return e.setSuppressed(ctx, id, true, purposes)
}

// Unsuppress takes the person off the suppression lists of the given
// purposes, or off the global list when none is given.
func (e *Engine) Unsuppress(id anonymize.Identifier, purposes ...string) error {
	return e.setSuppressed(context.Background(), id, false, purposes)
}

// UnsuppressContext is Unsuppress with a context that bounds how long it
// waits (see the package doc).
func (e *Engine) UnsuppressContext(ctx context.Context, id anonymize.Identifier, purposes ...string) error {
	return e.setSuppressed(ctx, id, false, purposes)
}

func (e *Engine) setSuppressed(ctx context.Context, id anonymize.Identifier, on bool, purposes []string) error {
	kps, err := e.keyedPseudonyms(id)
	if err != nil {
		return err
	}
	_, err = e.commit(ctx, &op{kind: opSuppress, at: e.now(), flag: on, names: purposes, people: [][]anonymize.KeyedPseudonym{kps}})
	return err
}

func (e *Engine) applySuppress(o *op) (opResult, error) {
	if err := e.lock(); err != nil {
		return opResult{}, err
	}
	defer e.mu.Unlock()
	on, purposes, kps := o.flag, o.names, o.person()
	var ok bool
	lists := make([]*segment.Set, 0, max(1, len(purposes)))
	var bits uint64
	for _, name := range purposes {
		ps, err := e.purposeLocked(name)
		if err != nil {
			return opResult{}, err
		}
		lists = append(lists, ps.suppressed)
		bits |= 1 << ps.bit
	}
	if len(purposes) == 0 {
		lists = append(lists, e.suppressedAll)
	}
	if len(kps) == 0 {
		return opResult{}, nil
	}
	if err := e.checkKeyedLocked(o, kps, false); err != nil {
		return opResult{}, err
	}
	var ord uint32
	var p anonymize.Pseudonym
	if on {
		ord, p = e.resolveForWrite(kps)
	} else if ord, p, ok = e.findLocked(kps); !ok {
		return opResult{}, nil // never stored: nothing to lift
	}
	for _, l := range lists {
		if on {
			l.Add(ord)
		} else {
			l.Remove(ord)
		}
	}
	e.setStateLocked(p, func(s *privState) {
		switch {
		case len(purposes) == 0:
			s.all = on
		case on:
			s.suppressed |= bits
		default:
			s.suppressed &^= bits
		}
	})
	if on { // suppression wins: no counter kept (dropped after the state is published)
		if len(purposes) == 0 {
			e.dropCountsLocked(ord, nil, nil)
		}
		for _, name := range purposes {
			e.dropCountsLocked(ord, e.purposes[name], nil)
		}
	}
	e.maybeCompactLocked()
	scope := "all"
	if len(purposes) > 0 {
		scope = strings.Join(purposes, ",")
	}
	e.event(map[bool]string{true: "suppress", false: "unsuppress"}[on], pseudonymAttr(p), slog.String("purposes", scope))
	return opResult{}, nil
}
