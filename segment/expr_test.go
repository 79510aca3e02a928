package segment

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePrecedence(t *testing.T) {
	for _, tc := range []struct {
		in, same, canonical string
	}{
		{"a | b & c", "a | (b & c)", "a | b & c"},
		{"a & b | c", "(a & b) | c", "a & b | c"},
		{"!a & b", "(!a) & b", "!a & b"},
		{"a & !(b | c)", "a & (!(b | c))", "a & !(b | c)"},
		{"NOT a AND b OR c", "((!a) & b) | c", "!a & b | c"},
		{"not A and B or C", "((!A) & B) | C", "!A & B | C"},
		{"a AnD b oR NoT c", "(a & b) | (!c)", "a & b | !c"},
		{"(a | b) & c", "(a | b) & c", "(a | b) & c"},
		{"a & (b & c)", "(a & b) & c", "a & b & c"},
		{"a | (b | c) | d", "((a | b) | c) | d", "a | b | c | d"},
		{"!!a", "a", "a"},
		{"!!!a", "!a", "!a"},
		{"!(a & b) | !c", "(!(a & b)) | (!c)", "!(a & b) | !c"},
		{"((a))", "a", "a"},
		{" \t\na\n&\r\nb ", "a & b", "a & b"},
		{"andy & order & nothing", `"andy" & "order" & "nothing"`, "andy & order & nothing"},
		{"a.b:c-d & _x9", `"a.b:c-d" & "_x9"`, "a.b:c-d & _x9"},
		{`"high value" & "and"`, `("high value") & ("and")`, `"high value" & "and"`},
		{`"a\"b\\c"`, `"a\"b\\c"`, `"a\"b\\c"`},
		{`"9lives" | "é"`, `"9lives" | "é"`, `"9lives" | "é"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			e, err := Parse(tc.in)
			require.NoError(t, err)
			same, err := Parse(tc.same)
			require.NoError(t, err)
			require.Equal(t, same, e)
			require.Equal(t, tc.canonical, e.String())
			again, err := Parse(e.String())
			require.NoError(t, err)
			require.Equal(t, e, again)
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		offset   int
		column   int
		msg      string
	}{
		{"empty", "", 0, 1, "empty expression"},
		{"blank", "  \t", 0, 1, "empty expression"},
		{"unexpected end", "a &", 3, 4, "expected segment name, '(' or '!', found end of input"},
		{"not at end", "a & NOT", 7, 8, "found end of input"},
		{"unbalanced", "(a | b", 6, 7, "expected ')' to close '(' at column 1, found end of input"},
		{"unbalanced inner", "a & ((b | c) & d", 16, 17, "expected ')' to close '(' at column 5, found end of input"},
		{"stray paren", "a)", 1, 2, "unexpected ')' without a matching '('"},
		{"empty parens", "a & ()", 5, 6, "expected segment name, '(' or '!', found ')'"},
		{"spec example", "runners & !)", 11, 12, "expected segment name, '(' or '!', found ')'"},
		{"unknown character", "a $ b", 2, 3, "unexpected character '$'"},
		{"unknown rune", "a & é", 4, 5, "unexpected character 'é'"},
		{"columns count runes", `"éé" & $`, 9, 8, "unexpected character '$'"},
		{"invalid utf-8", "a & \xff", 4, 5, "invalid UTF-8 byte 0xff"},
		{"invalid utf-8 in string", "\"a\xfe\"", 2, 3, "invalid UTF-8 byte 0xfe in string"},
		{"unterminated string", `a | "abc`, 4, 5, "unterminated string"},
		{"unterminated escape", `"abc\`, 0, 1, "unterminated string"},
		{"bad escape", `"a\n"`, 2, 3, `invalid escape \n in string`},
		{"empty name", `a & ""`, 4, 5, "empty segment name"},
		{"keyword as name", "a & and", 4, 5, `found keyword "and" (quote it to use it as a name: "and")`},
		{"keyword first", "OR b", 0, 1, `found keyword "OR"`},
		{"double operator", "a && b", 3, 4, "found '&'"},
		{"trailing name", "a b", 2, 3, `expected '&', '|', AND, OR or end of input, found a segment name (1 bytes)`},
		{"trailing paren group", "a (b)", 2, 3, "found '('"},
		{"too long", strings.Repeat("a|", MaxExprLen/2) + "a", MaxExprLen, MaxExprLen + 1, "over the limit of 8192"},
		{"too deep parens", strings.Repeat("(", MaxExprDepth+1) + "a" + strings.Repeat(")", MaxExprDepth+1), MaxExprDepth, MaxExprDepth + 1, "nesting deeper than 100 levels"},
		{"too deep nots", strings.Repeat("!", MaxExprDepth+1) + "a", MaxExprDepth, MaxExprDepth + 1, "nesting deeper than 100 levels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Parse(tc.in)
			require.Nil(t, e)
			require.ErrorIs(t, err, ErrSyntax)
			var se *SyntaxError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tc.offset, se.Offset, "offset")
			assert.Equal(t, tc.column, se.Column, "column")
			assert.Contains(t, se.Msg, tc.msg)
			assert.Equal(t, fmt.Sprintf("segment: expression: column %d: %s", se.Column, se.Msg), err.Error())
		})
	}
	t.Run("limits are inclusive", func(t *testing.T) {
		_, err := Parse(strings.Repeat("(", MaxExprDepth) + "a" + strings.Repeat(")", MaxExprDepth))
		require.NoError(t, err)
		_, err = Parse(strings.Repeat("a|", MaxExprLen/2-1) + "ab")
		require.NoError(t, err)
	})
	t.Run("exact message", func(t *testing.T) {
		_, err := Parse("runners & !)")
		require.EqualError(t, err, "segment: expression: column 12: expected segment name, '(' or '!', found ')'")
	})
}

func TestNames(t *testing.T) {
	e, err := Parse(`b & (a | !c) & b | "x y" & a`)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c", "x y"}, e.Names())
	require.Nil(t, new(Expr).Names())
}

func TestZeroExpr(t *testing.T) {
	var e Expr
	require.Empty(t, e.String())
	require.False(t, e.NeedsUniverse())
	_, err := e.Eval(func(string) (*Set, error) { return nil, nil }, New())
	require.Error(t, err)
}

// randomExpr writes a random expression over names, in varied spellings.
func randomExpr(r *rand.Rand, names []string, depth int) string {
	if depth == 0 || r.IntN(3) == 0 {
		name := names[r.IntN(len(names))]
		if !isBareName(name) || r.IntN(4) == 0 {
			return `"` + name + `"`
		}
		return name
	}
	pick := func(a, b string) string {
		if r.IntN(2) == 0 {
			return a
		}
		return b
	}
	switch r.IntN(4) {
	case 0:
		return pick("!", "NOT ") + randomExpr(r, names, depth-1)
	case 1:
		return "(" + randomExpr(r, names, depth-1) + ")"
	case 2:
		return randomExpr(r, names, depth-1) + pick(" & ", " and ") + randomExpr(r, names, depth-1)
	}
	return randomExpr(r, names, depth-1) + pick("|", " OR ") + randomExpr(r, names, depth-1)
}

// naiveEval evaluates an expression tree over models, complementing
// against universe everywhere.
func naiveEval(n *node, sets map[string]model, universe model) model {
	switch n.op {
	case opName:
		return sets[n.name]
	case opNot:
		inner := naiveEval(n.kids[0], sets, universe)
		return filter(universe, func(x uint32) bool { _, ok := inner[x]; return !ok })
	}
	acc := naiveEval(n.kids[0], sets, universe)
	for _, k := range n.kids[1:] {
		v := naiveEval(k, sets, universe)
		if n.op == opAnd {
			acc = filter(acc, func(x uint32) bool { _, ok := v[x]; return ok })
		} else {
			acc = filter(universe, func(x uint32) bool {
				_, inAcc := acc[x]
				_, inV := v[x]
				return inAcc || inV
			})
		}
	}
	return acc
}

func TestEvalAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(20, 20))
	names := []string{"a", "b", "c", "d", "and", "high value"}
	for _, shape := range shapes {
		t.Run(shape.name, func(t *testing.T) {
			for range 100 {
				universe, um := randomSet(r, 4000, shape.limit)
				sets, models := map[string]*Set{}, map[string]model{}
				for _, name := range names {
					s, m := randomSet(r, r.IntN(3000), shape.limit)
					s.And(universe) // sets lie within the universe
					sets[name], models[name] = s, filter(m, func(x uint32) bool { _, ok := um[x]; return ok })
				}
				if r.IntN(5) == 0 {
					sets["b"], models["b"] = nil, model{}
				}
				before := map[string][]uint32{}
				for name, s := range sets {
					before[name] = s.AppendTo(nil)
				}
				src := randomExpr(r, names, 4)
				e, err := Parse(src)
				require.NoError(t, err, src)
				got, err := e.Eval(func(name string) (*Set, error) { return sets[name], nil }, universe)
				require.NoError(t, err, src)
				requireMatches(t, naiveEval(e.root, models, um), got)
				for name, s := range sets {
					require.Equal(t, before[name], s.AppendTo(nil), "%s: resolved set %q modified", src, name)
				}
				require.Equal(t, um.sorted(), universe.AppendTo(nil), "universe modified")
				got.AddRange(0, 1<<16) // the result is the caller's
				require.Equal(t, um.sorted(), universe.AppendTo(nil))
			}
		})
	}
}

func TestEvalUniverse(t *testing.T) {
	sets := map[string]*Set{"a": New(1, 2, 3), "b": New(2, 3, 4), "c": New(3, 9)}
	resolve := func(name string) (*Set, error) { return sets[name], nil }
	universe := New(1, 2, 3, 4, 5, 9)
	for _, tc := range []struct {
		in    string
		needs bool
		want  []uint32
	}{
		{"a & !b", false, []uint32{1}},
		{"a & !b & !c", false, []uint32{1}},
		{"a & !(b | c)", false, []uint32{1}},
		{"a & !(!b)", false, []uint32{2, 3}},
		{"a & (!b | c)", true, []uint32{1, 3}},
		{"!a", true, []uint32{4, 5, 9}},
		{"!a & !b", true, []uint32{5, 9}},
		{"a | !b", true, []uint32{1, 2, 3, 5, 9}},
		{"!a | !b", true, []uint32{1, 4, 5, 9}},
		{"!(a & b)", true, []uint32{1, 4, 5, 9}},
		{"a", false, []uint32{1, 2, 3}},
		{"a | b", false, []uint32{1, 2, 3, 4}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			e, err := Parse(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.needs, e.NeedsUniverse())
			got, err := e.Eval(resolve, universe)
			require.NoError(t, err)
			require.Equal(t, tc.want, got.AppendTo(nil))
			got, err = e.Eval(resolve, nil)
			if tc.needs {
				require.ErrorIs(t, err, ErrNoUniverse)
				require.Nil(t, got)
			} else {
				require.NoError(t, err)
				require.Equal(t, tc.want, got.AppendTo(nil))
			}
		})
	}
}

func TestEvalResolver(t *testing.T) {
	e, err := Parse("a & b | a & !c | b")
	require.NoError(t, err)
	calls := map[string]int{}
	got, err := e.Eval(func(name string) (*Set, error) {
		calls[name]++
		if name == "c" {
			return nil, nil // empty
		}
		return New(1, 2), nil
	}, nil)
	require.NoError(t, err)
	require.Equal(t, []uint32{1, 2}, got.AppendTo(nil))
	require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1}, calls)

	errUnknown := errors.New("unknown segment")
	_, err = e.Eval(func(name string) (*Set, error) {
		if name == "b" {
			return nil, errUnknown
		}
		return New(1), nil
	}, nil)
	require.ErrorIs(t, err, errUnknown)
	require.ErrorContains(t, err, `segment: expression: resolving "b": unknown segment`)
}
