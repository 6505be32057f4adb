package sites

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/internal/yamlconf"
)

func readBase(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBaseIsValid(t *testing.T) {
	c, err := Parse("f.yaml", []byte(readBase(t)))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sites) != 3 || len(c.Policies) != 1 {
		t.Fatalf("got %d sites, %d policies", len(c.Sites), len(c.Policies))
	}
}

// Each kind of mistake, made in an otherwise valid file, is reported at its
// exact place with a hint, and the file yields no Config.
func TestMistakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit [][2]string // replacements applied to testdata/base.yaml, each must match
		want []string
	}{
		{"unknown key", [][2]string{{"    down: 5mbit", "    dwn: 5mbit"}},
			[]string{`f.yaml:9:5: policies[0]: unknown key "dwn" (did you mean "down"?)`}},
		{"unknown key in a site", [][2]string{{"    kind: park", "    knd: park"}},
			[]string{
				`f.yaml:16:5: site "parco": kind: missing (park, library, museum, office, square)`,
				`f.yaml:18:5: sites[0]: unknown key "knd" (did you mean "kind"?)`,
			}},
		{"bad rate", [][2]string{{"down: 5mbit", "down: 5 Mbps"}},
			[]string{`f.yaml:9:11: policy "parks": down: "5 Mbps" is not a rate (try 5mbit)`}},
		// Gateways refuse a rate under the shaper's 8kbit and a quota over 2^50 bytes: such a policy would pass
		// here and never reach the site.
		{"rate below the shaper's smallest", [][2]string{{"down: 5mbit", "down: 4kbit"}},
			[]string{`f.yaml:9:11: policy "parks": down: 4kbit is below the smallest rate gateways enforce, 8kbit (0 for no limit)`}},
		{"quota too large", [][2]string{{"session: 2h", "daily_quota: 2000000GiB"}},
			[]string{`f.yaml:10:18: policy "parks": daily_quota: 2000000GiB is more than gateways can count (at most 1048576GiB; 0 for none)`}},
		{"bytes per second rate", [][2]string{{"down: 5mbit", "down: 5MBps"}},
			[]string{`f.yaml:9:11: policy "parks": down: "5MBps" is not a rate (try 5mbit)`}},
		{"bad duration", [][2]string{{"session: 2h", "session: 1d"}},
			[]string{`f.yaml:10:14: policy "parks": session: "1d" is not a duration (days are not a unit: write hours, e.g. 24h)`}},
		{"bad quota", [][2]string{{"session: 2h", "daily_quota: lots"}},
			[]string{`f.yaml:10:18: policy "parks": daily_quota: "lots" is not a data size (try 500MB or 2GiB; 0 for none)`}},
		{"bad number", [][2]string{{"session: 2h", "max_clients: many"}},
			[]string{`f.yaml:10:18: policy "parks": max_clients: "many" is not a whole number`}},
		{"duplicate site id", [][2]string{{"id: piazza", "id: parco"}},
			[]string{`f.yaml:27:9: site id "parco" is already used at f.yaml:16:9`}},
		{"duplicate gateway id", [][2]string{{"id: piazza-gw1", "id: parco-gw1"}},
			[]string{`f.yaml:34:14: site "piazza": gateways[0].id: gateway id "parco-gw1" is already used at f.yaml:23:14`}},
		{"duplicate access point, other spelling", [][2]string{{"mac: 02:00:00:00:00:02", "mac: 02-00-00-00-00-01"}},
			[]string{`f.yaml:36:14: site "piazza": access_points[0].mac: access point 02:00:00:00:00:01 is already listed at f.yaml:25:14`}},
		{"duplicate policy", [][2]string{{"sites:\n", "  - name: parks\n    login: {methods: [sms]}\nsites:\n"}},
			[]string{`f.yaml:15:11: policy "parks" is already defined at f.yaml:8:11`}},
		{"policy that does not exist", [][2]string{{"    policy: parks\n    client_network: {address: 10.20.4.1/22}", "    policy: prks\n    client_network: {address: 10.20.4.1/22}"}},
			[]string{`f.yaml:31:13: site "piazza": policy: "prks" does not exist (did you mean "parks"?)`}},
		{"no login method", [][2]string{{"methods: [click-through, sms]", "methods: []"}},
			[]string{
				`f.yaml:20:13: site "parco": no login method: policy "parks" offers none (list login.methods in the policy or in the site's overrides)`,
				`f.yaml:31:13: site "piazza": no login method: policy "parks" offers none (list login.methods in the policy or in the site's overrides)`,
				`f.yaml:41:13: site "museo": no login method: policy "parks" offers none (list login.methods in the policy or in the site's overrides)`,
			}},
		{"unknown login method", [][2]string{{"methods: [click-through, sms]", "methods: [click-through, spdi]"}},
			[]string{`f.yaml:12:32: policy "parks": login.methods: "spdi" is not a login method (did you mean "spid"?)`}},
		{"bad MAC", [][2]string{{"mac: 02:00:00:00:00:02", "mac: 02:00:00:00:00"}},
			[]string{`f.yaml:36:14: site "piazza": access_points[0].mac: "02:00:00:00:00" is not a MAC address (six hex pairs, e.g. 02:00:5e:10:00:01)`}},
		{"multicast MAC", [][2]string{{"mac: 02:00:00:00:00:02", "mac: 01:00:5e:00:00:02"}},
			[]string{`f.yaml:36:14: site "piazza": access_points[0].mac: "01:00:5e:00:00:02" is a multicast address, not an access point's`}},
		{"latitude out of range", [][2]string{{"lat: 44.98", "lat: 94.98"}},
			[]string{`f.yaml:30:24: site "piazza": coordinates.lat: 94.98 is out of range (-90 to 90)`}},
		{"lat and lon swapped", [][2]string{{"{lat: 44.98, lon: 9.02}", "{lat: 9.02, lon: 44.98}"}},
			[]string{`f.yaml:30:18: site "piazza": coordinates: 9.020000,44.980000 is 5277 km from the town's other sites (lat and lon swapped, or a digit lost?)`}},
		{"swapped, and another mistake in the same site", [][2]string{{"{lat: 44.98, lon: 9.02}", "{lat: 9.02, lon: 44.98}"}, {"kind: square", "kind: piazza"}},
			[]string{
				`f.yaml:29:11: site "piazza": kind: "piazza" is not a kind of site (park, library, museum, office, square)`,
				`f.yaml:30:18: site "piazza": coordinates: 9.020000,44.980000 is 5277 km from the town's other sites (lat and lon swapped, or a digit lost?)`,
			}},
		{"both coordinates wrong", [][2]string{{"{lat: 44.98, lon: 9.02}", "{lat: north, lon: 190}"}},
			[]string{
				`f.yaml:30:24: site "piazza": coordinates.lat: "north" is not a number of degrees (write decimal degrees, e.g. 44.9925)`,
				`f.yaml:30:36: site "piazza": coordinates.lon: 190 is out of range (-180 to 180)`,
			}},
		{"bad opening hours: day", [][2]string{{"mon-fri 08:00-20:00", "mon-fry 08:00-20:00"}},
			[]string{`f.yaml:13:13: policy "parks": hours: "mon-fry 08:00-20:00": "fry" is not a day (did you mean "fri"?)`}},
		{"bad opening hours: backwards", [][2]string{{"mon-fri 08:00-20:00", "mon-fri 20:00-08:00"}},
			[]string{`f.yaml:13:13: policy "parks": hours: "mon-fri 20:00-08:00": 20:00-08:00 ends before it starts (to span midnight, write two ranges: 20:00-24:00 and 00:00-02:00 on the next day)`}},
		{"bad opening hours: time", [][2]string{{"mon-fri 08:00-20:00", "mon-fri 8-20"}},
			[]string{`f.yaml:13:13: policy "parks": hours: "mon-fri 8-20": "8" is not a time of day (write 24-hour HH:MM, 00:00 to 24:00)`}},
		{"SSID too long", [][2]string{{"ssid: Prova WiFi", "ssid: Rete Wi-Fi libera e gratuita del Comune di Prova"}},
			[]string{`f.yaml:3:9: town.ssid: "Rete Wi-Fi libera e gratuita del Comune di Prova" is 48 bytes long; an SSID is 1 to 32 bytes`}},
		{"SSID empty", [][2]string{{"    name: Museo\n", "    name: Museo\n    ssid: \"\"\n"}},
			[]string{`f.yaml:39:11: site "museo": ssid: "" is 0 bytes long; an SSID is 1 to 32 bytes`}},
		{"no SSID at all", [][2]string{{"  ssid: Prova WiFi\n", ""}},
			[]string{
				`f.yaml:15:5: site "parco": ssid: missing, and town.ssid is not set either`,
				`f.yaml:26:5: site "piazza": ssid: missing, and town.ssid is not set either`,
				`f.yaml:36:5: site "museo": ssid: missing, and town.ssid is not set either`,
			}},
		{"probe host in walled garden", [][2]string{{"[comune.prova.it]", "[comune.prova.it, gstatic.com]"}},
			[]string{`f.yaml:14:38: policy "parks": walled_garden: "gstatic.com" lets devices reach the captive-portal probe host connectivitycheck.gstatic.com, so they would never show the login page; remove it`}},
		{"probe host as a wildcard", [][2]string{{"[comune.prova.it]", "[\"*.apple.com\"]"}},
			[]string{`f.yaml:14:21: policy "parks": walled_garden: "*.apple.com" lets devices reach the captive-portal probe host captive.apple.com, so they would never show the login page; remove it`}},
		{"inline secret", [][2]string{{`"env:GW_PARCO"`, `"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDu8p0vF1n3x9mN2a7Kq"`}},
			[]string{`f.yaml:23:37: site "parco": gateways[0].credential: ` + errInlineSecret.Error()}},
		{"inline token", [][2]string{{`"env:GW_PARCO"`, `"q9X2vTt7LmZ0pR4sW8yB1cN6"`}},
			[]string{`f.yaml:23:37: site "parco": gateways[0].credential: ` + errInlineSecret.Error()}},
		{"relative secret file", [][2]string{{`"file:/etc/civicwifi/piazza-gw1.pub"`, `"file:piazza-gw1.pub"`}},
			[]string{`f.yaml:34:38: site "piazza": gateways[0].credential: file: wants a clean absolute path, e.g. file:/etc/civicwifi/gateways/pertini-gw1.pub`}},
		{"unknown kind", [][2]string{{"kind: park", "kind: parc"}},
			[]string{`f.yaml:18:11: site "parco": kind: "parc" is not a kind of site (did you mean "park"?)`}},
		{"channel not allowed in Italy", [][2]string{{"channel: 6", "channel: 14"}},
			[]string{`f.yaml:26:42: site "parco": access_points[0].radios[0].channel: 14 is not a 2.4ghz channel allowed in Italy (1 to 13)`}},
		{"power above the limit", [][2]string{{"tx_power: 20", "tx_power: 27"}},
			[]string{`f.yaml:26:55: site "parco": access_points[0].radios[0].tx_power: 27 dBm is above the 20 dBm EIRP allowed in Italy on 2.4ghz channel 6`}},
		{"two radios on one band", [][2]string{{"radios: [{band: 2.4ghz, channel: 6, tx_power: 20}]", "radios: [{band: 2.4ghz}, {band: 2.4GHz}]"}},
			[]string{`f.yaml:26:41: site "parco": access_points[0].radios[1].band: a second 2.4ghz radio (one radio per band)`}},
		{"bad override", [][2]string{{"    policy: parks\n    client_network: {address: 10.20.0.1/22}", "    policy: parks\n    overrides: {down: fast, idl: 5m}\n    client_network: {address: 10.20.0.1/22}"}},
			[]string{
				`f.yaml:21:23: site "parco": overrides.down: "fast" is not a rate (try 5mbit)`,
				`f.yaml:21:29: sites[0].overrides: unknown key "idl" (did you mean "idle"?)`,
			}},
		{"name is not an override", [][2]string{{"    policy: parks\n    client_network: {address: 10.20.0.1/22}", "    policy: parks\n    overrides: {name: other}\n    client_network: {address: 10.20.0.1/22}"}},
			[]string{`f.yaml:21:17: sites[0].overrides: unknown key "name"`}},
		{"site without gateway", [][2]string{{"    gateways: [{id: museo-gw1, credential: \"env:GW_MUSEO\"}]\n", ""}},
			[]string{`f.yaml:37:5: site "museo": gateways: none (a site needs at least one gateway)`}},
		{"bad SMS country and SPID level", [][2]string{{"methods: [click-through, sms]", "methods: [click-through, sms]\n      sms: {countries: [IT, XX]}\n      spid: {level: 3}"}},
			[]string{
				`f.yaml:13:29: policy "parks": login.sms.countries: "XX" is not an ISO 3166-1 alpha-2 country code (e.g. IT, SM, VA, CH)`,
				`f.yaml:14:21: policy "parks": login.spid.level: "3" is not a SPID level for Wi-Fi login (1 or 2)`,
			}},
		{"bad client network", [][2]string{{"10.20.4.1/22", "10.20.4.0/22"}, {"10.20.8.1/22", "8.8.8.1/24"}},
			[]string{
				`f.yaml:32:31: site "piazza": client_network.address: 10.20.4.0 is the network or broadcast address of 10.20.4.0/22`,
				`f.yaml:42:31: site "museo": client_network.address: 8.8.8.1 is not a private address (use 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16)`,
			}},
		{"privacy both url and text", [][2]string{{"{it: Informativa sulla privacy}", "{it: Informativa, url: \"https://comune.prova.it/privacy\"}"}},
			[]string{`f.yaml:5:35: town.privacy: give either url or the text inline, not both`}},
		{"bad contacts and time zone", [][2]string{{"dpo: dpo@comune.prova.it}", "dpo: Mario Rossi}\n  timezone: Europe/Roma"}},
			[]string{
				`f.yaml:4:47: town.contacts.dpo: "Mario Rossi" is not an e-mail address (write just the address, e.g. urp@comune.voghera.pv.it)`,
				`f.yaml:5:13: town.timezone: "Europe/Roma" is not an IANA time zone (e.g. Europe/Rome)`,
			}},
		{"one value where a mapping belongs", [][2]string{{"coordinates: {lat: 44.98, lon: 9.02}", "coordinates: 44.98 9.02"}},
			[]string{"f.yaml:30:18: sites[1].coordinates: expected a mapping of keys"}},
		{"a mapping where a list belongs", [][2]string{{"walled_garden: [comune.prova.it]", "walled_garden: {a: b}"}},
			[]string{"f.yaml:14:20: policies[0].walled_garden: a list belongs here, not a mapping"}},
		{"values of the wrong shape, and an unknown key", [][2]string{{"    kind: park", "    kind: [park]\n    knd: x"}, {"coordinates: {lat: 44.98, lon: 9.02}", "coordinates: 44.98 9.02"}},
			[]string{
				`f.yaml:18:11: sites[0].kind: a single value belongs here, not a list`,
				`f.yaml:19:5: sites[0]: unknown key "knd" (did you mean "kind"?)`,
				"f.yaml:31:18: sites[1].coordinates: expected a mapping of keys",
			}},
		{"every problem at once", [][2]string{{"down: 5mbit", "down: 5 Mbps"}, {"kind: square", "kind: piazza"}, {"mac: 02:00:00:00:00:02", "mac: 02:00:00:00:00:01"}},
			[]string{
				`f.yaml:9:11: policy "parks": down: "5 Mbps" is not a rate (try 5mbit)`,
				`f.yaml:29:11: site "piazza": kind: "piazza" is not a kind of site (park, library, museum, office, square)`,
				`f.yaml:36:14: site "piazza": access_points[0].mac: access point 02:00:00:00:00:01 is already listed at f.yaml:25:14`,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := readBase(t)
			for _, e := range tc.edit {
				if !strings.Contains(in, e[0]) {
					t.Fatalf("base has no %q", e[0])
				}
				in = strings.Replace(in, e[0], e[1], 1)
			}
			c, err := Parse("f.yaml", []byte(in))
			if c != nil {
				t.Error("a file with problems yielded a Config")
			}
			var ps *yamlconf.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error %v is not a *yamlconf.Problems", err)
			}
			var got []string
			for _, p := range ps.List {
				got = append(got, p.Error())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestSyntaxErrorAndEmpty(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"town: [\n", "f.yaml:1:1: line 1: did not find expected node content"},
		{"", "f.yaml: file is empty"},
		{"town: {}\nsites: []\n", "f.yaml: sites: none (a file describes at least one site)\nf.yaml:1:7: town.name: missing\nf.yaml:1:7: town.privacy: missing (url, or the text inline under it/en/de/fr)\nf.yaml:1:7: town.terms: missing (url, or the text inline under it/en/de/fr)\nf.yaml:1:7: town.contacts: missing (email and dpo)"},
	} {
		c, err := Parse("f.yaml", []byte(tc.in))
		if c != nil || err == nil {
			t.Fatalf("%q: got %v, %v", tc.in, c, err)
		}
		if err.Error() != tc.want {
			t.Errorf("%q: problems\n%s\nwant\n%s", tc.in, err, tc.want)
		}
	}
}

// Overrides replace the policy's fields one by one; a site's effective
// policy is what its gateways enforce.
func TestEffectivePolicy(t *testing.T) {
	in := strings.Replace(readBase(t), "    policy: parks\n    client_network: {address: 10.20.0.1/22}",
		`    policy: parks
    overrides:
      down: 20mbit
      login: {methods: [spid, voucher], voucher: {devices: 3}}
      walled_garden: []
    client_network: {address: 10.20.0.1/22, vlan: 30}`, 1)
	in = strings.Replace(in, "methods: [click-through, sms]", "methods: [click-through, sms]\n      sms: {countries: [IT, sm]}", 1)
	c, err := Parse("f.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	base := Policy{
		Name: "parks", Down: 5 * quantity.Mbit, Up: DefaultUp, Session: 2 * time.Hour, Idle: DefaultIdle,
		Login: Login{Methods: []Method{ClickThrough, SMS}, SMS: SMSOptions{Countries: []string{"IT", "SM"}},
			SPID: SPIDOptions{Level: 2}, Voucher: VoucherOptions{Devices: 1}},
		WalledGarden: []string{"comune.prova.it"},
	}
	for d := time.Monday; d <= time.Friday; d++ {
		base.Hours.Days[d] = []Span{{8 * 60, 20 * 60}}
	}
	if diff := cmp.Diff(base, *c.Policy("parks")); diff != "" {
		t.Errorf("policy (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff(base, c.Site("piazza").Policy); diff != "" {
		t.Errorf("site without overrides (-want +got)\n%s", diff)
	}
	want := base
	want.Down = 20 * quantity.Mbit
	want.Login.Methods = []Method{SPID, Voucher}
	want.Login.Voucher.Devices = 3
	want.WalledGarden = nil
	parco := c.Site("parco")
	if diff := cmp.Diff(want, parco.Policy); diff != "" {
		t.Errorf("overridden (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff([]string{"down", "login.methods", "login.voucher.devices", "walled_garden"}, parco.Overridden); diff != "" {
		t.Errorf("overridden keys (-want +got)\n%s", diff)
	}
	wantNet := ClientNetwork{Gateway: netip.MustParseAddr("10.20.0.1"), Subnet: netip.MustParsePrefix("10.20.0.0/22"), VLAN: 30}
	if parco.ClientNetwork != wantNet {
		t.Errorf("client network %v, want %v", parco.ClientNetwork, wantNet)
	}
	if c.GatewaySite("museo-gw1").ID != "museo" || c.GatewaySite("nope") != nil {
		t.Error("GatewaySite does not find gateways' sites")
	}
}

// The repository's sites.yaml is a real, valid example.
func TestVogheraExample(t *testing.T) {
	c, err := Load("../../../sites.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range c.Sites {
		ids = append(ids, s.ID)
	}
	wantIDs := []string{"palazzo-comunale", "parco-pertini", "biblioteca-ricottiana", "museo-scienze-naturali", "parco-moschini",
		"casa-gallini", "medassino-piazza-chiesa", "oriolo-parco-scuole", "torremenapace-parco-asilo",
		"san-vittore-parco-palestra", "pombio-parco-auser"}
	if diff := cmp.Diff(wantIDs, ids); diff != "" {
		t.Errorf("sites (-want +got)\n%s", diff)
	}
	if c.Town.Name != "Comune di Voghera" || c.Town.IPACode != "c_m109" || c.Town.Timezone.String() != "Europe/Rome" {
		t.Errorf("town %+v", c.Town)
	}
	pertini := c.Site("parco-pertini").Policy
	if pertini.Down != 5*quantity.Mbit || pertini.Session != 2*time.Hour ||
		!pertini.Login.Allows(ClickThrough) || !pertini.Login.Allows(SMS) || !pertini.Login.Allows(SPID) || pertini.Login.Allows(Voucher) {
		t.Errorf("parco-pertini's policy %+v", pertini)
	}
	lib := c.Site("biblioteca-ricottiana").Policy
	if lib.Login.Allows(ClickThrough) || !lib.Login.Allows(Voucher) {
		t.Errorf("library's login %+v", lib.Login)
	}
	museo := c.Site("museo-scienze-naturali").Policy
	if museo.MaxClients != 40 || museo.Hours.String() != "mon-wed 09:00-12:30,14:30-17:30; fri 09:00-12:30; sat 10:00-12:00" {
		t.Errorf("museum's overrides not applied: %d clients, hours %s", museo.MaxClients, museo.Hours)
	}
	if pombio := c.Site("pombio-parco-auser").Policy; pombio.Down != 3*quantity.Mbit || pombio.Up != quantity.Mbit {
		t.Errorf("pombio down %v up %v", pombio.Down, pombio.Up)
	}
	for _, s := range c.Sites {
		if s.SSID != "Voghera Free WiFi" || len(s.Gateways) == 0 || len(s.AccessPoints) == 0 {
			t.Errorf("site %s: ssid %q, %d gateways, %d APs", s.ID, s.SSID, len(s.Gateways), len(s.AccessPoints))
		}
		for _, a := range s.AccessPoints {
			if !strings.HasPrefix(a.MAC, "02:76:67:") {
				t.Errorf("site %s: AP %s is not a locally administered example address", s.ID, a.MAC)
			}
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	c, err := Load("testdata/does-not-exist.yaml")
	if c != nil || err == nil || !strings.HasPrefix(err.Error(), "reading sites file: ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, %v", c, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/base.yaml", "../../../sites.yaml", "testdata/old.yaml", "testdata/new.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("sites: [{id: a, overrides: {login: {sms: {countries: [x]}}}}]"))
	f.Add([]byte("sites: &a [{kind: [x]}, *a]\npolicies: {}\n"))
	f.Add([]byte("town: &t {name: x, terms: *t}\nsites: [{kind: {a: 1}}]\n"))
	f.Add([]byte("policies: [{name: a, hours: [\"fri-mon 00:00-24:00\"]}]"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Parse("f.yaml", in)
		if (c == nil) == (err == nil) {
			t.Fatalf("got config %v and error %v: want exactly one", c != nil, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "f.yaml") {
			t.Fatalf("problem without its place: %v", err)
		}
	})
}
