// Package adminconf is controller.yaml's admin block (the operators'
// dashboard): its keys, validated with their places. It is apart from
// package dashboard so that the controller's config can name it without
// importing the dashboard (whose tests run the whole controller).
package adminconf

import (
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/civicwifi/civicwifi/internal/yamlconf"
)

// FileConfig is controller.yaml's admin block. The zero value (no block)
// turns the dashboard off.
type FileConfig struct {
	Listen         string // its own address (recommended: an internal one); "": on the API's listener under /admin/
	Accounts       string // the accounts file (controller admin add)
	TrustedProxies []netip.Prefix
	IdleTimeout    time.Duration
	MaxAge         time.Duration
	OIDC           *OIDCFileConfig
}

// OIDCFileConfig is admin.oidc.
type OIDCFileConfig struct {
	Issuer, ClientID, ClientSecretFile, RedirectURL, RoleClaim, NameClaim, Label string
	Roles                                                                        map[string]auth.Role
}

// Enabled reports whether the block was given.
func (c FileConfig) Enabled() bool { return c.Accounts != "" }

type v[T any] = yamlconf.Value[T]

// Prefix is where the dashboard is mounted (dashboard.Prefix).
const Prefix = "/admin"

// RawFileConfig is admin: as written in controller.yaml; ParseFileConfig validates it.
type RawFileConfig struct {
	Listen         v[string]        `yaml:"listen"`
	Accounts       v[string]        `yaml:"accounts"`
	TrustedProxies v[[]string]      `yaml:"trusted_proxies"`
	IdleTimeout    v[string]        `yaml:"idle_timeout"`
	MaxAge         v[string]        `yaml:"max_age"`
	OIDC           v[rawOIDCConfig] `yaml:"oidc"`
}

type rawOIDCConfig struct {
	Issuer           v[string]            `yaml:"issuer"`
	ClientID         v[string]            `yaml:"client_id"`
	ClientSecretFile v[string]            `yaml:"client_secret_file"`
	RedirectURL      v[string]            `yaml:"redirect_url"`
	RoleClaim        v[string]            `yaml:"role_claim"`
	Roles            v[map[string]string] `yaml:"roles"`
	NameClaim        v[string]            `yaml:"name_claim"`
	Label            v[string]            `yaml:"label"`
}

// ParseFileConfig validates the admin block r; abs makes a path relative to
// controller.yaml's directory. Problems go to ps with their place.
func ParseFileConfig(r v[RawFileConfig], abs func(string) string, ps *yamlconf.Problems) FileConfig {
	if !r.Set {
		return FileConfig{}
	}
	x := r.V
	c := FileConfig{Listen: x.Listen.V}
	if x.Accounts.V == "" {
		ps.Addf(r.Pos, "admin.accounts: missing (the dashboard's accounts file, e.g. /etc/civicwifi/admin-accounts: controller admin add -accounts FILE -role it NAME)")
	} else {
		c.Accounts = abs(x.Accounts.V)
	}
	if x.Listen.Set {
		if _, _, err := net.SplitHostPort(x.Listen.V); err != nil {
			ps.Addf(x.Listen.Pos, "admin.listen: %q is not host:port (e.g. 10.0.0.5:8444)", x.Listen.V)
		}
	}
	for i, p := range x.TrustedProxies.V {
		pf, err := netip.ParsePrefix(p)
		if err != nil {
			if a, aerr := netip.ParseAddr(p); aerr == nil {
				pf, err = netip.PrefixFrom(a, a.BitLen()), nil
			}
		}
		if err != nil {
			ps.Addf(x.TrustedProxies.Pos, "admin.trusted_proxies[%d]: %q is not an address or prefix (e.g. 10.0.0.0/24)", i, p)
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, pf.Masked())
	}
	dur := func(what string, val v[string], lo, hi time.Duration, out *time.Duration) {
		if !val.Set {
			return
		}
		d, err := time.ParseDuration(val.V)
		if err != nil || d < lo || d > hi {
			ps.Addf(val.Pos, "%s: %q is not a duration from %v to %v", what, val.V, lo, hi)
			return
		}
		*out = d
	}
	dur("admin.idle_timeout", x.IdleTimeout, time.Minute, 24*time.Hour, &c.IdleTimeout)
	dur("admin.max_age", x.MaxAge, time.Minute, 7*24*time.Hour, &c.MaxAge)
	if !x.OIDC.Set {
		return c
	}
	o := x.OIDC.V
	oc := &OIDCFileConfig{Issuer: o.Issuer.V, ClientID: o.ClientID.V, RedirectURL: o.RedirectURL.V, RoleClaim: o.RoleClaim.V,
		NameClaim: o.NameClaim.V, Label: o.Label.V, Roles: map[string]auth.Role{}}
	if o.ClientSecretFile.V != "" {
		oc.ClientSecretFile = abs(o.ClientSecretFile.V)
	}
	for _, f := range []struct {
		key string
		val v[string]
	}{{"issuer", o.Issuer}, {"redirect_url", o.RedirectURL}} {
		u, err := url.Parse(f.val.V)
		pos := f.val.Pos
		if !f.val.Set {
			pos = x.OIDC.Pos
		}
		if err != nil || u.Scheme != "https" || u.Host == "" {
			ps.Addf(pos, "admin.oidc.%s: %q is not an https URL", f.key, f.val.V)
		}
	}
	if o.RedirectURL.Set && !strings.HasSuffix(o.RedirectURL.V, Prefix+"/oidc/callback") {
		ps.Addf(o.RedirectURL.Pos, "admin.oidc.redirect_url: %q must end in %s/oidc/callback", o.RedirectURL.V, Prefix)
	}
	if o.ClientID.V == "" {
		ps.Addf(x.OIDC.Pos, "admin.oidc.client_id: missing")
	}
	if o.RoleClaim.V == "" {
		ps.Addf(x.OIDC.Pos, "admin.oidc.role_claim: missing (the ID-token claim that carries groups or roles, e.g. groups)")
	}
	if len(o.Roles.V) == 0 {
		ps.Addf(x.OIDC.Pos, "admin.oidc.roles: missing (claim value: it, operator or auditor)")
	}
	keys := make([]string, 0, len(o.Roles.V))
	for k := range o.Roles.V {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r, err := auth.ParseRole(o.Roles.V[k])
		if err != nil {
			ps.Addf(o.Roles.Pos, "admin.oidc.roles.%s: %v", k, err)
			continue
		}
		oc.Roles[k] = r
	}
	c.OIDC = oc
	return c
}
