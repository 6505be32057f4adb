package dashboard

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html/template"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/labstack/echo/v4"
)

// page is what every template gets.
type page struct {
	Title   string
	Town    string
	Session auth.Session
	Nav     string // the current section
	Now     time.Time
	Data    any
}

// Can is for templates: {{if .Can "kick"}}.
func (p page) Can(perm string) bool { return p.Session.Role.Can(auth.Perm(perm)) }

var pages = []string{"login", "overview", "site", "reports", "audit", "health", "error", "vouchers"}

func (d *Dashboard) parseTemplates() error {
	funcs := template.FuncMap{
		"bytes":    humanBytes,
		"inc":      func(i int) int { return i + 1 },
		"dur":      humanDur,
		"clock":    func(t time.Time) string { return t.In(d.loc()).Format("02/01 15:04:05") },
		"datetime": func(t time.Time) string { return t.In(d.loc()).Format("2006-01-02 15:04:05 MST") },
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return humanDur(d.o.Now().Sub(t)) + " ago"
		},
		"short": func(s string) string {
			if len(s) > 12 {
				return s[:12] + "…"
			}
			return s
		},
	}
	d.tpl = map[string]*template.Template{}
	for _, name := range pages {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("dashboard: parsing templates: %w", err)
		}
		d.tpl[name] = t
	}
	t, err := template.New("poster").Funcs(funcs).ParseFS(templateFS, "templates/poster.html")
	if err != nil {
		return fmt.Errorf("dashboard: parsing templates: %w", err)
	}
	d.tpl["poster"] = t
	return nil
}

func (d *Dashboard) render(c echo.Context, code int, name string, p page) error {
	if p.Town == "" {
		if cfg := d.o.Sites(); cfg != nil {
			p.Town = cfg.Town.Name
		}
	}
	p.Now = d.o.Now()
	var b bytes.Buffer
	entry := "page"
	if name == "poster" {
		entry = "poster"
	}
	if err := d.tpl[name].ExecuteTemplate(&b, entry, p); err != nil {
		return fmt.Errorf("rendering %s: %w", name, err)
	}
	return c.HTMLBlob(code, b.Bytes())
}

func (d *Dashboard) loc() *time.Location {
	if d.o.Location != nil {
		return d.o.Location
	}
	if cfg := d.o.Sites(); cfg != nil && cfg.Town.Timezone != nil {
		return cfg.Town.Timezone
	}
	return time.UTC
}

func humanBytes(n any) string {
	var v float64
	switch x := n.(type) {
	case uint64:
		v = float64(x)
	case int64:
		v = float64(x)
	case int:
		v = float64(x)
	case float64:
		v = x
	}
	units := []string{"B", "kB", "MB", "GB", "TB"}
	i := 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func humanDur(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	if neg {
		return "-" + s
	}
	return s
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// safeNext is where a login goes on: only a path of the dashboard.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix+"/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix + "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Host != "" || u.Scheme != "" {
		return Prefix + "/"
	}
	return next
}

func netipToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func hashID(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:16])
}
