package sites

import (
	"fmt"
	"math"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones validate the same on every machine

	"golang.org/x/text/language"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/internal/yamlconf"
)

type pos = yamlconf.Pos

var (
	slugRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ipaRE    = regexp.MustCompile(`^[a-z0-9_]{2,16}$`)
	domainRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	phoneRE  = regexp.MustCompile(`^\+[1-9][0-9 ]{5,19}$`)
	// goTypeRE finds the Go type in yaml's type errors ("as a list of
	// yamlconf.Value[...]", "into sites.rawTown"): no use to who edits the file.
	goTypeRE = regexp.MustCompile(`(as a list of |into )[A-Za-z0-9_./\[\]*]+$`)
)

// ProbeHosts are the hosts phones and computers fetch to detect a captive
// portal. A walled garden that lets one through makes devices believe they
// are online, so they never show the login page.
var ProbeHosts = []string{
	"captive.apple.com", "www.apple.com", "www.appleiphonecell.com", "www.ibook.info", "www.itools.info",
	"www.airport.us", "www.thinkdifferent.us",
	"connectivitycheck.gstatic.com", "connectivitycheck.android.com", "clients3.google.com", "www.gstatic.com",
	"play.googleapis.com", "www.google.com",
	"www.msftconnecttest.com", "ipv6.msftconnecttest.com", "www.msftncsi.com",
	"detectportal.firefox.com", "nmcheck.gnome.org", "network-test.debian.org", "connectivity-check.ubuntu.com",
	"conncheck.opensuse.org",
}

// Parse validates a sites.yaml; name is used in error messages. On any
// problem it returns no Config and a *yamlconf.Problems with every problem.
func Parse(name string, data []byte) (*Config, error) {
	var r rawFile
	ps := &yamlconf.Problems{File: name}
	if !yamlconf.Decode(name, data, &r, ps) {
		return nil, ps.Err()
	}
	if ps.TypeErrors > 0 {
		// Values of the wrong shape were left out: relating the rest
		// (policies to sites, duplicates) would only report consequences.
		// Report them at their exact place instead of yaml's line and Go
		// type, when we can tell what they are.
		if shapes, found := shapeProblems(data); found > 0 {
			kept := ps.List[:0]
			for _, p := range ps.List {
				if !strings.HasPrefix(p.Msg, "cannot use") {
					kept = append(kept, p)
				}
			}
			ps.List = kept
			for _, p := range shapes {
				ps.Addf(p.Pos, "%s", p.Msg)
			}
			return nil, ps.Err()
		}
		for i := range ps.List {
			ps.List[i].Msg = goTypeRE.ReplaceAllStringFunc(ps.List[i].Msg, func(m string) string {
				if strings.HasPrefix(m, "as a list") {
					return "here (a list belongs here)"
				}
				return "here"
			})
		}
		return nil, ps.Err()
	}
	vd := &validator{ps: ps}
	c := &Config{}
	c.Town = vd.town(r.Town)

	policies := map[string]*rawPolicy{}
	seen := map[string]pos{}
	for i := range r.Policies {
		rp := &r.Policies[i].V
		where := fmt.Sprintf("policies[%d]", i)
		name := string(rp.Name.V)
		switch {
		case !rp.Name.Set:
			vd.addf(r.Policies[i].Pos, "%s: name: missing", where)
			continue
		case !slugRE.MatchString(name):
			vd.addf(rp.Name.Pos, "%s: name: %q is not a name (lower-case letters, digits and dashes, e.g. parks)", where, name)
			continue
		}
		if at, dup := seen[name]; dup {
			vd.addf(rp.Name.Pos, "policy %q is already defined at %s", name, vd.at(at))
			continue
		}
		seen[name] = rp.Name.Pos
		policies[name] = rp
		p := defaultPolicy()
		p.Name, p.Description = name, string(rp.Description.V)
		vd.settings(&p, rp.rawSettings, fmt.Sprintf("policy %q: ", name))
		c.Policies = append(c.Policies, p)
	}

	siteIDs, gwIDs, macs := map[string]pos{}, map[string]pos{}, map[string]pos{}
	var placed []placedSite // sites whose coordinates are valid, whatever else is wrong
	for i := range r.Sites {
		rs := &r.Sites[i].V
		s, ok := vd.site(r.Sites[i].Pos, i, rs, c, policies, siteIDs, gwIDs, macs)
		if ok {
			c.Sites = append(c.Sites, s)
		}
		if s.Coordinates != (Coordinates{}) {
			placed = append(placed, placedSite{s.ID, s.Coordinates, rs.Coordinates.Pos})
		}
	}
	if len(r.Sites) == 0 {
		vd.addf(pos{}, "sites: none (a file describes at least one site)")
	}
	vd.outliers(placed)

	if err := ps.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

type validator struct {
	ps          *yamlconf.Problems
	townSSIDSet bool
}

func (vd *validator) addf(p pos, format string, args ...any) { vd.ps.Addf(p, format, args...) }

// at names a place in the file for "already used at" messages.
func (vd *validator) at(p pos) string { return fmt.Sprintf("%s:%d:%d", vd.ps.File, p.Line, p.Col) }

func (vd *validator) town(t v[rawTown]) Town {
	out := Town{Timezone: mustLoc("Europe/Rome"), RetentionDays: DefaultRetentionDays}
	if !t.Set {
		vd.addf(pos{}, "town: missing (the town's name, privacy notice, terms and contacts)")
		return out
	}
	r := t.V
	out.Name = strings.TrimSpace(string(r.Name.V))
	if out.Name == "" {
		vd.addf(orPos(r.Name.Pos, t.Pos), "town.name: missing")
	}
	if r.IPACode.Set {
		out.IPACode = string(r.IPACode.V)
		if !ipaRE.MatchString(out.IPACode) {
			vd.addf(r.IPACode.Pos, "town.ipa_code: %q is not an IPA code (lower case, e.g. c_m109)", r.IPACode.V)
		}
	}
	if r.Logo.Set {
		out.Logo = string(r.Logo.V)
		if strings.Contains(out.Logo, "://") {
			if !isHTTPS(out.Logo) {
				vd.addf(r.Logo.Pos, "town.logo: %q is not an https URL (or give a path to an image file)", out.Logo)
			}
		} else if strings.TrimSpace(out.Logo) == "" {
			vd.addf(r.Logo.Pos, "town.logo: empty (give an https URL or a path to an image file, or leave it out)")
		}
	}
	if r.SSID.Set {
		vd.townSSIDSet = true
		out.SSID = vd.ssid(r.SSID, "town.ssid")
	}
	out.Privacy = vd.text(r.Privacy, t.Pos, "town.privacy")
	out.Terms = vd.text(r.Terms, t.Pos, "town.terms")
	if !r.Contacts.Set {
		vd.addf(t.Pos, "town.contacts: missing (email and dpo)")
	} else {
		ct := r.Contacts.V
		out.Contacts.Email = vd.email(ct.Email, r.Contacts.Pos, "town.contacts.email")
		out.Contacts.DPO = vd.email(ct.DPO, r.Contacts.Pos, "town.contacts.dpo")
		if ct.Phone.Set {
			out.Contacts.Phone = string(ct.Phone.V)
			if !phoneRE.MatchString(out.Contacts.Phone) {
				vd.addf(ct.Phone.Pos, "town.contacts.phone: %q is not a phone number in international form (e.g. +39 0383 3361)", ct.Phone.V)
			}
		}
	}
	if r.Retention.Set {
		out.RetentionDays = vd.integer(r.Retention, "town.retention_days", 30, 3650, DefaultRetentionDays)
	}
	if r.Timezone.Set {
		loc, err := time.LoadLocation(string(r.Timezone.V))
		if err != nil || r.Timezone.V == "" || strings.EqualFold(string(r.Timezone.V), "local") {
			vd.addf(r.Timezone.Pos, "town.timezone: %q is not an IANA time zone (e.g. Europe/Rome)", r.Timezone.V)
		} else {
			out.Timezone = loc
		}
	}
	return out
}

func (vd *validator) text(t v[rawText], parent pos, key string) Text {
	if !t.Set {
		vd.addf(parent, "%s: missing (url, or the text inline under it/en/de/fr)", key)
		return Text{}
	}
	r := t.V
	out := Text{IT: string(r.IT.V), EN: string(r.EN.V), DE: string(r.DE.V), FR: string(r.FR.V)}
	inline := r.IT.Set || r.EN.Set || r.DE.Set || r.FR.Set
	switch {
	case r.URL.Set && inline:
		vd.addf(r.URL.Pos, "%s: give either url or the text inline, not both", key)
	case r.URL.Set:
		out.URL = string(r.URL.V)
		if !isHTTPS(out.URL) {
			vd.addf(r.URL.Pos, "%s.url: %q is not an https URL", key, r.URL.V)
		}
	case !inline:
		vd.addf(t.Pos, "%s: empty (url, or the text inline under it/en/de/fr)", key)
	case strings.TrimSpace(out.IT) == "":
		vd.addf(t.Pos, "%s: the Italian text (it) is missing; other languages are optional", key)
	}
	return out
}

func (vd *validator) email(e v[emailText], parent pos, key string) string {
	if !e.Set {
		vd.addf(parent, "%s: missing", key)
		return ""
	}
	a, err := mail.ParseAddress(string(e.V))
	if err != nil || a.Address != string(e.V) || !strings.Contains(a.Address[strings.LastIndex(a.Address, "@"):], ".") {
		vd.addf(e.Pos, "%s: %q is not an e-mail address (write just the address, e.g. urp@comune.voghera.pv.it)", key, e.V)
		return ""
	}
	return a.Address
}

func (vd *validator) ssid(s v[ssidText], key string) string {
	n := len(s.V)
	switch {
	case n == 0 || n > 32:
		vd.addf(s.Pos, "%s: %q is %d bytes long; an SSID is 1 to 32 bytes", key, s.V, n)
	case strings.IndexFunc(string(s.V), func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		vd.addf(s.Pos, "%s: %q contains control characters", key, s.V)
	default:
		return string(s.V)
	}
	return ""
}

func defaultPolicy() Policy {
	return Policy{
		Down: DefaultDown, Up: DefaultUp, Session: DefaultSession, Idle: DefaultIdle,
		Login: Login{SMS: SMSOptions{Countries: []string{"IT"}}, SPID: SPIDOptions{Level: 2}, Voucher: VoucherOptions{Devices: 1}},
	}
}

// settings applies the fields s sets onto p, reporting bad values with the
// prefix ("policy \"parks\": " or "site \"x\": overrides.").
func (vd *validator) settings(p *Policy, s rawSettings, prefix string) {
	if s.Down.Set {
		p.Down = vd.rate(s.Down, prefix+"down", p.Down)
	}
	if s.Up.Set {
		p.Up = vd.rate(s.Up, prefix+"up", p.Up)
	}
	if s.Session.Set {
		p.Session = vd.duration(s.Session, prefix+"session", p.Session)
	}
	if s.Idle.Set {
		p.Idle = vd.duration(s.Idle, prefix+"idle", p.Idle)
	}
	if s.DailyQuota.Set {
		q, err := quantity.ParseBytes(string(s.DailyQuota.V))
		if err != nil {
			vd.addf(s.DailyQuota.Pos, "%sdaily_quota: %q is not a data size (try 500MB or 2GiB; 0 for none)", prefix, s.DailyQuota.V)
		} else if q > MaxQuota {
			vd.addf(s.DailyQuota.Pos, "%sdaily_quota: %s is more than gateways can count (at most %s; 0 for none)", prefix, q, MaxQuota)
		} else {
			p.DailyQuota = q
		}
	}
	if s.MaxClients.Set {
		p.MaxClients = vd.integer(s.MaxClients, prefix+"max_clients", 0, 100000, p.MaxClients)
	}
	if s.RememberDeviceDays.Set {
		p.RememberDeviceDays = vd.integer(s.RememberDeviceDays, prefix+"remember_device_days", 0, 365, p.RememberDeviceDays)
	}
	if s.Login.Set {
		vd.login(&p.Login, s.Login.V, prefix+"login.")
	}
	if s.Hours != nil {
		var h Hours
		for _, line := range s.Hours {
			if err := addHoursLine(&h, string(line.V)); err != nil {
				vd.addf(line.Pos, "%shours: %v", prefix, err)
			}
		}
		p.Hours = h
	}
	if s.WalledGarden != nil {
		p.WalledGarden = nil
		for _, d := range s.WalledGarden {
			if name, ok := vd.gardenDomain(d, prefix+"walled_garden"); ok {
				p.WalledGarden = append(p.WalledGarden, name)
			}
		}
	}
}

func (vd *validator) login(l *Login, r rawLogin, prefix string) {
	if r.Methods != nil {
		l.Methods = nil
		names := make([]string, len(Methods))
		for i, m := range Methods {
			names[i] = string(m)
		}
		for _, m := range r.Methods {
			name := strings.ToLower(string(m.V))
			if !slices.Contains(names, name) {
				hint := "click-through, sms, spid or voucher"
				if c := yamlconf.Closest(name, names); c != "" {
					hint = fmt.Sprintf("did you mean %q?", c)
				}
				vd.addf(m.Pos, "%smethods: %q is not a login method (%s)", prefix, m.V, hint)
				continue
			}
			if l.Allows(Method(name)) {
				vd.addf(m.Pos, "%smethods: %q is listed twice", prefix, name)
				continue
			}
			l.Methods = append(l.Methods, Method(name))
		}
	}
	if r.SMS.Set && r.SMS.V.Countries != nil {
		var cs []string
		for _, c := range r.SMS.V.Countries {
			reg, err := language.ParseRegion(string(c.V))
			if err != nil || !reg.IsCountry() || len(c.V) != 2 {
				vd.addf(c.Pos, "%ssms.countries: %q is not an ISO 3166-1 alpha-2 country code (e.g. IT, SM, VA, CH)", prefix, c.V)
				continue
			}
			cs = append(cs, reg.String())
		}
		l.SMS.Countries = cs
	}
	if r.SPID.Set && r.SPID.V.Level.Set {
		lvl := r.SPID.V.Level
		n, err := strconv.Atoi(string(lvl.V))
		if err != nil || n < 1 || n > 2 {
			vd.addf(lvl.Pos, "%sspid.level: %q is not a SPID level for Wi-Fi login (1 or 2)", prefix, lvl.V)
		} else {
			l.SPID.Level = n
		}
	}
	if r.Voucher.Set && r.Voucher.V.Devices.Set {
		l.Voucher.Devices = vd.integer(r.Voucher.V.Devices, prefix+"voucher.devices", 1, 10, l.Voucher.Devices)
	}
}

func (vd *validator) gardenDomain(d v[domainText], key string) (string, bool) {
	name := strings.TrimPrefix(strings.TrimSuffix(strings.ToLower(string(d.V)), "."), "*.")
	if !domainRE.MatchString(name) {
		vd.addf(d.Pos, "%s: %q is not a domain name (e.g. comune.voghera.pv.it)", key, d.V)
		return "", false
	}
	for _, p := range ProbeHosts {
		if p == name || strings.HasSuffix(p, "."+name) {
			vd.addf(d.Pos, "%s: %q lets devices reach the captive-portal probe host %s, so they would never show the login page; remove it", key, d.V, p)
			return "", false
		}
	}
	return name, true
}

func (vd *validator) rate(val v[rateText], key string, def quantity.Rate) quantity.Rate {
	r, err := quantity.ParseRate(string(val.V))
	if err != nil {
		vd.addf(val.Pos, "%s: %s", key, strings.TrimPrefix(err.Error(), quantity.ErrSyntax.Error()+": "))
		return def
	}
	if r != 0 && r < MinRate {
		vd.addf(val.Pos, "%s: %s is below the smallest rate gateways enforce, %s (0 for no limit)", key, r, MinRate)
		return def
	}
	return r
}

// MinRate and MaxQuota are the limits gateways accept (the portal's shaper.MinRate and its largest quota): a
// policy outside them would be refused by every gateway of the site, so it is refused here.
const (
	MinRate  = 8 * quantity.Kbit
	MaxQuota = quantity.Bytes(1 << 50)
)

func (vd *validator) duration(val v[durationText], key string, def time.Duration) time.Duration {
	if val.V == "0" {
		return 0
	}
	d, err := time.ParseDuration(string(val.V))
	if err != nil || d < 0 {
		hint := "try 2h, 90m or 45s; 0 for no limit"
		if strings.HasSuffix(string(val.V), "d") {
			hint = "days are not a unit: write hours, e.g. 24h"
		}
		vd.addf(val.Pos, "%s: %q is not a duration (%s)", key, val.V, hint)
		return def
	}
	if d%time.Second != 0 {
		vd.addf(val.Pos, "%s: %q is finer than a second", key, val.V)
		return def
	}
	return d
}

func (vd *validator) integer(val v[intText], key string, lo, hi, def int) int {
	n, err := strconv.Atoi(strings.TrimSpace(string(val.V)))
	if err != nil {
		vd.addf(val.Pos, "%s: %q is not a whole number", key, val.V)
		return def
	}
	if n < lo || n > hi {
		vd.addf(val.Pos, "%s: %d is out of range (%d to %d)", key, n, lo, hi)
		return def
	}
	return n
}

func (vd *validator) site(at pos, i int, r *rawSite, c *Config, policies map[string]*rawPolicy,
	siteIDs, gwIDs, macs map[string]pos) (Site, bool) {
	problems := len(vd.ps.List)
	s := Site{ID: string(r.ID.V), Name: strings.TrimSpace(string(r.Name.V)), Address: string(r.Address.V)}
	who := fmt.Sprintf("sites[%d]: ", i)
	switch {
	case !r.ID.Set:
		vd.addf(at, "%sid: missing (e.g. parco-pertini)", who)
	case !slugRE.MatchString(s.ID):
		vd.addf(r.ID.Pos, "%sid: %q is not a site id (lower-case letters, digits and dashes, e.g. parco-pertini)", who, r.ID.V)
	default:
		who = fmt.Sprintf("site %q: ", s.ID)
		if first, dup := siteIDs[s.ID]; dup {
			vd.addf(r.ID.Pos, "site id %q is already used at %s", s.ID, vd.at(first))
		} else {
			siteIDs[s.ID] = r.ID.Pos
		}
	}
	if s.Name == "" {
		vd.addf(orPos(r.Name.Pos, at), "%sname: missing", who)
	}

	kinds := make([]string, len(Kinds))
	for i, k := range Kinds {
		kinds[i] = string(k)
	}
	switch k := strings.ToLower(string(r.Kind.V)); {
	case !r.Kind.Set:
		vd.addf(at, "%skind: missing (%s)", who, strings.Join(kinds, ", "))
	case slices.Contains(kinds, k):
		s.Kind = Kind(k)
	default:
		hint := strings.Join(kinds, ", ")
		if c := yamlconf.Closest(k, kinds); c != "" {
			hint = fmt.Sprintf("did you mean %q?", c)
		}
		vd.addf(r.Kind.Pos, "%skind: %q is not a kind of site (%s)", who, r.Kind.V, hint)
	}

	s.Coordinates = vd.coordinates(r.Coordinates, at, who)

	// The effective policy: the named policy's fields, then the overrides.
	if r.Overrides.Set {
		p := defaultPolicy()
		vd.settings(&p, r.Overrides.V, who+"overrides.")
		s.Overridden = setKeys(reflect.ValueOf(r.Overrides.V), "")
	}
	switch base, ok := policies[string(r.Policy.V)]; {
	case !r.Policy.Set:
		vd.addf(at, "%spolicy: missing (the name of one of the policies)", who)
	case !ok:
		names := make([]string, 0, len(policies))
		for n := range policies {
			names = append(names, n)
		}
		sort.Strings(names)
		hint := "no policy is defined"
		if c := yamlconf.Closest(string(r.Policy.V), names); c != "" {
			hint = fmt.Sprintf("did you mean %q?", c)
		} else if len(names) > 0 {
			hint = "defined: " + strings.Join(names, ", ")
		}
		vd.addf(r.Policy.Pos, "%spolicy: %q does not exist (%s)", who, r.Policy.V, hint)
	default:
		s.PolicyName = string(r.Policy.V)
		merged := base.rawSettings
		if r.Overrides.Set {
			mergeValues(reflect.ValueOf(&merged).Elem(), reflect.ValueOf(r.Overrides.V))
		}
		s.Policy = defaultPolicy()
		quiet := &validator{ps: &yamlconf.Problems{File: vd.ps.File}} // each part was reported already
		quiet.settings(&s.Policy, merged, "")
		s.Policy.Name, s.Policy.Description = s.PolicyName, string(base.Description.V)
		if len(s.Policy.Login.Methods) == 0 {
			vd.addf(r.Policy.Pos, "%sno login method: policy %q offers none (list login.methods in the policy or in the site's overrides)", who, s.PolicyName)
		}
	}

	switch {
	case r.SSID.Set:
		s.SSID = vd.ssid(r.SSID, who+"ssid")
	case c.Town.SSID != "" || vd.townSSIDSet:
		s.SSID = c.Town.SSID // "" when town.ssid is wrong: reported there
	default:
		vd.addf(at, "%sssid: missing, and town.ssid is not set either", who)
	}

	s.ClientNetwork = vd.clientNetwork(r.ClientNetwork, at, who)

	if len(r.Gateways) == 0 {
		vd.addf(at, "%sgateways: none (a site needs at least one gateway)", who)
	}
	for j, g := range r.Gateways {
		key := fmt.Sprintf("%sgateways[%d].", who, j)
		gw := Gateway{ID: string(g.V.ID.V)}
		switch {
		case !g.V.ID.Set:
			vd.addf(g.Pos, "%sid: missing (e.g. pertini-gw1)", key)
		case !slugRE.MatchString(gw.ID):
			vd.addf(g.V.ID.Pos, "%sid: %q is not a gateway id (lower-case letters, digits and dashes)", key, gw.ID)
		default:
			if first, dup := gwIDs[gw.ID]; dup {
				vd.addf(g.V.ID.Pos, "%sid: gateway id %q is already used at %s", key, gw.ID, vd.at(first))
			} else {
				gwIDs[gw.ID] = g.V.ID.Pos
			}
		}
		if !g.V.Credential.Set {
			vd.addf(g.Pos, "%scredential: missing (env:NAME or file:/path of the gateway's public key or token)", key)
		} else if ref, err := ParseSecretRef(string(g.V.Credential.V)); err != nil {
			vd.addf(g.V.Credential.Pos, "%scredential: %v", key, err)
		} else {
			gw.Credential = ref
		}
		s.Gateways = append(s.Gateways, gw)
	}

	for j, a := range r.AccessPoints {
		key := fmt.Sprintf("%saccess_points[%d].", who, j)
		ap := AccessPoint{Model: string(a.V.Model.V), Location: string(a.V.Location.V)}
		if !a.V.MAC.Set {
			vd.addf(a.Pos, "%smac: missing", key)
		} else if mac, err := parseMAC(string(a.V.MAC.V)); err != nil {
			vd.addf(a.V.MAC.Pos, "%smac: %q %v", key, a.V.MAC.V, err)
		} else {
			ap.MAC = mac
			if first, dup := macs[mac]; dup {
				vd.addf(a.V.MAC.Pos, "%smac: access point %s is already listed at %s", key, mac, vd.at(first))
			} else {
				macs[mac] = a.V.MAC.Pos
			}
		}
		bands := map[Band]bool{}
		for k, rr := range a.V.Radios {
			rad := vd.radio(rr, fmt.Sprintf("%sradios[%d].", key, k))
			if rad.Band != "" && bands[rad.Band] {
				vd.addf(rr.V.Band.Pos, "%sradios[%d].band: a second %s radio (one radio per band)", key, k, rad.Band)
			}
			bands[rad.Band] = true
			ap.Radios = append(ap.Radios, rad)
		}
		s.AccessPoints = append(s.AccessPoints, ap)
	}
	return s, len(vd.ps.List) == problems
}

func (vd *validator) coordinates(cv v[rawCoordinates], at pos, who string) Coordinates {
	if !cv.Set {
		vd.addf(at, "%scoordinates: missing (lat and lon, e.g. {lat: 44.9925, lon: 9.0090})", who)
		return Coordinates{}
	}
	var out Coordinates
	bad := false
	for _, f := range []struct {
		val   v[floatText]
		key   string
		limit float64
		dst   *float64
	}{{cv.V.Lat, "lat", 90, &out.Lat}, {cv.V.Lon, "lon", 180, &out.Lon}} {
		if !f.val.Set {
			vd.addf(cv.Pos, "%scoordinates.%s: missing", who, f.key)
			bad = true
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(string(f.val.V)), 64)
		switch {
		case err != nil || math.IsNaN(x) || math.IsInf(x, 0):
			vd.addf(f.val.Pos, "%scoordinates.%s: %q is not a number of degrees (write decimal degrees, e.g. 44.9925)", who, f.key, f.val.V)
		case math.Abs(x) > f.limit:
			vd.addf(f.val.Pos, "%scoordinates.%s: %v is out of range (-%v to %v)", who, f.key, x, f.limit, f.limit)
		default:
			*f.dst = x
			continue
		}
		bad = true
	}
	if bad {
		return Coordinates{} // nothing to place on the map
	}
	return out
}

// outliers reports sites far from the others: usually lat and lon swapped,
// or a digit lost.
func (vd *validator) outliers(sites []placedSite) {
	if len(sites) < 3 {
		return
	}
	lats, lons := make([]float64, len(sites)), make([]float64, len(sites))
	for i, s := range sites {
		lats[i], lons[i] = s.at.Lat, s.at.Lon
	}
	slices.Sort(lats)
	slices.Sort(lons)
	center := Coordinates{lats[len(lats)/2], lons[len(lons)/2]}
	for _, s := range sites {
		if d := distanceKm(center, s.at); d > 50 {
			vd.addf(s.pos, "site %q: coordinates: %s is %.0f km from the town's other sites (lat and lon swapped, or a digit lost?)", s.id, s.at, d)
		}
	}
}

type placedSite struct {
	id  string
	at  Coordinates
	pos pos
}

func distanceKm(a, b Coordinates) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dlat, dlon := (b.Lat-a.Lat)*rad, (b.Lon-a.Lon)*rad
	h := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(a.Lat*rad)*math.Cos(b.Lat*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(h)))
}

func (vd *validator) clientNetwork(cv v[rawClientNetwork], at pos, who string) ClientNetwork {
	var out ClientNetwork
	if !cv.Set {
		vd.addf(at, "%sclient_network: missing (address, e.g. 10.20.0.1/22)", who)
		return out
	}
	a := cv.V.Address
	if !a.Set {
		vd.addf(cv.Pos, "%sclient_network.address: missing (the gateway's address with the prefix length, e.g. 10.20.0.1/22)", who)
	} else if p, err := netip.ParsePrefix(string(a.V)); err != nil || !p.Addr().Is4() {
		vd.addf(a.Pos, "%sclient_network.address: %q is not an IPv4 address with prefix length (try 10.20.0.1/22)", who, a.V)
	} else if p.Bits() < 17 || p.Bits() > 30 {
		vd.addf(a.Pos, "%sclient_network.address: a /%d client network is not supported (use /17 to /30)", who, p.Bits())
	} else if !p.Addr().IsPrivate() {
		vd.addf(a.Pos, "%sclient_network.address: %s is not a private address (use 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16)", who, p.Addr())
	} else if m := p.Masked(); p.Addr() == m.Addr() || p.Addr() == broadcast(m) {
		vd.addf(a.Pos, "%sclient_network.address: %s is the network or broadcast address of %s", who, p.Addr(), m)
	} else {
		out.Gateway, out.Subnet = p.Addr(), p.Masked()
	}
	if cv.V.VLAN.Set {
		out.VLAN = vd.integer(cv.V.VLAN, who+"client_network.vlan", 1, 4094, 0)
	}
	return out
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(a)
}

func parseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil || len(hw) != 6:
		return "", fmt.Errorf("is not a MAC address (six hex pairs, e.g. 02:00:5e:10:00:01)")
	case hw[0]&1 == 1:
		return "", fmt.Errorf("is a multicast address, not an access point's")
	case hw.String() == "00:00:00:00:00:00":
		return "", fmt.Errorf("is the all-zero address")
	}
	return hw.String(), nil
}

// channels allowed in Italy (ETSI), and the EIRP limit in dBm, per band.
func channelOK(b Band, ch int) (ok bool, maxPower int) {
	switch b {
	case Band24:
		return ch >= 1 && ch <= 13, 20
	case Band5:
		switch {
		case ch >= 36 && ch <= 64 && ch%4 == 0:
			return true, 23
		case ch >= 100 && ch <= 140 && ch%4 == 0:
			return true, 30
		}
		return false, 23
	case Band6:
		return ch >= 1 && ch <= 93 && ch%4 == 1, 23
	}
	return false, 0
}

var channelHint = map[Band]string{Band24: "1 to 13", Band5: "36-64 or 100-140, in steps of 4", Band6: "1 to 93, in steps of 4"}

func (vd *validator) radio(rv v[rawRadio], key string) Radio {
	var out Radio
	r := rv.V
	b := Band(strings.ToLower(string(r.Band.V)))
	names := []string{string(Band24), string(Band5), string(Band6)}
	switch {
	case !r.Band.Set:
		vd.addf(rv.Pos, "%sband: missing (2.4ghz, 5ghz or 6ghz)", key)
		return out
	case !slices.Contains(names, string(b)):
		hint := "2.4ghz, 5ghz or 6ghz"
		if c := yamlconf.Closest(string(b), names); c != "" {
			hint = fmt.Sprintf("did you mean %q?", c)
		}
		vd.addf(r.Band.Pos, "%sband: %q is not a band (%s)", key, r.Band.V, hint)
		return out
	}
	out.Band = b
	limit := 0
	if r.Channel.Set {
		ch := vd.integer(r.Channel, key+"channel", 1, 233, -1)
		ok, max := channelOK(b, ch)
		switch {
		case ch == -1:
		case !ok:
			vd.addf(r.Channel.Pos, "%schannel: %d is not a %s channel allowed in Italy (%s)", key, ch, b, channelHint[b])
		default:
			out.Channel, limit = ch, max
		}
	}
	if r.TxPower.Set {
		p := vd.integer(r.TxPower, key+"tx_power", 1, 36, 0)
		if limit == 0 {
			_, limit = channelOK(b, 0)
		}
		if p > limit {
			vd.addf(r.TxPower.Pos, "%stx_power: %d dBm is above the %d dBm EIRP allowed in Italy on %s", key, p, limit, describeChannel(b, out.Channel))
		} else {
			out.TxPower = p
		}
	}
	return out
}

func describeChannel(b Band, ch int) string {
	if ch == 0 {
		return string(b)
	}
	return fmt.Sprintf("%s channel %d", b, ch)
}

func orPos(p, fallback pos) pos {
	if p.Line == 0 {
		return fallback
	}
	return p
}

func isHTTPS(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != ""
}

func mustLoc(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

// mergeValues copies onto dst every yamlconf.Value that src sets, field by
// field; a Value holding a struct merges into it, a list replaces the list.
func mergeValues(dst, src reflect.Value) {
	for i := 0; i < dst.NumField(); i++ {
		d, s := dst.Field(i), src.Field(i)
		switch {
		case d.Kind() == reflect.Slice:
			if !s.IsNil() {
				d.Set(s)
			}
		case isValueType(d.Type()):
			if !s.FieldByName("Set").Bool() {
				continue
			}
			if d.Field(0).Kind() == reflect.Struct {
				mergeValues(d.Field(0), s.Field(0))
				d.FieldByName("Set").SetBool(true)
				continue
			}
			d.Set(s)
		}
	}
}

// setKeys lists the yaml keys a struct of Values sets, nested keys dotted.
func setKeys(v reflect.Value, prefix string) []string {
	var out []string
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), v.Type().Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		switch {
		case f.Kind() == reflect.Slice:
			if !f.IsNil() {
				out = append(out, prefix+name)
			}
		case isValueType(f.Type()) && f.FieldByName("Set").Bool():
			if f.Field(0).Kind() == reflect.Struct {
				out = append(out, setKeys(f.Field(0), prefix+name+".")...)
			} else {
				out = append(out, prefix+name)
			}
		}
	}
	return out
}

func isValueType(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t.NumField() == 3 && t.Field(0).Name == "V" && t.Field(1).Type == reflect.TypeOf(pos{})
}
