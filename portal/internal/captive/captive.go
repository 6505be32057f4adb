// Package captive is the portal's HTTP side on the gateway: what a
// resident's phone sees from joining the network to logging out.
//
// Every request that reaches it is classified by its Host header:
//
//   - an operating system's connectivity probe (captive.apple.com,
//     connectivitycheck.gstatic.com, ...; see Probes): before login a 302 to
//     the portal, which makes the phone open its login window; after login
//     the exact answer the OS expects, so it says "connected" and closes
//     the window;
//   - any other foreign host (the firewall DNATs captive clients' port 80
//     here): before login a 302 to the landing page carrying the original
//     URL, signed, so the resident continues there after login; after login
//     a 302 to the status page (the portal never proxies);
//   - the gateway's own address or the portal's host name: the pages
//     (landing, status, logout, terms) and, over HTTPS, the RFC 8908
//     Captive Portal API.
//
// No step needs JavaScript or cookies: the state between steps travels in
// signed URLs and form fields (HMAC, key in the state directory); every
// form carries a CSRF token bound to the client's address and a time.
// Pages are in Italian, English, German and French (catalog/), chosen by
// Accept-Language or the visible switch. The redirect and probe paths run
// without templates or echo's router, so a probe storm stays cheap.
package captive

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sync/errgroup"

	"github.com/civicwifi/civicwifi/internal/httpserve"
)

// ErrRefused is wrapped by a Gate's refusals (the site's rules say no, as
// opposed to a failure): the resident sees why.
var ErrRefused = errors.New("refused")

// Session is what the portal shows of a client's session.
type Session struct {
	Started    time.Time
	Expires    time.Time // zero: no time limit
	QuotaBytes uint64    // 0: no data limit
	UsedBytes  uint64    // down + up so far
}

// Gate is what the portal needs from the gateway.
type Gate interface {
	// Session returns the active session of ip, if any.
	Session(ip netip.Addr) (Session, bool)
	// ClickThrough opens a session for the client at ip with the site's
	// default limits. Refusals wrap ErrRefused.
	ClickThrough(ctx context.Context, ip netip.Addr) error
	// Logout ends the session of the client at ip; no session is not an
	// error.
	Logout(ctx context.Context, ip netip.Addr) error
}

// Config for the portal server.
type Config struct {
	GatewayIP netip.Addr
	HTTPPort  uint16 // pages, redirects and probes (captive port 80 is DNATed here)
	HTTPSPort uint16 // the same pages and the RFC 8908 API
	// APIURL is the RFC 8908 API's URL (DHCP option 114); its host is the
	// portal's name, and the pages' links use it. Empty: the gateway's
	// address at HTTPSPort, path /api/captive.
	APIURL string
	// TLSCert and TLSKey are PEM files; required for the HTTPS port
	// (without them only HTTP is served).
	TLSCert, TLSKey string

	SiteName     string
	Town         string
	Logo         []byte // shown in the header; nil for none
	LogoType     string // its media type
	ClickThrough bool

	// Login is the resident login (SMS, voucher, remembered device,
	// SPID) through the controller; nil: click-through only. The methods
	// offered follow SetOffer.
	Login Login

	// Conns, if set, is the tracker of the plain-HTTP connections whose
	// Cut the gateway calls when a session opens (NewConns); nil: the
	// server keeps its own, which nothing cuts.
	Conns *Conns

	// OnRequest, if set, is called for every request the per-client
	// rate limit lets through (the daemon's memory governor counts them:
	// a phone hammering the portal counts only what it is served).
	OnRequest func()

	Key  []byte // HMAC key (LoadKey)
	Rate int    // requests per second per client (bursts of twice that); 0: no limit
	Now  func() time.Time
}

// Server is the portal's HTTP server.
type Server struct {
	cfg    Config
	gate   Gate
	log    *slog.Logger
	e      *echo.Echo
	now    func() time.Time
	probes probeTable
	sign   *signer
	lim    *limiter

	ownHosts    []string // lower-case host names/addresses that mean "the portal"
	httpBase    string   // http://host:port
	httpsBase   string   // https://host:port
	apiPath     string
	landingPre  string   // http://host:port/portal/?url=
	statusLoc   []string // Location of the status page
	tooManyPage map[string][]byte
	cert        *certReloader
	pages       *pageSet
	bufs        sync.Pool
	offer       atomic.Pointer[Offer]
	conns       *Conns
}

// New builds the server. It fails on a bad API URL or key, and on a
// certificate that cannot be loaded.
func New(cfg Config, gate Gate, log *slog.Logger) (*Server, error) {
	if len(cfg.Key) < 16 {
		return nil, errors.New("portal: the HMAC key is missing (LoadKey)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg: cfg, gate: gate, log: log, now: cfg.Now,
		probes: newProbeTable(), sign: newSigner(cfg.Key), lim: newLimiter(cfg.Rate),
		bufs:  sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }},
		conns: cfg.Conns,
	}
	if s.conns == nil {
		s.conns = NewConns()
	}
	name := cfg.GatewayIP.String()
	httpsHost := net.JoinHostPort(name, strconv.Itoa(int(cfg.HTTPSPort)))
	s.apiPath = "/api/captive"
	if cfg.APIURL != "" {
		u, err := url.Parse(cfg.APIURL)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			return nil, fmt.Errorf("portal: API URL %q is not an https URL", cfg.APIURL)
		}
		name, httpsHost = strings.ToLower(u.Hostname()), strings.ToLower(u.Host)
		if u.Path != "" {
			s.apiPath = u.Path
		}
	}
	s.ownHosts = []string{cfg.GatewayIP.String()}
	if name != cfg.GatewayIP.String() {
		s.ownHosts = append(s.ownHosts, name)
	}
	s.httpBase = "http://" + net.JoinHostPort(name, strconv.Itoa(int(cfg.HTTPPort)))
	s.httpsBase = "https://" + httpsHost
	s.landingPre = s.httpBase + "/portal/?url="
	s.statusLoc = []string{s.httpBase + "/portal/status"}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		cr, err := newCertReloader(cfg.TLSCert, cfg.TLSKey, log)
		if err != nil {
			return nil, err
		}
		s.cert = cr
	}
	pages, err := newPageSet(s)
	if err != nil {
		return nil, err
	}
	s.pages = pages
	s.tooManyPage = map[string][]byte{}
	for _, l := range langs {
		s.tooManyPage[l.Code] = pages.errorPage(l, http.StatusTooManyRequests)
	}
	s.e = s.newEcho()
	return s, nil
}

// Handler is the whole portal as one handler (for tests and Run).
func (s *Server) Handler() http.Handler { return s }

// Run serves HTTP on addr:HTTPPort and, with a certificate, HTTPS on
// addr:HTTPSPort until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(s.cfg.GatewayIP, s.cfg.HTTPPort).String())
	if err != nil {
		return fmt.Errorf("listening for the portal: %w", err)
	}
	var tln net.Listener
	if s.cert != nil {
		tln, err = net.Listen("tcp", netip.AddrPortFrom(s.cfg.GatewayIP, s.cfg.HTTPSPort).String())
		if err != nil {
			ln.Close()
			return fmt.Errorf("listening for the portal's HTTPS: %w", err)
		}
	}
	return s.serve(ctx, ln, tln)
}

// serve serves plain HTTP on ln and HTTPS on tln (if not nil).
func (s *Server) serve(ctx context.Context, ln, tln net.Listener) error {
	g, ctx := errgroup.WithContext(ctx)
	track := func(srv *http.Server) { srv.ConnState = s.conns.track }
	g.Go(func() error { return httpserve.Serve(ctx, ln, s, track) })
	if tln != nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cert.get}
		g.Go(func() error { return httpserve.Serve(ctx, tls.NewListener(tln, tc), s) })
	}
	return g.Wait()
}

var (
	noStore    = []string{"no-store"}
	closeConn  = []string{"close"}
	zeroLength = []string{"0"}
	htmlType   = []string{textHTML}
	retryAfter = []string{"1"}
)

// ServeHTTP classifies the request (see the package doc). The probe and
// redirect paths allocate only the Location header.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	now := s.now()
	if !s.lim.allow(ip, now) {
		s.tooMany(w, r)
		return
	}
	if s.cfg.OnRequest != nil {
		s.cfg.OnRequest()
	}
	host := hostOnly(r.Host)
	if s.own(host) {
		s.e.ServeHTTP(w, r)
		return
	}
	_, authed := s.session(ip, now)
	probe := s.probes.lookup(host, r.URL.Path)
	if probe != nil && authed {
		probe.write(w)
		return
	}
	h := w.Header()
	h["Cache-Control"] = noStore
	h["Content-Length"] = zeroLength
	if probe == nil {
		// Close the connection: the next request the browser sends on
		// it (after login, to the same site) must go out, not come back
		// here through the DNAT that conntrack keeps for it. A probe's
		// connection may stay: after login the portal answers it.
		h["Connection"] = closeConn
	}
	if authed {
		// A logged-in client's request that still reaches the portal came
		// over a connection opened before login (conntrack keeps its
		// DNAT: a keep-alive or a browser's preconnected spare). Send the
		// browser to the same URL on a new connection (this one closes),
		// which goes out; the status page when the URL cannot be rebuilt.
		h["Location"] = []string{s.sameURL(host, r)}
	} else {
		h["Location"] = []string{s.landingLocation(host, r)}
	}
	w.WriteHeader(http.StatusFound)
}

// sameURL is the request's own http URL, or the status page when it cannot
// be carried safely.
func (s *Server) sameURL(host string, r *http.Request) string {
	uri := r.RequestURI
	if !strings.HasPrefix(uri, "/") {
		uri = r.URL.RequestURI()
	}
	if host == "" || !validHost(r.Host) || len(uri) > maxTarget || !strings.HasPrefix(uri, "/") || strings.HasPrefix(uri, "//") || !cleanURI(uri) {
		return s.statusLoc[0]
	}
	return "http://" + strings.ToLower(r.Host) + uri
}

// maxTarget bounds the original URL carried to the portal.
const maxTarget = 2048

// landingLocation is the landing page's URL carrying the original URL and
// its signature, or the bare landing page when the request's host or URL
// cannot be carried safely.
func (s *Server) landingLocation(host string, r *http.Request) string {
	bp := s.bufs.Get().(*[]byte)
	b := (*bp)[:0]
	uri := r.RequestURI
	if !strings.HasPrefix(uri, "/") {
		uri = r.URL.RequestURI() // absolute-form request line
	}
	if host == "" || !validHost(r.Host) || len(uri) > maxTarget || !strings.HasPrefix(uri, "/") || strings.HasPrefix(uri, "//") || !cleanURI(uri) {
		s.bufs.Put(bp)
		return s.landingPre[:len(s.landingPre)-len("?url=")]
	}
	b = append(b, "http://"...)
	b = append(b, strings.ToLower(r.Host)...)
	b = append(b, uri...)
	target := b
	n := len(target)
	b = append(b, s.landingPre...)
	b = appendQueryEscape(b, target[:n])
	b = append(b, "&sig="...)
	b = s.sign.appendURLSig(b, target[:n])
	loc := string(b[n:])
	*bp = b
	s.bufs.Put(bp)
	return loc
}

// cleanURI accepts a request target of visible ASCII with well-formed
// percent escapes: what a browser sends, and what parses back.
func cleanURI(u string) bool {
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
		if c == '%' && (i+2 >= len(u) || !isHex(u[i+1:i+3])) {
			return false
		}
	}
	return true
}

// appendQueryEscape is url.QueryEscape appending to dst.
func appendQueryEscape(dst, s []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			dst = append(dst, c)
		case c == ' ':
			dst = append(dst, '+')
		default:
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

func (s *Server) tooMany(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Content-Type"] = htmlType
	h["Cache-Control"] = noStore
	h["Retry-After"] = retryAfter
	h["Connection"] = closeConn
	w.WriteHeader(http.StatusTooManyRequests)
	if r.Method != http.MethodHead {
		w.Write(s.tooManyPage[quickLang(r).Code])
	}
}

// session is the gate's session of ip, unless it has run out (the gateway
// ends it at its next poll; the portal must not say "connected" meanwhile).
func (s *Server) session(ip netip.Addr, now time.Time) (Session, bool) {
	if !ip.IsValid() {
		return Session{}, false
	}
	ss, ok := s.gate.Session(ip)
	if !ok || (!ss.Expires.IsZero() && !now.Before(ss.Expires)) || (ss.QuotaBytes > 0 && ss.UsedBytes >= ss.QuotaBytes) {
		return Session{}, false
	}
	return ss, true
}

func (s *Server) own(host string) bool {
	for _, h := range s.ownHosts {
		if host == h {
			return true
		}
	}
	return false
}

func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// hostOnly is the Host header's host, lower-case, without port or IPv6
// brackets; "" if it is not a plausible host.
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		for j := i + 1; j < len(h); j++ {
			if h[j] < '0' || h[j] > '9' {
				return ""
			}
		}
		h = h[:i]
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// validHost accepts host[:port] where host is a DNS name or IPv4 address
// (letters, digits, dots, dashes) or a bracketed IPv6 literal: anything
// else is never carried into a URL.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	name, port := h, ""
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 2 {
			return false
		}
		if a, err := netip.ParseAddr(h[1:end]); err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		name, port = "", h[end+1:]
		if port != "" && port[0] != ':' {
			return false
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		name, port = h[:i], h[i:]
	}
	if port != "" {
		if len(port) < 2 || len(port) > 6 {
			return false
		}
		for i := 1; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
		}
	}
	if h[0] != '[' && (name == "" || name[0] == '.' || name[0] == '-') {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '.' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// safeTarget keeps only absolute http(s) URLs to a valid host, with no
// user info: no open redirect to other schemes or protocol-relative URLs.
func safeTarget(raw string) string {
	if raw == "" || len(raw) > maxTarget+300 {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Opaque != "" || !validHost(u.Host) {
		return ""
	}
	return u.String()
}
