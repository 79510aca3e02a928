package anonymize

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
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
// input. Reasons are built only from constants: every call of invalid() or
// invalidPhone() passes a string literal or a reason variable (a name
// ending in "reason"); every assignment to a reason variable and every
// return of a validator (a package-level function named check... or
// append... whose last result is a string) is a string literal, a reason
// variable or a call of a validator. Other functions returning strings
// cannot supply a reason: none of these places accepts their results.
// IdentifierError prints only kind, length, reason and a region of two
// letters (see parseRegion).
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
				if name := n.Name.Name; !strings.HasPrefix(name, "check") && !strings.HasPrefix(name, "append") {
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
				if fn, ok := n.Fun.(*ast.Ident); ok && (fn.Name == "invalid" || fn.Name == "invalidPhone") {
					calls++
					if !check(n.Args[len(n.Args)-1]) {
						t.Errorf("%s: %s() with a reason that is not a constant", fset.Position(n.Pos()), fn.Name)
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

// FuzzEmailNormalize checks the email normalizer against the libraries it
// is built on: where it accepts, the domain is idna.Lookup.ToASCII of the
// input's domain in NFC (which also lowercases) and the local part is in
// NFC; the output is a fixed point; the NFC and NFD spellings of an input
// normalize alike; a rejection is an *IdentifierError that does not quote
// the input.
func FuzzEmailNormalize(f *testing.F) {
	for _, s := range []string{"jürgen@example.de", "x@bücher.de", "x@xn--bcher-kva.de", "X@XN--BCHER-KVA.DE", "x@xn--abc.de",
		"JÖRG.Müller+tag@GMAİL.COM", "a\u0308@b\u0308.de", "x@ｅｘａｍｐｌｅ。com", "x@faß.de", "x@ab--cd.com", "x@a--b.com",
		"ǅ@example.com", "ΣΑΣ@example.gr", "x@☃.net", "x@العربية.com", "x@\u0301a.com", "Jane.Doe@gmail.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Email(in).Normalize()
		if utf8.ValidString(in) {
			nfc, errC := Email(norm.NFC.String(in)).Normalize()
			nfd, errD := Email(norm.NFD.String(in)).Normalize()
			if (errC == nil) != (errD == nil) || nfc != nfd {
				t.Fatalf("NFC gives %q (%v), NFD %q (%v)", nfc, errC, nfd, errD)
			}
			if (err == nil) != (errC == nil) || out != nfc {
				t.Fatalf("input gives %q (%v), its NFC %q (%v)", out, err, nfc, errC)
			}
		}
		if err != nil {
			var ie *IdentifierError
			if !errors.As(err, &ie) || ie.Kind != KindEmail {
				t.Fatalf("not an email *IdentifierError: %v", err)
			}
			if trimmed := strings.TrimSpace(in); len(trimmed) >= 24 && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error quotes the input: %v", err)
			}
			return
		}
		again, err := Email(out).Normalize()
		if err != nil || again != out {
			t.Fatalf("not a fixed point: %q -> %q, %v", out, again, err)
		}
		trimmed := strings.TrimSpace(in)
		want, ierr := idna.Lookup.ToASCII(norm.NFC.String(trimmed[strings.IndexByte(trimmed, '@')+1:]))
		if ierr != nil {
			t.Fatalf("accepted %q as %q, IDNA rejects its domain: %v", in, out, ierr)
		}
		if got := out[strings.LastIndexByte(out, '@')+1:]; got != want {
			t.Fatalf("%q: domain %q, IDNA says %q", in, got, want)
		}
		if local := out[:strings.LastIndexByte(out, '@')]; !norm.NFC.IsNormalString(local) {
			t.Fatalf("%q: local part %q not in NFC", in, local)
		}
	})
}

// FuzzPhoneNormalize checks the phone normalizer against phonenumbers:
// where it accepts, phonenumbers parses the input (for Phone without a
// region, "00" read as '+'; for PhoneIn with the region unless the number
// starts with '+'; tabs, which it does not take as separators, as spaces)
// to a valid number without extension whose E.164 form is the output; the
// output is a fixed point; the fast path never accepts digits that
// phonenumbers would parse to anything else or call invalid; a rejection
// is an *IdentifierError that does not quote the input.
func FuzzPhoneNormalize(f *testing.F) {
	for _, s := range [][2]string{
		{"", "+44 (0)20 7946 0958"}, {"GB", "020 7946 0958"}, {"US", "(202) 555-0143"}, {"", "+12025550143"}, {"", "0044 20 7946 0958"},
		{"US", "011 44 20 7946 0958"}, {"AR", "011 15 2345 6789"}, {"", "+5491123456789"}, {"", "+54 11 15 2345 6789"},
		{"IT", "06 6982 1234"}, {"", "+390669821234"}, {"", "+78005553535"}, {"", "+6834002"}, {"", "+80012345678"},
		{"", "+4980012345678900"}, {"", "+989601"}, {"", "+1 (1) 202 555 0143"}, {"", "+447911123456"}, {"JE", "07797 712345"},
		{"", "+5215512345678"}, {"", "+8613800138000"}, {"", "+919876543210"}, {"DE", "+49 (0)30 123456"}, {"gb", "+0 20 7946 0958"},
		{"", "+1 800 FLOWERS"}, {"", "+61\t2 9374 4000"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, region, in string) {
		id := Phone(in)
		if region != "" {
			id = PhoneIn(region, in)
		}
		out, err := id.Normalize()
		// The fast path, on whatever digits the input holds.
		var digits []byte
		for i := 0; i < len(in); i++ {
			if '0' <= in[i] && in[i] <= '9' {
				digits = append(digits, in[i])
			}
		}
		if len(digits) >= minPhoneDigits && len(digits) <= maxPhoneDigits && fastE164(string(digits)) {
			if lib := libraryE164("+"+string(digits), "ZZ"); lib != "+"+string(digits) {
				t.Fatalf("fast path accepts +%s, phonenumbers gives %q", digits, lib)
			}
		}
		if err != nil {
			var ie *IdentifierError
			if !errors.As(err, &ie) || ie.Kind != KindPhone {
				t.Fatalf("not a phone *IdentifierError: %v", err)
			}
			if len(digits) >= 6 && strings.Contains(err.Error(), string(digits)) {
				t.Fatalf("error quotes the number: %v", err)
			}
			if wantRegion := string(id.region[:]); id.region == noRegion || id.region == badRegion {
				if ie.Region != "" {
					t.Fatalf("error names region %q of argument %q", ie.Region, region)
				}
			} else if ie.Region != wantRegion || wantRegion != strings.ToUpper(region) {
				t.Fatalf("error names region %q, want %q", ie.Region, wantRegion)
			}
			return
		}
		again, err := Phone(out).Normalize()
		if err != nil || again != out {
			t.Fatalf("not a fixed point: %q -> %q, %v", out, again, err)
		}
		raw, libRegion := strings.ReplaceAll(strings.TrimSpace(in), "\t", " "), "ZZ"
		switch {
		case region != "" && raw[0] != '+':
			libRegion = strings.ToUpper(region)
		case region == "" && strings.HasPrefix(raw, "00"):
			raw = "+" + raw[2:]
		}
		num, perr := phonenumbers.Parse(raw, libRegion)
		if perr != nil {
			t.Fatalf("accepted %q (region %q) as %q, phonenumbers: %v", in, region, out, perr)
		}
		if !phonenumbers.IsValidNumber(num) || num.GetExtension() != "" {
			t.Fatalf("accepted %q (region %q) as %q, phonenumbers: not valid or with an extension", in, region, out)
		}
		if want := phonenumbers.Format(num, phonenumbers.E164); out != want {
			t.Fatalf("%q (region %q): %q, phonenumbers %q", in, region, out, want)
		}
	})
}
