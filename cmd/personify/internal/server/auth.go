package server

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"connectrpc.com/connect"
)

// Role is what a token may do.
type Role uint8

// The roles: a lookup token may look up; a privacy token may act on a
// person's rights; an admin token may define and load. A token may hold
// several.
const (
	RoleLookup Role = 1 << iota
	RolePrivacy
	RoleAdmin
)

var roleNames = map[string]Role{"lookup": RoleLookup, "privacy": RolePrivacy, "admin": RoleAdmin}

func (r Role) String() string {
	var out []string
	for _, n := range []string{"lookup", "privacy", "admin"} {
		if r&roleNames[n] != 0 {
			out = append(out, n)
		}
	}
	return strings.Join(out, "+")
}

// MinTokenLen is the shortest token accepted: a guessable token is no
// protection.
const MinTokenLen = 16

// ErrBadTokens is returned for a token file or variable that cannot be
// used.
var ErrBadTokens = errors.New("personify: bad tokens")

// Tokens holds the bearer tokens, by their SHA-256 only: the server keeps
// no token it could leak, and compares the presented one with each in
// constant time.
type Tokens struct {
	sums  [][sha256.Size]byte
	roles []Role
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.sums) }

// Add adds a token with roles.
func (t *Tokens) Add(token string, roles Role) error {
	if len(token) < MinTokenLen {
		return fmt.Errorf("%w: a token has %d characters; at least %d are needed (personify keygen-like randomness: openssl rand -hex 32)", ErrBadTokens, len(token), MinTokenLen)
	}
	for _, c := range token {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("%w: a token holds a character that is not printable ASCII", ErrBadTokens)
		}
	}
	sum := sha256.Sum256([]byte(token))
	for i, s := range t.sums {
		if s == sum {
			t.roles[i] |= roles
			return nil
		}
	}
	t.sums, t.roles = append(t.sums, sum), append(t.roles, roles)
	return nil
}

// LoadTokenFile reads a file of lines "ROLE TOKEN" (role lookup, privacy or
// admin; blank lines and lines starting with # ignored). Like a key file it
// must not be readable by others.
func (t *Tokens) LoadTokenFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s is readable or writable by others (mode %04o): chmod 600 it", ErrBadTokens, path, perm)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, tok, ok := strings.Cut(line, " ")
		role, known := roleNames[name]
		if !ok || !known {
			return fmt.Errorf("%w: %s line %d: want \"ROLE TOKEN\" with ROLE lookup, privacy or admin", ErrBadTokens, path, n)
		}
		if err := t.Add(strings.TrimSpace(tok), role); err != nil {
			return fmt.Errorf("%s line %d: %w", path, n, err)
		}
	}
	return sc.Err()
}

// LoadEnv adds the tokens of PERSONIFY_LOOKUP_TOKEN, PERSONIFY_PRIVACY_TOKEN
// and PERSONIFY_ADMIN_TOKEN (each may hold several, comma-separated, for a
// rotation).
func (t *Tokens) LoadEnv(getenv func(string) string) error {
	for _, name := range []string{"lookup", "privacy", "admin"} {
		v := getenv("PERSONIFY_" + strings.ToUpper(name) + "_TOKEN")
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok == "" {
				continue
			}
			if err := t.Add(tok, roleNames[name]); err != nil {
				return fmt.Errorf("PERSONIFY_%s_TOKEN: %w", strings.ToUpper(name), err)
			}
		}
	}
	return nil
}

// roles returns the roles of the token presented, comparing it with every
// token in constant time (no early exit, so the time says nothing of which
// or how many match).
func (t *Tokens) rolesOf(presented string) Role {
	sum := sha256.Sum256([]byte(presented))
	var r Role
	for i := range t.sums {
		eq := subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
		r |= t.roles[i] & Role(-eq&0xff)
	}
	return r
}

// bearer returns the token of an Authorization: Bearer header.
func bearer(h http.Header) string {
	v := h.Get("Authorization")
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// authorize wraps a service's handler: it answers, in the request's
// protocol (gRPC, gRPC-Web or Connect), Unauthenticated without a known
// token and PermissionDenied for a token without the role, before a byte
// of the body is read.
func authorize(t *Tokens, need Role, m *metrics, ew *connect.ErrorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r.Header)
		have := t.rolesOf(tok)
		switch {
		case tok == "" || have == 0:
			m.refuse("unauthenticated")
			w.Header().Set("WWW-Authenticate", `Bearer realm="personify"`)
			writeError(ew, w, r, connect.NewError(connect.CodeUnauthenticated, errors.New("a bearer token is needed (Authorization: Bearer TOKEN); the one given, if any, is not known")))
		case have&need == 0:
			m.refuse("permission_denied")
			writeError(ew, w, r, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("this token is for %s, not %s", have, need)))
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// writeError writes err in the request's protocol, or as a Connect JSON
// error for a request in none.
func writeError(ew *connect.ErrorWriter, w http.ResponseWriter, r *http.Request, err *connect.Error) {
	if ew.IsSupported(r) {
		_ = ew.Write(w, r, err)
		return
	}
	writeJSONError(w, httpStatus(err.Code()), err)
}

// writeJSONError writes err as the Connect protocol's JSON error, with
// status.
func writeJSONError(w http.ResponseWriter, status int, err *connect.Error) {
	b, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{err.Code().String(), err.Message()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func httpStatus(c connect.Code) int {
	switch c {
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusRequestEntityTooLarge
	case connect.CodeInvalidArgument:
		return http.StatusBadRequest
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
