package main

// The operators' view of a live site: a real `controller run` (embedded
// store, HTTPS from a lab CA, the dashboard under /admin/, metrics on
// metrics_listen) in the lab's upstream namespace, a real gateway with two
// phones let in, a real Prometheus scraping both, and a real headless
// Chromium signing in to the dashboard. The numbers each shows are checked
// against the lab (two phones online at parco-a, none at parco-b), the
// gateway's own clients and the controller's store.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/google/go-cmp/cmp"
)

// opsAdmin is the IT account the browser signs in with (made by
// `controller admin add`, the password on stdin).
const (
	opsAdmin    = "ida"
	opsPassword = "lab password, not a secret"
)

// promPort is Prometheus's web port inside the lab's upstream namespace.
const promPort = 9090

func TestOperatorsSeeTheLiveSite(t *testing.T) {
	lab.Require(t, "prometheus", "chromium")
	t0 := time.Now()
	dir := t.TempDir()
	for _, name := range []string{"controller", "gw-a", "gw-b"} {
		if _, err := apiclient.Enroll(dir, name); err != nil {
			t.Fatal(err)
		}
	}
	// The controller's HTTPS certificate (the dashboard's cookie is
	// Secure) from a lab CA. The gateway trusts that CA for its calls to
	// the controller through SSL_CERT_FILE (Go's roots on Linux), as a
	// real gateway trusts the controller's public certificate; Chromium
	// trusts it by its key.
	tlsDir := filepath.Join(dir, "tls")
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := lab.NewCA(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.Issue("controller", controllerAddr)
	if err != nil {
		t.Fatal(err)
	}
	// Both binaries built before the environment changes (go build may
	// want the module proxy's real certificate).
	ctlBin := controllerBinary(t)
	portalBinary(t)
	t.Setenv("SSL_CERT_FILE", ca.CertFile)

	tw := &town{t: t, dir: dir, bin: ctlBin, conf: filepath.Join(dir, "controller.yaml")}
	tw.writeSites("")
	accounts := filepath.Join(dir, "admin-accounts")
	{
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, tw.bin, "admin", "add", "-accounts", accounts, "-role", "it", opsAdmin)
		cmd.Stdin = strings.NewReader(opsPassword + "\n")
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("controller admin add: %v\n%s", err, out)
		}
	}
	conf := fmt.Sprintf(`listen: 0.0.0.0:8443
tls: {cert: %[2]s, key: %[3]s}
sites: %[1]s/sites.yaml
store: bolt:%[1]s/controller.db
signing_key: %[1]s/controller.key
state_dir: %[1]s/state
metrics_listen: 127.0.0.1:9464
reload_check: 1s
log_format: text
admin:
  accounts: %[4]s
`, dir, certFile, keyFile, accounts)
	if err := os.WriteFile(tw.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	base := "https://" + controllerAddr + ":8443"
	gwYAML := strings.Replace(gatewayYAML(dir, "gw-a"), "url: http://", "url: https://", 1)

	// Three phones: two let in, one left captive (it must not count).
	s := newSiteWith(t, 3, gwYAML, func(l *lab.Lab) {
		renameSite(t, l, "parco-a")
		// The gateway's metrics where Prometheus (in the upstream) reaches
		// them: its WAN address, in this lab only.
		p := filepath.Join(l.Dir, "portal.yaml")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		pc := strings.Replace(string(b), "metrics_listen: 127.0.0.1:9102", "metrics_listen: "+l.GatewayWANIP.String()+":9102", 1)
		if pc == string(b) {
			t.Fatal("portal.yaml has no metrics_listen: 127.0.0.1:9102 to move")
		}
		if err := os.WriteFile(p, []byte(pc), 0o644); err != nil {
			t.Fatal(err)
		}
		tw.l, tw.ns = l, l.Upstream
		if _, err := l.Upstream.Run(context.Background(), "ip", "addr", "add", controllerAddr+"/30", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		cmd, err := l.Start(l.Upstream, "controller", tw.bin, "run", "-config", tw.conf)
		if err != nil {
			t.Fatal(err)
		}
		tw.cmd = cmd
		eventually(t, 20*time.Second, "controller answers /healthz over HTTPS", func() (bool, string) {
			r := fetch(l.Upstream, 2*time.Second, "--cacert", ca.CertFile, base+"/healthz")
			return r.Code == 200, r.String()
		})
		t.Cleanup(tw.stop)
	})
	l := s.l
	eventually(t, 20*time.Second, "gateway follows the controller's policy", func() (bool, string) {
		return strings.Contains(s.log(), "site policy applied"), "no 'site policy applied' in the log"
	})
	phones := l.Clients[:2]
	wantMACs := []string{}
	for _, c := range phones {
		s.allow("--ip", c.IP.String(), "--mac", c.MAC.String())
		wantMACs = append(wantMACs, strings.ToLower(c.MAC.String()))
	}
	sort.Strings(wantMACs)
	// The third phone tries the internet and stays captive.
	if r := fetch(l.Clients[2].NS, 5*time.Second, "http://"+l.OtherIP.String()+"/"); r.upstream() {
		t.Fatalf("the third phone reached the upstream without being let in: %v", r)
	}
	var gwMACs []string
	for _, c := range s.clients() {
		if c.State == "authorised" {
			gwMACs = append(gwMACs, strings.ToLower(c.MAC))
		}
	}
	sort.Strings(gwMACs)
	if diff := cmp.Diff(wantMACs, gwMACs); diff != "" {
		t.Fatalf("the gateway's authorised clients (-lab +gateway):\n%s", diff)
	}

	t.Run("prometheus", func(t *testing.T) { testOpsPrometheus(t, l, dir) })
	t.Run("dashboard", func(t *testing.T) { testOpsDashboard(t, l, ca, base, wantMACs) })

	// The Disconnect clicked on the dashboard reaches the gateway through
	// the command long poll: that phone is captive again within seconds,
	// the other stays online, and the stop event reaches the controller.
	eventually(t, 15*time.Second, "the phone disconnected from the dashboard is captive", func() (bool, string) {
		r := fetch(phones[0].NS, 3*time.Second, "http://"+l.OtherIP.String()+"/")
		return r.Code == 302, r.String()
	})
	if r := fetch(phones[1].NS, 5*time.Second, "http://"+l.OtherIP.String()+"/"); !r.upstream() {
		t.Errorf("the other phone lost its session: %v", r)
	}
	eventually(t, 60*time.Second, "the gateway's events reach the controller", func() (bool, string) {
		st := s.status()
		return st.Controller != nil && st.Controller.EventsQueued == 0, fmt.Sprintf("%+v", st.Controller)
	})

	// The controller's store, read by `controller sessions` once it is
	// stopped: the two sessions the pages and Prometheus showed, one closed by the disconnect.
	tw.stop()
	got := tw.totals()
	if g := got["parco-a"]; g.Open != 1 || g.Sessions != 2 {
		t.Errorf("controller store for parco-a: %+v, want 2 sessions, 1 open after the disconnect", g)
	}
	if g := got["parco-b"]; g.Open != 0 || g.Sessions != 0 {
		t.Errorf("controller store for parco-b: %+v, want none", g)
	}
	t.Logf("whole test: %v", time.Since(t0).Round(time.Millisecond))
}

// testOpsPrometheus runs Prometheus in the lab's upstream namespace, where
// it reaches the controller's metrics_listen (127.0.0.1:9464) and the
// gateway's (its WAN address), labelled as deploy/prometheus/gateways
// says, and queries it through its HTTP API.
func testOpsPrometheus(t *testing.T, l *lab.Lab, dir string) {
	pdir := filepath.Join(dir, "prometheus")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: civicwifi-controller
    static_configs: [{targets: ['127.0.0.1:9464']}]
  - job_name: civicwifi-gateway
    static_configs: [{targets: ['%s:9102'], labels: {site: parco-a, gateway: gw-a}}]
`, l.GatewayWANIP)
	if err := os.WriteFile(filepath.Join(pdir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Start(l.Upstream, "prometheus", "prometheus",
		"--config.file="+filepath.Join(pdir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(pdir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort),
		"--log.level=warn"); err != nil {
		t.Fatal(err)
	}
	hc := l.Upstream.HTTPClient(nil)
	query := func(q string) (map[string]string, error) {
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", promPort, url.QueryEscape(q)))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		var r struct {
			Status, Error string
			Data          struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("decoding %.200q: %w", b, err)
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("query %q: %s", q, r.Error)
		}
		out := map[string]string{}
		for _, x := range r.Data.Result {
			out[x.Metric["job"]+"/"+x.Metric["site"]] = fmt.Sprint(x.Value[1])
		}
		return out, nil
	}

	// Both targets up and the two phones counted at parco-a (the gateway's
	// events reach the controller's store within seconds).
	wantResidents := map[string]string{"civicwifi-controller/parco-a": "2", "civicwifi-controller/parco-b": "0"}
	t0 := time.Now()
	var got, up map[string]string
	var qerr error
	for {
		got, qerr = query("civicwifi_controller_residents_online")
		up, _ = query("up")
		if qerr == nil && cmp.Equal(wantResidents, got) && up["civicwifi-controller/"] == "1" && up["civicwifi-gateway/parco-a"] == "1" {
			break
		}
		if time.Since(t0) > 60*time.Second {
			t.Fatalf("residents online per site through Prometheus (-want +got):\n%s\nup: %v; err: %v", cmp.Diff(wantResidents, got), up, qerr)
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("Prometheus has both targets and the residents after %v", time.Since(t0).Round(time.Millisecond))
	for _, c := range []struct {
		q    string
		want map[string]string
	}{
		{`civicwifi_gateway_clients{state="authorised"}`, map[string]string{"civicwifi-gateway/parco-a": "2"}},
		{`civicwifi_controller_sessions_open`, map[string]string{"civicwifi-controller/parco-a": "2", "civicwifi-controller/parco-b": "0"}},
		{`civicwifi_controller_site_up`, map[string]string{"civicwifi-controller/parco-a": "1", "civicwifi-controller/parco-b": "0"}},
		// The gateway's own count joins the controller's on the site label.
		{`civicwifi_controller_residents_online - on(site) sum by (site) (civicwifi_gateway_clients{state="authorised"})`, map[string]string{"/parco-a": "0"}},
	} {
		g, err := query(c.q)
		if err != nil {
			t.Errorf("%s: %v", c.q, err)
			continue
		}
		if diff := cmp.Diff(c.want, g); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.q, diff)
		}
	}
}

// testOpsDashboard drives a real headless Chromium, living in the lab's
// upstream namespace, through the dashboard's sign-in, overview and site
// page. Screenshots go to $CW_ARTIFACTS (or the test's temp dir).
func testOpsDashboard(t *testing.T, l *lab.Lab, ca *lab.CA, base string, wantMACs []string) {
	// Trust exactly the lab CA (honoured with the user data dir).
	c := lab.NewChrome(t, lab.ChromeOptions{NS: &l.Upstream, Shots: artifactsDir(t),
		Flags: []chromedp.ExecAllocatorOption{chromedp.Flag("ignore-certificate-errors-spki-list", ca.SPKIHash())}})
	bctx := c.Context()
	fail, do, text, location, shots := c.Fail, c.Do, c.Text, c.Location, c.Shots()
	shot := func(name string) { t.Helper(); c.Shot(name) }

	t0 := time.Now()
	do("open the overview", chromedp.Navigate(base+"/admin/overview"), chromedp.WaitVisible("#name"))
	if loc := location(); !strings.HasPrefix(loc, base+"/admin/login") {
		t.Errorf("not signed in, the overview left the browser at %s, want the sign-in page", loc)
	}
	shot("ops-login.png")
	do("sign in",
		chromedp.SendKeys("#name", opsAdmin),
		chromedp.SendKeys("#password", opsPassword),
		chromedp.Click("#signin"),
		chromedp.WaitVisible("#online"))
	if loc := location(); loc != base+"/admin/overview" {
		t.Errorf("after signing in: at %s, want the overview", loc)
	}

	// The overview: two residents online in the town, both at parco-a,
	// whose gateway is up; parco-b has never been heard from.
	if got := text("#online"); got != "2" {
		t.Errorf("overview: residents online %q, want 2", got)
	}
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll("#sites tbody tr")].map(r => [r.dataset.site, "online " + r.querySelector(".online").innerText.trim() + " " + r.querySelector(".state").innerText.trim()]))`))
	if err != nil {
		fail("reading the overview's sites", err)
	}
	if diff := cmp.Diff(map[string]string{"parco-a": "online 2 up", "parco-b": "online 0 unknown"}, rows); diff != "" {
		t.Errorf("overview's sites (-want +page):\n%s", diff)
	}
	shot("ops-overview.png")

	// The site page: one live session per phone, with its MAC.
	do("open parco-a", chromedp.Click(`#sites a[href="/admin/sites/parco-a"]`), chromedp.WaitVisible("#sessions"))
	macs, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#sessions tbody tr")].map(r => r.querySelector(".mac").innerText.trim().toLowerCase())`))
	if err != nil {
		fail("reading the site's sessions", err)
	}
	sort.Strings(macs)
	if diff := cmp.Diff(wantMACs, macs); diff != "" {
		t.Errorf("parco-a's live sessions, MACs (-lab +page):\n%s", diff)
	}
	if n := text("#live-count"); n != "2" {
		t.Errorf("parco-a's live count %q, want 2", n)
	}
	shot("ops-site.png")
	t.Logf("sign-in, overview and site page in %v; screenshots in %s", time.Since(t0).Round(time.Millisecond), shots)

	// IT staff disconnect the first phone from the site page: the kick is
	// queued for the site's gateway (the caller checks the phone is out).
	do("disconnect "+wantMACs[0], chromedp.Click(`form[action$="/kick"]:has(input[name="mac"][value="`+wantMACs[0]+`"]) button`))
	// The form's answer (303 back to the page, done=kick) before the
	// browser closes: closing it earlier could drop the POST.
	deadline := time.Now().Add(15 * time.Second)
	for {
		loc, err := chromedp.Run(bctx, chromedp.Location())
		if err == nil && strings.Contains(loc, "done=kick") {
			break
		}
		if time.Now().After(deadline) {
			fail("waiting for the disconnect's answer", fmt.Errorf("still at %s", loc))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
