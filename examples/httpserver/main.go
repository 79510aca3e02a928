// Command httpserver is a small personalized site. Every browser gets a
// random device cookie, and the page is personalized by that device's
// pseudonym, signed in or not: an anonymous visitor is a device ID. At
// sign-in the site links the device to the account's email
// (personify.Engine.Link), so the segments built for the email appear on
// the device from the next request on. Sessions hold pseudonyms, never the
// email. The privacy endpoints let a signed-in person use their own
// rights: see what is held about them (/privacy/explain), every linked
// pseudonym included, and erase it with a signed receipt
// (/privacy/forget), which removes the device too.
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

// server is the site. Devices map the device cookie to the device's
// pseudonym (computed once per browser); sessions map a random session id
// to the signed-in person's email pseudonym: the email is used once, at
// sign-in, and then dropped.
type server struct {
	e        *personify.Engine
	mu       sync.Mutex
	devices  map[string]anonymize.Pseudonym
	sessions map[string]anonymize.Pseudonym
}

type visitorKey struct{}

// visit is what a request knows about its visitor.
type visit struct {
	device   anonymize.Pseudonym // always: the browser's device ID
	person   anonymize.Pseudonym // the signed-in email's pseudonym
	signedIn bool
}

func newServer(e *personify.Engine) http.Handler {
	s := &server{e: e, devices: map[string]anonymize.Pseudonym{}, sessions: map[string]anonymize.Pseudonym{}}
	mux := http.NewServeMux()
	mux.Handle("POST /signin", s.withVisitor(http.HandlerFunc(s.signin)))
	mux.Handle("GET /{$}", s.withVisitor(http.HandlerFunc(s.home)))
	mux.Handle("POST /privacy/explain", s.withVisitor(s.requireSelf(s.explain)))
	mux.Handle("POST /privacy/forget", s.withVisitor(s.requireSelf(s.forget)))
	return mux
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// deviceID is the identifier of the browser's device cookie.
func deviceID(cookie string) anonymize.Identifier { return anonymize.DeviceID("web:" + cookie) }

// signin pseudonymizes the email once, links it to the device, and starts
// a session.
func (s *server) signin(w http.ResponseWriter, r *http.Request) {
	email := anonymize.Email(r.FormValue("email"))
	p, err := s.e.Pseudonym(email)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest) // the error never echoes the input
		return
	}
	c, err := r.Cookie("did")
	if err != nil { // withVisitor set it on the response; the browser sends it from now on
		http.Error(w, "cookies are needed to sign in", http.StatusBadRequest)
		return
	}
	// The device is this person's now: the segments built for the email
	// serve it, and erasing the person erases it. A device that was
	// someone else's moves, carrying none of their segments.
	if err := s.e.Link(email, deviceID(c.Value)); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	id := randomID()
	s.mu.Lock()
	s.sessions[id] = p
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "sid", Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// withVisitor is the middleware: it gives a new browser its device cookie
// and puts the visitor's pseudonyms in the request context. The device's
// pseudonym is computed once per browser, then looked up.
func (s *server) withVisitor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v visit
		c, err := r.Cookie("did")
		if err != nil || len(c.Value) != 32 {
			c = &http.Cookie{Name: "did", Value: randomID(), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: 365 * 24 * 3600}
			http.SetCookie(w, c)
			r.AddCookie(c)
		}
		s.mu.Lock()
		p, ok := s.devices[c.Value]
		s.mu.Unlock()
		if !ok {
			if p, err = s.e.Pseudonym(deviceID(c.Value)); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			s.mu.Lock()
			s.devices[c.Value] = p
			s.mu.Unlock()
		}
		v.device = p
		if c, err := r.Cookie("sid"); err == nil {
			s.mu.Lock()
			v.person, v.signedIn = s.sessions[c.Value]
			s.mu.Unlock()
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), visitorKey{}, v)))
	})
}

func visitor(r *http.Request) visit {
	v, _ := r.Context().Value(visitorKey{}).(visit)
	return v
}

var banners = map[string]string{
	"runners":         "New trail shoes are in.",
	"swimmers":        "Goggles that do not fog.",
	"bargain-hunters": "This week's deals, first.",
}

var page = template.Must(template.New("home").Parse(`<!doctype html>
<title>Shop</title>
{{if not .SignedIn}}<form method=post action=/signin><input name=email placeholder=email><button>Sign in</button></form>{{end}}
{{if .Banners}}<p>Picked for you:</p><ul>{{range .Banners}}<li>{{.}}</li>{{end}}</ul>{{else}}<p>Our bestsellers.</p>{{end}}
`))

// home personalizes by segment: one lock-free lookup per request, by the
// device's pseudonym, which answers for the person it is linked to.
func (s *server) home(w http.ResponseWriter, r *http.Request) {
	v := visitor(r)
	data := struct {
		SignedIn bool
		Banners  []string
	}{SignedIn: v.signedIn}
	var buf [8]string
	for _, seg := range s.e.Segments(buf[:0], v.device, "personalization") {
		data.Banners = append(data.Banners, banners[seg])
	}
	_ = page.Execute(w, data)
}

// requireSelf lets a person act on their own data only: the email in the
// request must have the session's pseudonym.
func (s *server) requireSelf(next func(http.ResponseWriter, *http.Request, anonymize.Identifier)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := visitor(r)
		if !v.signedIn {
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		id := anonymize.Email(r.FormValue("email"))
		q, err := s.e.Pseudonym(id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if q != v.person {
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
	// The session ends with the data; the device, linked to the person,
	// was erased with them (the receipt lists it) and starts anew.
	s.mu.Lock()
	if c, err := r.Cookie("sid"); err == nil {
		delete(s.sessions, c.Value)
	}
	if c, err := r.Cookie("did"); err == nil {
		delete(s.devices, c.Value)
	}
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "did", Path: "/", MaxAge: -1})
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
