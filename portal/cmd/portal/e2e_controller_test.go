package main

// The town's controller driving two sites: a real `controller run` (the
// embedded store) in site A's "internet" namespace, two real gateways of two
// sites in their own labs, linked to it by the signed gateway protocol.
// Site B reaches the controller across a link between the two labs'
// upstream namespaces (NATed there, as a site behind its provider's NAT).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/control"
)

// controllerBinary builds the controller once per test run.
func controllerBinary(t *testing.T) string {
	return lab.Binary(t, "github.com/civicwifi/civicwifi/controller/cmd/controller")
}

// controllerAddr is where both gateways reach the controller: on site A's
// upstream, at the end of the link from site B's.
const controllerAddr = "192.0.2.1"

const twoSites = `town:
  name: Comune di Prova
  ssid: Prova WiFi
  contacts: {email: urp@comune.prova.it, dpo: dpo@comune.prova.it}
  privacy: {it: Informativa sulla privacy}
  terms: {it: Condizioni d'uso}
policies:
  - name: parks
    down: 5mbit
    up: 5mbit
    session: 2h
    idle: 15m
    login:
      methods: [click-through]
sites:
  - id: parco-a
    name: Parco A
    kind: park
    coordinates: {lat: 44.99, lon: 9.01}
    policy: parks%[2]s
    client_network: {address: 10.20.0.1/22}
    gateways:
      - {id: gw-a, credential: "file:%[1]s/gw-a.pub"}
  - id: parco-b
    name: Parco B
    kind: park
    coordinates: {lat: 44.98, lon: 9.02}
    policy: parks
    client_network: {address: 10.20.0.1/22}
    gateways:
      - {id: gw-b, credential: "file:%[1]s/gw-b.pub"}
`

// town is the controller and its files.
type town struct {
	t              *testing.T
	dir, bin, conf string
	ns             lab.NS
	l              *lab.Lab
	cmd            *exec.Cmd
}

func (tw *town) writeSites(overrideA string) {
	tw.t.Helper()
	tmp := filepath.Join(tw.dir, "sites.yaml.new")
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf(twoSites, tw.dir, overrideA)), 0o644); err != nil {
		tw.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(tw.dir, "sites.yaml")); err != nil {
		tw.t.Fatal(err)
	}
}

func (tw *town) start() {
	tw.t.Helper()
	cmd, err := tw.l.Start(tw.ns, "controller", tw.bin, "run", "-config", tw.conf)
	if err != nil {
		tw.t.Fatal(err)
	}
	tw.cmd = cmd
	eventually(tw.t, 20*time.Second, "controller answers /healthz", func() (bool, string) {
		r := fetch(tw.ns, 2*time.Second, "http://127.0.0.1:8443/healthz")
		return r.Code == 200, r.String()
	})
}

func (tw *town) stop() {
	if tw.cmd == nil || tw.cmd.Process == nil {
		return
	}
	tw.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tw.l.Exited(tw.cmd):
	case <-time.After(15 * time.Second):
		tw.cmd.Process.Kill()
		<-tw.l.Exited(tw.cmd)
	}
	tw.cmd = nil
}

// totals runs `controller sessions` (the controller must be stopped: the
// embedded store's file is locked while it runs).
func (tw *town) totals() map[string]siteTotals {
	tw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := tw.ns.Run(ctx, tw.bin, "sessions", "-config", tw.conf, "-json")
	if err != nil {
		tw.t.Fatalf("controller sessions: %v\n%s", err, out)
	}
	var lines []siteTotals
	if err := json.Unmarshal([]byte(out), &lines); err != nil {
		tw.t.Fatalf("controller sessions output %q: %v", out, err)
	}
	m := map[string]siteTotals{}
	for _, l := range lines {
		m[l.Site] = l
	}
	return m
}

type siteTotals struct {
	Site      string `json:"site"`
	Sessions  int64  `json:"sessions"`
	Open      int    `json:"open"`
	BytesDown uint64 `json:"bytes_down"`
	BytesUp   uint64 `json:"bytes_up"`
}

func gatewayYAML(dir, id string) string {
	return fmt.Sprintf(`controller:
  url: http://%s:8443
  gateway_id: %s
  key_file: %s/%s.key
  controller_key_file: %s/controller.pub
  heartbeat: 2s
`, controllerAddr, id, dir, id, dir)
}

func renameSite(t *testing.T, l *lab.Lab, id string) {
	t.Helper()
	p := filepath.Join(l.Dir, "portal.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(b), "site: lab\n", "site: "+id+"\n", 1)
	// This test is about the controller, not the Captive Portal API.
	conf = regexp.MustCompile(`api_url: "[^"]*",? ?`).ReplaceAllString(conf, "")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// upRate is a client's session upload rate as the gateway reports it.
func upRate(s *site, ip string) (quantity.Rate, string) {
	for _, c := range s.clients() {
		if c.IP == ip && c.Session != nil {
			return quantity.Rate(c.Session.UpRate), c.Session.ID
		}
	}
	return 0, ""
}

func TestControllerDrivesTwoSites(t *testing.T) {
	// The embedded store, with the full two-minute controller outage; then
	// Redis (started in the controller's namespace), with a shorter one.
	t.Run("embedded store", func(t *testing.T) { testControllerDrivesTwoSites(t, false, 2*time.Minute) })
	t.Run("redis", func(t *testing.T) { testControllerDrivesTwoSites(t, true, 30*time.Second) })
}

func testControllerDrivesTwoSites(t *testing.T, redis bool, outageFor time.Duration) {
	lab.Require(t, "iptables", "ipset", "tc", "dnsmasq", "curl", "iperf3")
	if redis {
		lab.Require(t, "redis-server")
	}
	dir := t.TempDir()
	for _, name := range []string{"controller", "gw-a", "gw-b"} {
		if _, err := apiclient.Enroll(dir, name); err != nil {
			t.Fatal(err)
		}
	}
	tw := &town{t: t, dir: dir, bin: controllerBinary(t), conf: filepath.Join(dir, "controller.yaml")}
	tw.writeSites("")
	storeAddr := "bolt:" + dir + "/controller.db"
	if redis {
		storeAddr = "redis://127.0.0.1:6390/0"
	}
	conf := fmt.Sprintf(`listen: 0.0.0.0:8443
sites: %[1]s/sites.yaml
store: %[2]s
signing_key: %[1]s/controller.key
state_dir: %[1]s/state
metrics_listen: "off"
reload_check: 1s
log_format: text
`, dir, storeAddr)
	if err := os.WriteFile(tw.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	a := newSiteWith(t, 2, gatewayYAML(dir, "gw-a"), func(l *lab.Lab) {
		renameSite(t, l, "parco-a")
		tw.l, tw.ns = l, l.Upstream
		ctx := context.Background()
		if _, err := l.Upstream.Run(ctx, "ip", "addr", "add", controllerAddr+"/30", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		if redis {
			rdir := filepath.Join(dir, "redis")
			if err := os.Mkdir(rdir, 0o700); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Start(l.Upstream, "redis", "redis-server", "--bind", "127.0.0.1", "--port", "6390",
				"--dir", rdir, "--appendonly", "yes", "--save", ""); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "redis answers", func() (bool, string) {
				out, err := l.Upstream.Run(ctx, "redis-cli", "-p", "6390", "ping")
				return err == nil && strings.TrimSpace(out) == "PONG", out
			})
		}
		tw.start()
		t.Cleanup(tw.stop)
	})
	b := newSiteWith(t, 2, gatewayYAML(dir, "gw-b"), func(l *lab.Lab) {
		renameSite(t, l, "parco-b")
		// Site B's provider: a link to site A's upstream, NATed.
		ctx := context.Background()
		peer := "cxb" + l.ID
		for _, argv := range [][]string{
			{"ip", "link", "add", "cxa" + l.ID, "netns", a.l.Upstream.Name, "type", "veth", "peer", "name", peer, "netns", l.Upstream.Name},
		} {
			if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", argv, err, out)
			}
		}
		for _, step := range []struct {
			ns   lab.NS
			argv []string
		}{
			{a.l.Upstream, []string{"ip", "addr", "add", "192.0.2.5/30", "dev", "cxa" + l.ID}},
			{a.l.Upstream, []string{"ip", "link", "set", "cxa" + l.ID, "up"}},
			{l.Upstream, []string{"ip", "addr", "add", "192.0.2.6/30", "dev", peer}},
			{l.Upstream, []string{"ip", "link", "set", peer, "up"}},
			{l.Upstream, []string{"ip", "route", "add", controllerAddr + "/32", "via", "192.0.2.5"}},
			{l.Upstream, []string{"sysctl", "-qw", "net.ipv4.ip_forward=1"}},
			{l.Upstream, []string{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", peer, "-j", "MASQUERADE"}},
		} {
			if out, err := step.ns.Run(ctx, step.argv...); err != nil {
				t.Fatalf("%s %v: %v\n%s", step.ns, step.argv, err, out)
			}
		}
	})

	// Both gateways follow the site's policy: a client let in by the
	// operator gets the site's 5 Mbit/s.
	ca, cb := a.l.Clients[0], b.l.Clients[0]
	for _, x := range []struct {
		s   *site
		ip  string
		mac string
	}{{a, ca.IP.String(), ca.MAC.String()}, {b, cb.IP.String(), cb.MAC.String()}} {
		eventually(t, 20*time.Second, "gateway follows the controller's policy", func() (bool, string) {
			return strings.Contains(x.s.log(), "site policy applied"), "no 'site policy applied' in the log"
		})
		x.s.allow("--ip", x.ip, "--mac", x.mac)
		if r, _ := upRate(x.s, x.ip); r != 5*quantity.Mbit {
			t.Fatalf("%s: session up rate %v, want the policy's 5mbit", x.ip, r)
		}
	}
	ctx := context.Background()
	measure := func(s *site, c *lab.Client) float64 {
		t.Helper()
		bps, err := lab.Iperf3(ctx, c.NS, s.l.UpstreamIP.String(), 5201, 3, false)
		if err != nil {
			t.Fatalf("iperf3: %v", err)
		}
		return bps / 1e6
	}
	if got := measure(a, ca); got < 4.5 || got > 5.5 {
		t.Errorf("site A before the change: %.2f Mbit/s, want about 5", got)
	}
	_, sessA := upRate(a, ca.IP.String())

	// IT staff edit sites.yaml: site A's upload goes to 2 Mbit/s.
	t0 := time.Now()
	tw.writeSites("\n    overrides: {up: 2mbit}")
	eventually(t, 10*time.Second, "site A enforces the new rate", func() (bool, string) {
		r, _ := upRate(a, ca.IP.String())
		return r == 2*quantity.Mbit, r.String()
	})
	took := time.Since(t0)
	t.Logf("sites.yaml change enforced at site A after %v", took.Round(time.Millisecond))
	if r, id := upRate(a, ca.IP.String()); id != sessA {
		t.Errorf("the client's session changed (%s -> %s, rate %v): it was dropped", sessA, id, r)
	}
	if got := measure(a, ca); got < 1.8 || got > 2.2 {
		t.Errorf("site A after the change: %.2f Mbit/s, want about 2", got)
	}
	if r, _ := upRate(b, cb.IP.String()); r != 5*quantity.Mbit {
		t.Errorf("site B's rate moved to %v with site A's change", r)
	}

	// The walled garden follows sites.yaml too: a captive phone at site A
	// reaches www.example.test once it is added, site B's does not.
	www := "http://www.example.test/"
	if r := fetch(a.l.Clients[1].NS, 5*time.Second, www); r.Code != 302 {
		t.Fatalf("captive phone before the garden change: %v, want the portal", r)
	}
	tw.writeSites("\n    overrides: {up: 2mbit, walled_garden: [www.example.test]}")
	eventually(t, 15*time.Second, "site A's captive phone reaches the new garden domain", func() (bool, string) {
		r := fetch(a.l.Clients[1].NS, 3*time.Second, www)
		return r.upstream(), r.String()
	})
	if r := fetch(b.l.Clients[1].NS, 5*time.Second, www); r.Code != 302 {
		t.Errorf("site B's captive phone reached site A's garden: %v", r)
	}
	if r, id := upRate(a, ca.IP.String()); r != 2*quantity.Mbit || id != sessA {
		t.Errorf("after the garden change site A's client has rate %v, session %s (was %s)", r, id, sessA)
	}

	// A broken sites.yaml changes nothing, and the controller says where.
	tw.writeSites("\n    overrides: {up: 2 Mbps}")
	eventually(t, 10*time.Second, "controller reports the broken sites.yaml", func() (bool, string) {
		log, _ := os.ReadFile(tw.l.LogFile("controller"))
		return strings.Contains(string(log), "sites.yaml:21:"), "no sites.yaml:21: problem in the controller's log"
	})
	if r, _ := upRate(a, ca.IP.String()); r != 2*quantity.Mbit {
		t.Errorf("a broken sites.yaml moved site A to %v", r)
	}
	tw.writeSites("\n    overrides: {up: 2mbit}")

	// The controller goes away for two minutes while residents come and go
	// at site B; when it is back, its totals equal the gateway's.
	tw.stop()
	c2 := b.l.Clients[1]
	kick := func(c *lab.Client) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := b.ctl(ctx, "kick", "--ip", c.IP.String()); err != nil {
			t.Fatalf("kick: %v\n%s", err, out)
		}
	}
	outage := time.Now().Add(outageFor)
	for i := 0; i < 12 && time.Now().Before(outage); i++ {
		b.allow("--ip", c2.IP.String(), "--mac", c2.MAC.String())
		if r := fetch(c2.NS, 10*time.Second, "-o", "/dev/null", fmt.Sprintf("http://%s/bytes?n=%d", b.l.OtherIP, 1_000_000+i)); r.Err != nil {
			t.Fatalf("download at site B: %v", r)
		}
		kick(c2)
		time.Sleep(time.Until(outage) / 3)
	}
	kick(cb)
	time.Sleep(time.Until(outage))
	if st := b.status(); st.Controller == nil || st.Controller.EventsQueued == 0 {
		t.Fatalf("no events queued at site B while the controller was away: %+v", st.Controller)
	}
	tw.start()
	// Every event delivered: the gateway's outbox drains.
	eventually(t, 90*time.Second, "site B's outbox is empty", func() (bool, string) {
		st := b.status()
		return st.Controller != nil && st.Controller.EventsQueued == 0, fmt.Sprintf("%+v", st.Controller)
	})
	tw.stop()
	got := tw.totals()
	want := gatewayTotals(t, b)
	if g := got["parco-b"]; g.Sessions != want.Sessions || g.BytesDown != want.BytesDown || g.BytesUp != want.BytesUp || g.Open != 0 {
		t.Errorf("controller's totals for parco-b = %+v, gateway's = %+v", g, want)
	}
	if g := got["parco-a"]; g.Sessions != 1 || g.Open != 1 {
		t.Errorf("controller's totals for parco-a = %+v, want 1 open session", g)
	}
}

func (s *site) status() control.Status {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.ctl(ctx, "--json", "status")
	if err != nil {
		s.t.Fatalf("ctl status: %v\n%s", err, out)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("ctl status output %q: %v", out, err)
	}
	return st
}

// gatewayTotals adds up the sessions the gateway's log says ended, with
// their final counters.
func gatewayTotals(t *testing.T, s *site) siteTotals {
	t.Helper()
	var tot siteTotals
	for _, line := range strings.Split(s.log(), "\n") {
		if !strings.Contains(line, `msg="session ended"`) {
			continue
		}
		tot.Sessions++
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "bytes_down="); ok {
				n, _ := strconv.ParseUint(v, 10, 64)
				tot.BytesDown += n
			}
			if v, ok := strings.CutPrefix(f, "bytes_up="); ok {
				n, _ := strconv.ParseUint(v, 10, 64)
				tot.BytesUp += n
			}
		}
	}
	if tot.Sessions < 2 || tot.BytesDown < 1_000_000 {
		t.Fatalf("the gateway's log shows %+v: want the ended sessions with their downloads", tot)
	}
	return tot
}
