// Package prefcenter is the person's preference center: the pages at
// /privacy/ that a signed link opens.
//
// The pages are rendered on the server (html/template, embedded), need no
// JavaScript and load nothing from elsewhere: one stylesheet, served by the
// handler itself.
//
// A link (GET /privacy/?t=TOKEN) is verified and answered with a page that
// asks the person to open their settings: a button, the form of a POST to
// /privacy/open that carries the token. Only that POST, which must come
// from the same origin, exchanges the token for a session cookie and a
// redirect, so that the token leaves the address bar and the Referer, and
// a link that another site sends (the sender's own, say) cannot replace a
// person's session without them pressing the button; where a session for
// someone else is open in the browser, the page says that the link is for
// a different person and that continuing replaces it. (It also means the
// SameSite=Strict cookie is set by a same-origin request, which a browser
// then sends, where one set during a cross-site navigation may be
// withheld.) Every other POST carries a CSRF token derived from a cookie
// (the session's, or, for the public forms, a random one) and must come
// from the same origin. A browser's Global Privacy Control signal (Sec-GPC:
// 1) applies the "do not sell or share" opt-out.
//
// A person who was forgotten and asked never to be added again is shown
// that, and nothing is written for them (no consent, no opt-out, no Global
// Privacy Control). A link whose session was used for "Forget me" is
// revoked: it opens nothing any more, until it expires. That revocation is
// held in memory, per process: in a fleet another replica accepts the link
// until it expires (links are short-lived), and there a link re-opened
// after a plain "Forget me" (without "never add me again") starts afresh,
// on an empty record.
//
// Nothing the handler writes (pages, headers, log events) holds an
// identifier, a key or a link token (but for the hidden field of the form
// that opens a link): the person is named by pseudonyms.
package prefcenter

import (
	"context"
	"crypto/ed25519"
	"embed"
	"errors"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/personify-go/personify/cmd/personify/internal/link"
	"github.com/personify-go/personify/personify"
)

// Engine is what the preference center needs of an engine or a fleet's
// replica (*personify.Engine and *pgstore.Replica have it).
type Engine interface {
	ExplainPerson(p personify.Person) (personify.Report, error)
	SetConsentPerson(ctx context.Context, p personify.Person, purpose string, granted bool) error
	SuppressPerson(ctx context.Context, p personify.Person, purposes ...string) error
	UnsuppressPerson(ctx context.Context, p personify.Person, purposes ...string) error
	ForgetPerson(ctx context.Context, p personify.Person, opts personify.ForgetOptions) (personify.Receipt, error)
	VerifyReceipt(r personify.Receipt) error
	Purged(r personify.Receipt) bool
	ReceiptPublicKeys() []ed25519.PublicKey
	Purposes() []personify.Purpose
}

// Config configures the preference center.
type Config struct {
	Engine Engine
	Links  *link.Signer
	// DoNotSell are the purposes that "Do not sell or share my personal
	// information" (and a browser's Global Privacy Control) suppresses.
	DoNotSell []string
	// Secure marks the session cookie Secure (set when serving TLS).
	Secure bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger receives events with pseudonyms only (nil: discard).
	Logger *slog.Logger
	// OnGPC, if not nil, is called when a Sec-GPC: 1 request applied the
	// opt-out (for a metric).
	OnGPC func()
	// AppName names the service in the pages' headings ("" : "this
	// service").
	AppName string
}

// Prefix is the path the handler serves under; it sees full paths (no
// http.StripPrefix).
const Prefix = "/privacy/"

const (
	// maxBody bounds a form's body.
	maxBody = 64 << 10
	// maxReceipt bounds a receipt pasted into the verify form; the body
	// of that form may be larger, for URL encoding.
	maxReceipt     = 64 << 10
	maxReceiptBody = 3*maxReceipt + 4<<10
)

//go:embed templates/*.html static/style.css
var files embed.FS

// handler is the preference center.
type handler struct {
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	pages     map[string]*template.Template
	css       []byte
	dns       map[string]bool
	cookie    string // the session cookie's name
	anonToken string // the public forms' CSRF cookie's name
	revoked   *revoked
}

// New returns the preference center's handler, to mount at /privacy/.
func New(cfg Config) (http.Handler, error) {
	if cfg.Engine == nil || cfg.Links == nil {
		return nil, errors.New("prefcenter: Config needs an Engine and a link Signer")
	}
	h := &handler{cfg: cfg, log: cfg.Logger, now: cfg.Now, dns: map[string]bool{}, revoked: newRevoked(maxRevoked)}
	if h.log == nil {
		h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.cfg.AppName == "" {
		h.cfg.AppName = "this service"
	}
	for _, p := range cfg.DoNotSell {
		if p == "" {
			return nil, errors.New("prefcenter: Config.DoNotSell names an empty purpose")
		}
		h.dns[p] = true
	}
	h.cookie, h.anonToken = "pc_session", "pc_csrf"
	if cfg.Secure {
		h.cookie, h.anonToken = "__Secure-pc_session", "__Secure-pc_csrf"
	}
	var err error
	if h.pages, err = parsePages(); err != nil {
		return nil, err
	}
	if h.css, err = files.ReadFile("static/style.css"); err != nil {
		return nil, err
	}
	return h, nil
}

// ServeHTTP routes a request under /privacy/.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	post := r.Method == http.MethodPost
	switch r.URL.Path {
	case Prefix:
		if !get {
			h.methodNotAllowed(w, r, "GET")
			return
		}
		if r.URL.Query().Has("t") {
			h.openLink(w, r)
			return
		}
		h.showPage(w, r)
	case Prefix + "style.css":
		if !get {
			h.methodNotAllowed(w, r, "GET")
			return
		}
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		_, _ = w.Write(h.css)
	case Prefix + "report.json":
		if !get {
			h.methodNotAllowed(w, r, "GET")
			return
		}
		h.downloadReport(w, r)
	case Prefix + "open":
		h.onlyPost(w, r, post, h.openSession)
	case Prefix + "consent":
		h.onlyPost(w, r, post, h.setConsent)
	case Prefix + "donotsell":
		h.onlyPost(w, r, post, h.setDoNotSell)
	case Prefix + "forget":
		h.onlyPost(w, r, post, h.forget)
	case Prefix + "receipt.json":
		h.onlyPost(w, r, post, h.downloadReceipt)
	case Prefix + "verify":
		switch {
		case get:
			h.showVerify(w, r)
		case post:
			h.verify(w, r)
		default:
			h.methodNotAllowed(w, r, "GET, POST")
		}
	default:
		h.message(w, r, http.StatusNotFound, "Page not found", "There is no such page in the privacy settings.", "")
	}
}

func (h *handler) onlyPost(w http.ResponseWriter, r *http.Request, post bool, f func(http.ResponseWriter, *http.Request)) {
	if !post {
		h.methodNotAllowed(w, r, "POST")
		return
	}
	f(w, r)
}

func (h *handler) methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	h.message(w, r, http.StatusMethodNotAllowed, "Method not allowed", "This page does not accept that kind of request.", "")
}

// securityHeaders sets the headers every response carries.
func securityHeaders(hd http.Header) {
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Frame-Options", "DENY")
}
