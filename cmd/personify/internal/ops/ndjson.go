package ops

import (
	"encoding/json"
	"errors"
	"unicode/utf8"
	"unsafe"
)

// A small scanner for one JSON object per line (NDJSON), so that
// pseudonymizing a line costs one pass over its bytes and no allocation:
// it checks that the line is exactly one valid JSON object (RFC 8259, as
// encoding/json accepts it) and finds the top-level member with a given
// name, comparing names as encoding/json decodes them (escapes included).
// FuzzFindMember checks it against encoding/json.

// maxJSONDepth bounds nesting, as encoding/json does.
const maxJSONDepth = 10000

// errNotObject is the one error of the scanner: it never quotes the line.
var errNotObject = errors.New("not a JSON object (NDJSON wants one object per line)")

// member is the place of a top-level member in a line: the member runs
// from start (its name's opening quote) to end (its value's last byte, +1);
// the value from val to end.
type member struct {
	start, val, end int
	found           bool
	dup             bool // the name appears more than once
	other           bool // a member named as the second name given exists
	slowValue       bool // the value is a string with escapes or invalid UTF-8: decode it with encoding/json
}

type jscan struct {
	b     []byte
	i     int
	depth int
}

// findMember scans the object in b and returns where the member named key
// is, and whether one named other exists (other may equal key, then it is
// ignored).
func findMember(b []byte, key, other string) (member, error) {
	var m member
	s := jscan{b: b}
	s.ws()
	if !s.eat('{') {
		return m, errNotObject
	}
	s.ws()
	if s.eat('}') {
		return m, s.end()
	}
	for {
		s.ws()
		ks := s.i
		slow, err := s.str()
		if err != nil {
			return m, err
		}
		ke := s.i
		s.ws()
		if !s.eat(':') {
			return m, errNotObject
		}
		s.ws()
		vs := s.i
		vslow := false
		if s.i < len(s.b) && s.b[s.i] == '"' {
			vslow, err = s.str()
		} else {
			err = s.value()
		}
		if err != nil {
			return m, err
		}
		name := b[ks+1 : ke-1]
		if slow {
			var n string
			if json.Unmarshal(b[ks:ke], &n) != nil {
				return m, errNotObject
			}
			name = unsafe.Slice(unsafe.StringData(n), len(n))
		}
		switch {
		case string(name) == key:
			if m.found {
				m.dup = true
			}
			m.found, m.start, m.val, m.end, m.slowValue = true, ks, vs, s.i, vslow
		case other != key && string(name) == other:
			m.other = true
		}
		s.ws()
		if s.eat('}') {
			return m, s.end()
		}
		if !s.eat(',') {
			return m, errNotObject
		}
	}
}

func (s *jscan) end() error {
	s.ws()
	if s.i != len(s.b) {
		return errNotObject
	}
	return nil
}

func (s *jscan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jscan) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str skips a string; slow reports escapes or invalid UTF-8 (which
// encoding/json decodes to U+FFFD).
func (s *jscan) str() (slow bool, err error) {
	if !s.eat('"') {
		return false, errNotObject
	}
	start, ascii := s.i, true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			if !ascii && !slow && !utf8.Valid(s.b[start:s.i]) {
				slow = true
			}
			s.i++
			return slow, nil
		case c == '\\':
			slow = true
			if s.i+1 >= len(s.b) {
				return false, errNotObject
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return false, errNotObject
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						return false, errNotObject
					}
				}
				s.i += 6
			default:
				return false, errNotObject
			}
		case c < 0x20:
			return false, errNotObject
		default:
			if c >= 0x80 {
				ascii = false
			}
			s.i++
		}
	}
	return false, errNotObject
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// value skips any JSON value.
func (s *jscan) value() error {
	if s.i >= len(s.b) {
		return errNotObject
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, err := s.str()
		return err
	case c == '{' || c == '[':
		return s.container()
	case c == '-' || isDigit(c):
		return s.number()
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	}
	return errNotObject
}

func (s *jscan) container() error {
	s.depth++
	if s.depth > maxJSONDepth {
		return errNotObject
	}
	defer func() { s.depth-- }()
	obj := s.b[s.i] == '{'
	closer := byte(']')
	if obj {
		closer = '}'
	}
	s.i++
	s.ws()
	if s.eat(closer) {
		return nil
	}
	for {
		s.ws()
		if obj {
			if _, err := s.str(); err != nil {
				return err
			}
			s.ws()
			if !s.eat(':') {
				return errNotObject
			}
			s.ws()
		}
		if err := s.value(); err != nil {
			return err
		}
		s.ws()
		if s.eat(closer) {
			return nil
		}
		if !s.eat(',') {
			return errNotObject
		}
	}
}

func (s *jscan) number() error {
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.i < len(s.b) && isDigit(s.b[s.i]):
		s.digits()
	default:
		return errNotObject
	}
	if s.eat('.') {
		if s.digits() == 0 {
			return errNotObject
		}
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if s.digits() == 0 {
			return errNotObject
		}
	}
	return nil
}

func (s *jscan) digits() int {
	n := 0
	for s.i < len(s.b) && isDigit(s.b[s.i]) {
		s.i++
		n++
	}
	return n
}

func (s *jscan) lit(w string) error {
	if len(s.b)-s.i < len(w) || string(s.b[s.i:s.i+len(w)]) != w {
		return errNotObject
	}
	s.i += len(w)
	return nil
}
