// Package login is the controller's side of resident login (issue 5; the shared design is in the repository's
// notes and in controller/apiclient/login.go): authenticated gateways relay what a resident typed, this package
// checks it against the site's policy (SMS one-time code, voucher, remembered device) and answers with a Grant
// signed by the controller's key. Its routes are mounted on the gateway API (gwapi.Server.HandleAuthenticated), so
// every request is signed by an enrolled gateway and every answer by the controller.
//
// SPID lives in a sibling package and uses Grant, RecordConsent, Client and Answer from here, so that every
// method issues grants, remembers devices and records consent the same way.
package login

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/sms"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Server. Sites, Store, Pepper and SigningKey are required.
type Config struct {
	Sites      func() *sites.Config // the running sites.yaml
	Store      store.Store
	Pepper     pepper.Pepper
	SigningKey ed25519.PrivateKey // the controller's key: the one that signs gateway answers
	SMS        *sms.Service       // nil: SMS login answers method_not_allowed everywhere
	Vouchers   *voucher.Book      // nil: a Book on Store and Pepper with the default limits
	Log        *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Server serves the login endpoints.
type Server struct {
	cfg    Config
	log    *slog.Logger
	logins *prometheus.CounterVec
}

// Vouchers is the voucher book logins redeem from (the dashboard prints
// batches into the same one, with the same pepper).
func (s *Server) Vouchers() *voucher.Book { return s.cfg.Vouchers }

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Sites == nil || cfg.Store == nil || !cfg.Pepper.Valid() || len(cfg.SigningKey) != ed25519.PrivateKeySize {
		return nil, errors.New("login: Sites, Store, Pepper and SigningKey are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Vouchers == nil {
		cfg.Vouchers = &voucher.Book{Store: cfg.Store, Pepper: cfg.Pepper, Log: cfg.Log, Now: cfg.Now}
	}
	s := &Server{cfg: cfg, log: cfg.Log}
	s.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "civicwifi_controller_logins_total",
		Help: "Resident login requests by method (sms_start, sms, voucher, remembered, spid...) and result (granted, sent, or the refusal code).",
	}, []string{"method", "result"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.logins); err != nil {
			return nil, fmt.Errorf("login: registering metrics: %w", err)
		}
	}
	return s, nil
}

// Register mounts the SMS, voucher and remembered-device endpoints on gw.
func (s *Server) Register(gw *gwapi.Server) {
	gw.HandleAuthenticated("POST /v1/sites/{site}"+apiclient.PathSMSStart, s.smsStart)
	gw.HandleAuthenticated("POST /v1/sites/{site}"+apiclient.PathSMSVerify, s.smsVerify)
	gw.HandleAuthenticated("POST /v1/sites/{site}"+apiclient.PathVoucher, s.voucher)
	gw.HandleAuthenticated("POST /v1/sites/{site}"+apiclient.PathRemembered, s.remembered)
}

// Status is the HTTP status of a refusal code.
func Status(code string) int {
	switch code {
	case apiclient.CodeBadRequest:
		return http.StatusBadRequest
	case apiclient.CodeMethodNotAllowed, apiclient.CodeNoConsent, apiclient.CodeNotConnected:
		return http.StatusForbidden
	case apiclient.CodeNotRemembered:
		return http.StatusNotFound
	case apiclient.CodeRateLimited, apiclient.CodeBudgetExhausted, apiclient.CodeTooManyTries:
		return http.StatusTooManyRequests
	case apiclient.CodeProviderFailed, apiclient.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusUnprocessableEntity // the resident's input: bad_number, wrong_code, bad_voucher...
}

// Answer encodes v as a 200 answer, or err: a *apiclient.LoginError as its status and JSON body, anything else
// (the store failing) as 503 "unavailable", logged.
func (s *Server) Answer(from gwapi.Origin, method string, v any, err error) (int, []byte) {
	var le *apiclient.LoginError
	switch {
	case err == nil:
		body, err := json.Marshal(v)
		if err != nil {
			return s.Answer(from, method, nil, err)
		}
		result := "granted"
		if _, ok := v.(apiclient.Grant); !ok {
			result = "ok"
		}
		s.logins.WithLabelValues(method, result).Inc()
		return http.StatusOK, body
	case errors.As(err, &le):
	default:
		if !errors.Is(err, context.Canceled) {
			s.log.Error("serving login", "method", method, "site", from.Site, "gateway", from.Gateway, "err", err)
		}
		le = &apiclient.LoginError{Code: apiclient.CodeUnavailable, Message: "the controller cannot serve logins right now", RetryAfterSeconds: 5}
	}
	s.logins.WithLabelValues(method, le.Code).Inc()
	out := *le
	out.Status = 0
	body, _ := json.Marshal(out)
	return Status(le.Code), body
}

// Client is a verified client of a request: the site it is at, and its MAC and IP in canonical form.
type Client struct {
	Site *sites.Site
	MAC  string
	IP   string
}

// CheckClient finds from's site and checks that mac and ip are a client of that site: a unicast MAC, and an IP
// inside the site's client network. method, unless "", must be allowed by the site's policy.
func (s *Server) CheckClient(from gwapi.Origin, mac, ip string, method sites.Method) (Client, error) {
	cfg := s.cfg.Sites()
	var site *sites.Site
	for i := range cfg.Sites {
		if cfg.Sites[i].ID == from.Site {
			site = &cfg.Sites[i]
		}
	}
	if site == nil { // the gateway's key is enrolled but its site was removed since
		return Client{}, &apiclient.LoginError{Code: apiclient.CodeMethodNotAllowed, Message: "no such site"}
	}
	if method != "" && !site.Policy.Login.Allows(method) {
		return Client{}, &apiclient.LoginError{Code: apiclient.CodeMethodNotAllowed, Message: string(method) + " is not a login method of this site"}
	}
	c := Client{Site: site, MAC: apiclient.CanonicalMAC(mac), IP: apiclient.CanonicalIP(ip)}
	if c.MAC == "" || c.IP == "" {
		return Client{}, &apiclient.LoginError{Code: apiclient.CodeBadRequest, Message: "client_mac and client_ip must be a MAC and an IP address"}
	}
	hw, _ := net.ParseMAC(c.MAC) // canonical, so valid
	addr := netip.MustParseAddr(c.IP)
	if hw[0]&1 == 1 || c.MAC == "00:00:00:00:00:00" { // multicast or broadcast, or none
		return Client{}, &apiclient.LoginError{Code: apiclient.CodeNotConnected, Message: "not a client's MAC"}
	}
	if n := site.ClientNetwork.Subnet; n.IsValid() && (!n.Contains(addr) || addr == site.ClientNetwork.Gateway) {
		return Client{}, &apiclient.LoginError{Code: apiclient.CodeNotConnected, Message: "the address is not in the site's client network"}
	}
	return c, nil
}

// Limits override the site's policy in a grant (vouchers); zero fields keep the policy's.
type Limits struct {
	Session    time.Duration
	QuotaBytes uint64
}

// remembered is the store's record of a remembered device (key "remember:" + MAC), town-wide.
type rememberedDevice struct {
	User   string    `json:"user"`
	Method string    `json:"method"`
	Site   string    `json:"site"`
	At     time.Time `json:"at"`
}

// Grant issues a signed grant for user logged in with method at c's site through from's gateway. After an sms or
// spid login it also remembers the device town-wide for the policy's remember_device_days.
func (s *Server) Grant(ctx context.Context, from gwapi.Origin, c Client, user, method string, l Limits) (apiclient.Grant, error) {
	now := s.cfg.Now()
	p := c.Site.Policy
	g := apiclient.Grant{
		ID: apiclient.NewEventID(), Site: c.Site.ID, GatewayID: from.Gateway, ClientMAC: c.MAC, ClientIP: c.IP,
		User: user, Method: method, DownBPS: uint64(p.Down), UpBPS: uint64(p.Up),
		Session: apiclient.Duration(p.Session), Idle: apiclient.Duration(p.Idle), QuotaBytes: uint64(p.DailyQuota),
		IssuedAt: now.UTC(), ExpiresAt: now.UTC().Add(apiclient.GrantTTL),
	}
	if l.Session > 0 && (p.Session == 0 || l.Session < p.Session) {
		g.Session = apiclient.Duration(l.Session)
	}
	if l.QuotaBytes > 0 {
		g.QuotaBytes = l.QuotaBytes
	}
	if err := apiclient.SignGrant(&g, s.cfg.SigningKey); err != nil {
		return apiclient.Grant{}, err
	}
	if (method == apiclient.MethodSMS || method == apiclient.MethodSPID) && p.RememberDeviceDays > 0 {
		val, _ := json.Marshal(rememberedDevice{User: user, Method: method, Site: c.Site.ID, At: now.UTC()})
		if err := s.cfg.Store.Put(ctx, "remember:"+c.MAC, val, time.Duration(p.RememberDeviceDays)*24*time.Hour); err != nil {
			// The login stands; only the next one will need a code again.
			s.log.Warn("remembering device", "site", c.Site.ID, "err", err)
		}
	}
	s.log.Info("login granted", "site", c.Site.ID, "gateway", from.Gateway, "method", method, "user", user, "grant", g.ID)
	return g, nil
}

// RecordConsent records that user accepted the privacy notice and terms at site to log in with method.
func (s *Server) RecordConsent(ctx context.Context, site, user, method string) error {
	if err := s.cfg.Store.AppendAudit(ctx, store.AuditEntry{
		At: s.cfg.Now(), Actor: "resident:" + user, Action: "login.consent", Target: site, Detail: method,
	}); err != nil {
		return fmt.Errorf("recording consent: %w", err)
	}
	return nil
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return &apiclient.LoginError{Code: apiclient.CodeBadRequest, Message: "the request is not the expected JSON: " + err.Error()}
	}
	return nil
}

var errNoConsent = &apiclient.LoginError{Code: apiclient.CodeNoConsent, Message: "the resident has not accepted the privacy notice and terms"}

func (s *Server) smsStart(ctx context.Context, from gwapi.Origin, r *http.Request, body []byte) (int, []byte) {
	const m = "sms_start"
	var req apiclient.SMSStartRequest
	if err := decode(body, &req); err != nil {
		return s.Answer(from, m, nil, err)
	}
	if !req.Consent {
		return s.Answer(from, m, nil, errNoConsent)
	}
	c, err := s.CheckClient(from, req.ClientMAC, req.ClientIP, sites.SMS)
	if err == nil && s.cfg.SMS == nil {
		err = &apiclient.LoginError{Code: apiclient.CodeMethodNotAllowed, Message: "no SMS provider is configured"}
	}
	if err != nil {
		return s.Answer(from, m, nil, err)
	}
	st, err := s.cfg.SMS.Start(ctx, sms.StartRequest{
		Site: c.Site.ID, Gateway: from.Gateway, ClientMAC: c.MAC, Phone: req.Phone, Countries: c.Site.Policy.Login.SMS.Countries, Lang: req.Lang,
	})
	if err != nil {
		return s.Answer(from, m, nil, err)
	}
	if err := s.RecordConsent(ctx, c.Site.ID, st.User, apiclient.MethodSMS); err != nil {
		return s.Answer(from, m, nil, err)
	}
	return s.Answer(from, m, apiclient.SMSStartAnswer{
		RequestID: st.RequestID, ResendAfterS: int(st.ResendAfter / time.Second), ExpiresS: int(st.ExpiresIn / time.Second),
	}, nil)
}

func (s *Server) smsVerify(ctx context.Context, from gwapi.Origin, r *http.Request, body []byte) (int, []byte) {
	const m = apiclient.MethodSMS
	var req apiclient.SMSVerifyRequest
	if err := decode(body, &req); err != nil {
		return s.Answer(from, m, nil, err)
	}
	c, err := s.CheckClient(from, req.ClientMAC, req.ClientIP, sites.SMS)
	if err == nil && s.cfg.SMS == nil {
		err = &apiclient.LoginError{Code: apiclient.CodeMethodNotAllowed, Message: "no SMS provider is configured"}
	}
	if err != nil {
		return s.Answer(from, m, nil, err)
	}
	v, err := s.cfg.SMS.Verify(ctx, c.Site.ID, c.MAC, req.RequestID, req.Code)
	if err != nil {
		return s.Answer(from, m, nil, err)
	}
	g, err := s.Grant(ctx, from, c, v.User, apiclient.MethodSMS, Limits{})
	return s.Answer(from, m, g, err)
}

func (s *Server) voucher(ctx context.Context, from gwapi.Origin, r *http.Request, body []byte) (int, []byte) {
	const m = apiclient.MethodVoucher
	var req apiclient.VoucherRequest
	if err := decode(body, &req); err != nil {
		return s.Answer(from, m, nil, err)
	}
	if !req.Consent {
		return s.Answer(from, m, nil, errNoConsent)
	}
	c, err := s.CheckClient(from, req.ClientMAC, req.ClientIP, sites.Voucher)
	if err != nil {
		return s.Answer(from, m, nil, err)
	}
	v, err := s.cfg.Vouchers.Redeem(ctx, c.Site.ID, c.MAC, req.Code)
	if err != nil {
		return s.Answer(from, m, nil, err)
	}
	if err := s.RecordConsent(ctx, c.Site.ID, v.User, m); err != nil {
		return s.Answer(from, m, nil, err)
	}
	g, err := s.Grant(ctx, from, c, v.User, m, Limits{Session: v.Remaining, QuotaBytes: v.DataBytes})
	return s.Answer(from, m, g, err)
}

func (s *Server) remembered(ctx context.Context, from gwapi.Origin, r *http.Request, body []byte) (int, []byte) {
	const m = apiclient.MethodRemembered
	var req apiclient.RememberedRequest
	if err := decode(body, &req); err != nil {
		return s.Answer(from, m, nil, err)
	}
	c, err := s.CheckClient(from, req.ClientMAC, req.ClientIP, "")
	if err != nil {
		return s.Answer(from, m, nil, err)
	}
	notRemembered := &apiclient.LoginError{Code: apiclient.CodeNotRemembered, Message: "this device is not remembered here"}
	val, err := s.cfg.Store.Get(ctx, "remember:"+c.MAC)
	if errors.Is(err, store.ErrNotFound) {
		return s.Answer(from, m, nil, notRemembered)
	}
	if err != nil {
		return s.Answer(from, m, nil, fmt.Errorf("reading remembered device: %w", err))
	}
	var rd rememberedDevice
	if err := json.Unmarshal(val, &rd); err != nil {
		return s.Answer(from, m, nil, fmt.Errorf("decoding remembered device: %w", err))
	}
	// This site's policy decides: it must remember devices for long enough and accept the original method.
	p := c.Site.Policy
	if p.RememberDeviceDays <= 0 || s.cfg.Now().Sub(rd.At) > time.Duration(p.RememberDeviceDays)*24*time.Hour ||
		!p.Login.Allows(sites.Method(rd.Method)) {
		return s.Answer(from, m, nil, notRemembered)
	}
	g, err := s.Grant(ctx, from, c, rd.User, m, Limits{})
	return s.Answer(from, m, g, err)
}
