// Command httpserver is a small personalized site. Its middleware resolves
// a visitor's pseudonym once per session (the session holds the pseudonym,
// never the email) and pages pick content by segment. The privacy
// endpoints let a signed-in person use their own rights: see what is held
// about them (/privacy/explain) and erase it with a signed receipt
// (/privacy/forget).
//
//	go run ./examples/httpserver -addr localhost:8080
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log"
	"net/http"
	"sync"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	flag.Parse()
	e, err := demoEngine()
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	log.Printf("listening on http://%s (sign in as runner1@example.com)", *addr)
	log.Fatal(http.ListenAndServe(*addr, newServer(e)))
}

// demoEngine holds a few hundred people in three segments.
func demoEngine() (*personify.Engine, error) {
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		return nil, err
	}
	e, err := personify.New(personify.Options{Key: key, K: 20})
	if err != nil {
		return nil, err
	}
	if err := e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut,
		Description: "Choosing what our pages show you"}); err != nil {
		return nil, err
	}
	for _, s := range []personify.Segment{
		{Name: "runners", Purpose: "personalization", Description: "You logged a run in the last 90 days", Retention: 90 * 24 * time.Hour},
		{Name: "swimmers", Purpose: "personalization", Description: "You bought swimwear"},
		{Name: "bargain-hunters", Purpose: "personalization", Description: "You mostly buy on sale"},
	} {
		if err := e.Define(s); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= 300; i++ {
		for seg, every := range map[string]int{"runners": 1, "swimmers": 3, "bargain-hunters": 2} {
			if i%every == 0 {
				if err := e.Add(seg, anonymize.Email(fmt.Sprintf("runner%d@example.com", i))); err != nil {
					return nil, err
				}
			}
		}
	}
	return e, nil
}

// server is the site. Sessions map a random session id to the visitor's
// pseudonym: the email is used once, at sign-in, and then dropped.
type server struct {
	e        *personify.Engine
	mu       sync.Mutex
	sessions map[string]anonymize.Pseudonym
}

type ctxKey struct{}

func newServer(e *personify.Engine) http.Handler {
	s := &server{e: e, sessions: map[string]anonymize.Pseudonym{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /signin", s.signin)
	mux.Handle("GET /{$}", s.withVisitor(http.HandlerFunc(s.home)))
	mux.Handle("POST /privacy/explain", s.withVisitor(s.requireSelf(s.explain)))
	mux.Handle("POST /privacy/forget", s.withVisitor(s.requireSelf(s.forget)))
	return mux
}

// signin pseudonymizes the email once and starts a session.
func (s *server) signin(w http.ResponseWriter, r *http.Request) {
	p, err := s.e.Pseudonym(anonymize.Email(r.FormValue("email")))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest) // the error never echoes the input
		return
	}
	var sid [16]byte
	_, _ = rand.Read(sid[:])
	id := hex.EncodeToString(sid[:])
	s.mu.Lock()
	s.sessions[id] = p
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "sid", Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// withVisitor is the middleware: it puts the session's pseudonym, if any,
// in the request context. No engine call: the pseudonym was computed at
// sign-in.
func (s *server) withVisitor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("sid"); err == nil {
			s.mu.Lock()
			p, ok := s.sessions[c.Value]
			s.mu.Unlock()
			if ok {
				r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, p))
			}
		}
		next.ServeHTTP(w, r)
	})
}

func visitor(r *http.Request) (anonymize.Pseudonym, bool) {
	p, ok := r.Context().Value(ctxKey{}).(anonymize.Pseudonym)
	return p, ok
}

var banners = map[string]string{
	"runners":         "New trail shoes are in.",
	"swimmers":        "Goggles that do not fog.",
	"bargain-hunters": "This week's deals, first.",
}

var page = template.Must(template.New("home").Parse(`<!doctype html>
<title>Shop</title>
{{if .SignedIn}}<p>Picked for you:</p><ul>{{range .Banners}}<li>{{.}}</li>{{else}}<li>Our bestsellers.</li>{{end}}</ul>
{{else}}<form method=post action=/signin><input name=email placeholder=email><button>Sign in</button></form><p>Our bestsellers.</p>{{end}}
`))

// home personalizes by segment: one lock-free lookup per request.
func (s *server) home(w http.ResponseWriter, r *http.Request) {
	data := struct {
		SignedIn bool
		Banners  []string
	}{}
	if p, ok := visitor(r); ok {
		data.SignedIn = true
		var buf [8]string
		for _, seg := range s.e.Segments(buf[:0], p, "personalization") {
			data.Banners = append(data.Banners, banners[seg])
		}
	}
	_ = page.Execute(w, data)
}

// requireSelf lets a person act on their own data only: the email in the
// request must have the session's pseudonym.
func (s *server) requireSelf(next func(http.ResponseWriter, *http.Request, anonymize.Identifier)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := visitor(r)
		if !ok {
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		id := anonymize.Email(r.FormValue("email"))
		q, err := s.e.Pseudonym(id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if q != p {
			http.Error(w, "you can see and erase your own data only", http.StatusForbidden)
			return
		}
		next(w, r, id)
	})
}

func (s *server) explain(w http.ResponseWriter, r *http.Request, id anonymize.Identifier) {
	rep, err := s.e.Explain(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, rep)
}

func (s *server) forget(w http.ResponseWriter, r *http.Request, id anonymize.Identifier) {
	receipt, err := s.e.ForgetWith(id, personify.ForgetOptions{RequestID: "web-" + time.Now().UTC().Format("20060102")})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// The session ends with the data.
	if c, err := r.Cookie("sid"); err == nil {
		s.mu.Lock()
		delete(s.sessions, c.Value)
		s.mu.Unlock()
	}
	writeJSON(w, struct {
		Receipt   personify.Receipt `json:"receipt"`
		PublicKey []byte            `json:"public_key"` // to verify the receipt with personify.VerifyReceipt
	}{receipt, s.e.ReceiptPublicKey()})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil && !errors.Is(err, http.ErrHandlerTimeout) {
		log.Print(err)
	}
}
