package prefcenter

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/personify-go/personify/cmd/personify/internal/receiptjson"
	"github.com/personify-go/personify/personify"
)

// pageData is what every template receives; each page uses some fields.
type pageData struct {
	Title string
	App   string
	CSRF  string
	// Status is a message about what the request did (role="status").
	Status string

	// the settings page
	GPCNotice bool
	Report    personify.Report
	DNS       []string
	DNSOn     bool
	DNSAll    bool // suppressed for every purpose ("*")
	GPC       bool
	Expires   time.Time

	// message pages
	Heading, Message, Hint string

	// the page that opens a link: its token (in the form's hidden field
	// only), and whether it replaces another person's session
	Token   string
	Replace bool

	// the receipt and verify pages
	Receipt    string
	SigningKey string
	Keys       []string
	Result     string
	Valid      bool
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2 January 2006, 15:04 UTC")
	},
	"model": func(m personify.ConsentModel) string {
		switch m {
		case personify.OptIn:
			return "used only if you agree (opt-in)"
		case personify.OptOut:
			return "used unless you object (opt-out)"
		}
		return m.String()
	},
}

// parsePages parses every page with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimPrefix(n, "templates/")
		if base == "layout.html" || base == "parts.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/parts.html", n)
		if err != nil {
			return nil, err
		}
		pages[strings.TrimSuffix(base, ".html")] = t
	}
	return pages, nil
}

// render writes a page: rendered in full first, so that a template error
// is a clean 500.
func (h *handler) render(w http.ResponseWriter, status int, page string, d *pageData) {
	d.App = h.cfg.AppName
	var b bytes.Buffer
	if err := h.pages[page].Execute(&b, d); err != nil {
		h.log.Error("prefcenter.template_error", "page", page, "error", err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// message answers with a page that names a problem.
func (h *handler) message(w http.ResponseWriter, _ *http.Request, status int, heading, msg, hint string) {
	h.render(w, status, "message", &pageData{Title: heading, Heading: heading, Message: msg, Hint: hint})
}

// statusMessages are the messages a redirect after a change may name
// (?m=); the purpose (?p=) is shown only if it is defined.
var statusMessages = map[string]string{
	"consent-granted":   "Thank you: your consent for %s is saved.",
	"consent-withdrawn": "Your consent for %s is withdrawn: it no longer uses your data.",
	"dns-on":            "Saved: we do not sell or share your personal information.",
	"dns-off":           "Saved: the opt-out from selling and sharing is off.",
	"dns-gpc":           "The opt-out stays on: your browser sends a Global Privacy Control signal, which we honour while it does.",
}

// showPage is the settings page.
func (h *handler) showPage(w http.ResponseWriter, r *http.Request) {
	s := h.load(w, r)
	if s == nil || !h.explain(w, r, s) {
		return
	}
	if s.report.DoNotReAdd {
		h.render(w, http.StatusOK, "forgotten", &pageData{Title: "You were forgotten"})
		return
	}
	d := &pageData{Title: "Your privacy settings", CSRF: csrfToken(s.token), Report: s.report,
		DNS: h.cfg.DoNotSell, DNSOn: h.doNotSellOn(s.report), GPC: s.gpc, Expires: s.exp}
	d.DNSAll = slices.Contains(s.report.Suppressed, "*")
	d.GPCNotice = s.gpc && d.DNSOn && len(h.cfg.DoNotSell) > 0
	q := r.URL.Query()
	if m, ok := statusMessages[q.Get("m")]; ok {
		if strings.Contains(m, "%s") {
			if p := q.Get("p"); h.purposeDefined(p) {
				d.Status = strings.Replace(m, "%s", p, 1)
			}
		} else {
			d.Status = m
		}
	}
	h.render(w, http.StatusOK, "page", d)
}

func (h *handler) purposeDefined(name string) bool {
	if name == "" {
		return false
	}
	return slices.ContainsFunc(h.cfg.Engine.Purposes(), func(p personify.Purpose) bool { return p.Name == name })
}

// downloadReport is the report as a JSON download.
func (h *handler) downloadReport(w http.ResponseWriter, r *http.Request) {
	s := h.load(w, r)
	if s == nil || !h.explain(w, r, s) {
		return
	}
	b, err := json.MarshalIndent(s.report, "", "  ")
	if err != nil {
		h.engineError(w, r, s, err)
		return
	}
	h.log.Info("prefcenter.report_downloaded", "pseudonym", s.pseudonym())
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="privacy-report.json"`)
	_, _ = w.Write(append(b, '\n'))
}

// sessionPost loads the session of a POST and checks it; nil if it
// answered the request itself. Every POST with a session writes, and none
// is accepted for a person who was forgotten and asked never to be added
// again.
func (h *handler) sessionPost(w http.ResponseWriter, r *http.Request) *session {
	if reason := h.crossSite(r); reason != "" {
		h.checkPost(w, r, maxBody) // refuses
		return nil
	}
	s := h.load(w, r)
	if s == nil || !h.checkPost(w, r, maxBody, h.cookie) || !h.explain(w, r, s) {
		return nil
	}
	if s.report.DoNotReAdd {
		h.log.Info("prefcenter.refused", "path", r.URL.Path, "pseudonym", s.pseudonym(), "reason", "forgotten, do not re-add")
		h.message(w, r, http.StatusGone, "You were forgotten",
			h.cfg.AppName+" erased your data at your request and will never add you again: it holds nothing about you, so there is nothing to change.", "")
		return nil
	}
	return s
}

// setConsent grants or withdraws consent for one purpose.
func (h *handler) setConsent(w http.ResponseWriter, r *http.Request) {
	s := h.sessionPost(w, r)
	if s == nil {
		return
	}
	purpose := r.PostForm.Get("purpose")
	if !h.purposeDefined(purpose) {
		h.message(w, r, http.StatusBadRequest, "Unknown purpose", "The form named a purpose this service does not have.", "")
		return
	}
	var granted bool
	switch r.PostForm.Get("granted") {
	case "true":
		granted = true
	case "false":
	default:
		h.message(w, r, http.StatusBadRequest, "Bad request", "The form did not say whether to give or withdraw consent.", "")
		return
	}
	if err := h.cfg.Engine.SetConsentPerson(r.Context(), s.person, purpose, granted); err != nil {
		h.engineError(w, r, s, err)
		return
	}
	h.log.Info("prefcenter.consent", "pseudonym", s.pseudonym(), "purpose", purpose, "granted", granted)
	m := "consent-withdrawn"
	if granted {
		m = "consent-granted"
	}
	seeOther(w, Prefix+"?"+url.Values{"m": {m}, "p": {purpose}}.Encode())
}

// setDoNotSell turns the do-not-sell opt-out on or off.
func (h *handler) setDoNotSell(w http.ResponseWriter, r *http.Request) {
	if len(h.cfg.DoNotSell) == 0 {
		h.message(w, r, http.StatusNotFound, "Page not found", "This service does not sell or share personal information.", "")
		return
	}
	s := h.sessionPost(w, r)
	if s == nil {
		return
	}
	var on bool
	switch r.PostForm.Get("on") {
	case "true":
		on = true
	case "false":
	default:
		h.message(w, r, http.StatusBadRequest, "Bad request", "The form did not say whether to turn the opt-out on or off.", "")
		return
	}
	m := "dns-on"
	var err error
	switch {
	case on:
		err = h.cfg.Engine.SuppressPerson(r.Context(), s.person, h.cfg.DoNotSell...)
	case s.gpc:
		m = "dns-gpc" // the signal wins while the browser sends it
	default:
		m = "dns-off"
		err = h.cfg.Engine.UnsuppressPerson(r.Context(), s.person, h.cfg.DoNotSell...)
	}
	if err != nil {
		h.engineError(w, r, s, err)
		return
	}
	h.log.Info("prefcenter.do_not_sell", "pseudonym", s.pseudonym(), "on", on || s.gpc)
	seeOther(w, Prefix+"?m="+m)
}

// forget erases the person and shows the receipt.
func (h *handler) forget(w http.ResponseWriter, r *http.Request) {
	s := h.sessionPost(w, r)
	if s == nil {
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		h.message(w, r, http.StatusBadRequest, "Nothing was erased",
			"To erase your data, tick the box that confirms it, then press “Forget me”.", "")
		return
	}
	opts := personify.ForgetOptions{DoNotReAdd: r.PostForm.Get("never") == "yes"}
	rc, err := h.cfg.Engine.ForgetPerson(r.Context(), s.person, opts)
	if err != nil {
		h.engineError(w, r, s, err)
		return
	}
	// The link opens nothing any more (in this process: see revoked).
	h.revoked.add(s.token, s.exp, h.now())
	h.clearSession(w)
	h.log.Info("prefcenter.forgotten", "pseudonym", s.pseudonym(), "receipt", rc.ID,
		"segments", len(rc.Segments), "do_not_re_add", rc.DoNotReAdd)
	b, err := json.MarshalIndent(rc, "", "  ")
	if err != nil {
		h.engineError(w, r, s, err)
		return
	}
	h.render(w, http.StatusOK, "receipt", &pageData{Title: "Your data has been erased",
		Status:  "Your data has been erased. Keep the receipt below: it proves it.",
		CSRF:    h.anonCSRF(w, r),
		Receipt: string(b), SigningKey: rc.SigningKey, Keys: h.keys()})
}

func (h *handler) keys() []string {
	var out []string
	for _, k := range h.cfg.Engine.ReceiptPublicKeys() {
		out = append(out, hex.EncodeToString(k))
	}
	return out
}

// readReceipt reads the receipt field of a public form.
func (h *handler) readReceipt(w http.ResponseWriter, r *http.Request) (personify.Receipt, string, bool) {
	if !h.checkPost(w, r, maxReceiptBody, h.anonToken, h.cookie) {
		return personify.Receipt{}, "", false
	}
	raw := r.PostForm.Get("receipt")
	if len(raw) > maxReceipt {
		h.message(w, r, http.StatusRequestEntityTooLarge, "Too much data", "A receipt is at most 64 KiB.", "")
		return personify.Receipt{}, "", false
	}
	if strings.TrimSpace(raw) == "" {
		return personify.Receipt{}, "no receipt was given", true
	}
	rc, err := receiptjson.Decode([]byte(raw), maxReceipt)
	if err != nil {
		return personify.Receipt{}, "this is not the JSON of a receipt", true
	}
	if err := h.cfg.Engine.VerifyReceipt(rc); err != nil {
		return rc, h.whyNot(rc), true
	}
	return rc, "", true
}

// whyNot says, in its own words (a receipt's fields are the sender's),
// why a receipt does not verify.
func (h *handler) whyNot(rc personify.Receipt) string {
	switch {
	case rc.Version < 1 || rc.Version > 3:
		return "its format version is not one this service reads"
	case rc.Version >= 2 && !slices.Contains(h.keys(), rc.SigningKey):
		return "it does not name a signing key of this service"
	}
	return "its signature does not match its contents: it was altered, or not issued here"
}

// downloadReceipt echoes a receipt back as a download, once it verifies.
func (h *handler) downloadReceipt(w http.ResponseWriter, r *http.Request) {
	rc, why, ok := h.readReceipt(w, r)
	if !ok {
		return
	}
	if why != "" {
		h.message(w, r, http.StatusBadRequest, "This receipt is not valid", "The receipt was not downloaded: "+why+".", "")
		return
	}
	b, err := json.MarshalIndent(rc, "", "  ")
	if err != nil {
		h.message(w, r, http.StatusInternalServerError, "Something went wrong", "The receipt could not be written.", "")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="receipt.json"`)
	_, _ = w.Write(append(b, '\n'))
}

// showVerify is the public form that checks a receipt.
func (h *handler) showVerify(w http.ResponseWriter, r *http.Request) {
	h.render(w, http.StatusOK, "verify", &pageData{Title: "Verify an erasure receipt", CSRF: h.anonCSRF(w, r), Keys: h.keys()})
}

// verify checks a receipt sent by the public form.
func (h *handler) verify(w http.ResponseWriter, r *http.Request) {
	rc, why, ok := h.readReceipt(w, r)
	if !ok {
		return
	}
	d := &pageData{Title: "Verify an erasure receipt", CSRF: h.anonCSRF(w, r), Keys: h.keys()}
	switch {
	case why != "":
		d.Result = "not valid: " + why
		h.log.Info("prefcenter.receipt_checked", "valid", false)
	case rc.Version < 2:
		// The signature of a version-1 receipt covers neither its
		// signing key nor its log position (Seq), which Purged reads: say
		// neither.
		d.Valid = true
		d.Result = "valid (a legacy version-1 receipt: its signing key and log position are not covered by the signature)"
		h.log.Info("prefcenter.receipt_checked", "valid", true, "version", rc.Version)
	default:
		purged := "no"
		if h.cfg.Engine.Purged(rc) {
			purged = "yes"
		}
		d.Valid = true
		d.Result = "valid, signed by " + rc.SigningKey + "; purged: " + purged + " by " + rc.PurgeBy.UTC().Format(time.RFC3339)
		h.log.Info("prefcenter.receipt_checked", "valid", true, "receipt", rc.ID)
	}
	h.render(w, http.StatusOK, "verify", d)
}

// seeOther redirects to a page of the center, with no body.
func seeOther(w http.ResponseWriter, to string) {
	w.Header().Set("Location", to)
	w.WriteHeader(http.StatusSeeOther)
}
