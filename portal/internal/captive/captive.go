// Package captive is the portal's HTTP side on the gateway. For now it
// answers what the firewall redirects there: every pre-auth HTTP request gets
// a 302 to the portal page, which offers a plain click-through grant when the
// site allows it. The full resident-facing portal (OS probes, RFC 8908,
// languages, login methods) builds on this server.
package captive

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/civicwifi/civicwifi/internal/httpserve"
)

// ErrRefused is wrapped by a Gate's refusals (the site's rules say no, as
// opposed to a failure): the resident sees why.
var ErrRefused = errors.New("refused")

// Gate is what the portal needs from the gateway.
type Gate interface {
	// Authorised reports whether ip has an active session.
	Authorised(ip netip.Addr) bool
	// ClickThrough opens a session for the client at ip.
	ClickThrough(ctx context.Context, ip netip.Addr) error
}

// Config for the portal server.
type Config struct {
	Listen       netip.AddrPort // GatewayIP:PortalHTTPPort
	SiteName     string
	ClickThrough bool
}

// Server is the portal's HTTP server.
type Server struct {
	cfg  Config
	gate Gate
	log  *slog.Logger
	e    *echo.Echo
}

// New builds the server.
func New(cfg Config, gate Gate, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, gate: gate, log: log, e: echo.New()}
	s.e.HideBanner, s.e.HidePort = true, true
	s.e.Use(middleware.BodyLimit("16K"))
	s.e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Content-Security-Policy", "default-src 'self'; form-action 'self'; frame-ancestors 'none'")
			return next(c)
		}
	})
	s.e.GET("/portal/", s.landing)
	s.e.POST("/portal/grant", s.grant)
	s.e.Any("/*", s.redirect)
	return s
}

// Handler exposes the HTTP handler (for tests).
func (s *Server) Handler() http.Handler { return s.e }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen.String())
	if err != nil {
		return fmt.Errorf("listening for the portal: %w", err)
	}
	return httpserve.Serve(ctx, ln, s.e)
}

func (s *Server) portalURL(orig string) string {
	u := url.URL{Scheme: "http", Host: s.cfg.Listen.String(), Path: "/portal/"}
	if orig != "" {
		u.RawQuery = url.Values{"url": {orig}}.Encode()
	}
	return u.String()
}

// redirect answers every request the firewall sent here: 302 to the portal
// page, carrying the URL the resident wanted.
func (s *Server) redirect(c echo.Context) error {
	r := c.Request()
	orig := ""
	if host := r.Host; host != "" && validHost(host) {
		orig = (&url.URL{Scheme: "http", Host: host, Path: r.URL.Path, RawQuery: r.URL.RawQuery}).String()
	}
	// Close the connection: after login the phone's next request on it
	// would still be NATed to the portal (conntrack keeps the DNAT).
	c.Response().Header().Set("Connection", "close")
	return c.Redirect(http.StatusFound, s.portalURL(orig))
}

func validHost(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r == '.' || r == '-' || r == ':' || r == '[' || r == ']' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// safeTarget keeps only http(s) URLs: no open redirect to other schemes.
func safeTarget(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !validHost(u.Host) {
		return ""
	}
	return u.String()
}

var page = template.Must(template.New("p").Parse(`<!doctype html>
<html lang="it"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Site}} – Wi-Fi</title></head>
<body><main><h1>{{.Site}}</h1>
{{if .Authorised}}<p>Sei connesso. Buona navigazione!</p>{{if .Target}}<p><a href="{{.Target}}">Continua</a></p>{{end}}
{{else if .ClickThrough}}<form method="post" action="/portal/grant">
<input type="hidden" name="url" value="{{.Target}}">
<p>Accedendo accetti le condizioni d'uso del servizio.</p>
<button type="submit">Connettiti</button></form>
{{else}}<p>Per navigare serve l'accesso: chiedi al personale.</p>{{end}}
</main></body></html>`))

func (s *Server) clientIP(c echo.Context) netip.Addr {
	ap, err := netip.ParseAddrPort(c.Request().RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (s *Server) landing(c echo.Context) error {
	ip := s.clientIP(c)
	return s.render(c, http.StatusOK, ip, safeTarget(c.QueryParam("url")))
}

func (s *Server) render(c echo.Context, status int, ip netip.Addr, target string) error {
	c.Response().Header().Set("Content-Type", "text/html; charset=utf-8")
	c.Response().WriteHeader(status)
	return page.Execute(c.Response(), map[string]any{
		"Site": s.cfg.SiteName, "Authorised": ip.IsValid() && s.gate.Authorised(ip),
		"ClickThrough": s.cfg.ClickThrough, "Target": target,
	})
}

func (s *Server) grant(c echo.Context) error {
	ip := s.clientIP(c)
	target := safeTarget(c.FormValue("url"))
	if !s.cfg.ClickThrough {
		return c.String(http.StatusForbidden, "click-through is not enabled on this site\n")
	}
	if err := s.gate.ClickThrough(c.Request().Context(), ip); err != nil {
		s.log.Warn("click-through grant", "ip", ip, "err", err)
		if errors.Is(err, ErrRefused) {
			// The reason (a kick, a used-up quota) is in the log, not
			// on the resident's screen.
			return c.String(http.StatusForbidden, "Accesso non consentito ora: chiedi al personale.\n")
		}
		return c.String(http.StatusServiceUnavailable, "Non è stato possibile connettersi, riprova tra poco.\n")
	}
	if target != "" {
		c.Response().Header().Set("Connection", "close")
		return c.Redirect(http.StatusSeeOther, target)
	}
	return s.render(c, http.StatusOK, ip, "")
}
