// Package dnsmasq runs DNS and DHCP for the client network through the
// Debian dnsmasq binary: it validates a typed Config, renders dnsmasq's
// configuration file, starts dnsmasq in its own session and supervises it.
//
// dnsmasq outlives the gateway daemon on purpose: residents keep DNS and DHCP
// while the daemon restarts, is upgraded or crashes. A restarted daemon adopts
// the running dnsmasq through its pidfile when the configuration is unchanged.
// Only Stop (used by `portal teardown`) ends it.
package dnsmasq

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Defaults applied by New to zero fields.
const (
	DefaultBinary    = "dnsmasq"
	DefaultInterface = "br-cw"
	DefaultLeaseTime = time.Hour
	DefaultGardenSet = "cw-garden"
)

// ProbeHosts are the host names operating systems probe to detect a captive
// portal that serve nothing else: Apple, Android/ChromeOS, Windows, Firefox
// and NetworkManager. dnsmasq answers them for every client, before and
// after login, with the gateway's own address, so the portal answers each
// probe itself (a redirect before login, the genuine answer after) and a
// slow uplink never makes a phone think it is offline.
//
// The shared hosts some OSes also probe (www.apple.com, www.gstatic.com,
// www.google.com) are not here: they serve real content, so after login they resolve to,
// and reach, the real servers.
var ProbeHosts = []string{
	"captive.apple.com",
	"connectivitycheck.gstatic.com",
	"connectivitycheck.android.com",
	"clients3.google.com",
	"www.msftconnecttest.com",
	"www.msftncsi.com",
	"detectportal.firefox.com",
	"nmcheck.gnome.org",
}

// SharedProbeHosts are probed by some OSes but serve real content too. They
// resolve normally; like ProbeHosts they must never be in the walled garden,
// or a phone would see its probe succeed before login.
var SharedProbeHosts = []string{"www.apple.com", "www.gstatic.com", "www.google.com"}

// Config is what the client network's DNS and DHCP need.
type Config struct {
	// Binary is the dnsmasq executable (a name looked up in PATH, or a
	// path). Tests may point it at a wrapper, e.g. one that runs dnsmasq in
	// a network namespace; the wrapper must exec dnsmasq so that the pid it
	// writes is the pid started. Default "dnsmasq".
	Binary string
	// Interface is the client network's interface. Default "br-cw".
	Interface string
	// Address is the gateway's IPv4 address on Interface (e.g. 10.20.0.1):
	// the only address dnsmasq listens on, and the router and DNS server
	// handed to clients.
	Address netip.Addr
	// Subnet is the client network (e.g. 10.20.0.0/22).
	Subnet netip.Prefix
	// RangeStart and RangeEnd bound the dynamic DHCP pool, inclusive.
	RangeStart, RangeEnd netip.Addr
	// LeaseTime is the DHCP lease time; at least 2m (dnsmasq's minimum).
	// Default 1h.
	LeaseTime time.Duration
	// Upstreams are the DNS servers dnsmasq forwards to. Empty: dnsmasq
	// uses /etc/resolv.conf. Port 0 means 53.
	Upstreams []netip.AddrPort
	// CaptivePortalURL is sent as DHCP option 114 (RFC 8910): the https
	// URL of the captive portal API (RFC 8908). Empty: the option is not
	// sent.
	CaptivePortalURL string
	// LocalNames are more host names answered like ProbeHosts: A = Address
	// (subdomains included), no other record, never forwarded. ProbeHosts
	// and the host name of CaptivePortalURL are always answered so.
	LocalNames []string
	// GardenDomains are walled-garden names: every address dnsmasq
	// resolves for them, or any of their subdomains, is added to the ipset
	// GardenSet.
	GardenDomains []string
	// GardenSet is the ipset the walled-garden addresses go to. It must
	// exist (the firewall creates it). Default "cw-garden".
	GardenSet string
	// StateDir holds dnsmasq.conf, dnsmasq.leases, dnsmasq.pid,
	// dnsmasq.log and dnsmasq.out (dnsmasq's own stdout/stderr). Required,
	// absolute.
	StateDir string
}

// Files in StateDir.
const (
	confName   = "dnsmasq.conf"
	leasesName = "dnsmasq.leases"
	pidName    = "dnsmasq.pid"
	logName    = "dnsmasq.log"
	outName    = "dnsmasq.out"
)

// ConfPath is the generated dnsmasq configuration file.
func (c Config) ConfPath() string { return filepath.Join(c.StateDir, confName) }

// LeasesPath is dnsmasq's lease database.
func (c Config) LeasesPath() string { return filepath.Join(c.StateDir, leasesName) }

// PidPath is dnsmasq's pidfile.
func (c Config) PidPath() string { return filepath.Join(c.StateDir, pidName) }

// LogPath is dnsmasq's log file.
func (c Config) LogPath() string { return filepath.Join(c.StateDir, logName) }

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.Binary == "" {
		c.Binary = DefaultBinary
	}
	if c.Interface == "" {
		c.Interface = DefaultInterface
	}
	if c.LeaseTime == 0 {
		c.LeaseTime = DefaultLeaseTime
	}
	if c.GardenSet == "" {
		c.GardenSet = DefaultGardenSet
	}
	return c
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if strings.ContainsAny(c.Binary, " \t\n") || c.Binary == "" {
		bad("binary %q: want an executable name or path", c.Binary)
	}
	if !validIfName(c.Interface) {
		bad("interface %q: want a Linux interface name (1-15 characters, no '/', ':' or spaces)", c.Interface)
	}

	subnetOK := c.Subnet.IsValid() && c.Subnet.Addr().Is4()
	switch {
	case !c.Subnet.IsValid():
		bad("subnet: missing")
	case !c.Subnet.Addr().Is4():
		bad("subnet %s: want IPv4 (clients get no IPv6)", c.Subnet)
	case c.Subnet != c.Subnet.Masked():
		bad("subnet %s: host bits set (did you mean %s?)", c.Subnet, c.Subnet.Masked())
		subnetOK = false
	case c.Subnet.Bits() > 30:
		bad("subnet %s: too small for clients (want /30 or larger)", c.Subnet)
		subnetOK = false
	}
	inSubnet := func(what string, a netip.Addr) bool {
		switch {
		case !a.IsValid():
			bad("%s: missing", what)
		case !a.Is4():
			bad("%s %s: want IPv4", what, a)
		case !subnetOK:
			return false
		case !c.Subnet.Contains(a):
			bad("%s %s: outside subnet %s", what, a, c.Subnet)
		case a == c.Subnet.Addr():
			bad("%s %s: is the network address of %s", what, a, c.Subnet)
		case a == lastAddr(c.Subnet):
			bad("%s %s: is the broadcast address of %s", what, a, c.Subnet)
		default:
			return true
		}
		return false
	}
	addrOK := inSubnet("address", c.Address)
	startOK := inSubnet("range start", c.RangeStart)
	endOK := inSubnet("range end", c.RangeEnd)
	if startOK && endOK {
		if c.RangeEnd.Less(c.RangeStart) {
			bad("range %s-%s: end before start", c.RangeStart, c.RangeEnd)
		} else if addrOK && !c.Address.Less(c.RangeStart) && !c.RangeEnd.Less(c.Address) {
			bad("range %s-%s: contains the gateway's own address %s", c.RangeStart, c.RangeEnd, c.Address)
		}
	}

	if c.LeaseTime < 2*time.Minute {
		bad("lease time %s: dnsmasq needs at least 2m", c.LeaseTime)
	} else if c.LeaseTime%time.Second != 0 {
		bad("lease time %s: want whole seconds", c.LeaseTime)
	}

	for i, u := range c.Upstreams {
		if !u.IsValid() || !u.Addr().IsValid() || u.Addr().IsUnspecified() {
			bad("upstream %d %s: want an IP address (and optional port)", i+1, u)
		} else if u.Addr().Zone() != "" {
			bad("upstream %d %s: zones are not supported", i+1, u)
		}
	}

	if c.CaptivePortalURL != "" {
		if err := checkPortalURL(c.CaptivePortalURL); err != nil {
			bad("captive portal URL %q: %w", c.CaptivePortalURL, err)
		}
	}

	for _, d := range c.LocalNames {
		if err := checkDomain(strings.TrimSuffix(strings.ToLower(d), ".")); err != nil {
			bad("local name %q: %w", d, err)
		}
	}
	local := c.localNames()
	seen := map[string]bool{}
	for _, d := range c.GardenDomains {
		n := strings.TrimSuffix(strings.ToLower(d), ".")
		if err := checkDomain(n); err != nil {
			bad("garden domain %q: %w", d, err)
			continue
		}
		if seen[n] {
			bad("garden domain %q: listed twice", d)
		}
		if why := GardenConflict(n, local...); why != "" {
			bad("garden domain %q: %s", d, why)
		}
		seen[n] = true
	}
	if len(c.GardenDomains) > 0 && !validSetName(c.GardenSet) {
		bad("garden set %q: want an ipset name (1-31 characters: letters, digits, '-', '_', '.')", c.GardenSet)
	}

	switch {
	case c.StateDir == "":
		bad("state dir: missing")
	case !filepath.IsAbs(c.StateDir):
		bad("state dir %q: want an absolute path", c.StateDir)
	case strings.ContainsAny(c.StateDir, "\n\r"):
		bad("state dir %q: contains a newline", c.StateDir)
	}

	if len(errs) > 0 {
		return fmt.Errorf("validating dnsmasq config: %w", errors.Join(errs...))
	}
	return nil
}

// GardenConflict says why a walled-garden domain must not be there ("" if
// it may): a connectivity probe host or one of the gateway's own names
// (local: the portal's host name) is answered by the gateway, and a domain
// covering a shared probe host would make phones think they are online
// before login. portal.yaml's check and Validate agree through it.
func GardenConflict(domain string, local ...string) string {
	n := strings.TrimSuffix(strings.ToLower(domain), ".")
	for _, h := range append(append([]string{}, ProbeHosts...), local...) {
		if n == h || strings.HasSuffix(n, "."+h) {
			return fmt.Sprintf("%s is answered by the gateway itself (a connectivity probe or the portal), never by the walled garden", h)
		}
	}
	for _, h := range SharedProbeHosts {
		if n == h || strings.HasSuffix(h, "."+n) {
			return fmt.Sprintf("covers %s, a connectivity probe host: phones would think they are online before login", h)
		}
	}
	return ""
}

func checkPortalURL(s string) error {
	if len(s) > 255 {
		return fmt.Errorf("%d bytes, a DHCP option holds at most 255", len(s))
	}
	for _, r := range s {
		if r <= ' ' || r == '"' || r == '\\' || r > '~' {
			return fmt.Errorf("contains %q: want a plain ASCII URL without spaces, quotes or backslashes", r)
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "https" {
		return errors.New("want an https URL (RFC 8910)")
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("missing host")
	}
	if u.User != nil {
		return errors.New("must not carry user info")
	}
	return nil
}

// localNames are the names dnsmasq answers with Address: ProbeHosts, the
// portal's own host name (when CaptivePortalURL names a host rather than an
// address) and LocalNames, lower case, without duplicates.
func (c Config) localNames() []string {
	names := append([]string{}, ProbeHosts...)
	if u, err := url.Parse(c.CaptivePortalURL); err == nil && u.Hostname() != "" {
		if _, err := netip.ParseAddr(u.Hostname()); err != nil {
			names = append(names, u.Hostname())
		}
	}
	names = append(names, c.LocalNames...)
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if !seen[n] && checkDomain(n) == nil {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// checkDomain accepts a lower-case DNS name without trailing dot: labels of
// letters, digits and hyphens (underscores allowed, as in service names).
func checkDomain(n string) error {
	if n == "" {
		return errors.New("empty")
	}
	if strings.HasPrefix(n, "*.") {
		return errors.New("no wildcards: a domain already covers all its subdomains")
	}
	if len(n) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return fmt.Errorf("label %q longer than 63 characters", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("character %q not allowed (want letters, digits, '-'; IDNs in punycode)", r)
			}
		}
	}
	return nil
}

func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r > '~' || r == '/' || r == ':' || r == ',' || r == '#' {
			return false
		}
	}
	return true
}

func validSetName(s string) bool {
	if s == "" || len(s) > 31 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// Render returns the dnsmasq configuration file for a valid Config.
func (c Config) Render() []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Generated by the civicwifi portal daemon; edits are overwritten.")
	w("# DNS and DHCPv4 for the client network only; no DHCPv6, no router advertisements.")
	w("")
	w("# Listen only on the client network (not on lo, not on the WAN).")
	w("interface=%s", c.Interface)
	w("listen-address=%s", c.Address)
	w("except-interface=lo")
	w("bind-dynamic")
	w("")
	w("# DNS")
	w("no-hosts")
	w("domain-needed")
	w("bogus-priv")
	w("cache-size=1000")
	if len(c.Upstreams) > 0 {
		w("no-resolv")
		for _, u := range c.Upstreams {
			if u.Port() == 0 || u.Port() == 53 {
				w("server=%s", u.Addr())
			} else {
				w("server=%s#%d", u.Addr(), u.Port())
			}
		}
	}
	w("# Answered by the gateway itself for every client, before and after login:")
	w("# OS connectivity probes (the portal serves their genuine answers) and the")
	w("# portal's own name. A = this gateway; no AAAA or other record (local=:")
	w("# never forwarded), so a phone with IPv6 does not go around the portal.")
	for _, n := range c.localNames() {
		w("address=/%s/%s", n, c.Address)
		w("local=/%s/", n)
	}
	if len(c.GardenDomains) > 0 {
		doms := make([]string, len(c.GardenDomains))
		for i, d := range c.GardenDomains {
			doms[i] = strings.TrimSuffix(strings.ToLower(d), ".")
		}
		w("# Walled garden: addresses resolved for these names go to the ipset.")
		w("ipset=/%s/%s", strings.Join(doms, "/"), c.GardenSet)
	}
	w("")
	w("# DHCPv4")
	w("dhcp-range=%s,%s,%s,%s", c.RangeStart, c.RangeEnd, netmask(c.Subnet), durationArg(c.LeaseTime))
	w("dhcp-authoritative")
	w("dhcp-leasefile=%s", c.LeasesPath())
	w("dhcp-option=option:router,%s", c.Address)
	w("dhcp-option=option:dns-server,%s", c.Address)
	if c.CaptivePortalURL != "" {
		w("# RFC 8910 captive portal API URL (dnsmasq 2.90 has no name for option 114).")
		w("dhcp-option=114,\"%s\"", c.CaptivePortalURL)
	}
	w("")
	w("# Files")
	w("pid-file=%s", c.PidPath())
	w("log-facility=%s", c.LogPath())
	return []byte(b.String())
}

func netmask(p netip.Prefix) netip.Addr {
	m := ^uint32(0) << (32 - p.Bits())
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
}

// durationArg writes a lease time the way dnsmasq reads it.
func durationArg(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s%3600 == 0:
		return fmt.Sprintf("%dh", s/3600)
	case s%60 == 0:
		return fmt.Sprintf("%dm", s/60)
	}
	return fmt.Sprintf("%d", s)
}
