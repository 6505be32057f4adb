package apiclient

// Resident login (issue 5; /work/notes/login-protocol.md): the gateway relays what a resident typed on the portal
// page to the controller, which answers with a Grant signed by its Ed25519 key (the key that signs answers). The
// gateway checks the grant with VerifyGrant, remembers its ID until it expires (a grant is single use), and opens
// the session with the grant's limits.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// Login methods, as in Grant.Method and sites.yaml login.methods.
const (
	MethodSMS        = "sms"
	MethodSPID       = "spid"
	MethodVoucher    = "voucher"
	MethodRemembered = "remembered"
)

// GrantTTL is how long a grant is valid after it is issued.
const GrantTTL = 60 * time.Second

// grantLabel is the signature domain of grants: a grant signature can never be taken for a request or response one.
const grantLabel = "civicwifi-grant-v1\n"

// Grant is the controller's permission to open one session: for one site, one gateway, one client MAC and IP,
// single use, valid until ExpiresAt. User is a pseudonym (never a phone number or fiscal code). Compare grants
// with cmpopts.IgnoreUnexported(Grant{}): Client marks the grants it verified (see answer).
type Grant struct {
	ID         string    `json:"id"`
	Site       string    `json:"site"`
	GatewayID  string    `json:"gateway_id"`
	ClientMAC  string    `json:"client_mac"` // lower case, colon separated (net.HardwareAddr.String)
	ClientIP   string    `json:"client_ip"`  // netip.Addr.String form
	User       string    `json:"user"`
	Method     string    `json:"method"`
	DownBPS    uint64    `json:"down_bps,omitempty"` // 0: the site's default
	UpBPS      uint64    `json:"up_bps,omitempty"`
	Session    Duration  `json:"session,omitempty"` // longest session; 0: the site's default
	Idle       Duration  `json:"idle,omitempty"`
	QuotaBytes uint64    `json:"quota_bytes,omitempty"`
	IssuedAt   time.Time `json:"issued_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Signature  string    `json:"signature"` // base64 (standard, padded) Ed25519 over Message()

	// answer records the signed answer this grant came in (set by
	// Client only, never decoded): the key that verified the answer and
	// the grant's Message() as decoded from it. The answer's signature
	// covers its body, so VerifyGrant need not check the grant's own
	// signature again (one Ed25519 verify per login, ~3 % of the machine
	// at 1,000 logins/s) as long as the grant still says what the answer
	// said: a copy with any field changed is checked in full.
	answer *signedAnswer
}

// signedAnswer is what Client saw verified; see Grant.answer.
type signedAnswer struct {
	key ed25519.PublicKey
	msg []byte
}

// Message returns the exact bytes a grant's signature covers:
//
//	civicwifi-grant-v1
//	id:<ID>
//	site:<Site>
//	gateway:<GatewayID>
//	mac:<ClientMAC>
//	ip:<ClientIP>
//	user:<User>
//	method:<Method>
//	down_bps:<decimal>
//	up_bps:<decimal>
//	session_ns:<decimal>
//	idle_ns:<decimal>
//	quota_bytes:<decimal>
//	issued_at_ns:<Unix nanoseconds>
//	expires_at_ns:<Unix nanoseconds>
//
// every line ending in "\n". A field with a newline makes the grant unverifiable (VerifyGrant refuses it).
func (g Grant) Message() []byte {
	b := make([]byte, 0, 384)
	b = append(b, grantLabel...)
	for _, f := range [...]struct{ k, v string }{
		{"id", g.ID}, {"site", g.Site}, {"gateway", g.GatewayID}, {"mac", g.ClientMAC}, {"ip", g.ClientIP},
		{"user", g.User}, {"method", g.Method},
	} {
		b = append(b, f.k...)
		b = append(b, ':')
		b = append(b, f.v...)
		b = append(b, '\n')
	}
	for _, f := range [...]struct {
		k string
		v int64
	}{
		{"down_bps", int64(g.DownBPS)}, {"up_bps", int64(g.UpBPS)}, {"session_ns", int64(g.Session)},
		{"idle_ns", int64(g.Idle)}, {"quota_bytes", int64(g.QuotaBytes)},
		{"issued_at_ns", g.IssuedAt.UnixNano()}, {"expires_at_ns", g.ExpiresAt.UnixNano()},
	} {
		b = append(b, f.k...)
		b = append(b, ':')
		b = strconv.AppendInt(b, f.v, 10)
		b = append(b, '\n')
	}
	return b
}

func (g Grant) oneLine() bool {
	for _, f := range [...]string{g.ID, g.Site, g.GatewayID, g.ClientMAC, g.ClientIP, g.User, g.Method} {
		if !oneLine(f) {
			return false
		}
	}
	return true
}

// SignGrant sets g.Signature with the controller's key. It refuses a grant with an empty id, site, gateway, MAC,
// IP or method, or a field with a newline.
func SignGrant(g *Grant, key ed25519.PrivateKey) error {
	if g.ID == "" || g.Site == "" || g.GatewayID == "" || g.ClientMAC == "" || g.ClientIP == "" || g.Method == "" || !g.oneLine() {
		return fmt.Errorf("signing grant %q: %w", g.ID, ErrMalformed)
	}
	if len(key) != ed25519.PrivateKeySize {
		return errors.New("signing grant: no key")
	}
	g.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, g.Message()))
	return nil
}

// ErrGrant is wrapped by every refusal of VerifyGrant.
var ErrGrant = errors.New("grant refused")

// VerifyGrant checks that g is signed by controllerKey (or came in an answer that key signed, see Client) and is for this site, this gateway, this client MAC and IP
// (compared in canonical form), and valid at now (issued at most Skew in the future, not expired). It does not
// check single use: the gateway remembers used grant IDs until their ExpiresAt.
func VerifyGrant(g Grant, controllerKey ed25519.PublicKey, site, gatewayID, mac, ip string, now time.Time) error {
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("grant %q: %s: %w", printableID(g.ID), fmt.Sprintf(format, a...), ErrGrant)
	}
	if len(controllerKey) != ed25519.PublicKeySize {
		return refuse("no controller key")
	}
	if !g.oneLine() {
		return refuse("bad signature")
	}
	if a := g.answer; a == nil || !bytes.Equal(a.key, controllerKey) || !bytes.Equal(a.msg, g.Message()) {
		sig, err := base64.StdEncoding.DecodeString(g.Signature)
		if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(controllerKey, g.Message(), sig) {
			return refuse("bad signature")
		}
	}
	if g.ID == "" || g.Method == "" {
		return refuse("no id or method")
	}
	if g.Site != site {
		return refuse("for site %q, not %q", g.Site, site)
	}
	if g.GatewayID != gatewayID {
		return refuse("for gateway %q, not %q", g.GatewayID, gatewayID)
	}
	if CanonicalMAC(g.ClientMAC) != CanonicalMAC(mac) || CanonicalMAC(mac) == "" {
		return refuse("for MAC %q, not %q", g.ClientMAC, mac)
	}
	if CanonicalIP(g.ClientIP) != CanonicalIP(ip) || CanonicalIP(ip) == "" {
		return refuse("for IP %q, not %q", g.ClientIP, ip)
	}
	if g.IssuedAt.After(now.Add(Skew)) {
		return refuse("issued in the future (%s)", g.IssuedAt.Format(time.RFC3339))
	}
	if !now.Before(g.ExpiresAt) {
		return refuse("expired at %s", g.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

func printableID(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	q := strconv.QuoteToASCII(s)
	return q[1 : len(q)-1]
}

// CanonicalMAC returns a 48-bit MAC in lower case with colons, or "" if s is not one.
func CanonicalMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return ""
	}
	return hw.String()
}

// CanonicalIP returns the address in netip form (IPv4-mapped IPv6 unmapped), or "" if s is not one.
func CanonicalIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return ""
	}
	return a.Unmap().String()
}

// Login error codes (LoginError.Code). The gateway shows its own translated message for each.
const (
	CodeBadRequest        = "bad_request" // a malformed request (a bug in the gateway, not the resident's fault)
	CodeBadNumber         = "bad_number"
	CodeCountryNotAllowed = "country_not_allowed"
	CodeNotMobile         = "not_mobile"
	CodeRateLimited       = "rate_limited"
	CodeBudgetExhausted   = "budget_exhausted"
	CodeProviderFailed    = "provider_failed"
	CodeWrongCode         = "wrong_code"
	CodeExpired           = "expired"
	CodeTooManyTries      = "too_many_tries"
	CodeBadVoucher        = "bad_voucher"
	CodeVoucherUsed       = "voucher_used"
	CodeMethodNotAllowed  = "method_not_allowed"
	CodeNoConsent         = "no_consent"
	CodeNotConnected      = "not_connected"
	CodeNotRemembered     = "not_remembered"
	CodeUnavailable       = "unavailable" // the controller cannot serve logins right now (store down)
)

// LoginError is the JSON body of a 4xx (or 429, 503) answer to a login request. Status is the HTTP status it
// came with (not on the wire).
type LoginError struct {
	Code              string `json:"code"`
	Message           string `json:"message,omitempty"`       // English, for logs; never shown to residents
	RetryAfterSeconds int    `json:"retry_after_s,omitempty"` // rate_limited, budget_exhausted
	TriesLeft         int    `json:"tries_left,omitempty"`    // wrong_code
	Status            int    `json:"-"`
}

func (e *LoginError) Error() string {
	s := "login refused: " + e.Code
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// SMSStartRequest is the body of POST /v1/sites/{site}/login/sms/start.
type SMSStartRequest struct {
	ClientMAC string `json:"client_mac"`
	ClientIP  string `json:"client_ip"`
	Phone     string `json:"phone"` // as typed; national numbers are read as Italian
	Lang      string `json:"lang,omitempty"`
	Consent   bool   `json:"consent"`
}

// SMSStartAnswer answers SMSStartRequest: the code was sent.
type SMSStartAnswer struct {
	RequestID    string `json:"request_id"`
	ResendAfterS int    `json:"resend_after_s"` // the earliest another code can be asked for this number and MAC
	ExpiresS     int    `json:"expires_s"`      // the code's lifetime
}

// SMSVerifyRequest is the body of POST /v1/sites/{site}/login/sms/verify; the answer is a Grant.
type SMSVerifyRequest struct {
	RequestID string `json:"request_id"`
	ClientMAC string `json:"client_mac"`
	ClientIP  string `json:"client_ip"`
	Code      string `json:"code"`
}

// VoucherRequest is the body of POST /v1/sites/{site}/login/voucher; the answer is a Grant.
type VoucherRequest struct {
	ClientMAC string `json:"client_mac"`
	ClientIP  string `json:"client_ip"`
	Code      string `json:"code"` // as typed; case, spaces and dashes do not matter
	Consent   bool   `json:"consent"`
}

// RememberedRequest is the body of POST /v1/sites/{site}/login/remembered; the answer is a Grant, or 404 with
// code not_remembered.
type RememberedRequest struct {
	ClientMAC string `json:"client_mac"`
	ClientIP  string `json:"client_ip"`
}

// SPIDStartRequest is the body of POST /v1/sites/{site}/login/spid/start.
type SPIDStartRequest struct {
	ClientMAC   string `json:"client_mac"`
	ClientIP    string `json:"client_ip"`
	IdPEntityID string `json:"idp_entity_id"`
	Lang        string `json:"lang,omitempty"`
	ReturnURL   string `json:"return_url"` // http://<gateway portal>/portal/spid/done
	Consent     bool   `json:"consent"`
}

// SPIDStartAnswer answers SPIDStartRequest: where to send the browser.
type SPIDStartAnswer struct {
	RedirectURL string `json:"redirect_url"`
}

// SPIDGrantRequest is the body of POST /v1/sites/{site}/login/spid/grant; the answer is a Grant.
type SPIDGrantRequest struct {
	State     string `json:"state"`
	ClientMAC string `json:"client_mac"`
	ClientIP  string `json:"client_ip"`
}

// SPIDIdP is one identity provider of GET /v1/sites/{site}/login/spid/idps.
type SPIDIdP struct {
	EntityID string `json:"entity_id"`
	Name     string `json:"name"`
	LogoURL  string `json:"logo_url,omitempty"`
}

// Login paths, under /v1/sites/{site}.
const (
	PathSMSStart   = "/login/sms/start"
	PathSMSVerify  = "/login/sms/verify"
	PathVoucher    = "/login/voucher"
	PathRemembered = "/login/remembered"
	PathSPIDStart  = "/login/spid/start"
	PathSPIDGrant  = "/login/spid/grant"
	PathSPIDIdPs   = "/login/spid/idps"
)

// StartSMS asks the controller to send a one-time code to req.Phone.
func (c *Client) StartSMS(ctx context.Context, req SMSStartRequest) (SMSStartAnswer, error) {
	var a SMSStartAnswer
	err := c.login(ctx, http.MethodPost, PathSMSStart, req, &a)
	return a, err
}

// VerifySMS checks the code the resident typed and returns a grant. The caller checks it with VerifyGrant.
func (c *Client) VerifySMS(ctx context.Context, req SMSVerifyRequest) (Grant, error) {
	var g Grant
	err := c.login(ctx, http.MethodPost, PathSMSVerify, req, &g)
	return g, err
}

// RedeemVoucher redeems a voucher code and returns a grant.
func (c *Client) RedeemVoucher(ctx context.Context, req VoucherRequest) (Grant, error) {
	var g Grant
	err := c.login(ctx, http.MethodPost, PathVoucher, req, &g)
	return g, err
}

// Remembered returns a grant for a device remembered after an earlier login in the town, or a *LoginError with
// code not_remembered.
func (c *Client) Remembered(ctx context.Context, req RememberedRequest) (Grant, error) {
	var g Grant
	err := c.login(ctx, http.MethodPost, PathRemembered, req, &g)
	return g, err
}

// StartSPID returns where to send the resident's browser for a SPID login.
func (c *Client) StartSPID(ctx context.Context, req SPIDStartRequest) (SPIDStartAnswer, error) {
	var a SPIDStartAnswer
	err := c.login(ctx, http.MethodPost, PathSPIDStart, req, &a)
	return a, err
}

// SPIDGrant returns the grant for a completed SPID login.
func (c *Client) SPIDGrant(ctx context.Context, req SPIDGrantRequest) (Grant, error) {
	var g Grant
	err := c.login(ctx, http.MethodPost, PathSPIDGrant, req, &g)
	return g, err
}

// SPIDIdPs lists the identity providers for the landing page.
func (c *Client) SPIDIdPs(ctx context.Context) ([]SPIDIdP, error) {
	var l []SPIDIdP
	err := c.login(ctx, http.MethodGet, PathSPIDIdPs, nil, &l)
	return l, err
}

// LoginTimeout bounds a login request whose context has no deadline: the resident is waiting. The controller
// answers provider_failed well before it (its SMS retries are bounded by 15 s).
const LoginTimeout = 25 * time.Second

// login sends one signed login request and verifies the signed answer: 200 decodes into out; a signed 4xx, 429 or
// 503 with a LoginError body returns *LoginError; anything else a *StatusError or ErrBadSignature.
func (c *Client) login(ctx context.Context, method, path string, in, out any) error {
	what := method + " " + path
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, LoginTimeout)
		defer cancel()
	}
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s: encoding: %w", what, err)
		}
	}
	u := *c.base
	u.Path = c.base.Path + "/v1/sites/" + c.cfg.Site + path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	nonce := NewNonce()
	ts := c.cfg.Now().Unix()
	msg, err := SignedRequest{
		Gateway: c.cfg.GatewayID, Method: method, Target: req.URL.RequestURI(),
		Timestamp: ts, Nonce: nonce, BodySHA256: sha256.Sum256(body),
	}.AppendMessage(make([]byte, 0, 256))
	if err != nil {
		return fmt.Errorf("%s: signing: %w", what, err)
	}
	req.Header.Set(HeaderGateway, c.cfg.GatewayID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderSignature, EncodeSignature(ed25519.Sign(c.cfg.Key, msg)))
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return fmt.Errorf("%s: reading answer: %w", what, err)
	}
	if len(data) > MaxResponse {
		return fmt.Errorf("%s: answer longer than %d bytes", what, MaxResponse)
	}
	signed := c.verify(answer{status: resp.StatusCode, etag: resp.Header.Get("ETag"), body: data, nonce: nonce, sig: resp.Header.Get(HeaderSignature)}) == nil
	switch {
	case resp.StatusCode == http.StatusOK && signed:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s: decoding answer: %w", what, err)
		}
		// Only a grant answered on its own is marked (see Grant.answer);
		// one inside another answer type is checked in full.
		if g, ok := out.(*Grant); ok {
			g.answer = &signedAnswer{key: c.cfg.ControllerKey, msg: g.Message()}
		}
		return nil
	case resp.StatusCode == http.StatusOK:
		return fmt.Errorf("%s: %w", what, ErrBadSignature)
	case signed && (resp.StatusCode/100 == 4 || resp.StatusCode == http.StatusServiceUnavailable):
		var le LoginError
		if json.Unmarshal(data, &le) == nil && le.Code != "" {
			le.Status = resp.StatusCode
			return &le
		}
	}
	return fmt.Errorf("%s: %w", what, &StatusError{Code: resp.StatusCode, Body: string(data[:min(len(data), 200)])})
}
