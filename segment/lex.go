package segment

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// tokKind is the kind of an expression token.
type tokKind uint8

const (
	tokEOF tokKind = iota
	tokName
	tokAnd
	tokOr
	tokNot
	tokLParen
	tokRParen
)

// token is one lexeme of an expression.
type token struct {
	kind tokKind
	off  int    // byte offset in the source
	text string // source text
	name string // decoded segment name, for tokName
}

// describe names a token for "found ..." in error messages.
func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of input"
	case tokName:
		// Not quoted: an expression may be built from input, and a name
		// where an operator belongs may be anything, an email included.
		// The error's column points at it.
		return fmt.Sprintf("a segment name (%d bytes)", len(t.name))
	}
	if t.isWord() {
		return "keyword " + strconv.Quote(t.text)
	}
	return "'" + t.text + "'"
}

// isWord reports whether the token is a keyword spelled as a word.
func (t token) isWord() bool {
	return t.kind != tokName && t.text != "" && isIdentStart(t.text[0])
}

// lexer splits an expression into tokens.
type lexer struct {
	src string
	off int
}

// next returns the next token, or a *SyntaxError for a character or string
// literal that cannot start or form one.
func (l *lexer) next() (token, error) {
	for l.off < len(l.src) && isSpace(l.src[l.off]) {
		l.off++
	}
	start := l.off
	if start == len(l.src) {
		return token{kind: tokEOF, off: start}, nil
	}
	c := l.src[start]
	if k, ok := punct(c); ok {
		l.off++
		return token{kind: k, off: start, text: l.src[start:l.off]}, nil
	}
	switch {
	case c == '"':
		return l.quoted()
	case isIdentStart(c):
		l.off++
		for l.off < len(l.src) && isIdentPart(l.src[l.off]) {
			l.off++
		}
		text := l.src[start:l.off]
		return token{kind: keyword(text), off: start, text: text, name: text}, nil
	}
	r, size := utf8.DecodeRuneInString(l.src[start:])
	if r == utf8.RuneError && size == 1 {
		return token{}, syntaxErrorf(l.src, start, "invalid UTF-8 byte %#x", c)
	}
	return token{}, syntaxErrorf(l.src, start, "unexpected character %q", r)
}

// quoted scans a double-quoted name with \" and \\ escapes.
func (l *lexer) quoted() (token, error) {
	start := l.off
	var b strings.Builder
	for i := start + 1; i < len(l.src); {
		switch c := l.src[i]; c {
		case '"':
			l.off = i + 1
			if b.Len() == 0 {
				return token{}, syntaxErrorf(l.src, start, "empty segment name \"\"")
			}
			return token{kind: tokName, off: start, text: l.src[start:l.off], name: b.String()}, nil
		case '\\':
			if i+1 == len(l.src) {
				return token{}, syntaxErrorf(l.src, start, "unterminated string")
			}
			if e := l.src[i+1]; e != '"' && e != '\\' {
				r, _ := utf8.DecodeRuneInString(l.src[i+1:])
				return token{}, syntaxErrorf(l.src, i, "invalid escape \\%c in string: only \\\" and \\\\ are allowed", r)
			}
			b.WriteByte(l.src[i+1])
			i += 2
		default:
			r, size := utf8.DecodeRuneInString(l.src[i:])
			if r == utf8.RuneError && size == 1 {
				return token{}, syntaxErrorf(l.src, i, "invalid UTF-8 byte %#x in string", c)
			}
			b.WriteString(l.src[i : i+size])
			i += size
		}
	}
	return token{}, syntaxErrorf(l.src, start, "unterminated string")
}

func punct(c byte) (tokKind, bool) {
	switch c {
	case '&':
		return tokAnd, true
	case '|':
		return tokOr, true
	case '!':
		return tokNot, true
	case '(':
		return tokLParen, true
	case ')':
		return tokRParen, true
	}
	return 0, false
}

// keyword returns the kind of an identifier: a keyword (matched whole and
// case-insensitively) or a name.
func keyword(ident string) tokKind {
	switch {
	case strings.EqualFold(ident, "and"):
		return tokAnd
	case strings.EqualFold(ident, "or"):
		return tokOr
	case strings.EqualFold(ident, "not"):
		return tokNot
	}
	return tokName
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}

func isIdentPart(c byte) bool {
	return isIdentStart(c) || '0' <= c && c <= '9' || c == '.' || c == ':' || c == '-'
}

// isBareName reports whether name can be written without quotes.
func isBareName(name string) bool {
	if name == "" || !isIdentStart(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if !isIdentPart(name[i]) {
			return false
		}
	}
	return keyword(name) == tokName
}

// quoteName writes name as the lexer reads it back.
func quoteName(b *strings.Builder, name string) {
	if isBareName(name) {
		b.WriteString(name)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(name[i])
	}
	b.WriteByte('"')
}

// A SyntaxError reports why and where Parse rejected an expression.
// errors.Is(err, ErrSyntax) holds for every *SyntaxError. It is a plain
// value: Parse returns a new one each time.
//
// Its zero value reports nothing at offset 0; it may be shared between
// goroutines.
type SyntaxError struct {
	Offset int    `json:"offset"` // byte offset of the problem, from 0
	Column int    `json:"column"` // the same position in runes, from 1
	Msg    string `json:"msg"`    // what is wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("segment: expression: column %d: %s", e.Column, e.Msg)
}

// Is reports whether target is ErrSyntax.
func (e *SyntaxError) Is(target error) bool {
	return target == ErrSyntax
}

func syntaxErrorf(src string, off int, format string, args ...any) *SyntaxError {
	return &SyntaxError{
		Offset: off,
		Column: utf8.RuneCountInString(src[:min(off, len(src))]) + 1,
		Msg:    fmt.Sprintf(format, args...),
	}
}
