package server

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/apapi"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
)

// snapshot is one loaded sites.yaml and everything served from it. It is never changed after it is built; a
// reload builds a new one and swaps it in.
type snapshot struct {
	cfg      *sites.Config
	sum      [32]byte                // of the file's bytes
	policies map[string]policyDoc    // by site id
	desired  map[string]apapi.Config // by AP MAC
	gateways map[string]gatewayEntry // by gateway id
}

type policyDoc struct {
	body    []byte
	version string
}

type gatewayEntry struct {
	site string
	ref  sites.SecretRef
}

// APNetwork and APBridge are the uci interface and bridge the AP scripts put the site's SSID on.
const (
	APNetwork = "cw"
	APBridge  = "br-cw"
)

func newSnapshot(cfg *sites.Config, sum [32]byte) (*snapshot, error) {
	s := &snapshot{cfg: cfg, sum: sum, policies: map[string]policyDoc{}, desired: map[string]apapi.Config{}, gateways: map[string]gatewayEntry{}}
	for i := range cfg.Sites {
		site := &cfg.Sites[i]
		body, err := json.Marshal(SitePolicy(cfg, site))
		if err != nil {
			return nil, fmt.Errorf("encoding the policy of site %s: %w", site.ID, err)
		}
		h := sha256.Sum256(body)
		s.policies[site.ID] = policyDoc{body: body, version: hex.EncodeToString(h[:12])}
		for _, g := range site.Gateways {
			s.gateways[g.ID] = gatewayEntry{site: site.ID, ref: g.Credential}
		}
		for _, ap := range site.AccessPoints {
			s.desired[ap.MAC] = DesiredAP(site, ap)
		}
	}
	return s, nil
}

var weekdays = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// SitePolicy renders site's effective policy as its gateways receive it.
func SitePolicy(cfg *sites.Config, site *sites.Site) apiclient.SitePolicy {
	p := site.Policy
	out := apiclient.SitePolicy{
		SiteID: site.ID, SiteName: site.Name, TownName: cfg.Town.Name, SSID: site.SSID, Policy: site.PolicyName,
		DownBitsPerSecond: uint64(p.Down), UpBitsPerSecond: uint64(p.Up),
		Session: apiclient.Duration(p.Session), Idle: apiclient.Duration(p.Idle),
		DailyQuotaBytes: uint64(p.DailyQuota), MaxClients: p.MaxClients,
		LoginMethods: []string{}, WalledGarden: []string{}, RememberDeviceDays: p.RememberDeviceDays,
		Hours: map[string][]string{}, Timezone: "UTC",
	}
	for _, m := range p.Login.Methods {
		out.LoginMethods = append(out.LoginMethods, string(m))
	}
	if p.Login.Allows(sites.SMS) {
		out.SMSCountries = p.Login.SMS.Countries
	}
	if p.Login.Allows(sites.SPID) {
		out.SPIDLevel = p.Login.SPID.Level
	}
	if p.Login.Allows(sites.Voucher) {
		out.VoucherDevices = p.Login.Voucher.Devices
	}
	out.WalledGarden = append(out.WalledGarden, p.WalledGarden...)
	for d, spans := range p.Hours.Days {
		for _, sp := range spans {
			out.Hours[weekdays[d]] = append(out.Hours[weekdays[d]], clock(sp.From)+"-"+clock(sp.To))
		}
	}
	if cfg.Town.Timezone != nil {
		out.Timezone = cfg.Town.Timezone.String()
	}
	return out
}

func clock(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

// DesiredAP is what an access point of site should run: the site's SSID on each of its radios (radio0, radio1...
// in sites.yaml's order; one radio on "auto" when none is listed), bridged into the site's client VLAN.
func DesiredAP(site *sites.Site, ap sites.AccessPoint) apapi.Config {
	c := apapi.Config{SSID: site.SSID, Network: APNetwork, Bridge: APBridge, VLAN: site.ClientNetwork.VLAN}
	for i, r := range ap.Radios {
		ch := "auto"
		if r.Channel > 0 {
			ch = strconv.Itoa(r.Channel)
		}
		c.Radios = append(c.Radios, apapi.RadioConfig{Device: "radio" + strconv.Itoa(i), Channel: ch, TxPowerDBm: min(r.TxPower, 30)})
	}
	if len(c.Radios) == 0 {
		c.Radios = []apapi.RadioConfig{{Device: "radio0", Channel: "auto"}}
	}
	c.Version = apapi.ConfigVersion(c)
	return c
}

// readGatewayKey reads a gateway's public key from its sites.yaml credential reference.
func readGatewayKey(ref sites.SecretRef) (ed25519.PublicKey, error) {
	b, err := ref.Read()
	if err != nil {
		return nil, err
	}
	if ref.Source == "file" {
		return apiclient.LoadPublicKey(ref.Name) // skips comments, names the line
	}
	k, err := apiclient.ParsePublicKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return k, nil
}
