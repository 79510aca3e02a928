package segment

import (
	"slices"
	"strings"
)

// Limits on what Parse accepts. They bound the parser's recursion and work,
// so that any input, however hostile, is rejected quickly.
const (
	MaxExprLen   = 8 << 10 // bytes
	MaxExprDepth = 100     // nested parentheses and NOTs
)

// An Expr is a parsed segment expression such as
//
//	runners & (ios | android) & !churned
//
// Names stand for sets; & (AND) is intersection, | (OR) union and ! (NOT)
// complement. Build one with Parse; the zero Expr is not valid (its String is
// empty and Eval fails). An Expr is immutable, so it is safe for concurrent
// use by multiple goroutines.
type Expr struct {
	root *node
}

// opKind is the kind of an expression node.
type opKind uint8

const (
	opName opKind = iota
	opNot
	opAnd
	opOr
)

// node is an expression tree node. AND and OR nodes are flattened: no AND
// node has an AND child, no OR node an OR child, and double negations are
// removed, so that equal-meaning spellings like a & (b & c) and (a & b) & c
// parse to the same tree.
type node struct {
	op   opKind
	name string  // opName
	kids []*node // one for opNot, two or more for opAnd and opOr
}

// Parse parses an expression. The grammar, loosest binding first:
//
//	or    = and { ("|" | OR) and }
//	and   = unary { ("&" | AND) unary }
//	unary = ("!" | NOT) unary | "(" or ")" | name
//	name  = identifier | quoted
//
// so NOT binds tighter than AND, and AND tighter than OR; both binary
// operators are associative. The words AND, OR and NOT are matched whole
// and in any case. An identifier matches [A-Za-z_][A-Za-z0-9_.:-]* and is not
// one of those words; any other name, such as "high value" or "and", is
// written in double quotes, with \" and \\ as the only escapes. Whitespace
// between tokens is ignored.
//
// Input longer than MaxExprLen bytes or nested deeper than MaxExprDepth is
// rejected. Errors are *SyntaxError values that point at the offending
// column and wrap ErrSyntax.
func Parse(s string) (*Expr, error) {
	if len(s) > MaxExprLen {
		return nil, syntaxErrorf(s, MaxExprLen, "expression is %d bytes long, over the limit of %d", len(s), MaxExprLen)
	}
	p := &parser{lx: lexer{src: s}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind == tokEOF {
		return nil, syntaxErrorf(s, 0, "empty expression")
	}
	root, err := p.or()
	if err != nil {
		return nil, err
	}
	switch p.tok.kind {
	case tokEOF:
		return &Expr{root: root}, nil
	case tokRParen:
		return nil, p.errorf("unexpected ')' without a matching '('")
	}
	return nil, p.errorf("expected '&', '|', AND, OR or end of input, found %s", p.tok.describe())
}

// parser is a recursive descent parser whose recursion depth is bounded by
// MaxExprDepth.
type parser struct {
	lx    lexer
	tok   token
	depth int
}

func (p *parser) advance() error {
	t, err := p.lx.next()
	p.tok = t
	return err
}

func (p *parser) errorf(format string, args ...any) error {
	return syntaxErrorf(p.lx.src, p.tok.off, format, args...)
}

// or parses: and { ("|" | OR) and }.
func (p *parser) or() (*node, error) {
	return p.chain(opOr, tokOr, (*parser).and)
}

// and parses: unary { ("&" | AND) unary }.
func (p *parser) and() (*node, error) {
	return p.chain(opAnd, tokAnd, (*parser).unary)
}

// chain parses operands separated by sep into one flattened op node.
func (p *parser) chain(op opKind, sep tokKind, operand func(*parser) (*node, error)) (*node, error) {
	var kids []*node
	for {
		n, err := operand(p)
		if err != nil {
			return nil, err
		}
		if n.op == op {
			kids = append(kids, n.kids...)
		} else {
			kids = append(kids, n)
		}
		if p.tok.kind != sep {
			break
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	if len(kids) == 1 {
		return kids[0], nil
	}
	return &node{op: op, kids: kids}, nil
}

// unary parses: ("!" | NOT) unary | "(" or ")" | name.
func (p *parser) unary() (*node, error) {
	switch p.tok.kind {
	case tokName:
		n := &node{op: opName, name: p.tok.name}
		return n, p.advance()
	case tokNot, tokLParen:
	case tokAnd, tokOr:
		if p.tok.isWord() {
			return nil, p.errorf("expected segment name, '(' or '!', found %s (quote it to use it as a name: %s)",
				p.tok.describe(), quote(p.tok.text))
		}
		fallthrough
	default:
		return nil, p.errorf("expected segment name, '(' or '!', found %s", p.tok.describe())
	}
	if p.depth == MaxExprDepth {
		return nil, p.errorf("nesting deeper than %d levels", MaxExprDepth)
	}
	p.depth++
	defer func() { p.depth-- }()
	open := p.tok
	if err := p.advance(); err != nil {
		return nil, err
	}
	if open.kind == tokNot {
		n, err := p.unary()
		switch {
		case err != nil:
			return nil, err
		case n.op == opNot:
			return n.kids[0], nil
		}
		return &node{op: opNot, kids: []*node{n}}, nil
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokRParen {
		col := syntaxErrorf(p.lx.src, open.off, "").Column
		return nil, p.errorf("expected ')' to close '(' at column %d, found %s", col, p.tok.describe())
	}
	return n, p.advance()
}

// quote returns name as written in an expression.
func quote(name string) string {
	var b strings.Builder
	quoteName(&b, name)
	return b.String()
}

// String returns the expression in canonical form: names quoted only where
// needed, operators written &, | and !, single spaces around & and |, and
// only the parentheses precedence requires. Parse(e.String()) yields an Expr
// equal to e.
func (e *Expr) String() string {
	if e == nil || e.root == nil {
		return ""
	}
	var b strings.Builder
	e.root.format(&b, opOr)
	return b.String()
}

// precedence orders node kinds from loosest (OR) to tightest (names).
func precedence(op opKind) int {
	switch op {
	case opOr:
		return 1
	case opAnd:
		return 2
	case opNot:
		return 3
	}
	return 4
}

// format writes n, parenthesised when it binds looser than its context.
func (n *node) format(b *strings.Builder, context opKind) {
	paren := precedence(n.op) < precedence(context)
	if paren {
		b.WriteByte('(')
	}
	switch n.op {
	case opName:
		quoteName(b, n.name)
	case opNot:
		b.WriteByte('!')
		n.kids[0].format(b, opNot)
	default:
		sep := " | "
		if n.op == opAnd {
			sep = " & "
		}
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			k.format(b, n.op)
		}
	}
	if paren {
		b.WriteByte(')')
	}
}

// Names returns the distinct names the expression refers to, sorted.
func (e *Expr) Names() []string {
	if e == nil || e.root == nil {
		return nil
	}
	var names []string
	var walk func(*node)
	walk = func(n *node) {
		if n.op == opName {
			names = append(names, n.name)
		}
		for _, k := range n.kids {
			walk(k)
		}
	}
	walk(e.root)
	slices.Sort(names)
	return slices.Compact(names)
}
