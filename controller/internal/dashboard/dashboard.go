// Package dashboard is the operators' web dashboard, served by the
// controller under /admin/: the town overview (sites on a map with their
// gateways' state, residents online, sessions today), a page per site (live
// sessions, access points, gateway health, kick and extend), charts of
// sessions, distinct users, data and login methods per hour, day and
// month, failing SMS deliveries and auth errors, a site's poster and the
// audit log. Pages are rendered on the server (html/template, charts and
// map as inline SVG) and need no JavaScript and nothing from a CDN.
//
// Who may see and do what is package auth's: every route but the login
// page needs a session, every form a CSRF token, and every action lands in
// the store's audit log.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/adminconf"
	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the dashboard is mounted.
const Prefix = adminconf.Prefix

// Commander queues a remote operation for a site's gateways and wakes
// their command long polls; *server.Server implements it (and audits the
// command with actor).
type Commander interface {
	EnqueueCommand(ctx context.Context, site string, c store.Command, actor string) ([]store.Command, error)
}

// Options configure a Dashboard. Store, Sites and Auth are required.
type Options struct {
	Store store.Store
	Sites func() *sites.Config // the running sites.yaml (server.Server.Config)
	Auth  *auth.Manager
	OIDC  *auth.OIDC // nil: no single sign-on button

	// Commands queues kicks and extensions; nil: they are queued in the
	// store directly (the gateways get them at their next poll) and
	// audited here.
	Commands Commander
	// Gatherer is the controller's metrics registry, read for gateway
	// refusals and SMS counters; nil: those panels say there is no source.
	Gatherer prometheus.Gatherer
	// Vouchers creates voucher batches; nil leaves the button out.
	Vouchers *voucher.Book

	GatewayWithin time.Duration  // a gateway is up with a heartbeat this recent; zero: 90 s (as the metrics)
	APWithin      time.Duration  // an AP is up with a check-in this recent; zero: 180 s (3 missed 60 s check-ins)
	Location      *time.Location // where days begin; nil: sites.yaml's town timezone, else UTC
	// TrustedProxies are the addresses of reverse proxies whose
	// X-Forwarded-For is believed for login rate limiting; none: the
	// connection's address is the client's.
	TrustedProxies []netip.Prefix
	Now            func() time.Time // nil: time.Now
	Log            *slog.Logger     // nil: discard
}

// Dashboard is the operators' dashboard.
type Dashboard struct {
	o    Options
	e    *echo.Echo
	tpl  map[string]*template.Template
	log  *slog.Logger
	cop  *http.CrossOriginProtection
	boot time.Time
}

// New builds the dashboard.
func New(o Options) (*Dashboard, error) {
	if o.Store == nil || o.Sites == nil || o.Auth == nil {
		return nil, errors.New("dashboard: Store, Sites and Auth are required")
	}
	if o.GatewayWithin <= 0 {
		o.GatewayWithin = 90 * time.Second
	}
	if o.APWithin <= 0 {
		o.APWithin = 180 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	d := &Dashboard{o: o, log: o.Log, cop: http.NewCrossOriginProtection(), boot: o.Now()}
	if err := d.parseTemplates(); err != nil {
		return nil, err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(discard{})
	if len(o.TrustedProxies) > 0 {
		var opts []echo.TrustOption
		for _, p := range o.TrustedProxies {
			ipn := netipToIPNet(p)
			opts = append(opts, echo.TrustIPRange(ipn))
		}
		e.IPExtractor = echo.ExtractIPFromXFFHeader(opts...)
	} else {
		e.IPExtractor = echo.ExtractIPDirect()
	}
	e.HTTPErrorHandler = d.errorPage
	e.Use(d.headers)

	g := e.Group(Prefix)
	static, _ := fs.Sub(staticFS, "static")
	g.GET("/static/*", echo.WrapHandler(http.StripPrefix(Prefix+"/static/", http.FileServer(http.FS(static)))))
	g.GET("/login", d.loginPage)
	g.POST("/login", d.login)
	g.GET("/oidc/start", d.oidcStart)
	g.GET("/oidc/callback", d.oidcCallback)
	g.POST("/logout", d.logout, d.need(""))
	g.GET("", d.home, d.need(""))
	g.GET("/", d.home, d.need(""))
	g.GET("/overview", d.overview, d.need(auth.SeeNetwork))
	g.GET("/sites/:site", d.sitePage, d.need(auth.SeeNetwork))
	g.POST("/sites/:site/kick", d.kick, d.need(auth.Kick))
	g.POST("/sites/:site/extend", d.extend, d.need(auth.Extend))
	g.GET("/sites/:site/poster", d.poster, d.need(auth.Poster))
	g.GET("/sites/:site/vouchers", d.voucherPage, d.need(auth.Vouchers))
	g.POST("/sites/:site/vouchers", d.createVouchers, d.need(auth.Vouchers))
	g.GET("/reports", d.reports, d.need(auth.Reports))
	g.GET("/reports/export", d.export, d.need(auth.Exports))
	g.GET("/health", d.health, d.need(auth.SeeNetwork))
	g.GET("/audit", d.auditPage, d.need(auth.AuditLog))
	d.e = e
	return d, nil
}

// Handler serves the dashboard; mount it at Prefix+"/" (it sees the whole path).
func (d *Dashboard) Handler() http.Handler { return d.e }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

const (
	sessionCookie = "__Host-cw-admin" // __Host-: Secure, Path=/, no Domain: no other host or path can set it
	loginCookie   = "__Host-cw-login" // the login form's CSRF token (double submit)
	ctxSession    = "session"
)

// headers: no caching of personal data, a CSP that allows nothing but our
// own styles and inline SVG, no framing, no referrers.
func (d *Dashboard) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if !strings.HasPrefix(c.Request().URL.Path, Prefix+"/static/") {
			h.Set("Cache-Control", "no-store")
		}
		return next(c)
	}
}

// need refuses a request without a session (GET: to the login page; other
// methods: 401), without permission p ("" any signed-in admin: 403), and a
// state-changing request whose CSRF token is not the session's or that a
// browser marks as cross-origin (403). Nothing is changed before all of it
// passed.
func (d *Dashboard) need(p auth.Perm) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			var token string
			if ck, err := r.Cookie(sessionCookie); err == nil {
				token = ck.Value
			}
			s, err := d.o.Auth.Lookup(r.Context(), token)
			if errors.Is(err, auth.ErrNoSession) {
				if token != "" {
					clearCookie(c, sessionCookie)
				}
				if r.Method == http.MethodGet {
					return c.Redirect(http.StatusSeeOther, Prefix+"/login?next="+urlQueryEscape(r.URL.RequestURI()))
				}
				return echo.NewHTTPError(http.StatusUnauthorized, "not signed in")
			}
			if err != nil {
				return err
			}
			c.Set(ctxSession, s)
			if p != "" && !s.Role.Can(p) {
				return echo.NewHTTPError(http.StatusForbidden, fmt.Sprintf("your role (%s) may not do this", s.Role))
			}
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				if err := d.cop.Check(r); err != nil {
					return echo.NewHTTPError(http.StatusForbidden, "cross-origin request refused")
				}
				tok := r.Header.Get("X-CSRF-Token")
				if tok == "" {
					tok = c.FormValue("csrf")
				}
				if !s.CheckCSRF(tok) {
					d.log.Warn("dashboard CSRF refusal", "user", s.User, "path", r.URL.Path)
					return echo.NewHTTPError(http.StatusForbidden, "the form's security token is missing or wrong: reload the page and try again")
				}
			}
			return next(c)
		}
	}
}

func sessionOf(c echo.Context) auth.Session {
	s, _ := c.Get(ctxSession).(auth.Session)
	return s
}

func clearCookie(c echo.Context, name string) {
	c.SetCookie(&http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func setCookie(c echo.Context, name, value string, maxAge time.Duration) {
	c.SetCookie(&http.Cookie{Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// audit records an action; a failure to record is logged, not shown.
func (d *Dashboard) audit(ctx context.Context, actor, action, target, detail string) {
	if err := d.o.Store.AppendAudit(ctx, store.AuditEntry{At: d.o.Now(), Actor: actor, Action: action, Target: target, Detail: detail}); err != nil {
		d.log.Error("writing the audit log", "action", action, "err", err)
	}
}

// home sends each role to its first page.
func (d *Dashboard) home(c echo.Context) error {
	s := sessionOf(c)
	if s.Role.Can(auth.SeeNetwork) {
		return c.Redirect(http.StatusSeeOther, Prefix+"/overview")
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/reports")
}

func (d *Dashboard) errorPage(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "something went wrong; the controller's log says what"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		if m, ok := he.Message.(string); ok {
			msg = m
		} else {
			msg = http.StatusText(code)
		}
	} else {
		d.log.Error("dashboard", "path", c.Request().URL.Path, "err", err)
	}
	s, _ := c.Get(ctxSession).(auth.Session)
	_ = d.render(c, code, "error", page{Title: http.StatusText(code), Session: s, Data: msg})
}

// Mount serves the dashboard under Prefix and everything else with api
// (the controller's gateway and AP API), on one listener.
func Mount(api http.Handler, d *Dashboard) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle(Prefix+"/", d.Handler())
	mux.Handle(Prefix, http.RedirectHandler(Prefix+"/", http.StatusSeeOther))
	return mux
}
