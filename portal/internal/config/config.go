// Package config reads the gateway's own small configuration file
// (/etc/civicwifi/portal.yaml): interfaces, client network, portal ports,
// walled garden and the default limits used until the controller supplies
// the site's policy. Every problem is reported at once with file:line:col.
package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/internal/yamlconf"
	"github.com/civicwifi/civicwifi/portal/internal/dnsmasq"
)

// Config is the validated gateway configuration.
type Config struct {
	Site string

	ClientIf string // the access points' client network (a bridge, usually)
	UplinkIf string // towards the internet
	IFB      string // the IFB device used to shape uploads

	GatewayIP    netip.Addr   // the gateway's address on the client network
	ClientSubnet netip.Prefix // masked
	DHCPStart    netip.Addr
	DHCPEnd      netip.Addr
	LeaseTime    time.Duration

	DNSUpstreams []netip.AddrPort // empty: the system resolver

	PortalHTTPPort  uint16
	PortalHTTPSPort uint16
	PortalURL       string // RFC 8910 option 114: the Captive Portal API URL
	ClickThrough    bool   // the portal offers a plain click-through grant
	// The certificate (chain) and key served on the HTTPS port, PEM files;
	// required with api_url. Read when the portal starts (CheckTLS).
	PortalTLSCert string
	PortalTLSKey  string
	PortalName    string // the site's name on the pages (default: the site id)
	PortalTown    string // the town, shown in the header and as the privacy notice's controller
	PortalLogo    string // a PNG, JPEG or SVG file shown in the header ("" for none)
	SSID          string // the network's name, for the poster
	// PortalRate is each client's request rate on the portal (per second,
	// bursts of twice that); 0 turns the limit off.
	PortalRate int

	GardenDomains  []string
	GardenNetworks []netip.Prefix

	Limits Limits

	StateDir      string
	ControlSocket string
	MetricsListen string // "" disables; never on the client network

	// Controller is the town's controller; zero (no URL) runs the gateway
	// on its own with the limits above.
	Controller Controller
}

// Controller is how the gateway reaches the town's controller.
type Controller struct {
	URL               string // https://wifi.comune.example.it:8443
	GatewayID         string // this gateway's id in sites.yaml
	KeyFile           string // this gateway's private key (controller enroll)
	ControllerKeyFile string // the controller's public key, to check its answers
	HeartbeatInterval time.Duration
}

// Limits are a session's limits. Zero means unlimited.
type Limits struct {
	Down       quantity.Rate
	Up         quantity.Rate
	Session    time.Duration
	Idle       time.Duration
	Quota      quantity.Bytes
	MaxClients int
	// DailyQuota makes Quota each device's allowance per day (counted in
	// the town's time zone) across its sessions, as the controller's
	// policies say; otherwise Quota is per session.
	DailyQuota bool
}

type v[T any] = yamlconf.Value[T]

type raw struct {
	Site       v[string] `yaml:"site"`
	Interfaces struct {
		Clients v[string] `yaml:"clients"`
		Uplink  v[string] `yaml:"uplink"`
		IFB     v[string] `yaml:"ifb"`
	} `yaml:"interfaces"`
	ClientNetwork struct {
		Address   v[string] `yaml:"address"`
		DHCPRange v[string] `yaml:"dhcp_range"`
		LeaseTime v[string] `yaml:"lease_time"`
	} `yaml:"client_network"`
	DNS struct {
		Upstreams []v[string] `yaml:"upstreams"`
	} `yaml:"dns"`
	Portal struct {
		HTTPPort  v[uint16] `yaml:"http_port"`
		HTTPSPort v[uint16] `yaml:"https_port"`
		URL       v[string] `yaml:"api_url"`
		Click     v[bool]   `yaml:"click_through"`
		TLSCert   v[string] `yaml:"tls_cert"`
		TLSKey    v[string] `yaml:"tls_key"`
		Name      v[string] `yaml:"name"`
		Town      v[string] `yaml:"town"`
		Logo      v[string] `yaml:"logo"`
		SSID      v[string] `yaml:"ssid"`
		RateLimit v[int]    `yaml:"rate_limit"`
	} `yaml:"portal"`
	WalledGarden struct {
		Domains  []v[string] `yaml:"domains"`
		Networks []v[string] `yaml:"networks"`
	} `yaml:"walled_garden"`
	Limits struct {
		Down       v[string] `yaml:"down"`
		Up         v[string] `yaml:"up"`
		Session    v[string] `yaml:"session"`
		Idle       v[string] `yaml:"idle"`
		Quota      v[string] `yaml:"quota"`
		MaxClients v[int]    `yaml:"max_clients"`
	} `yaml:"limits"`
	StateDir      v[string] `yaml:"state_dir"`
	ControlSocket v[string] `yaml:"control_socket"`
	Metrics       v[string] `yaml:"metrics_listen"`
	Controller    struct {
		URL           v[string] `yaml:"url"`
		GatewayID     v[string] `yaml:"gateway_id"`
		KeyFile       v[string] `yaml:"key_file"`
		ControllerKey v[string] `yaml:"controller_key_file"`
		Heartbeat     v[string] `yaml:"heartbeat"`
	} `yaml:"controller"`
}

// Load reads and validates a file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading gateway config: %w", err)
	}
	return Parse(path, data)
}

var (
	ifnameRE = regexp.MustCompile(`^[A-Za-z0-9_.\-@]{1,15}$`)
	siteRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	domainRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
)

// Parse validates a configuration; name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	var r raw
	ps := &yamlconf.Problems{File: name}
	if !yamlconf.Decode(name, data, &r, ps) {
		return nil, ps.Err()
	}
	c := &Config{
		PortalHTTPPort:  2050,
		PortalHTTPSPort: 2443,
		PortalRate:      20,
		IFB:             "cwifb0",
		LeaseTime:       time.Hour,
		StateDir:        "/var/lib/civicwifi",
		ControlSocket:   "/run/civicwifi/portal.sock",
		MetricsListen:   "127.0.0.1:9102",
		Limits: Limits{
			Down: 10 * quantity.Mbit, Up: 2 * quantity.Mbit,
			Session: 2 * time.Hour, Idle: 15 * time.Minute,
		},
	}

	c.Site = r.Site.V
	if !r.Site.Set {
		ps.Addf(yamlconf.Pos{}, "site: missing (the site id from sites.yaml, e.g. parco-pertini)")
	} else if !siteRE.MatchString(c.Site) {
		ps.Addf(r.Site.Pos, "site: %q is not a site id (lower-case letters, digits and dashes)", c.Site)
	}

	ifname := func(val v[string], key string, required bool) string {
		if !val.Set {
			if required {
				ps.Addf(yamlconf.Pos{}, "interfaces.%s: missing", key)
			}
			return ""
		}
		if !ifnameRE.MatchString(val.V) {
			ps.Addf(val.Pos, "interfaces.%s: %q is not an interface name (1-15 letters, digits, _ . -)", key, val.V)
		}
		return val.V
	}
	c.ClientIf = ifname(r.Interfaces.Clients, "clients", true)
	c.UplinkIf = ifname(r.Interfaces.Uplink, "uplink", true)
	if r.Interfaces.IFB.Set {
		c.IFB = ifname(r.Interfaces.IFB, "ifb", false)
	}
	if c.ClientIf != "" && c.ClientIf == c.UplinkIf {
		ps.Addf(r.Interfaces.Uplink.Pos, "interfaces.uplink: %q is also the clients interface; they must differ", c.UplinkIf)
	}
	if c.IFB == c.ClientIf || c.IFB == c.UplinkIf {
		ps.Addf(r.Interfaces.IFB.Pos, "interfaces.ifb: %q must be a device of its own", c.IFB)
	}

	cn := r.ClientNetwork
	if !cn.Address.Set {
		ps.Addf(yamlconf.Pos{}, "client_network.address: missing (the gateway's address with the subnet, e.g. 10.20.0.1/22)")
	} else if p, err := netip.ParsePrefix(cn.Address.V); err != nil || !p.Addr().Is4() {
		ps.Addf(cn.Address.Pos, "client_network.address: %q is not an IPv4 address with prefix length (try 10.20.0.1/22)", cn.Address.V)
	} else {
		c.GatewayIP, c.ClientSubnet = p.Addr(), p.Masked()
		switch {
		case p.Bits() < 17 || p.Bits() > 30:
			ps.Addf(cn.Address.Pos, "client_network.address: a /%d client network is not supported (use /17 to /30: up to 32,766 clients)", p.Bits())
		case p.Addr() == c.ClientSubnet.Addr() || p.Addr() == Broadcast(c.ClientSubnet):
			ps.Addf(cn.Address.Pos, "client_network.address: %s is the network or broadcast address of %s", p.Addr(), c.ClientSubnet)
		}
	}
	if cn.DHCPRange.Set && c.ClientSubnet.IsValid() {
		a, b, ok := strings.Cut(cn.DHCPRange.V, "-")
		start, err1 := netip.ParseAddr(strings.TrimSpace(a))
		end, err2 := netip.ParseAddr(strings.TrimSpace(b))
		switch {
		case !ok || err1 != nil || err2 != nil:
			ps.Addf(cn.DHCPRange.Pos, "client_network.dhcp_range: %q is not a range (try 10.20.0.10-10.20.3.250)", cn.DHCPRange.V)
		case !c.ClientSubnet.Contains(start) || !c.ClientSubnet.Contains(end):
			ps.Addf(cn.DHCPRange.Pos, "client_network.dhcp_range: %s is not inside the client network %s", cn.DHCPRange.V, c.ClientSubnet)
		case end.Less(start):
			ps.Addf(cn.DHCPRange.Pos, "client_network.dhcp_range: the range ends before it starts")
		case !c.GatewayIP.Less(start) && !end.Less(c.GatewayIP):
			ps.Addf(cn.DHCPRange.Pos, "client_network.dhcp_range: the range contains the gateway's own address %s", c.GatewayIP)
		default:
			c.DHCPStart, c.DHCPEnd = start, end
		}
	} else if c.ClientSubnet.IsValid() {
		c.DHCPStart, c.DHCPEnd = defaultRange(c.ClientSubnet, c.GatewayIP)
	}
	c.LeaseTime = duration(ps, cn.LeaseTime, "client_network.lease_time", c.LeaseTime)

	for _, u := range r.DNS.Upstreams {
		ap, err := netip.ParseAddrPort(u.V)
		if err != nil {
			a, err2 := netip.ParseAddr(u.V)
			if err2 != nil {
				ps.Addf(u.Pos, "dns.upstreams: %q is not an IP address (with an optional :port)", u.V)
				continue
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		c.DNSUpstreams = append(c.DNSUpstreams, ap)
	}

	if r.Portal.HTTPPort.Set {
		c.PortalHTTPPort = r.Portal.HTTPPort.V
	}
	if r.Portal.HTTPSPort.Set {
		c.PortalHTTPSPort = r.Portal.HTTPSPort.V
	}
	for _, p := range []v[uint16]{r.Portal.HTTPPort, r.Portal.HTTPSPort} {
		if p.Set && p.V == 0 {
			ps.Addf(p.Pos, "portal: port 0 is not a port")
		}
	}
	if c.PortalHTTPPort == c.PortalHTTPSPort {
		ps.Addf(r.Portal.HTTPSPort.Pos, "portal.https_port: %d is also the http_port", c.PortalHTTPSPort)
	}
	c.ClickThrough = r.Portal.Click.V
	if r.Portal.URL.Set {
		u, err := url.Parse(r.Portal.URL.V)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			ps.Addf(r.Portal.URL.Pos, "portal.api_url: %q is not an https URL (RFC 8908 requires https)", r.Portal.URL.V)
		} else {
			c.PortalURL = u.String()
		}
	}
	portalStrings(ps, r.Portal.Name, r.Portal.Town, r.Portal.SSID)
	for _, f := range []struct {
		val v[string]
		key string
		out *string
	}{{r.Portal.TLSCert, "tls_cert", &c.PortalTLSCert}, {r.Portal.TLSKey, "tls_key", &c.PortalTLSKey}, {r.Portal.Logo, "logo", &c.PortalLogo}} {
		if !f.val.Set {
			if c.PortalURL != "" && f.key != "logo" {
				ps.Addf(r.Portal.URL.Pos, "portal.%s: missing (api_url is served over https: name the PEM file of the gateway's certificate and key)", f.key)
			}
			continue
		}
		if !strings.HasPrefix(f.val.V, "/") {
			ps.Addf(f.val.Pos, "portal.%s: %q must be an absolute path", f.key, f.val.V)
			continue
		}
		*f.out = f.val.V
	}
	if c.PortalLogo != "" {
		switch strings.ToLower(path.Ext(c.PortalLogo)) {
		case ".png", ".jpg", ".jpeg", ".svg":
		default:
			ps.Addf(r.Portal.Logo.Pos, "portal.logo: %q is not a .png, .jpg or .svg file", c.PortalLogo)
		}
	}
	c.PortalName, c.PortalTown, c.SSID = r.Portal.Name.V, r.Portal.Town.V, r.Portal.SSID.V
	if c.PortalName == "" {
		c.PortalName = c.Site
	}
	if r.Portal.SSID.Set && (len(c.SSID) == 0 || len(c.SSID) > 32) {
		ps.Addf(r.Portal.SSID.Pos, "portal.ssid: %q is not an SSID (1 to 32 bytes)", c.SSID)
	}
	if r.Portal.RateLimit.Set {
		c.PortalRate = r.Portal.RateLimit.V
		if c.PortalRate < 0 || c.PortalRate > 100000 {
			ps.Addf(r.Portal.RateLimit.Pos, "portal.rate_limit: %d is not a rate per client (requests per second, 0 for no limit)", c.PortalRate)
		}
	}

	var portalHost []string
	if u, err := url.Parse(c.PortalURL); err == nil && u.Hostname() != "" {
		portalHost = append(portalHost, strings.ToLower(u.Hostname()))
	}
	for _, d := range r.WalledGarden.Domains {
		name := strings.TrimSuffix(strings.ToLower(d.V), ".")
		if !domainRE.MatchString(name) {
			ps.Addf(d.Pos, "walled_garden.domains: %q is not a domain name", d.V)
			continue
		}
		if why := dnsmasq.GardenConflict(strings.TrimPrefix(name, "*."), portalHost...); why != "" {
			ps.Addf(d.Pos, "walled_garden.domains: %q: %s", d.V, why)
			continue
		}
		c.GardenDomains = append(c.GardenDomains, strings.TrimPrefix(name, "*."))
	}
	for _, n := range r.WalledGarden.Networks {
		p, err := netip.ParsePrefix(n.V)
		if err != nil {
			a, err2 := netip.ParseAddr(n.V)
			if err2 != nil {
				ps.Addf(n.Pos, "walled_garden.networks: %q is not an address or network (try 198.51.100.10/32)", n.V)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			ps.Addf(n.Pos, "walled_garden.networks: %q: only IPv4 is forwarded for clients (IPv6 is blocked)", n.V)
			continue
		}
		if c.ClientSubnet.IsValid() && p.Overlaps(c.ClientSubnet) {
			ps.Addf(n.Pos, "walled_garden.networks: %s overlaps the client network %s", p, c.ClientSubnet)
			continue
		}
		c.GardenNetworks = append(c.GardenNetworks, p.Masked())
	}

	controllerSection(ps, &r, c)

	l := r.Limits
	c.Limits.Down = rate(ps, l.Down, "limits.down", c.Limits.Down)
	c.Limits.Up = rate(ps, l.Up, "limits.up", c.Limits.Up)
	c.Limits.Session = duration(ps, l.Session, "limits.session", c.Limits.Session)
	c.Limits.Idle = duration(ps, l.Idle, "limits.idle", c.Limits.Idle)
	if l.Quota.Set {
		q, err := quantity.ParseBytes(l.Quota.V)
		if err != nil {
			ps.Addf(l.Quota.Pos, "limits.quota: %q is not a data size (try 500MB or 2GiB; 0 for none)", l.Quota.V)
		}
		c.Limits.Quota = q
	}
	if l.MaxClients.Set {
		if l.MaxClients.V < 0 {
			ps.Addf(l.MaxClients.Pos, "limits.max_clients: must not be negative")
		}
		c.Limits.MaxClients = l.MaxClients.V
	}

	if r.StateDir.Set {
		c.StateDir = r.StateDir.V
	}
	if r.ControlSocket.Set {
		c.ControlSocket = r.ControlSocket.V
	}
	for _, p := range []struct {
		val v[string]
		key string
	}{{r.StateDir, "state_dir"}, {r.ControlSocket, "control_socket"}} {
		if p.val.Set && !strings.HasPrefix(p.val.V, "/") {
			ps.Addf(p.val.Pos, "%s: %q must be an absolute path", p.key, p.val.V)
		}
	}
	if r.Metrics.Set {
		c.MetricsListen = r.Metrics.V
		if c.MetricsListen != "" {
			ap, err := netip.ParseAddrPort(c.MetricsListen)
			switch {
			case err != nil:
				ps.Addf(r.Metrics.Pos, "metrics_listen: %q is not an address:port (try 127.0.0.1:9102, or \"\" to disable)", c.MetricsListen)
			case c.ClientSubnet.IsValid() && c.ClientSubnet.Contains(ap.Addr()):
				ps.Addf(r.Metrics.Pos, "metrics_listen: %s is on the client network; metrics are for the management side only", ap)
			}
		}
	}
	if err := ps.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

func duration(ps *yamlconf.Problems, val v[string], key string, def time.Duration) time.Duration {
	if !val.Set {
		return def
	}
	if val.V == "0" {
		return 0
	}
	d, err := time.ParseDuration(val.V)
	if err != nil || d < 0 {
		ps.Addf(val.Pos, "%s: %q is not a duration (try 2h, 15m or 90s; 0 for none)", key, val.V)
		return def
	}
	return d
}

func rate(ps *yamlconf.Problems, val v[string], key string, def quantity.Rate) quantity.Rate {
	if !val.Set {
		return def
	}
	r, err := quantity.ParseRate(val.V)
	if err != nil {
		ps.Addf(val.Pos, "%s: %v", key, strings.TrimPrefix(err.Error(), quantity.ErrSyntax.Error()+": "))
		return def
	}
	return r
}

// portalStrings refuses texts shown on the pages that carry control
// characters or are too long for a header.
func portalStrings(ps *yamlconf.Problems, vals ...v[string]) {
	keys := []string{"name", "town", "ssid"}
	for i, val := range vals {
		if !val.Set {
			continue
		}
		if !utf8.ValidString(val.V) || strings.IndexFunc(val.V, unicode.IsControl) >= 0 || len(val.V) > 80 {
			ps.Addf(val.Pos, "portal.%s: %q must be one line of at most 80 bytes", keys[i], val.V)
		}
	}
}

// Broadcast is the last (broadcast) address of an IPv4 prefix.
func Broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(a)
}

// defaultRange is the subnet's hosts after the gateway, up to the last but one.
func defaultRange(p netip.Prefix, gw netip.Addr) (netip.Addr, netip.Addr) {
	start := p.Masked().Addr().Next()
	if start == gw {
		start = start.Next()
	}
	end := Broadcast(p).Prev()
	if end == gw {
		end = end.Prev()
	}
	return start, end
}

var gatewayIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// controllerSection validates the controller: section. Without a url the
// other keys must be absent too (a half-configured link is a mistake).
func controllerSection(ps *yamlconf.Problems, r *raw, c *Config) {
	rc := r.Controller
	if !rc.URL.Set {
		for _, k := range []struct {
			val v[string]
			key string
		}{{rc.GatewayID, "gateway_id"}, {rc.KeyFile, "key_file"}, {rc.ControllerKey, "controller_key_file"}, {rc.Heartbeat, "heartbeat"}} {
			if k.val.Set {
				ps.Addf(k.val.Pos, "controller.%s: set without controller.url", k.key)
			}
		}
		return
	}
	u, err := url.Parse(rc.URL.V)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		ps.Addf(rc.URL.Pos, "controller.url: %q is not the controller's base URL (try https://wifi.comune.example.it:8443)", rc.URL.V)
	} else {
		c.Controller.URL = strings.TrimSuffix(u.String(), "/")
	}
	c.Controller.GatewayID = rc.GatewayID.V
	switch {
	case !rc.GatewayID.Set:
		ps.Addf(rc.URL.Pos, "controller.gateway_id: missing (this gateway's id in sites.yaml)")
	case !gatewayIDRE.MatchString(rc.GatewayID.V):
		ps.Addf(rc.GatewayID.Pos, "controller.gateway_id: %q is not a gateway id (lower-case letters, digits, . _ -)", rc.GatewayID.V)
	}
	for _, f := range []struct {
		val  v[string]
		key  string
		out  *string
		hint string
	}{
		{rc.KeyFile, "key_file", &c.Controller.KeyFile, "this gateway's private key, made by `controller enroll`"},
		{rc.ControllerKey, "controller_key_file", &c.Controller.ControllerKeyFile, "the controller's public key"},
	} {
		switch {
		case !f.val.Set:
			ps.Addf(rc.URL.Pos, "controller.%s: missing (%s)", f.key, f.hint)
		case !strings.HasPrefix(f.val.V, "/"):
			ps.Addf(f.val.Pos, "controller.%s: %q must be an absolute path", f.key, f.val.V)
		default:
			*f.out = f.val.V
		}
	}
	c.Controller.HeartbeatInterval = duration(ps, rc.Heartbeat, "controller.heartbeat", 30*time.Second)
	if c.Controller.HeartbeatInterval < time.Second {
		ps.Addf(rc.Heartbeat.Pos, "controller.heartbeat: %v is too often (at least 1s)", c.Controller.HeartbeatInterval)
	}
}
