package captive

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/portal.css
var portalCSS []byte

// maxForm bounds a form's body: the portal's forms are a few hundred bytes.
const maxForm = 4 << 10

// pageSet holds the parsed templates and the pages that are the same for
// every client, rendered once per language.
type pageSet struct {
	s      *Server
	tmpl   map[string]*template.Template
	info   map[string][]byte
	errors map[string][]byte // lang/code

	mu       sync.Mutex
	landings map[string][]byte // lang NUL target -> page with csrfMark
}

var pageNames = []string{"landing", "status", "loggedout", "info", "error", "code"}

func newPageSet(s *Server) (*pageSet, error) {
	ps := &pageSet{s: s, tmpl: map[string]*template.Template{}, info: map[string][]byte{}, errors: map[string][]byte{}, landings: map[string][]byte{}}
	for _, name := range pageNames {
		t, err := template.ParseFS(templateFS, "templates/layout.html", "templates/methods.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parsing the %s page: %w", name, err)
		}
		ps.tmpl[name] = t
	}
	for _, l := range langs {
		d := ps.base(l, "/portal/info", nil)
		d.Title = l.cat.T("info.title")
		b, err := ps.render("info", d)
		if err != nil {
			return nil, err
		}
		ps.info[l.Code] = b
		for _, code := range errorCodes {
			b, err := ps.renderError(l, code, "")
			if err != nil {
				return nil, err
			}
			ps.errors[l.Code+strconv.Itoa(code)] = b
		}
	}
	return ps, nil
}

// errorCodes have their own title and text in the catalogues.
var errorCodes = []int{400, 403, 404, 405, 413, 429, 500, 503}

// pageData is what every template gets.
type pageData struct {
	L       Catalog
	Lang    string
	Langs   []langLink
	Site    string
	Town    string
	Owner   string // who offers the service: the town, else the site
	HasLogo bool
	Title   string

	Message string // an alert (landing) or the error's text
	Code    int    // error pages
	CSRF    string
	Target  string // where the resident was going (signed)
	Sig     string
	Methods []method

	TimeLeft string
	DataLeft string

	// Resident login (see login.go).
	SMS       *smsFields // the code page
	Phone     string     // kept in the phone field after a refusal
	Voucher   string     // kept in (or, from a voucher's QR code, put in) the voucher field
	IdPs      []IdP
	PortalURL string // the RFC 8908 user-portal-url, for the SPID fallback in the phone's browser
}

type langLink struct {
	Code, Name, Href string
	Current          bool
}

// method is one way to log in offered on the landing page: click, sms,
// voucher, spid or remembered (the templates in methods.html).
type method struct{ Kind string }

func (ps *pageSet) base(l *Lang, path string, q url.Values) pageData {
	cfg := ps.s.cfg
	d := pageData{L: l.cat, Lang: l.Code, Site: cfg.SiteName, Town: cfg.Town, Owner: cfg.Town, HasLogo: len(cfg.Logo) > 0}
	if d.Owner == "" {
		d.Owner = cfg.SiteName
	}
	for _, o := range langs {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("lang", o.Code)
		d.Langs = append(d.Langs, langLink{Code: o.Code, Name: o.Name, Href: path + "?" + v.Encode(), Current: o == l})
	}
	return d
}

func (ps *pageSet) render(name string, d pageData) ([]byte, error) {
	var buf bytes.Buffer
	if err := ps.tmpl[name].ExecuteTemplate(&buf, "page", d); err != nil {
		return nil, fmt.Errorf("rendering the %s page: %w", name, err)
	}
	return buf.Bytes(), nil
}

// renderErrorMsg is an error page with a message already translated.
func (ps *pageSet) renderErrorMsg(l *Lang, code int, msg string) ([]byte, error) {
	d := ps.base(l, "/portal/", nil)
	key := "error.other"
	if slices.Contains(errorCodes, code) {
		key = "error." + strconv.Itoa(code)
	}
	d.Title, d.Message, d.Code = l.cat.T(key+".title"), msg, code
	return ps.render("error", d)
}

func (ps *pageSet) renderError(l *Lang, code int, msgKey string) ([]byte, error) {
	key := "error.other"
	for _, c := range errorCodes {
		if c == code {
			key = "error." + strconv.Itoa(code)
		}
	}
	d := ps.base(l, "/portal/", nil)
	d.Title, d.Message, d.Code = l.cat.T(key+".title"), l.cat.T(key+".text"), code
	if msgKey != "" {
		d.Message = l.cat.T(msgKey)
	}
	return ps.render("error", d)
}

// errorPage is the cached error page for code in l.
func (ps *pageSet) errorPage(l *Lang, code int) []byte {
	if b, ok := ps.errors[l.Code+strconv.Itoa(code)]; ok {
		return b
	}
	b, err := ps.renderError(l, code, "")
	if err != nil {
		return []byte(http.StatusText(code))
	}
	return b
}

// pageError is an error the resident sees as a page with its own message.
type pageError struct {
	code int
	key  string // catalogue key of the message
	msg  string // or the message itself, already translated
	err  error  // for the log
}

func (e *pageError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%d %s: %v", e.code, e.key, e.err)
	}
	return fmt.Sprintf("%d %s", e.code, e.key)
}

func (e *pageError) Unwrap() error { return e.err }

func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.httpError
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisablePrintStack: true, DisableStackAll: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.Error("portal handler panicked", "path", c.Request().URL.Path, "err", err, "stack", string(stack))
			return err
		}}))
	e.Use(s.securityHeaders)
	e.Use(middleware.BodyLimit(strconv.Itoa(maxForm)))
	get := []string{http.MethodGet, http.MethodHead}
	e.Match(get, "/", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/portal/") })
	e.Match(get, "/portal", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/portal/") })
	e.Match(get, "/portal/", s.landing)
	e.Match(get, "/portal/status", s.landing)
	e.Match(get, "/portal/info", s.info)
	e.POST("/portal/grant", s.grant)
	e.POST("/portal/sms", s.smsStart)
	e.POST("/portal/sms/verify", s.smsVerify)
	e.POST("/portal/voucher", s.voucher)
	e.POST("/portal/remembered", s.remembered)
	e.POST("/portal/spid", s.spidStart)
	e.GET("/portal/spid/done", s.spidDone) // not HEAD: it uses the grant
	e.POST("/portal/logout", s.logout)
	e.Match(get, "/portal/static/portal.css", func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age=3600")
		return c.Blob(http.StatusOK, "text/css; charset=utf-8", portalCSS)
	})
	if len(s.cfg.Logo) > 0 {
		e.Match(get, "/portal/logo", func(c echo.Context) error {
			c.Response().Header().Set("Cache-Control", "public, max-age=3600")
			return c.Blob(http.StatusOK, s.cfg.LogoType, s.cfg.Logo)
		})
	}
	e.Match(get, s.apiPath, s.api)
	return e
}

// csp allows nothing but the gateway's own style sheet and images. Forms
// post to the portal; form-action also lists http: and https: because
// browsers apply it to the redirect after the login form, which takes the
// resident on to the (signed) page they were opening.
const csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' http: https:; base-uri 'none'; frame-ancestors 'none'"

func (s *Server) securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", csp)
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		return next(c)
	}
}

// httpError renders every error as a page in the resident's language:
// never a stack trace, and a 5xx only for the portal's own failures.
func (s *Server) httpError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, key, msg := http.StatusInternalServerError, "", ""
	var pe *pageError
	var he *echo.HTTPError
	var bl errBadLang
	switch {
	case errors.As(err, &pe):
		code, key, msg = pe.code, pe.key, pe.msg
	case errors.As(err, &bl):
		code, key = http.StatusBadRequest, "error.lang"
	case errors.As(err, &he):
		code = he.Code
	}
	r := c.Request()
	if code >= 500 {
		s.log.Error("portal request", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	} else {
		s.log.Debug("portal request refused", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	l := acceptLang(r)
	if q := r.URL.Query().Get("lang"); langByCode(q) != nil {
		l = langByCode(q)
	}
	var page []byte
	if msg != "" {
		if page, err = s.pages.renderErrorMsg(l, code, msg); err != nil {
			page = s.pages.errorPage(l, code)
		}
	} else if key == "" {
		page = s.pages.errorPage(l, code)
	} else if page, err = s.pages.renderError(l, code, key); err != nil {
		page = s.pages.errorPage(l, code)
	}
	h := c.Response().Header()
	h.Set("Content-Type", textHTML)
	if code == http.StatusMethodNotAllowed && h.Get("Allow") == "" {
		h.Set("Allow", "GET, HEAD, POST")
	}
	c.Response().WriteHeader(code)
	if r.Method != http.MethodHead {
		c.Response().Write(page)
	}
}

func (s *Server) html(c echo.Context, status int, b []byte) error {
	return c.HTMLBlob(status, b)
}

// landing shows the login methods to a captive client and the status to
// an authorised one (the same URL works before and after login).
func (s *Server) landing(c echo.Context) error {
	r := c.Request()
	l, err := pickLang(r, c.QueryParam("lang"))
	if err != nil {
		return err
	}
	target, sig := s.checkedTarget(c.QueryParam("url"), c.QueryParam("sig"))
	ip := clientIP(r)
	if ss, ok := s.session(ip, s.now()); ok {
		return s.renderStatus(c, l, ip, ss, target, sig)
	}
	if v := c.QueryParam("voucher"); v != "" {
		// From a printed voucher's QR code: the code in its field, the
		// terms still to accept (not cached: the page carries the code).
		code := strings.ToUpper(v)
		if !validVoucher(code) {
			code = ""
		}
		return s.renderLandingMsg(c, http.StatusOK, l, ip, target, sig, "", landingExtra{Voucher: code})
	}
	return s.renderLanding(c, http.StatusOK, l, ip, target, sig, "")
}

// checkedTarget keeps the original URL only if the portal signed it and it
// is an http(s) URL: the landing page cannot be made to send a resident
// to a site of a third party's choosing.
func (s *Server) checkedTarget(target, sig string) (string, string) {
	if target == "" || !s.sign.validURL(target, sig) || safeTarget(target) == "" {
		return "", ""
	}
	return target, sig
}

func targetQuery(target, sig string) url.Values {
	if target == "" {
		return nil
	}
	return url.Values{"url": {target}, "sig": {sig}}
}

func (s *Server) renderLanding(c echo.Context, status int, l *Lang, ip netip.Addr, target, sig, msgKey string) error {
	token := s.sign.csrf(ip, s.now())
	if msgKey == "" {
		if b, ok := s.pages.cachedLanding(l, target); ok {
			return s.html(c, status, bytes.ReplaceAll(b, []byte(csrfMark), []byte(token)))
		}
	}
	b, err := s.pages.landing(l, target, sig, msgKey, csrfMark)
	if err != nil {
		return err
	}
	if msgKey == "" {
		s.pages.storeLanding(l, target, b)
	}
	return s.html(c, status, bytes.ReplaceAll(b, []byte(csrfMark), []byte(token)))
}

// csrfMark stands for the CSRF token in cached landing pages: the same
// length and alphabet as a token, so it needs no escaping anywhere and
// the page around it is exactly what the template makes with the token.
var csrfMark = strings.Repeat("Z", len(newSigner(make([]byte, KeySize)).csrf(netip.IPv4Unspecified(), time.Unix(0, 0))))

// landing renders the landing page with the given CSRF token.
func (ps *pageSet) landing(l *Lang, target, sig, msgKey, csrf string) ([]byte, error) {
	msg := ""
	if msgKey != "" {
		msg = l.cat.T(msgKey)
	}
	return ps.landingWith(l, target, sig, msg, csrf, landingExtra{})
}

// landingWith renders the landing page with a translated message and the
// resident's input kept. The methods follow the site's offer, in its
// order; the one-tap button of a remembered device comes first.
func (ps *pageSet) landingWith(l *Lang, target, sig, msg, csrf string, ex landingExtra) ([]byte, error) {
	s := ps.s
	q := targetQuery(target, sig)
	if ex.Voucher != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("voucher", ex.Voucher)
	}
	d := ps.base(l, "/portal/", q)
	d.Title = l.cat.T("landing.title")
	d.CSRF, d.Target, d.Sig, d.Message = csrf, target, sig, msg
	d.Phone, d.Voucher, d.PortalURL = ex.Phone, ex.Voucher, s.userPortalURL()
	o := s.currentOffer()
	if s.allows(methodRemembered) {
		d.Methods = append(d.Methods, method{Kind: methodRemembered})
	}
	for _, m := range o.Methods {
		if !s.allows(m) {
			continue
		}
		switch m {
		case MethodClick:
			d.Methods = append(d.Methods, method{Kind: "click"})
		case MethodSMS, MethodVoucher:
			d.Methods = append(d.Methods, method{Kind: m})
		case MethodSPID:
			if len(o.IdPs) > 0 {
				d.Methods = append(d.Methods, method{Kind: m})
				d.IdPs = o.IdPs
			}
		}
	}
	return ps.render("landing", d)
}

func (ps *pageSet) clearLandings() {
	ps.mu.Lock()
	clear(ps.landings)
	ps.mu.Unlock()
}

// The landing pages are cached per language and original URL (the
// signature follows from the URL): in a probe storm every iPhone arrives
// with the same captive.apple.com URL, and only its token differs.
const landingCacheMax = 512

func (ps *pageSet) cachedLanding(l *Lang, target string) ([]byte, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	b, ok := ps.landings[l.Code+"\x00"+target]
	return b, ok
}

func (ps *pageSet) storeLanding(l *Lang, target string, b []byte) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.landings) >= landingCacheMax {
		clear(ps.landings) // simple and bounded; it refills with what is asked now
	}
	ps.landings[l.Code+"\x00"+target] = b
}

func (s *Server) renderStatus(c echo.Context, l *Lang, ip netip.Addr, ss Session, target, sig string) error {
	now := s.now()
	d := s.pages.base(l, "/portal/status", targetQuery(target, sig))
	d.Title = l.cat.T("status.title")
	d.CSRF, d.Target, d.Sig = s.sign.csrf(ip, now), target, sig
	d.TimeLeft, d.DataLeft = l.cat.T("status.unlimited"), l.cat.T("status.unlimited")
	if !ss.Expires.IsZero() {
		d.TimeLeft = formatLeft(l.cat, ss.Expires.Sub(now))
	}
	if ss.QuotaBytes > 0 {
		d.DataLeft = formatBytes(l.cat, ss.QuotaBytes-min(ss.UsedBytes, ss.QuotaBytes))
	}
	b, err := s.pages.render("status", d)
	if err != nil {
		return err
	}
	return s.html(c, http.StatusOK, b)
}

func formatLeft(c Catalog, d time.Duration) string {
	switch {
	case d < time.Minute:
		return c.T("status.less_minute")
	case d < time.Hour:
		return c.T("status.minutes", int(d/time.Minute))
	default:
		return c.T("status.hours", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

func formatBytes(c Catalog, b uint64) string {
	const mb, gb = 1000 * 1000, 1000 * 1000 * 1000
	if b < 10*gb {
		return c.T("status.mb", b/mb)
	}
	return c.T("status.gb", b/gb, b%gb/(gb/10))
}

func (s *Server) info(c echo.Context) error {
	l, err := pickLang(c.Request(), c.QueryParam("lang"))
	if err != nil {
		return err
	}
	return s.html(c, http.StatusOK, s.pages.info[l.Code])
}

// form parses a POSTed form and checks its language and CSRF token.
func (s *Server) form(c echo.Context) (*Lang, url.Values, error) {
	r := c.Request()
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, echo.ErrStatusRequestEntityTooLarge) {
			return nil, nil, &pageError{code: http.StatusRequestEntityTooLarge, key: "error.413.text", err: err}
		}
		return nil, nil, &pageError{code: http.StatusBadRequest, key: "error.400.text", err: err}
	}
	f := r.PostForm
	l, err := pickLang(r, f.Get("lang"))
	if err != nil {
		return nil, nil, err
	}
	if err := s.sign.checkCSRF(f.Get("csrf"), clientIP(r), s.now()); err != nil {
		return l, nil, &pageError{code: http.StatusForbidden, key: "error.csrf", err: err}
	}
	return l, f, nil
}

// grant is the click-through login.
func (s *Server) grant(c echo.Context) error {
	l, f, err := s.form(c)
	if err != nil {
		return err
	}
	if !s.allows(MethodClick) {
		return &pageError{code: http.StatusForbidden, key: "error.disabled"}
	}
	r := c.Request()
	ip := clientIP(r)
	target, sig := s.checkedTarget(f.Get("url"), f.Get("sig"))
	if f.Get("accept") != "1" {
		return s.renderLanding(c, http.StatusBadRequest, l, ip, target, sig, "landing.must_accept")
	}
	if err := s.gate.ClickThrough(r.Context(), ip); err != nil {
		if errors.Is(err, ErrRefused) {
			// The reason (a kick, a used-up quota) is in the log, not
			// on the resident's screen.
			s.log.Info("click-through refused", "ip", ip, "err", err)
			return &pageError{code: http.StatusForbidden, key: "error.refused", err: err}
		}
		return &pageError{code: http.StatusServiceUnavailable, key: "error.503.text", err: err}
	}
	h := c.Response().Header()
	if target != "" {
		h.Set("Connection", "close")
		return c.Redirect(http.StatusSeeOther, target)
	}
	return c.Redirect(http.StatusSeeOther, "/portal/status?lang="+l.Code)
}

func (s *Server) logout(c echo.Context) error {
	l, _, err := s.form(c)
	if err != nil {
		return err
	}
	ip := clientIP(c.Request())
	if err := s.gate.Logout(c.Request().Context(), ip); err != nil {
		return &pageError{code: http.StatusServiceUnavailable, key: "error.503.text", err: err}
	}
	d := s.pages.base(l, "/portal/", nil)
	d.Title = l.cat.T("loggedout.title")
	b, err := s.pages.render("loggedout", d)
	if err != nil {
		return err
	}
	return s.html(c, http.StatusOK, b)
}

// apiState is the RFC 8908 Captive Portal API's JSON.
type apiState struct {
	Captive          bool    `json:"captive"`
	UserPortalURL    string  `json:"user-portal-url,omitempty"`
	VenueInfoURL     string  `json:"venue-info-url,omitempty"`
	CanExtendSession *bool   `json:"can-extend-session,omitempty"`
	SecondsRemaining *int64  `json:"seconds-remaining,omitempty"`
	BytesRemaining   *uint64 `json:"bytes-remaining,omitempty"`
}

// api answers RFC 8908 for the asking client, over HTTPS only (RFC 8908
// section 4: the API must be reached over TLS).
func (s *Server) api(c echo.Context) error {
	r := c.Request()
	if r.TLS == nil {
		return &pageError{code: http.StatusNotFound, key: "error.404.text", err: errors.New("the captive portal API is served over HTTPS")}
	}
	now := s.now()
	st := apiState{Captive: true, UserPortalURL: s.httpsBase + "/portal/", VenueInfoURL: s.httpsBase + "/portal/info"}
	if ss, ok := s.session(clientIP(r), now); ok {
		st.Captive = false
		no := false
		st.CanExtendSession = &no // click-through never extends a session
		if !ss.Expires.IsZero() {
			secs := int64(ss.Expires.Sub(now) / time.Second)
			st.SecondsRemaining = &secs
		}
		if ss.QuotaBytes > 0 {
			left := ss.QuotaBytes - min(ss.UsedBytes, ss.QuotaBytes)
			st.BytesRemaining = &left
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "private, no-store")
	return c.Blob(http.StatusOK, "application/captive+json", b)
}
