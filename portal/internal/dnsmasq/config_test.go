package dnsmasq

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func validConfig() Config {
	return Config{
		Interface:        "br-cw",
		Address:          netip.MustParseAddr("10.20.0.1"),
		Subnet:           netip.MustParsePrefix("10.20.0.0/22"),
		RangeStart:       netip.MustParseAddr("10.20.0.100"),
		RangeEnd:         netip.MustParseAddr("10.20.3.250"),
		LeaseTime:        2 * time.Hour,
		Upstreams:        []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:53"), netip.MustParseAddrPort("[2001:db8::53]:5353")},
		CaptivePortalURL: "https://portal.civicwifi.test/api/captive?site=parco-pertini",
		GardenDomains:    []string{"Garden.Example.test.", "spid.gov.it"},
		GardenSet:        "cw-garden",
		StateDir:         "/var/lib/civicwifi/dnsmasq",
	}
}

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  func() Config
	}{
		{"full", validConfig},
		{"minimal", func() Config {
			c := validConfig()
			c.Upstreams, c.CaptivePortalURL, c.GardenDomains, c.GardenSet, c.LeaseTime = nil, "", nil, "", 0
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg().withDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got := string(cfg.Render())
			path := filepath.Join("testdata", tt.name+".conf")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run with -update): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Render mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // substrings of the error; none: valid
	}{
		{"valid", func(*Config) {}, nil},
		{"range outside subnet", func(c *Config) { c.RangeEnd = netip.MustParseAddr("10.20.4.10") },
			[]string{"range end 10.20.4.10: outside subnet 10.20.0.0/22"}},
		{"range reversed", func(c *Config) {
			c.RangeStart, c.RangeEnd = netip.MustParseAddr("10.20.0.200"), netip.MustParseAddr("10.20.0.100")
		}, []string{"end before start"}},
		{"range holds gateway", func(c *Config) { c.RangeStart = netip.MustParseAddr("10.20.0.1") },
			[]string{"contains the gateway's own address 10.20.0.1"}},
		{"broadcast", func(c *Config) { c.RangeEnd = netip.MustParseAddr("10.20.3.255") },
			[]string{"broadcast address"}},
		{"address outside", func(c *Config) { c.Address = netip.MustParseAddr("192.168.1.1") },
			[]string{"address 192.168.1.1: outside subnet"}},
		{"subnet host bits", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.20.0.1/22") },
			[]string{"host bits set (did you mean 10.20.0.0/22?)"}},
		{"ipv6 subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("2001:db8::/64") }, []string{"want IPv4"}},
		{"missing everything", func(c *Config) { *c = Config{} },
			[]string{"subnet: missing", "address: missing", "range start: missing", "range end: missing", "state dir: missing"}},
		{"http portal", func(c *Config) { c.CaptivePortalURL = "http://portal.test/" }, []string{"want an https URL"}},
		{"quote in portal", func(c *Config) { c.CaptivePortalURL = `https://portal.test/"x` }, []string{"quotes"}},
		{"portal without host", func(c *Config) { c.CaptivePortalURL = "https:///x" }, []string{"missing host"}},
		{"long portal", func(c *Config) { c.CaptivePortalURL = "https://p.test/" + strings.Repeat("a", 250) },
			[]string{"at most 255"}},
		{"bad domains", func(c *Config) {
			c.GardenDomains = []string{"*.example.test", "ex ample.test", "-bad.test", "a..b", "ok.test", "OK.test"}
		}, []string{"no wildcards", `character ' ' not allowed`, "starts or ends with '-'", "empty label", `"OK.test": listed twice`}},
		{"probe hosts in the garden", func(c *Config) {
			c.GardenDomains = []string{"captive.apple.com", "x.nmcheck.gnome.org", "gstatic.com", "WWW.Apple.com", "apple.com", "portal.civicwifi.test"}
		}, []string{
			`"captive.apple.com": captive.apple.com is answered by the gateway itself`,
			`"x.nmcheck.gnome.org": nmcheck.gnome.org is answered`,
			`"gstatic.com": covers www.gstatic.com`,
			`"WWW.Apple.com": covers www.apple.com`,
			`"apple.com": covers www.apple.com`,
			`"portal.civicwifi.test": portal.civicwifi.test is answered`,
		}},
		{"a parent of a dedicated probe host is fine (the probe host stays local)", func(c *Config) { c.GardenDomains = []string{"firefox.com", "gnome.org"} }, nil},
		{"google.com covers www.google.com", func(c *Config) { c.GardenDomains = []string{"google.com"} }, []string{`"google.com": covers www.google.com`}},
		{"bad local name", func(c *Config) { c.LocalNames = []string{"bad name.test"} }, []string{`local name "bad name.test"`}},
		{"bad set", func(c *Config) { c.GardenSet = "cw garden" }, []string{`garden set "cw garden"`}},
		{"bad interface", func(c *Config) { c.Interface = "a-very-long-interface-name" }, []string{"want a Linux interface name"}},
		{"short lease", func(c *Config) { c.LeaseTime = time.Minute }, []string{"at least 2m"}},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }, []string{"want an absolute path"}},
		{"bad upstream", func(c *Config) { c.Upstreams = []netip.AddrPort{{}} }, []string{"upstream 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.modify(&c)
			err := c.withDefaults().Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDurationArg(t *testing.T) {
	for d, want := range map[time.Duration]string{2 * time.Hour: "2h", 150 * time.Second: "150", 3 * time.Minute: "3m"} {
		if got := durationArg(d); got != want {
			t.Errorf("durationArg(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestLocalNames(t *testing.T) {
	probes := append([]string{}, ProbeHosts...)
	tests := []struct {
		name  string
		url   string
		extra []string
		want  []string
	}{
		{"portal by name", "https://Portal.Civicwifi.test:8443/api", nil, append(append([]string{}, probes...), "portal.civicwifi.test")},
		{"portal by address", "https://10.20.0.1:2443/api/captive", nil, probes},
		{"no portal", "", []string{"wifi.voghera.test.", "captive.apple.com"}, append(append([]string{}, probes...), "wifi.voghera.test")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Config{CaptivePortalURL: tt.url, LocalNames: tt.extra}.localNames()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("localNames (-want +got):\n%s", diff)
			}
		})
	}
}
