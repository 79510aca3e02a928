package segment

import (
	"errors"
	"fmt"

	"github.com/RoaringBitmap/roaring/v2"
)

// emptySet stands in for names that resolve to a nil *Set. It is only ever
// read.
var emptySet = new(Set)

// Eval computes the set the expression denotes and returns it as a new set.
// It calls resolve once for each distinct name (in sorted order, before any
// set algebra) and never modifies the sets resolve returns or universe; a nil
// *Set from resolve is the empty set. An error from resolve is returned
// wrapped.
//
// universe is what a complement is relative to: !x means universe AND NOT x.
// It must hold every member of every resolved set (for example, all live
// member ordinals); a negation inside an AND with at least one positive
// operand, as in a & !b, is folded into AND NOT and needs no universe. When
// the expression needs one (see NeedsUniverse) and universe is nil, Eval
// returns ErrNoUniverse.
//
// Chains are evaluated with the many-input And and Or, smallest operand
// first for AND, and several negations in one OR share one complement
// (!a | !b is computed as universe AND NOT (a AND b)).
func (e *Expr) Eval(resolve func(name string) (*Set, error), universe *Set) (*Set, error) {
	if e == nil || e.root == nil {
		return nil, errors.New("segment: expression: zero Expr: use Parse")
	}
	if universe == nil && e.NeedsUniverse() {
		return nil, ErrNoUniverse
	}
	ev := evaluator{universe: universe, sets: make(map[string]*Set)}
	for _, name := range e.Names() {
		s, err := resolve(name)
		if err != nil {
			return nil, fmt.Errorf("segment: expression: resolving %q: %w", name, err)
		}
		if s == nil {
			s = emptySet
		}
		ev.sets[name] = s
	}
	v := ev.eval(e.root)
	if !v.owned {
		return v.set.Clone(), nil
	}
	return v.set, nil
}

// NeedsUniverse reports whether Eval needs a universe for this expression:
// whether it has a NOT that cannot be folded into an AND NOT (a NOT at the
// top, under an OR, or in an AND of NOTs only).
func (e *Expr) NeedsUniverse() bool {
	return e != nil && e.root != nil && e.root.needsUniverse()
}

func (n *node) needsUniverse() bool {
	switch n.op {
	case opName:
		return false
	case opNot:
		return true
	case opAnd:
		folds := hasPositive(n.kids)
		for _, k := range n.kids {
			if k.op == opNot && folds {
				k = k.kids[0]
			}
			if k.needsUniverse() {
				return true
			}
		}
		return false
	}
	for _, k := range n.kids {
		if k.needsUniverse() {
			return true
		}
	}
	return false
}

func hasPositive(kids []*node) bool {
	for _, k := range kids {
		if k.op != opNot {
			return true
		}
	}
	return false
}

// value is an intermediate result: a set the evaluation owns (and may modify
// in place) or one it borrows from the resolver or the universe (and must not
// modify).
type value struct {
	set   *Set
	owned bool
}

// evaluator holds the resolved sets of one Eval call.
type evaluator struct {
	universe *Set // non-nil whenever a complement is needed
	sets     map[string]*Set
}

func (ev *evaluator) eval(n *node) value {
	switch n.op {
	case opName:
		return value{set: ev.sets[n.name]}
	case opNot:
		return ev.complement(ev.eval(n.kids[0]))
	case opAnd:
		return ev.and(n.kids)
	}
	return ev.or(n.kids)
}

// complement returns universe AND NOT v.
func (ev *evaluator) complement(v value) value {
	return value{set: fromBitmap(roaring.AndNot(ev.universe.bitmap(), v.set.bitmap())), owned: true}
}

// and intersects the positive operands, then removes each negated one
// (a & !b & !c = (a AND NOT b) AND NOT c); with no positive operand it starts
// from the universe.
func (ev *evaluator) and(kids []*node) value {
	var pos []value
	var neg []*node
	for _, k := range kids {
		if k.op == opNot {
			neg = append(neg, k.kids[0])
		} else {
			pos = append(pos, ev.eval(k))
		}
	}
	acc := value{set: ev.universe}
	if len(pos) > 0 {
		acc = intersect(pos)
	}
	for _, k := range neg {
		if acc.set.IsEmpty() {
			break
		}
		v := ev.eval(k)
		if acc.owned {
			acc.set.AndNot(v.set)
		} else {
			acc = value{set: fromBitmap(roaring.AndNot(acc.set.bitmap(), v.set.bitmap())), owned: true}
		}
	}
	return acc
}

// or unites the positive operands with the complement of the intersection
// of the negated ones (!b | !c = NOT (b & c)), so it computes at most one
// complement.
func (ev *evaluator) or(kids []*node) value {
	var sets []*Set
	var neg []value
	for _, k := range kids {
		if k.op == opNot {
			neg = append(neg, ev.eval(k.kids[0]))
		} else {
			sets = append(sets, ev.eval(k).set)
		}
	}
	if len(neg) > 0 {
		c := ev.complement(intersect(neg))
		if len(sets) == 0 {
			return c
		}
		sets = append(sets, c.set)
	}
	return value{set: Or(sets...), owned: true}
}

// intersect returns the intersection of vals (at least one), in place in an
// owned value when there is one.
func intersect(vals []value) value {
	if len(vals) == 1 {
		return vals[0]
	}
	for i, v := range vals {
		if !v.owned {
			continue
		}
		for j, w := range vals {
			if j != i {
				v.set.And(w.set)
			}
		}
		return v
	}
	sets := make([]*Set, len(vals))
	for i, v := range vals {
		sets[i] = v.set
	}
	return value{set: And(sets...), owned: true}
}
