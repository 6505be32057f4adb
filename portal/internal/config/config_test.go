package config

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/google/go-cmp/cmp"
)

func TestExample(t *testing.T) {
	c, err := Load("testdata/portal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Site: "parco-pertini", ClientIf: "br-lan", UplinkIf: "wan", IFB: "cwifb0",
		GatewayIP: netip.MustParseAddr("10.20.0.1"), ClientSubnet: netip.MustParsePrefix("10.20.0.0/22"),
		DHCPStart: netip.MustParseAddr("10.20.0.10"), DHCPEnd: netip.MustParseAddr("10.20.3.250"), LeaseTime: time.Hour,
		DNSUpstreams:   []netip.AddrPort{netip.MustParseAddrPort("9.9.9.9:53"), netip.MustParseAddrPort("149.112.112.112:53")},
		PortalHTTPPort: 2050, PortalHTTPSPort: 2443, PortalURL: "https://portal.civicwifi.lan:2443/api/captive", ClickThrough: true,
		PortalTLSCert: "/etc/civicwifi/tls/portal.crt", PortalTLSKey: "/etc/civicwifi/tls/portal.key",
		PortalName: "Parco Pertini", PortalTown: "Comune di Voghera", SSID: "Voghera Free WiFi", PortalRate: 20,
		GardenDomains: []string{"comune.voghera.pv.it"}, GardenNetworks: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/28")},
		Limits:   Limits{Down: 10 * quantity.Mbit, Up: 2 * quantity.Mbit, Session: 2 * time.Hour, Idle: 15 * time.Minute, Quota: quantity.GB, MaxClients: 500},
		StateDir: "/var/lib/civicwifi", ControlSocket: "/run/civicwifi/portal.sock", MetricsListen: "127.0.0.1:9102",
	}
	if diff := cmp.Diff(want, c, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

// The examples in deploy/ and in the README must be valid, so the docs
// cannot drift from the code.
func TestExamplesParse(t *testing.T) {
	if _, err := Load("../../../deploy/portal.yaml"); err != nil {
		t.Errorf("deploy/portal.yaml: %v", err)
	}
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, block := range strings.Split(string(readme), "```yaml\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		if !strings.HasPrefix(block, "# /etc/civicwifi/portal.yaml") {
			continue
		}
		found++
		if _, err := Parse("README.md", []byte(block)); err != nil {
			t.Errorf("README's portal.yaml: %v", err)
		}
	}
	if found == 0 {
		t.Error("README has no portal.yaml example")
	}
	// The README shows the errors for this mistake; keep them true.
	bad := strings.Replace(string(mustRead(t, "../../../deploy/portal.yaml")), "down: 10mbit", "down: 5 Mbps", 1)
	bad = strings.Replace(bad, "  quota: 1GB", "  quotas: 1GB", 1)
	_, err = Parse("portal.yaml", []byte(bad))
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.Contains(string(readme), line) {
			t.Errorf("README does not show the error %q", line)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestErrors(t *testing.T) {
	base := "site: x\ninterfaces: {clients: br0, uplink: wan}\nclient_network: {address: 10.20.0.1/22}\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", base + "limts: {down: 1mbit}\n", []string{`t.yaml:4:1: top level: unknown key "limts" (did you mean "limits"?)`}},
		{"nested unknown", base + "limits: {dwn: 1mbit}\n", []string{`t.yaml:4:10: limits: unknown key "dwn" (did you mean "down"?)`}},
		{"bad rate", base + "limits:\n  down: 5 Mbps\n", []string{`t.yaml:5:9: limits.down: "5 Mbps" is not a rate (try 5mbit)`}},
		{"bad duration and quota at once", base + "limits:\n  session: 2 hours\n  quota: lots\n", []string{
			`t.yaml:5:12: limits.session: "2 hours" is not a duration`, `t.yaml:6:10: limits.quota: "lots" is not a data size`}},
		{"missing", "site: x\n", []string{"interfaces.clients: missing", "interfaces.uplink: missing", "client_network.address: missing"}},
		{"same interfaces", "site: x\ninterfaces: {clients: br0, uplink: br0}\nclient_network: {address: 10.20.0.1/22}\n", []string{"is also the clients interface"}},
		{"network address", "site: x\ninterfaces: {clients: br0, uplink: wan}\nclient_network: {address: 10.20.0.0/22}\n", []string{"network or broadcast"}},
		{"too big", "site: x\ninterfaces: {clients: br0, uplink: wan}\nclient_network: {address: 10.0.0.1/8}\n", []string{"a /8 client network is not supported"}},
		{"range outside", base + "", nil},
		{"range outside subnet", strings.Replace(base, "10.20.0.1/22}", "10.20.0.1/22, dhcp_range: 10.20.0.10-10.30.0.9}", 1), []string{"is not inside the client network"}},
		{"metrics on clients", base + "metrics_listen: 10.20.0.1:9102\n", []string{"metrics are for the management side only"}},
		{"garden overlaps", base + "walled_garden: {networks: [10.20.1.0/24]}\n", []string{"overlaps the client network"}},
		{"bad port type", base + "portal: {http_port: eighty}\n", []string{"t.yaml:4:"}},
		{"http api url", base + "portal: {api_url: http://x/}\n", []string{"RFC 8908 requires https"}},
		{"api url without certificate", base + "portal: {api_url: \"https://x/\"}\n", []string{
			`t.yaml:4:19: portal.tls_cert: missing (api_url is served over https`, `t.yaml:4:19: portal.tls_key: missing`}},
		{"relative certificate", base + "portal: {api_url: \"https://x/\", tls_cert: a.crt, tls_key: /k}\n", []string{`portal.tls_cert: "a.crt" must be an absolute path`}},
		{"logo type", base + "portal: {logo: /etc/logo.gif}\n", []string{`t.yaml:4:16: portal.logo: "/etc/logo.gif" is not a .png, .jpg or .svg file`}},
		{"long ssid", base + "portal: {ssid: " + strings.Repeat("x", 33) + "}\n", []string{"portal.ssid:", "is not an SSID"}},
		{"control character in name", base + "portal: {name: \"a\\nb\"}\n", []string{"portal.name:", "must be one line"}},
		{"negative rate", base + "portal: {rate_limit: -1}\n", []string{"t.yaml:4:22: portal.rate_limit: -1 is not a rate"}},
		{"portal defaults", base, nil},
		{"probe host in the garden", base + "walled_garden: {domains: [captive.apple.com, gstatic.com]}\n", []string{
			`t.yaml:4:27: walled_garden.domains: "captive.apple.com": captive.apple.com is answered by the gateway itself`,
			`t.yaml:4:46: walled_garden.domains: "gstatic.com": covers www.gstatic.com, a connectivity probe host`}},
		{"controller", base + "controller: {url: \"https://wifi.example.it:8443/\", gateway_id: gw-1, key_file: /k, controller_key_file: /c}\n", nil},
		{"controller half set", base + "controller: {gateway_id: gw-1}\n", []string{`t.yaml:4:26: controller.gateway_id: set without controller.url`}},
		{"controller missing keys", base + "controller: {url: \"https://c/\"}\n", []string{
			`t.yaml:4:19: controller.gateway_id: missing`, `controller.key_file: missing`, `controller.controller_key_file: missing`}},
		{"controller bad url", base + "controller: {url: \"ftp://c/\", gateway_id: gw-1, key_file: /k, controller_key_file: /c}\n", []string{`controller.url: "ftp://c/" is not the controller's base URL`}},
		{"controller secret in url", base + "controller: {url: \"https://u:p@c/\", gateway_id: gw-1, key_file: /k, controller_key_file: /c}\n", []string{`is not the controller's base URL`}},
		{"controller relative key", base + "controller: {url: \"https://c/\", gateway_id: GW, key_file: k, controller_key_file: /c, heartbeat: 0}\n", []string{
			`controller.gateway_id: "GW" is not a gateway id`, `controller.key_file: "k" must be an absolute path`, `controller.heartbeat: 0s is too often`}},
		{"syntax", "site: [\n", []string{"t.yaml:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	data, _ := os.ReadFile("testdata/portal.yaml")
	f.Add(data)
	f.Add([]byte("site: x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("f.yaml", b)
		if err == nil && (c == nil || !c.ClientSubnet.Contains(c.GatewayIP)) {
			t.Fatalf("accepted a config without a valid client network: %+v", c)
		}
	})
}
