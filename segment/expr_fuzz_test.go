package segment

import (
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// FuzzParse checks that Parse never panics, that its errors point inside
// the input, and that whatever parses prints in a canonical form that
// re-parses to the same tree and evaluates like a naive evaluator.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"runners & (ios | android) & !churned",
		"NOT a AND b OR c",
		`"high value" & !"and" | x.y:z-w`,
		"!!(a | b) & !c",
		"(a",
		"a)",
		`"a\"b\\c"`,
		`"\x"`,
		"a & & b",
		"((((((((((a))))))))))",
		"!!!!!!!!!!!!!!!!!!!!a",
		"é | a",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Parse(src)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q): error %v is not a *SyntaxError", src, err)
			}
			if se.Offset < 0 || se.Offset > len(src) || se.Column < 1 || se.Column > utf8.RuneCountInString(src)+1 {
				t.Fatalf("Parse(%q): error position %d/%d outside the input", src, se.Offset, se.Column)
			}
			return
		}
		canonical := e.String()
		again, err := Parse(canonical)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse: %v", src, canonical, err)
		}
		if again.String() != canonical {
			t.Fatalf("String not canonical: %q -> %q -> %q", src, canonical, again.String())
		}
		if !sameTree(e.root, again.root) {
			t.Fatalf("%q and its String %q parse to different trees", src, canonical)
		}

		// Each name stands for a pseudo-random subset of 0..63.
		sets := map[string]*Set{}
		for _, name := range e.Names() {
			sets[name] = setOfMask(xxhash.Sum64String(name))
		}
		universe := setOfMask(^uint64(0))
		got, err := e.Eval(func(name string) (*Set, error) { return sets[name], nil }, universe)
		if err != nil {
			t.Fatalf("Eval(%q): %v", src, err)
		}
		if want := setOfMask(maskEval(e.root)); !got.Equal(want) {
			t.Fatalf("Eval(%q) = %v, want %v", src, got.AppendTo(nil), want.AppendTo(nil))
		}
	})
}

func sameTree(a, b *node) bool {
	if a.op != b.op || a.name != b.name || len(a.kids) != len(b.kids) {
		return false
	}
	for i := range a.kids {
		if !sameTree(a.kids[i], b.kids[i]) {
			return false
		}
	}
	return true
}

func setOfMask(m uint64) *Set {
	s := New()
	for i := range uint32(64) {
		if m&(1<<i) != 0 {
			s.Add(i)
		}
	}
	return s
}

// maskEval evaluates over 64-member sets held in a uint64.
func maskEval(n *node) uint64 {
	switch n.op {
	case opName:
		return xxhash.Sum64String(n.name)
	case opNot:
		return ^maskEval(n.kids[0])
	case opAnd:
		m := ^uint64(0)
		for _, k := range n.kids {
			m &= maskEval(k)
		}
		return m
	}
	var m uint64
	for _, k := range n.kids {
		m |= maskEval(k)
	}
	return m
}
