package captive

import (
	"context"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// Login is the resident login through the controller (SMS code, voucher,
// remembered device, SPID); portal/internal/login implements it. Each
// method that logs in opens the session itself when the controller's grant
// checks out; its errors are *LoginError for what the resident can fix or
// must be told, anything else is a failure (the controller unreachable).
type Login interface {
	StartSMS(ctx context.Context, ip netip.Addr, phone, lang string) (SMSSent, error)
	VerifySMS(ctx context.Context, ip netip.Addr, requestID, code string) error
	Voucher(ctx context.Context, ip netip.Addr, code string) error
	Remembered(ctx context.Context, ip netip.Addr) error
	// StartSPID returns the URL the browser goes to (the controller's SP);
	// returnURL is where the controller sends it back with a state.
	StartSPID(ctx context.Context, ip netip.Addr, idp, lang, returnURL string) (string, error)
	FinishSPID(ctx context.Context, ip netip.Addr, state string) error
}

// SMSSent is the controller's answer to a code request.
type SMSSent struct {
	RequestID   string
	ResendAfter time.Duration // a new code may be asked for after this
	Expires     time.Duration // the code's validity
}

// IdP is one SPID identity provider offered on the landing page.
type IdP struct{ EntityID, Name, LogoURL string }

// LoginError is a refusal the resident sees, translated by its Code (the
// controller's codes, see controller/apiclient, plus the gateway's own:
// grant_refused for a grant that does not check out, gateway_refused when
// the site's rules say no: closed, full, the device's daily data used up).
type LoginError struct {
	Code       string
	RetryAfter time.Duration
	TriesLeft  int
	Err        error // for the log
}

func (e *LoginError) Error() string {
	if e.Err != nil {
		return "login refused: " + e.Code + ": " + e.Err.Error()
	}
	return "login refused: " + e.Code
}

func (e *LoginError) Unwrap() error { return e.Err }

// LoginCodes are the refusal codes the pages translate; any other code
// shows a generic message.
var LoginCodes = []string{
	"bad_number", "country_not_allowed", "not_mobile", "rate_limited", "budget_exhausted", "provider_failed",
	"wrong_code", "expired", "too_many_tries", "bad_voucher", "voucher_used", "method_not_allowed", "no_consent",
	"not_connected", "not_remembered", "grant_refused", "gateway_refused", "unavailable", "busy",
}

// Method names of the site policy's login_methods.
const (
	MethodClick   = "click-through"
	MethodSMS     = "sms"
	MethodVoucher = "voucher"
	MethodSPID    = "spid"
)

// Offer is what the landing page offers: the site policy's methods in its
// order, whether devices are remembered, the SPID identity providers.
type Offer struct {
	Methods        []string
	RememberDevice bool
	IdPs           []IdP
}

// SetOffer replaces the login methods offered (the site policy changed).
// Until it is called, the config's ClickThrough decides.
func (s *Server) SetOffer(o Offer) {
	o.Methods = slices.Clone(o.Methods)
	o.IdPs = slices.Clone(o.IdPs)
	s.offer.Store(&o)
	s.pages.clearLandings()
}

func (s *Server) currentOffer() *Offer {
	if o := s.offer.Load(); o != nil {
		return o
	}
	if s.cfg.ClickThrough {
		return &Offer{Methods: []string{MethodClick}}
	}
	return &Offer{}
}

// allows reports whether the current offer has method m; resident methods
// need a Login as well.
func (s *Server) allows(m string) bool {
	if m != MethodClick && s.cfg.Login == nil {
		return false
	}
	o := s.currentOffer()
	if m == methodRemembered {
		return o.RememberDevice && o.residentLogin()
	}
	return slices.Contains(o.Methods, m)
}

// methodRemembered is the one-tap login of a remembered device: offered
// when the site remembers devices and has a method that remembers one.
const methodRemembered = "remembered"

func (o *Offer) residentLogin() bool {
	return slices.Contains(o.Methods, MethodSMS) || slices.Contains(o.Methods, MethodSPID) || slices.Contains(o.Methods, MethodVoucher)
}

// loginStatus maps a refusal code to the page's HTTP status.
func loginStatus(code string) int {
	switch code {
	case "rate_limited", "budget_exhausted", "too_many_tries":
		return http.StatusTooManyRequests
	case "provider_failed", "unavailable", "busy":
		return http.StatusServiceUnavailable
	case "method_not_allowed", "not_connected", "grant_refused", "gateway_refused", "voucher_used":
		return http.StatusForbidden
	default:
		return http.StatusBadRequest
	}
}

// loginMessage is the translated message of a refusal.
func loginMessage(l *Lang, le *LoginError) string {
	key := "login.err.other"
	if slices.Contains(LoginCodes, le.Code) {
		key = "login.err." + le.Code
	}
	msg := l.cat.T(key)
	if le.RetryAfter > 0 {
		msg += " " + l.cat.T("login.retry_after", int((le.RetryAfter+time.Second-1)/time.Second))
	}
	if le.Code == "wrong_code" && le.TriesLeft > 0 {
		msg += " " + l.cat.T("login.tries_left", le.TriesLeft)
	}
	return msg
}

// loginFailure turns a Login error into what the resident sees: a
// refusal's status and message, or 503 when the controller is unreachable.
func (s *Server) loginFailure(l *Lang, ip netip.Addr, what string, err error) (int, string) {
	var le *LoginError
	if errors.As(err, &le) {
		s.log.Info("resident login refused", "step", what, "ip", ip, "code", le.Code, "err", le.Err)
		return loginStatus(le.Code), loginMessage(l, le)
	}
	s.log.Warn("resident login failed", "step", what, "ip", ip, "err", err)
	return http.StatusServiceUnavailable, l.cat.T("login.err.unavailable")
}

// loggedIn sends the resident on: to the page they were opening, else to
// the status page.
func (s *Server) loggedIn(c echo.Context, l *Lang, target string) error {
	if target != "" {
		c.Response().Header().Set("Connection", "close")
		return c.Redirect(http.StatusSeeOther, target)
	}
	return c.Redirect(http.StatusSeeOther, "/portal/status?lang="+l.Code)
}

// loginForm is form plus the checks every resident-login form shares: the
// method is offered, and the terms were accepted where consent is asked.
func (s *Server) loginForm(c echo.Context, method string, consent bool) (*Lang, url.Values, string, string, error) {
	l, f, err := s.form(c)
	if err != nil {
		return nil, nil, "", "", err
	}
	if !s.allows(method) {
		return nil, nil, "", "", &pageError{code: http.StatusForbidden, key: "login.err.method_not_allowed"}
	}
	target, sig := s.checkedTarget(f.Get("url"), f.Get("sig"))
	if consent && f.Get("accept") != "1" {
		return l, f, target, sig, errMustAccept
	}
	return l, f, target, sig, nil
}

var errMustAccept = errors.New("terms not accepted")

// smsStart asks the controller to text a code (also the resend button).
func (s *Server) smsStart(c echo.Context) error {
	l, f, target, sig, err := s.loginForm(c, MethodSMS, true)
	ip := clientIP(c.Request())
	if errors.Is(err, errMustAccept) {
		return s.renderLandingMsg(c, http.StatusBadRequest, l, ip, target, sig, l.cat.T("landing.must_accept"), landingExtra{Phone: f.Get("phone")})
	} else if err != nil {
		return err
	}
	phone := strings.TrimSpace(f.Get("phone"))
	if phone == "" || len(phone) > 32 || strings.ContainsFunc(phone, func(r rune) bool { return !strings.ContainsRune("+0123456789 -.()/", r) }) {
		return s.renderLandingMsg(c, http.StatusBadRequest, l, ip, target, sig, loginMessage(l, &LoginError{Code: "bad_number"}), landingExtra{Phone: phone})
	}
	now := s.now()
	if f.Has("state") { // a resend: not before the cool-down the first answer gave
		st, err := s.checkSMSState(f, ip, now)
		if err != nil {
			return &pageError{code: http.StatusForbidden, key: "error.csrf", err: err}
		}
		if st.phone != phone {
			return &pageError{code: http.StatusBadRequest, key: "error.400.text", err: errors.New("resend for another number")}
		}
		if wait := st.resendAt.Sub(now); wait > 0 {
			msg := l.cat.T("sms.resend_wait", int((wait+time.Second-1)/time.Second))
			return s.renderCode(c, http.StatusTooManyRequests, l, ip, target, sig, st, msg)
		}
	}
	sent, err := s.cfg.Login.StartSMS(c.Request().Context(), ip, phone, l.Code)
	if err != nil {
		status, msg := s.loginFailure(l, ip, "sms start", err)
		return s.renderLandingMsg(c, status, l, ip, target, sig, msg, landingExtra{Phone: phone})
	}
	st := smsState{rid: sent.RequestID, phone: phone, resendAt: now.Add(sent.ResendAfter), expires: now.Add(sent.Expires)}
	if sent.Expires <= 0 {
		st.expires = now.Add(10 * time.Minute)
	}
	return s.renderCode(c, http.StatusOK, l, ip, target, sig, st, "")
}

// smsVerify checks the code with the controller and opens the session.
func (s *Server) smsVerify(c echo.Context) error {
	l, f, target, sig, err := s.loginForm(c, MethodSMS, false)
	if err != nil {
		return err
	}
	ip := clientIP(c.Request())
	st, err := s.checkSMSState(f, ip, s.now())
	if err != nil {
		return &pageError{code: http.StatusForbidden, key: "error.csrf", err: err}
	}
	code := strings.TrimSpace(f.Get("code"))
	if len(code) != 6 || strings.ContainsFunc(code, func(r rune) bool { return r < '0' || r > '9' }) {
		return s.renderCode(c, http.StatusBadRequest, l, ip, target, sig, st, l.cat.T("sms.code_format"))
	}
	if !s.now().Before(st.expires) {
		return s.renderCode(c, http.StatusBadRequest, l, ip, target, sig, st, loginMessage(l, &LoginError{Code: "expired"}))
	}
	if err := s.cfg.Login.VerifySMS(c.Request().Context(), ip, st.rid, code); err != nil {
		status, msg := s.loginFailure(l, ip, "sms verify", err)
		var le *LoginError
		if errors.As(err, &le) && (le.Code == "expired" || le.Code == "too_many_tries") {
			// This code cannot be used any more: back to the number.
			return s.renderLandingMsg(c, status, l, ip, target, sig, msg, landingExtra{Phone: st.phone})
		}
		return s.renderCode(c, status, l, ip, target, sig, st, msg)
	}
	return s.loggedIn(c, l, target)
}

// voucher redeems a printed voucher's code.
func (s *Server) voucher(c echo.Context) error {
	l, f, target, sig, err := s.loginForm(c, MethodVoucher, true)
	ip := clientIP(c.Request())
	code := strings.ToUpper(strings.Join(strings.Fields(f.Get("voucher")), ""))
	if errors.Is(err, errMustAccept) {
		return s.renderLandingMsg(c, http.StatusBadRequest, l, ip, target, sig, l.cat.T("landing.must_accept"), landingExtra{Voucher: code})
	} else if err != nil {
		return err
	}
	if !validVoucher(code) {
		return s.renderLandingMsg(c, http.StatusBadRequest, l, ip, target, sig, loginMessage(l, &LoginError{Code: "bad_voucher"}), landingExtra{})
	}
	if err := s.cfg.Login.Voucher(c.Request().Context(), ip, code); err != nil {
		status, msg := s.loginFailure(l, ip, "voucher", err)
		return s.renderLandingMsg(c, status, l, ip, target, sig, msg, landingExtra{Voucher: code})
	}
	return s.loggedIn(c, l, target)
}

// validVoucher accepts what a voucher code can be: letters, digits and
// dashes, 4 to 32 of them.
func validVoucher(code string) bool {
	if len(code) < 4 || len(code) > 32 {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// remembered is the one-tap login of a device the controller remembers.
func (s *Server) remembered(c echo.Context) error {
	l, _, target, sig, err := s.loginForm(c, methodRemembered, false)
	if err != nil {
		return err
	}
	ip := clientIP(c.Request())
	if err := s.cfg.Login.Remembered(c.Request().Context(), ip); err != nil {
		status, msg := s.loginFailure(l, ip, "remembered", err)
		return s.renderLandingMsg(c, status, l, ip, target, sig, msg, landingExtra{})
	}
	return s.loggedIn(c, l, target)
}

// spidStart sends the browser to the controller's SPID service provider.
func (s *Server) spidStart(c echo.Context) error {
	l, f, target, sig, err := s.loginForm(c, MethodSPID, true)
	ip := clientIP(c.Request())
	if errors.Is(err, errMustAccept) {
		return s.renderLandingMsg(c, http.StatusBadRequest, l, ip, target, sig, l.cat.T("landing.must_accept"), landingExtra{})
	} else if err != nil {
		return err
	}
	idp := f.Get("idp")
	if !slices.ContainsFunc(s.currentOffer().IdPs, func(p IdP) bool { return p.EntityID == idp }) {
		return s.renderLandingMsg(c, http.StatusBadRequest, l, ip, target, sig, l.cat.T("spid.pick_idp"), landingExtra{})
	}
	ret := url.Values{"lang": {l.Code}}
	if target != "" {
		ret.Set("url", target)
		ret.Set("sig", sig)
	}
	returnURL := s.httpBase + "/portal/spid/done?" + ret.Encode()
	to, err := s.cfg.Login.StartSPID(c.Request().Context(), ip, idp, l.Code, returnURL)
	if err != nil {
		status, msg := s.loginFailure(l, ip, "spid start", err)
		return s.renderLandingMsg(c, status, l, ip, target, sig, msg, landingExtra{})
	}
	if u, perr := url.Parse(to); perr != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return &pageError{code: http.StatusServiceUnavailable, key: "login.err.unavailable", err: fmt.Errorf("the controller's SPID URL %q is not an http(s) URL", to)}
	}
	return c.Redirect(http.StatusSeeOther, to)
}

// spidDone is where the controller sends the browser back after the IdP:
// the gateway fetches the grant for the state and opens the session.
func (s *Server) spidDone(c echo.Context) error {
	l, err := pickLang(c.Request(), c.QueryParam("lang"))
	if err != nil {
		return err
	}
	if !s.allows(MethodSPID) {
		return &pageError{code: http.StatusForbidden, key: "login.err.method_not_allowed"}
	}
	state := c.QueryParam("state")
	if state == "" || len(state) > 2048 {
		return &pageError{code: http.StatusBadRequest, key: "error.400.text", err: errors.New("spid done without a state")}
	}
	target, _ := s.checkedTarget(c.QueryParam("url"), c.QueryParam("sig"))
	ip := clientIP(c.Request())
	if err := s.cfg.Login.FinishSPID(c.Request().Context(), ip, state); err != nil {
		status, msg := s.loginFailure(l, ip, "spid done", err)
		return &pageError{code: status, msg: msg, err: err}
	}
	return s.loggedIn(c, l, target)
}

// smsState travels in the code page's hidden fields, signed for the
// client's address: the request id, the number (for the resend button),
// when a resend is allowed and when the code expires.
type smsState struct {
	rid, phone        string
	resendAt, expires time.Time
}

const domainSMS = 's'

func (s *Server) smsTag(ip netip.Addr, st smsState) string {
	var ts [16]byte
	binary.BigEndian.PutUint64(ts[:8], uint64(st.resendAt.Unix()))
	binary.BigEndian.PutUint64(ts[8:], uint64(st.expires.Unix()))
	ipb, _ := ip.MarshalBinary()
	data := append(append(append(ipb, ts[:]...), st.rid...), append([]byte{0}, st.phone...)...)
	return b64.EncodeToString(s.sign.tag(nil, domainSMS, data, nil))
}

func (s *Server) checkSMSState(f url.Values, ip netip.Addr, now time.Time) (smsState, error) {
	rs, err1 := strconv.ParseInt(f.Get("resend_at"), 10, 64)
	ex, err2 := strconv.ParseInt(f.Get("expires"), 10, 64)
	st := smsState{rid: f.Get("rid"), phone: f.Get("phone"), resendAt: time.Unix(rs, 0), expires: time.Unix(ex, 0)}
	if err1 != nil || err2 != nil || st.rid == "" || len(st.rid) > 128 {
		return st, errors.New("sms state: malformed")
	}
	if !hmac.Equal([]byte(s.smsTag(ip, st)), []byte(f.Get("state"))) {
		return st, errors.New("sms state: not made for this client")
	}
	if now.Sub(st.expires) > time.Hour {
		return st, errors.New("sms state: too old")
	}
	return st, nil
}

// renderCode shows the code page: the code input, and the resend button.
func (s *Server) renderCode(c echo.Context, status int, l *Lang, ip netip.Addr, target, sig string, st smsState, msg string) error {
	now := s.now()
	d := s.pages.base(l, "/portal/", targetQuery(target, sig))
	d.Title = l.cat.T("sms.code_title")
	d.CSRF, d.Target, d.Sig, d.Message = s.sign.csrf(ip, now), target, sig, msg
	d.SMS = &smsFields{RID: st.rid, Phone: st.phone, ResendAt: st.resendAt.Unix(), Expires: st.expires.Unix(), State: s.smsTag(ip, st),
		Masked: maskPhone(st.phone)}
	if wait := st.resendAt.Sub(now); wait > 0 {
		d.SMS.ResendWait = int((wait + time.Second - 1) / time.Second)
	}
	back := url.Values{"lang": {l.Code}}
	if target != "" {
		back.Set("url", target)
		back.Set("sig", sig)
	}
	d.SMS.Back = "/portal/?" + back.Encode() // another number, still going on to the original URL
	b, err := s.pages.render("code", d)
	if err != nil {
		return err
	}
	return s.html(c, status, b)
}

// maskPhone shows only the last three digits of the number on the page.
func maskPhone(p string) string {
	digits := 0
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] >= '0' && p[i] <= '9' {
			digits++
			if digits == 3 {
				return strings.ReplaceAll(p[i:], " ", "")
			}
		}
	}
	return "…"
}

// smsFields are the code page's hidden state.
type smsFields struct {
	RID, Phone, State string
	Masked            string
	ResendAt, Expires int64
	ResendWait        int    // seconds until a new code may be asked for
	Back              string // the landing page, keeping the language and the original URL
}

// landingExtra keeps what the resident typed when the landing page comes
// back with a message.
type landingExtra struct {
	Phone, Voucher string
}

// renderLandingMsg renders the landing page (uncached) with an already
// translated message and the resident's input kept.
func (s *Server) renderLandingMsg(c echo.Context, status int, l *Lang, ip netip.Addr, target, sig, msg string, ex landingExtra) error {
	if l == nil {
		l = langs[0]
	}
	b, err := s.pages.landingWith(l, target, sig, msg, s.sign.csrf(ip, s.now()), ex)
	if err != nil {
		return err
	}
	return s.html(c, status, b)
}

// userPortalURL is the RFC 8908 user-portal-url: the same landing page
// over HTTPS, which a phone's real browser opens.
func (s *Server) userPortalURL() string { return s.httpsBase + "/portal/" }
