package anonymize

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzNormalize checks the properties every normalizer promises: no panic,
// output within bounds, normalizing twice changes nothing, the hashers agree
// with Normalize, and a rejection never quotes the input.
func fuzzNormalize(f *testing.F, ctor func(string) Identifier, seeds []string) {
	for _, s := range seeds {
		f.Add(s)
	}
	h := SipHash(testKey(f))
	f.Fuzz(func(t *testing.T, in string) {
		id := ctor(in)
		out, err := id.Normalize()
		_, herr := h.Pseudonym(id)
		if (err == nil) != (herr == nil) {
			t.Fatalf("Normalize error %v but hasher error %v", err, herr)
		}
		if err != nil {
			if trimmed := strings.TrimSpace(in); len(trimmed) >= 24 && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error quotes the input: %v", err)
			}
			return
		}
		if !utf8.ValidString(out) || out == "" || len(out) > maxHashInput-len("device:") {
			t.Fatalf("bad output %q", out)
		}
		again, err := ctor(out).Normalize()
		if err != nil {
			t.Fatalf("normalized %q rejected: %v", out, err)
		}
		if again != out {
			t.Fatalf("not a fixed point: %q -> %q", out, again)
		}
	})
}

func FuzzNormalizeEmail(f *testing.F) {
	fuzzNormalize(f, Email, []string{"jane@example.com", " Jane.Doe+x@GMAIL.com", "a@b.c", "jörg@münchen.de", "@", "a@@b.c", "x..y@z.com", "\"q\"@example.com"})
}

func FuzzNormalizePhone(f *testing.F) {
	fuzzNormalize(f, Phone, []string{"+12345678901", "1 (234) 567-8901", "0044 20 7946 0958", "(234) 567", "+999 1", "+1 800 FLOWERS"})
}

func FuzzNormalizeUserID(f *testing.F) {
	fuzzNormalize(f, UserID, []string{"customer-42", "  x  ", "a\u202eb", "\xff"})
}

func FuzzNormalizeDeviceID(f *testing.F) {
	fuzzNormalize(f, DeviceID, []string{"AEBE52E7-03EE-455A-B3C4-E57283966239", "", "\t"})
}

// TestRejectionReasonsAreConstant proves that no rejection can echo its
// input. Reasons are built only from constants: every call of invalid()
// passes a string literal or a reason variable (a name ending in "reason");
// every assignment to a reason variable and every return of a package-level
// function whose last result is a string (the validators) is a string
// literal, a reason variable or a call of a validator. IdentifierError
// prints only kind, length and reason.
func TestRejectionReasonsAreConstant(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	calls, validators := 0, 0
	check := func(e ast.Expr) bool {
		switch e := e.(type) {
		case *ast.BasicLit:
			return e.Kind == token.STRING
		case *ast.Ident:
			return isReasonVar(e)
		case *ast.CallExpr:
			fn, ok := e.Fun.(*ast.Ident)
			return ok && (strings.HasPrefix(fn.Name, "check") || strings.HasPrefix(fn.Name, "append"))
		}
		return false
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				res := n.Type.Results
				if n.Recv != nil || res == nil {
					return true
				}
				if last, ok := res.List[len(res.List)-1].Type.(*ast.Ident); !ok || last.Name != "string" {
					return true
				}
				validators++
				ast.Inspect(n.Body, func(m ast.Node) bool {
					if _, ok := m.(*ast.FuncLit); ok {
						return false
					}
					if ret, ok := m.(*ast.ReturnStmt); ok && !check(ret.Results[len(ret.Results)-1]) {
						t.Errorf("%s: %s returns a reason that is not a constant", fset.Position(ret.Pos()), n.Name.Name)
					}
					return true
				})
			case *ast.AssignStmt:
				for i, lhs := range n.Lhs {
					if id, ok := lhs.(*ast.Ident); ok && isReasonVar(id) {
						rhs := n.Rhs[0] // a multi-value call
						if len(n.Rhs) == len(n.Lhs) {
							rhs = n.Rhs[i]
						}
						if !check(rhs) {
							t.Errorf("%s: %s assigned something that is not a constant", fset.Position(n.Pos()), id.Name)
						}
					}
				}
			case *ast.CallExpr:
				if fn, ok := n.Fun.(*ast.Ident); ok && fn.Name == "invalid" {
					calls++
					if !check(n.Args[2]) {
						t.Errorf("%s: invalid() with a reason that is not a constant", fset.Position(n.Pos()))
					}
				}
			}
			return true
		})
	}
	if calls < 25 || validators < 3 {
		t.Fatalf("found only %d calls of invalid() and %d validators: were they renamed?", calls, validators)
	}
}

func isReasonVar(id *ast.Ident) bool { return strings.HasSuffix(strings.ToLower(id.Name), "reason") }

// FuzzEmailFastPath checks that the fast path for common addresses agrees
// with the exact path wherever it answers.
func FuzzEmailFastPath(f *testing.F) {
	for _, s := range []string{"jane@example.com", " Jane.Doe+x@GMAIL.com", "a..b@x.com", "a@b-.com", "+x@gmail.com", "a@b.c",
		strings.Repeat("a", 65) + "@gmail.com", strings.Repeat("a.", 40) + "@gmail.com", "a@" + strings.Repeat("b", 64) + ".com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var b1, b2 [maxHashInput]byte
		fast, ok := appendEmailFast(b1[:0], in)
		if !ok {
			if len(fast) != 0 {
				t.Fatalf("fast path declined but wrote %q", fast)
			}
			return
		}
		exact, err := appendEmailExact(b2[:0], in)
		if err != nil {
			t.Fatalf("fast path accepted %q as %q, exact path rejects it: %v", in, fast, err)
		}
		if string(fast) != string(exact) {
			t.Fatalf("fast %q, exact %q", fast, exact)
		}
	})
}
