// Package login is the gateway's side of resident login (SMS code,
// voucher, remembered device, SPID): it relays what the resident typed on
// the portal page to the controller over the signed gateway protocol
// (controller/apiclient), checks the grant the controller answers with
// (Ed25519 signature, site, gateway, client MAC and IP, expiry, and single
// use: the gateway's store keeps a grant's id, written in the same
// transaction as the session it opens, until the grant expires), and opens
// the session with the grant's limits and the resident's pseudonym.
//
// The gateway never holds a provider secret and never keeps or logs a phone
// number: it passes the number through to the controller and forgets it.
// Service implements captive.Login.
package login

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/captive"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/gateway"
)

// Controller is what the gateway asks the controller (*apiclient.Client).
// Refusals are *apiclient.LoginError.
type Controller interface {
	StartSMS(ctx context.Context, req apiclient.SMSStartRequest) (apiclient.SMSStartAnswer, error)
	VerifySMS(ctx context.Context, req apiclient.SMSVerifyRequest) (apiclient.Grant, error)
	RedeemVoucher(ctx context.Context, req apiclient.VoucherRequest) (apiclient.Grant, error)
	Remembered(ctx context.Context, req apiclient.RememberedRequest) (apiclient.Grant, error)
	StartSPID(ctx context.Context, req apiclient.SPIDStartRequest) (apiclient.SPIDStartAnswer, error)
	SPIDGrant(ctx context.Context, req apiclient.SPIDGrantRequest) (apiclient.Grant, error)
	SPIDIdPs(ctx context.Context) ([]apiclient.SPIDIdP, error)
}

// Gateway is what login needs from the gateway (*gateway.Gateway).
type Gateway interface {
	// Identify returns the MAC of the client the gateway sees at ip.
	Identify(ip netip.Addr) (net.HardwareAddr, error)
	// Open opens (or updates) the client's session.
	Open(ctx context.Context, req gateway.Grant) (*gateway.Session, error)
	// Limits are the site's defaults, for what a grant leaves at zero.
	Limits() config.Limits
	// GrantSpent reports whether a grant id is recorded as spent (by an
	// Open whose Grant.Spends carried it, or by SpendGrant).
	GrantSpent(id string) (bool, error)
	// SpendGrant records grant ids as spent without opening a session.
	SpendGrant(...gateway.Spent) error
}

// Config of the service.
type Config struct {
	Site          string
	GatewayID     string
	ControllerKey ed25519.PublicKey // the controller's answer- and grant-signing key
	// StateDir is where older versions kept grants.db (the used grant ids,
	// now in the gateway's store); New moves the unexpired ids into the
	// store and removes the file.
	StateDir string
	Now      func() time.Time
	// MaxLogins bounds the logins (code checks, vouchers, remembered
	// devices, SPID grants) worked on at once; one more is refused at once
	// as "busy", its code still valid. 0 means DefaultMaxLogins.
	MaxLogins int
}

// DefaultMaxLogins: at 1,000 logins a second a login takes ~20 ms here, so
// ~20 are in flight; 128 waiting means the gateway has fallen ~0.15 s
// behind. Past that, a queue only grows: each waiting login holds a
// goroutine and buffers, and the garbage collector takes the CPU
// (measured before load shedding, under the then-fixed 24 MiB memory
// limit: at 1,000/s offered the completion rate fell to 163-522/s).
// Refusing early keeps the others fast.
const DefaultMaxLogins = 128

// ErrBusy is a login refused because MaxLogins are in flight.
var ErrBusy = errors.New("too many logins in flight")

// Service relays logins and opens sessions for valid grants.
type Service struct {
	cfg Config
	ctl Controller
	gw  Gateway
	log *slog.Logger
	now func() time.Time
	// mu guards claimed: grant ids being spent now (zero time), so that a
	// grant presented twice at once is used once, and ids that could not
	// be recorded (until they expire).
	mu      sync.Mutex
	claimed map[string]time.Time
	// slots holds a token per login in flight (MaxLogins).
	slots chan struct{}

	idpMu   sync.Mutex
	idps    []captive.IdP
	idpsAt  time.Time
	idpsTTL time.Duration
}

// New makes the service.
func New(cfg Config, ctl Controller, gw Gateway, log *slog.Logger) (*Service, error) {
	if len(cfg.ControllerKey) != ed25519.PublicKeySize {
		return nil, errors.New("resident login: no controller key")
	}
	if cfg.Site == "" || cfg.GatewayID == "" {
		return nil, errors.New("resident login: site and gateway id are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxLogins <= 0 {
		cfg.MaxLogins = DefaultMaxLogins
	}
	if cfg.StateDir != "" {
		if err := carryOverGrants(filepath.Join(cfg.StateDir, "grants.db"), gw, cfg.Now(), log); err != nil {
			return nil, fmt.Errorf("resident login: %w", err)
		}
	}
	return &Service{cfg: cfg, ctl: ctl, gw: gw, log: log, now: cfg.Now, idpsTTL: 10 * time.Minute, claimed: map[string]time.Time{}, slots: make(chan struct{}, cfg.MaxLogins)}, nil
}

// carryOverGrants moves the unexpired ids of an older version's grants.db
// (bucket "grants": id -> expiry in Unix ns) into the gateway's store and
// removes the file. A file that cannot be read is left in place and
// reported: the ids in it expire within a minute anyway.
func carryOverGrants(path string, gw Gateway, now time.Time, log *slog.Logger) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var spent []gateway.Spent
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return fmt.Errorf("opening %s: another portal daemon holds it", path)
		}
		log.Warn("reading the old grants.db; its ids are not carried over", "path", path, "err", err)
		return nil
	}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("grants"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				if exp := time.Unix(0, int64(binary.BigEndian.Uint64(v))); exp.After(now) {
					spent = append(spent, gateway.Spent{ID: string(k), Expires: exp})
				}
			}
			return nil
		})
	})
	db.Close()
	if err != nil {
		log.Warn("reading the old grants.db; its ids are not carried over", "path", path, "err", err)
		return nil
	}
	if len(spent) > 0 {
		if err := gw.SpendGrant(spent...); err != nil {
			return fmt.Errorf("carrying the spent grant ids of %s over: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil {
		log.Warn("removing the old grants.db", "path", path, "err", err)
		return nil
	}
	log.Info("spent grant ids moved from grants.db into the session store", "path", path, "unexpired", len(spent))
	return nil
}

// client is the MAC and IP the controller is told about.
func (s *Service) client(ip netip.Addr) (string, string, error) {
	mac, err := s.gw.Identify(ip)
	if err != nil {
		return "", "", &captive.LoginError{Code: apiclient.CodeNotConnected, Err: err}
	}
	return mac.String(), ip.String(), nil
}

// StartSMS asks the controller to text a code to phone.
func (s *Service) StartSMS(ctx context.Context, ip netip.Addr, phone, lang string) (captive.SMSSent, error) {
	mac, cip, err := s.client(ip)
	if err != nil {
		return captive.SMSSent{}, err
	}
	a, err := s.ctl.StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac, ClientIP: cip, Phone: phone, Lang: lang, Consent: true})
	if err != nil {
		return captive.SMSSent{}, refusal(err)
	}
	s.log.Info("sms code requested", "mac", mac, "ip", cip, "request", a.RequestID)
	return captive.SMSSent{RequestID: a.RequestID, ResendAfter: time.Duration(a.ResendAfterS) * time.Second, Expires: time.Duration(a.ExpiresS) * time.Second}, nil
}

// VerifySMS checks the code and opens the session.
func (s *Service) VerifySMS(ctx context.Context, ip netip.Addr, requestID, code string) error {
	return s.grantFor(ctx, ip, "sms", func(mac, cip string) (apiclient.Grant, error) {
		return s.ctl.VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: requestID, ClientMAC: mac, ClientIP: cip, Code: code})
	})
}

// Voucher redeems a voucher and opens the session.
func (s *Service) Voucher(ctx context.Context, ip netip.Addr, code string) error {
	return s.grantFor(ctx, ip, "voucher", func(mac, cip string) (apiclient.Grant, error) {
		return s.ctl.RedeemVoucher(ctx, apiclient.VoucherRequest{ClientMAC: mac, ClientIP: cip, Code: code, Consent: true})
	})
}

// Remembered lets a device the controller remembers in.
func (s *Service) Remembered(ctx context.Context, ip netip.Addr) error {
	return s.grantFor(ctx, ip, "remembered", func(mac, cip string) (apiclient.Grant, error) {
		return s.ctl.Remembered(ctx, apiclient.RememberedRequest{ClientMAC: mac, ClientIP: cip})
	})
}

// StartSPID returns the controller's SP URL to send the browser to.
func (s *Service) StartSPID(ctx context.Context, ip netip.Addr, idp, lang, returnURL string) (string, error) {
	mac, cip, err := s.client(ip)
	if err != nil {
		return "", err
	}
	a, err := s.ctl.StartSPID(ctx, apiclient.SPIDStartRequest{ClientMAC: mac, ClientIP: cip, IdPEntityID: idp, Lang: lang, ReturnURL: returnURL, Consent: true})
	if err != nil {
		return "", refusal(err)
	}
	s.log.Info("spid login started", "mac", mac, "ip", cip, "idp", idp)
	return a.RedirectURL, nil
}

// FinishSPID fetches the grant of a completed SPID login and opens the
// session.
func (s *Service) FinishSPID(ctx context.Context, ip netip.Addr, state string) error {
	return s.grantFor(ctx, ip, "spid", func(mac, cip string) (apiclient.Grant, error) {
		return s.ctl.SPIDGrant(ctx, apiclient.SPIDGrantRequest{State: state, ClientMAC: mac, ClientIP: cip})
	})
}

// IdPs are the SPID identity providers for the landing page, asked of the
// controller at most every ten minutes (the last good list is kept while
// it cannot be reached).
func (s *Service) IdPs(ctx context.Context) ([]captive.IdP, error) {
	s.idpMu.Lock()
	defer s.idpMu.Unlock()
	if s.idps != nil && s.now().Sub(s.idpsAt) < s.idpsTTL {
		return s.idps, nil
	}
	l, err := s.ctl.SPIDIdPs(ctx)
	if err != nil {
		if s.idps != nil {
			return s.idps, nil
		}
		return nil, fmt.Errorf("listing the SPID identity providers: %w", err)
	}
	out := make([]captive.IdP, 0, len(l))
	for _, p := range l {
		if p.EntityID != "" && p.Name != "" {
			out = append(out, captive.IdP{EntityID: p.EntityID, Name: p.Name, LogoURL: p.LogoURL})
		}
	}
	s.idps, s.idpsAt = out, s.now()
	return out, nil
}

// grantFor asks the controller for a grant (ask gets the client's MAC and
// IP), checks it and opens the session.
func (s *Service) grantFor(ctx context.Context, ip netip.Addr, what string, ask func(mac, ip string) (apiclient.Grant, error)) error {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.log.Warn("login refused: too many in flight", "method", what, "ip", ip, "in_flight", cap(s.slots))
		return &captive.LoginError{Code: "busy", RetryAfter: 3 * time.Second, Err: ErrBusy}
	}
	mac, cip, err := s.client(ip)
	if err != nil {
		return err
	}
	g, err := ask(mac, cip)
	if err != nil {
		return refusal(err)
	}
	return s.Use(ctx, g, mac, cip)
}

// ErrReplay is a grant whose id was used before.
var ErrReplay = errors.New("grant already used")

// Use checks a grant for the client (mac, ip), marks its id used and opens
// the session. Refusals are *captive.LoginError with code grant_refused
// wrapping apiclient.ErrGrant or ErrReplay.
func (s *Service) Use(ctx context.Context, g apiclient.Grant, mac, ip string) error {
	now := s.now()
	if err := apiclient.VerifyGrant(g, s.cfg.ControllerKey, s.cfg.Site, s.cfg.GatewayID, mac, ip, now); err != nil {
		s.log.Warn("grant refused", "mac", mac, "ip", ip, "err", err)
		return &captive.LoginError{Code: "grant_refused", Err: err}
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("opening session: %w", err)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("opening session: %w", err)
	}
	if err := s.claim(g); err != nil {
		s.log.Warn("grant refused", "mac", mac, "ip", ip, "grant", g.ID, "err", err)
		if errors.Is(err, ErrReplay) {
			return &captive.LoginError{Code: "grant_refused", Err: err}
		}
		return err
	}
	// The id is written with the session, in the same transaction. If the
	// session does not open, the id is still spent: written alone, or, if
	// that fails too, refused in memory until the grant expires.
	spent := gateway.Spent{ID: g.ID, Expires: g.ExpiresAt}
	_, err = s.gw.Open(ctx, gateway.Grant{MAC: hw, IP: addr, Method: g.Method, User: g.User, Limits: s.limits(g), Spends: spent})
	stored := true
	if err != nil {
		if serr := s.gw.SpendGrant(spent); serr != nil {
			s.log.Error("recording a spent grant; it stays refused in memory until it expires", "grant", g.ID, "err", serr)
			stored = false
		}
	}
	s.settle(g, stored)
	if err != nil {
		if errors.Is(err, gateway.ErrRefused) {
			// The site's rules: closed, full, the day's data used up.
			return &captive.LoginError{Code: "gateway_refused", Err: err}
		}
		return fmt.Errorf("opening session for grant %s: %w", g.ID, err)
	}
	// The gateway's "session opened" line names the method, the user's
	// pseudonym and the grant: one line per login, not two.
	return nil
}

// limits are the grant's limits, the site's default for each left at zero.
func (s *Service) limits(g apiclient.Grant) config.Limits {
	l := s.gw.Limits()
	if g.DownBPS > 0 {
		l.Down = quantity.Rate(g.DownBPS)
	}
	if g.UpBPS > 0 {
		l.Up = quantity.Rate(g.UpBPS)
	}
	if g.Session > 0 {
		l.Session = time.Duration(g.Session)
	}
	if g.Idle > 0 {
		l.Idle = time.Duration(g.Idle)
	}
	if g.QuotaBytes > 0 {
		l.Quota = quantity.Bytes(g.QuotaBytes)
	}
	return l
}

// claim reserves g's id, refusing one already spent or being spent by a
// concurrent login. Every claim is followed by settle.
func (s *Service) claim(g apiclient.Grant) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, until := range s.claimed {
		if !until.IsZero() && now.After(until) {
			delete(s.claimed, id) // an id that could not be written, expired
		}
	}
	_, seen := s.claimed[g.ID]
	if !seen {
		var err error
		if seen, err = s.gw.GrantSpent(g.ID); err != nil {
			return fmt.Errorf("reading spent grants: %w", err)
		}
	}
	if seen {
		return fmt.Errorf("grant %q: %w", g.ID, ErrReplay)
	}
	s.claimed[g.ID] = time.Time{}
	return nil
}

// settle ends a claim: the id is in the store (stored) or stays refused
// in memory until its grant expires.
func (s *Service) settle(g apiclient.Grant, stored bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stored {
		delete(s.claimed, g.ID)
	} else {
		s.claimed[g.ID] = g.ExpiresAt
	}
}

// refusal turns the controller's refusal into the portal's; other errors
// (the controller unreachable, a bad signature) stay failures.
func refusal(err error) error {
	var le *apiclient.LoginError
	if !errors.As(err, &le) {
		return err
	}
	return &captive.LoginError{Code: le.Code, RetryAfter: time.Duration(le.RetryAfterSeconds) * time.Second, TriesLeft: le.TriesLeft, Err: err}
}

// SPIDGarden are the domain names a captive browser must reach during a
// SPID login: the controller's (its SP endpoints and ACS) and each
// identity provider's (the host of its entity ID, which is its SSO host
// for the AgID registry's IdPs). They go into the dnsmasq walled garden
// (each with its subdomains) while the site offers SPID; addresses are
// left out (a garden by address is walled_garden.networks in the config),
// and reported in skipped.
func SPIDGarden(controllerURL string, idps []captive.IdP) (domains, skipped []string) {
	seen := map[string]bool{}
	add := func(raw string) {
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return
		}
		h := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if seen[h] {
			return
		}
		seen[h] = true
		if _, err := netip.ParseAddr(h); err == nil {
			skipped = append(skipped, h)
			return
		}
		domains = append(domains, h)
	}
	add(controllerURL)
	for _, p := range idps {
		add(p.EntityID)
	}
	return domains, skipped
}
