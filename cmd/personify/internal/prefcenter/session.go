package prefcenter

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/personify-go/personify/cmd/personify/internal/link"
	"github.com/personify-go/personify/personify"
)

// session is a request's verified session: the person the link names, and
// what the engine holds about them.
type session struct {
	token  string // the link token; never logged, never rendered
	person personify.Person
	exp    time.Time
	report personify.Report
	// gpc is true when the request carried Sec-GPC: 1; gpcApplied when
	// that applied the opt-out now.
	gpc, gpcApplied bool
}

// pseudonym is how log events name the person: the current key's
// pseudonym, with the key's fingerprint.
func (s *session) pseudonym() string {
	if len(s.person.Pseudonyms) == 0 {
		return ""
	}
	kp := s.person.Pseudonyms[0]
	return kp.Pseudonym.String() + "@" + kp.Key.String()
}

// csrfToken derives the hidden form token from a cookie's value: it cannot
// be computed without the cookie, which another site cannot read.
func csrfToken(cookieValue string) string {
	sum := sha256.Sum256([]byte("personify-csrf:" + cookieValue))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// openLink verifies a link and answers with the page whose button opens
// it (a POST to /privacy/open, openSession). The GET itself sets no
// cookie: a link that another site sends cannot replace the session open
// in the browser, and the cookie is set by a same-origin request, so that
// the browser sends it on the pages that follow.
func (h *handler) openLink(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("t")
	p, exp, ok := h.verifyLink(w, r, tok, "link")
	if !ok {
		return
	}
	h.renderOpen(w, tok, exp, h.otherSession(r, p))
}

// openSession exchanges a link's token, sent by the form of openLink's
// page, for a session cookie and a redirect. The token is the credential;
// the request must come from the same origin. Where a session for someone
// else is open, it is replaced only once the page has said so.
func (h *handler) openSession(w http.ResponseWriter, r *http.Request) {
	if !h.readPost(w, r, maxBody) {
		return
	}
	tok := r.PostForm.Get("t")
	p, exp, ok := h.verifyLink(w, r, tok, "link")
	if !ok {
		return
	}
	if h.otherSession(r, p) && r.PostForm.Get("replace") != "yes" {
		h.log.Info("prefcenter.link_for_other_person", "pseudonym", (&session{person: p}).pseudonym())
		h.renderOpen(w, tok, exp, true)
		return
	}
	http.SetCookie(w, h.sessionCookie(tok, exp))
	h.log.Info("prefcenter.link_opened", "pseudonym", (&session{person: p}).pseudonym(), "expires", exp.UTC())
	seeOther(w, Prefix)
}

// verifyLink verifies a link token and checks that it was not revoked;
// it answers the request itself when it refuses.
func (h *handler) verifyLink(w http.ResponseWriter, r *http.Request, tok, what string) (personify.Person, time.Time, bool) {
	p, exp, err := h.cfg.Links.Verify(tok)
	if err != nil {
		h.linkRefused(w, r, err, what)
		return personify.Person{}, time.Time{}, false
	}
	if h.revoked.has(tok, h.now()) {
		h.linkRevoked(w, r, what)
		return personify.Person{}, time.Time{}, false
	}
	return p, exp, true
}

// renderOpen is the page that opens a link: the token is in its form's
// hidden field only. replace says that a session for another person is
// open in this browser, which continuing replaces.
func (h *handler) renderOpen(w http.ResponseWriter, tok string, exp time.Time, replace bool) {
	h.render(w, http.StatusOK, "open", &pageData{Title: "Open your privacy settings", Token: tok, Replace: replace, Expires: exp})
}

// otherSession reports whether the request holds a valid session for
// someone other than p.
func (h *handler) otherSession(r *http.Request, p personify.Person) bool {
	c, err := r.Cookie(h.cookie)
	if err != nil || c.Value == "" {
		return false
	}
	q, _, err := h.cfg.Links.Verify(c.Value)
	if err != nil || h.revoked.has(c.Value, h.now()) {
		return false
	}
	return !samePerson(p, q)
}

// samePerson reports whether a and b share a pseudonym (under the same
// key): links for the same identifier, made before and after a key was
// added, still do.
func samePerson(a, b personify.Person) bool {
	for _, x := range a.Pseudonyms {
		if slices.Contains(b.Pseudonyms, x) {
			return true
		}
	}
	return false
}

func (h *handler) sessionCookie(tok string, exp time.Time) *http.Cookie {
	maxAge := int(exp.Sub(h.now()) / time.Second)
	if maxAge <= 0 {
		maxAge = 1
	}
	return &http.Cookie{Name: h.cookie, Value: tok, Path: Prefix, Expires: exp.UTC(), MaxAge: maxAge,
		HttpOnly: true, Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode}
}

// clearSession removes the session cookie.
func (h *handler) clearSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: h.cookie, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

// anonCSRF returns the CSRF token of the public forms (verify, receipt
// download), setting the random cookie it derives from if the request has
// none.
func (h *handler) anonCSRF(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(h.anonToken); err == nil && len(c.Value) >= 32 {
		return csrfToken(c.Value)
	}
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	v := base64.RawURLEncoding.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: h.anonToken, Value: v, Path: Prefix, MaxAge: 24 * 3600,
		HttpOnly: true, Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode})
	return csrfToken(v)
}

// linkRefused answers a link or session the signer refused.
func (h *handler) linkRefused(w http.ResponseWriter, r *http.Request, err error, what string) {
	h.log.Info("prefcenter.refused", "path", r.URL.Path, "reason", what+" "+refusal(err))
	if what == "session" {
		h.clearSession(w)
	}
	if errors.Is(err, link.ErrExpired) {
		h.message(w, r, http.StatusGone, "This link has expired",
			"The link to your privacy settings is no longer valid: links are short-lived, to protect you.",
			"Please ask "+h.cfg.AppName+" for a new link.")
		return
	}
	h.message(w, r, http.StatusForbidden, "This link is not valid",
		"The link to your privacy settings could not be verified: it may be incomplete or altered.",
		"Please ask "+h.cfg.AppName+" for a new link.")
}

// linkRevoked answers a link or session whose token was used for "Forget
// me" (see revoked).
func (h *handler) linkRevoked(w http.ResponseWriter, r *http.Request, what string) {
	h.log.Info("prefcenter.refused", "path", r.URL.Path, "reason", what+" revoked: used to erase")
	if what == "session" {
		h.clearSession(w)
	}
	h.message(w, r, http.StatusGone, "This link was used to erase your data",
		"This link was used for “Forget me”: the data it opened was erased, and the link no longer opens anything.",
		"If you want to see your privacy settings again, please ask "+h.cfg.AppName+" for a new link.")
}

func refusal(err error) string {
	if errors.Is(err, link.ErrExpired) {
		return "expired"
	}
	return "invalid"
}

// load verifies the session cookie and reads the person's report, applying
// a Global Privacy Control signal. It answers the request itself and
// returns nil when there is no valid session.
func (h *handler) load(w http.ResponseWriter, r *http.Request) *session {
	c, err := r.Cookie(h.cookie)
	if err != nil || c.Value == "" {
		h.log.Info("prefcenter.refused", "path", r.URL.Path, "reason", "no session")
		h.message(w, r, http.StatusForbidden, "No privacy session",
			"To see and change your privacy settings, open the link "+h.cfg.AppName+" gave you.",
			"If you do not have one, or it has expired, please ask "+h.cfg.AppName+" for a new link.")
		return nil
	}
	p, exp, ok := h.verifyLink(w, r, c.Value, "session")
	if !ok {
		return nil
	}
	return &session{token: c.Value, person: p, exp: exp, gpc: r.Header.Get("Sec-GPC") == "1"}
}

// explain reads the session's report, then applies a Global Privacy
// Control signal (and reads it again); it answers the request itself on an
// error. Nothing is applied for a person who was forgotten and asked never
// to be added again.
func (h *handler) explain(w http.ResponseWriter, r *http.Request, s *session) bool {
	rep, err := h.cfg.Engine.ExplainPerson(s.person)
	if err != nil {
		h.engineError(w, r, s, err)
		return false
	}
	s.report = rep
	if !s.gpc || len(h.cfg.DoNotSell) == 0 || rep.DoNotReAdd || h.doNotSellOn(rep) {
		return true
	}
	if err := h.cfg.Engine.SuppressPerson(r.Context(), s.person, h.cfg.DoNotSell...); err != nil {
		h.engineError(w, r, s, err)
		return false
	}
	s.gpcApplied = true
	h.log.Info("prefcenter.gpc_applied", "pseudonym", s.pseudonym(), "purposes", h.cfg.DoNotSell)
	if h.cfg.OnGPC != nil {
		h.cfg.OnGPC()
	}
	if s.report, err = h.cfg.Engine.ExplainPerson(s.person); err != nil {
		h.engineError(w, r, s, err)
		return false
	}
	return true
}

// doNotSellOn reports whether every do-not-sell purpose is suppressed.
func (h *handler) doNotSellOn(rep personify.Report) bool {
	if slices.Contains(rep.Suppressed, "*") {
		return true
	}
	for _, p := range h.cfg.DoNotSell {
		if !slices.Contains(rep.Suppressed, p) {
			return false
		}
	}
	return len(h.cfg.DoNotSell) > 0
}

// readPost refuses a POST from another site, and parses its form,
// bounded to limit bytes; it answers the request itself when it refuses.
func (h *handler) readPost(w http.ResponseWriter, r *http.Request, limit int64) bool {
	if reason := h.crossSite(r); reason != "" {
		h.log.Info("prefcenter.refused", "path", r.URL.Path, "reason", reason)
		h.message(w, r, http.StatusForbidden, "Request refused",
			"This form was sent from another site ("+reason+"). For your protection, changes to your privacy settings are only accepted from these pages.", "")
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.message(w, r, http.StatusRequestEntityTooLarge, "Too much data", "The form sent more data than this page accepts.", "")
			return false
		}
		h.message(w, r, http.StatusBadRequest, "Bad request", "The form could not be read.", "")
		return false
	}
	return true
}

// checkPost refuses a POST from another site or without the right CSRF
// token (derived from the value of one of the cookies named). It parses
// the form, bounded to limit bytes, and answers the request itself when it
// refuses.
func (h *handler) checkPost(w http.ResponseWriter, r *http.Request, limit int64, cookies ...string) bool {
	if !h.readPost(w, r, limit) {
		return false
	}
	got := r.PostForm.Get("csrf")
	for _, name := range cookies {
		c, err := r.Cookie(name)
		if err != nil || c.Value == "" {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(csrfToken(c.Value))) == 1 {
			return true
		}
	}
	h.log.Info("prefcenter.refused", "path", r.URL.Path, "reason", "csrf token missing or wrong")
	h.message(w, r, http.StatusForbidden, "Request refused",
		"The form's security token is missing or does not match your session (it may be from an older page, or from another site).",
		"Go back to your privacy settings, reload the page and try again.")
	return false
}

// crossSite says why a POST looks cross-site, or "" if it does not.
func (h *handler) crossSite(r *http.Request) string {
	site := r.Header.Get("Sec-Fetch-Site")
	switch site {
	case "", "same-origin", "none":
	default:
		return "Sec-Fetch-Site: " + sanitizeToken(site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	if origin == "null" {
		// Browsers send "Origin: null" for a same-origin form under
		// Referrer-Policy: no-referrer (which these pages set), and for
		// sandboxed or opaque origins: accept it only where the browser
		// also says the request is same-origin.
		if site == "same-origin" {
			return ""
		}
		return "an opaque Origin without Sec-Fetch-Site: same-origin"
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return "the Origin does not match this site"
	}
	if h.cfg.Secure && u.Scheme != "https" {
		return "the Origin is not https"
	}
	return ""
}

// sanitizeToken keeps a header value short and plain for a message.
func sanitizeToken(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' {
			return c
		}
		return -1
	}, s)
}

// engineError answers an error from the engine with a page naming the
// problem; engine errors carry pseudonyms and counts only, but the page
// does not show them.
func (h *handler) engineError(w http.ResponseWriter, r *http.Request, s *session, err error) {
	h.log.Warn("prefcenter.engine_error", "path", r.URL.Path, "pseudonym", s.pseudonym(), "error", err.Error())
	switch {
	case errors.Is(err, personify.ErrKeyChanged):
		h.clearSession(w)
		h.message(w, r, http.StatusGone, "Please ask for a new link",
			"Your link was made before "+h.cfg.AppName+" renewed its keys, so it can no longer find all your data.",
			"Please ask "+h.cfg.AppName+" for a new link.")
	case errors.Is(err, personify.ErrClosed):
		h.message(w, r, http.StatusServiceUnavailable, "Temporarily unavailable",
			"The privacy settings are not available right now: the service is shutting down or restarting.",
			"Please try again in a minute.")
	case errors.Is(err, personify.ErrUnknownPurpose):
		h.message(w, r, http.StatusBadRequest, "Unknown purpose", "The form named a purpose this service does not have.", "")
	default:
		h.message(w, r, http.StatusInternalServerError, "Something went wrong",
			"Your request could not be completed.",
			"Please try again later, or ask "+h.cfg.AppName+" for help.")
	}
}
