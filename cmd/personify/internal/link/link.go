// Package link signs and verifies the preference center's links: a
// short-lived token that names a person by their pseudonyms
// (personify.Person), never by an identifier, signed with HMAC-SHA256
// under a subkey of the engine key, so that every replica that shares the
// key accepts the links any of them issued, and nobody without it can make
// one.
package link

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// MaxTTL is the longest a link may live: it is a bearer credential for the
// person's privacy settings, mailed or shown to them, and must not outlive
// the session it was made for by much.
const MaxTTL = 24 * time.Hour

// DefaultTTL is a link's life when the caller names none.
const DefaultTTL = 15 * time.Minute

// maxToken bounds a token's length: a Person of a handful of keys is a few
// hundred bytes.
const maxToken = 4096

// Errors of Verify, for errors.Is.
var (
	ErrInvalid = errors.New("personify: the link is not valid")
	ErrExpired = errors.New("personify: the link has expired")
)

// Signer makes and checks links. The zero Signer is not usable: use New.
type Signer struct {
	mac anonymize.Key // the HMAC key: a Key redacts itself, and so does Signer
	now func() time.Time
}

// New returns a Signer keyed by a subkey of the engine key k. now is the
// clock (nil: time.Now).
func New(k anonymize.Key, now func() time.Time) (*Signer, error) {
	sub, err := k.Subkey("personify/preference-link/v1")
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Signer{mac: sub, now: now}, nil
}

// String redacts the signer: it holds a secret.
func (s Signer) String() string { return "link.Signer{[redacted]}" }

// GoString redacts the signer.
func (s Signer) GoString() string { return s.String() }

// Format redacts the signer under every verb.
func (s Signer) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

type payload struct {
	V   int              `json:"v"`
	Exp int64            `json:"exp"`
	P   personify.Person `json:"p"`
}

// Sign returns a token for p valid for ttl (DefaultTTL if zero, at most
// MaxTTL), and when it expires.
func (s *Signer) Sign(p personify.Person, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 || ttl > MaxTTL {
		return "", time.Time{}, fmt.Errorf("personify: a link lives from 1s to %s, not %s", MaxTTL, ttl)
	}
	exp := s.now().Add(ttl)
	if t := exp.Truncate(time.Second); !t.Equal(exp) {
		exp = t.Add(time.Second) // whole seconds, never shorter than asked
	}
	b, err := json.Marshal(payload{V: 1, Exp: exp.Unix(), P: p})
	if err != nil {
		return "", time.Time{}, err
	}
	body := base64.RawURLEncoding.EncodeToString(b)
	return body + "." + base64.RawURLEncoding.EncodeToString(s.sum(body)), exp, nil
}

func (s *Signer) sum(body string) []byte {
	k := s.mac.Bytes()
	defer clear(k)
	m := hmac.New(sha256.New, k)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// Verify returns the person a token names and when it expires, or
// ErrInvalid (malformed, or not signed with this key) or ErrExpired.
func (s *Signer) Verify(token string) (personify.Person, time.Time, error) {
	if len(token) > maxToken {
		return personify.Person{}, time.Time{}, fmt.Errorf("%w: too long", ErrInvalid)
	}
	body, sig, ok := strings.Cut(token, ".")
	if !ok {
		return personify.Person{}, time.Time{}, fmt.Errorf("%w: malformed", ErrInvalid)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.sum(body)) {
		return personify.Person{}, time.Time{}, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	b, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return personify.Person{}, time.Time{}, fmt.Errorf("%w: malformed", ErrInvalid)
	}
	var pl payload
	if err := json.Unmarshal(b, &pl); err != nil || pl.V != 1 {
		return personify.Person{}, time.Time{}, fmt.Errorf("%w: malformed", ErrInvalid)
	}
	exp := time.Unix(pl.Exp, 0)
	if !s.now().Before(exp) {
		return personify.Person{}, time.Time{}, ErrExpired
	}
	return pl.P, exp, nil
}
