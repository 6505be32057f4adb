package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/internal/redistest"
	"github.com/google/go-cmp/cmp"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logLines decodes the JSON log lines with the given msg.
func (s *syncBuffer) logLines(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// controllerProc is one `controller run` running in-process.
type controllerProc struct {
	base, metrics string
	logs          *syncBuffer
	srv           *server.Server
	st            store.Store
	stop          func() int // cancels it and returns its exit code
}

func startController(t testing.TB, configPath string) *controllerProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &controllerProc{logs: &syncBuffer{}}
	type hooked struct {
		srv *server.Server
		st  store.Store
	}
	up := make(chan hooked, 1)
	started = func(srv *server.Server, st store.Store) { up <- hooked{srv, st} }
	done := make(chan struct{})
	exit := -1
	go func() {
		defer close(done)
		exit = run(ctx, &env{stdout: io.Discard, stderr: p.logs}, []string{"run", "-config", configPath})
	}()
	p.stop = func() int {
		cancel()
		select {
		case <-done:
			return exit
		case <-time.After(15 * time.Second):
			t.Errorf("controller did not stop within 15 s\n%s", p.logs)
			return -1
		}
	}
	t.Cleanup(func() { p.stop() })
	select {
	case h := <-up:
		p.srv, p.st = h.srv, h.st
	case <-done:
		t.Fatalf("controller exited with %d before serving:\n%s", exit, p.logs)
	case <-time.After(15 * time.Second):
		t.Fatalf("controller did not start within 15 s:\n%s", p.logs)
	}
	started = nil
	l := p.logs.logLines("controller listening")
	if len(l) != 1 {
		t.Fatalf("want one 'controller listening' line:\n%s", p.logs)
	}
	p.base = "http://" + l[0]["api"].(string)
	p.metrics = "http://" + l[0]["metrics"].(string) + "/metrics"
	return p
}

// lab is the files of one controller installation: keys made by `controller enroll`, sites.yaml, a token file
// and controller.yaml.
type lab struct {
	dir, sitesPath, configPath string
	ctrlPub                    ed25519.PublicKey
	gwKey                      map[string]ed25519.PrivateKey
	credLine                   map[string]string // the line `controller enroll` printed for sites.yaml
	token                      string
}

func newLab(t testing.TB, storeLine string, extra ...string) *lab {
	t.Helper()
	l := &lab{dir: t.TempDir(), gwKey: map[string]ed25519.PrivateKey{}, credLine: map[string]string{}, token: "ap-enroll-" + apiclient.NewEventID()}
	keys := filepath.Join(l.dir, "keys")
	for _, name := range []string{"controller", "parco-gw1", "piazza-gw1"} {
		var out bytes.Buffer
		if code := run(context.Background(), &env{stdout: &out, stderr: &out}, []string{"enroll", "-out", keys, "-name", name}); code != 0 {
			t.Fatalf("controller enroll -name %s: exit %d\n%s", name, code, out.String())
		}
		if name == "controller" {
			pub, err := apiclient.LoadPublicKey(filepath.Join(keys, "controller.pub"))
			if err != nil {
				t.Fatal(err)
			}
			l.ctrlPub = pub
			continue
		}
		m := regexp.MustCompile(`(?m)^\s*credential: (file:\S+)$`).FindStringSubmatch(out.String())
		if m == nil || m[1] != "file:"+filepath.Join(keys, name+".pub") {
			t.Fatalf("controller enroll -name %s printed no credential line for sites.yaml:\n%s", name, out.String())
		}
		l.credLine[name] = m[1]
		k, err := apiclient.LoadPrivateKey(filepath.Join(keys, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		l.gwKey[name] = k
	}
	l.sitesPath = filepath.Join(l.dir, "sites.yaml")
	l.writeSites(t, "5mbit")
	tokFile := filepath.Join(l.dir, "ap.token")
	if err := os.WriteFile(tokFile, []byte("# AP enrollment\n"+l.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.configPath = filepath.Join(l.dir, "controller.yaml")
	conf := fmt.Sprintf("listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\nsites: sites.yaml\nstore: %s\n"+
		"signing_key: keys/controller.key\nap_enroll_token_files: [ap.token]\nstate_dir: state\n%s", storeLine, strings.Join(extra, ""))
	if err := os.WriteFile(l.configPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return l
}

const sitesTemplate = `town:
  name: Comune di Prova
  ssid: Prova WiFi
  timezone: Europe/Rome
  contacts: {email: urp@comune.prova.it, dpo: dpo@comune.prova.it}
  privacy: {it: Informativa sulla privacy}
  terms: {url: "https://comune.prova.it/termini"}
policies:
  - name: parks
    down: DOWN
    up: 1mbit
    session: 2h
    idle: 15m
    daily_quota: 1GB
    max_clients: 80
    remember_device_days: 30
    login:
      methods: [click-through, sms]
    hours: [mon-fri 08:00-20:00, sat 09:00-12:30]
    walled_garden: [comune.prova.it]
sites:
  - id: parco
    name: Parco
    kind: park
    coordinates: {lat: 44.99, lon: 9.01}
    policy: parks
    client_network: {address: 10.20.0.1/22, vlan: 20}
    gateways:
      - id: parco-gw1
        CRED_PARCO
    access_points:
      - mac: 02:00:00:00:00:01
        radios: [{band: 2.4ghz, channel: 6, tx_power: 20}, {band: 5ghz, channel: 36, tx_power: 23}]
  - id: piazza
    name: Piazza
    kind: square
    coordinates: {lat: 44.98, lon: 9.02}
    policy: parks
    client_network: {address: 10.20.4.1/22}
    gateways:
      - id: piazza-gw1
        CRED_PIAZZA
`

// writeSites writes sites.yaml with the parks policy's down rate (written as is, so a bad one makes a bad file)
// by an atomic rename, as an editor or a git checkout does.
func (l *lab) writeSites(t testing.TB, down string) {
	t.Helper()
	s := strings.NewReplacer("DOWN", down,
		"CRED_PARCO", "credential: "+l.credLine["parco-gw1"], "CRED_PIAZZA", "credential: "+l.credLine["piazza-gw1"]).Replace(sitesTemplate)
	tmp := l.sitesPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, l.sitesPath); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) client(t testing.TB, base, site, gw string) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(apiclient.Config{
		BaseURL: base, Site: site, GatewayID: gw, Key: l.gwKey[gw], ControllerKey: l.ctrlPub,
		CacheFile: filepath.Join(l.dir, gw+".policy.json"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func decodePolicy(t *testing.T, p apiclient.Policy) apiclient.SitePolicy {
	t.Helper()
	var sp apiclient.SitePolicy
	if err := json.Unmarshal(p.Body, &sp); err != nil {
		t.Fatalf("policy body %s: %v", p.Body, err)
	}
	sum := sha256.Sum256(p.Body)
	if !strings.HasPrefix(hex.EncodeToString(sum[:]), p.Version) || len(p.Version) < 16 {
		t.Errorf("policy version %q is not a hash of the body", p.Version)
	}
	return sp
}

func wantParco(down uint64) apiclient.SitePolicy {
	return apiclient.SitePolicy{
		SiteID: "parco", SiteName: "Parco", TownName: "Comune di Prova", SSID: "Prova WiFi", Policy: "parks",
		DownBitsPerSecond: down, UpBitsPerSecond: 1_000_000,
		Session: apiclient.Duration(2 * time.Hour), Idle: apiclient.Duration(15 * time.Minute),
		DailyQuotaBytes: 1_000_000_000, MaxClients: 80,
		LoginMethods: []string{"click-through", "sms"}, SMSCountries: []string{"IT"},
		WalledGarden: []string{"comune.prova.it"}, RememberDeviceDays: 30,
		Hours: map[string][]string{
			"mon": {"08:00-20:00"}, "tue": {"08:00-20:00"}, "wed": {"08:00-20:00"}, "thu": {"08:00-20:00"},
			"fri": {"08:00-20:00"}, "sat": {"09:00-12:30"},
		},
		Timezone: "Europe/Rome",
	}
}

func sessionEvents(session, mac string, at time.Time) []apiclient.SessionEvent {
	return []apiclient.SessionEvent{
		{ID: apiclient.NewEventID(), Kind: apiclient.EventStart, SessionID: session, At: at, ClientMAC: mac, User: "u1", Method: "sms"},
		{ID: apiclient.NewEventID(), Kind: apiclient.EventInterim, SessionID: session, At: at.Add(time.Minute), ClientMAC: mac, BytesDown: 5000, BytesUp: 700},
		{ID: apiclient.NewEventID(), Kind: apiclient.EventStop, SessionID: session, At: at.Add(2 * time.Minute), ClientMAC: mac, BytesDown: 9000, BytesUp: 900, Reason: "logout"},
	}
}

func ids(evs []apiclient.SessionEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

// apFast makes an AP offline 2 s after its last check-in.
const apFast = "ap_checkin_interval: 1s\nap_missed_checkins: 2\n"

func TestRunBolt(t *testing.T) {
	l := newLab(t, "bolt:state/controller.db", apFast)
	testRun(t, l)
}

func TestRunRedis(t *testing.T) {
	r := redistest.Start(t)
	t.Setenv(server.EnvRedisPassword, r.Password)
	l := newLab(t, "redis://"+r.Addr+"/0", apFast)
	testRun(t, l)
}

// testRun is the whole life of one controller: gateways fetch their policy, heartbeat, report sessions (sent
// twice, counted once), run a kick; sites.yaml changes reach a waiting gateway within 3 s; a broken sites.yaml
// is logged with its line and changes nothing; an AP enrolls and gets its site's SSID.
func testRun(t *testing.T, l *lab) {
	ctx := context.Background()
	c := startController(t, l.configPath)
	gw := l.client(t, c.base, "parco", "parco-gw1")

	p1, changed, err := gw.FetchPolicy(ctx, "", 0)
	if err != nil || !changed {
		t.Fatalf("first policy: changed=%v err=%v\n%s", changed, err, c.logs)
	}
	if diff := cmp.Diff(wantParco(5_000_000), decodePolicy(t, p1)); diff != "" {
		t.Errorf("parco's policy (-want +got):\n%s", diff)
	}

	// A gateway of another site is refused parco's data.
	other := l.client(t, c.base, "parco", "piazza-gw1")
	if _, _, err := other.FetchPolicy(ctx, "", 0); !errors.Is(err, apiclient.ErrRefused) {
		t.Errorf("piazza-gw1 reading parco's policy: err=%v, want refused", err)
	}

	// Heartbeat: the gateway's health in the store.
	if err := gw.Heartbeat(ctx, apiclient.Heartbeat{Version: "1.2.3", UptimeSeconds: 3600, ClientsOnline: 7, ReconcileRepairs: 2}); err != nil {
		t.Fatal(err)
	}
	gs, err := c.st.Gateway(ctx, "parco-gw1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(store.GatewayHealth{Version: "1.2.3", Uptime: time.Hour, ClientsOnline: 7, ReconcileRepairs: 2},
		gs.Health, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Extra" }, cmp.Ignore())); diff != "" {
		t.Errorf("gateway health (-want +got):\n%s", diff)
	}
	if time.Since(gs.LastHeartbeat) > 10*time.Second {
		t.Errorf("last heartbeat %v", gs.LastHeartbeat)
	}

	// Session events, delivered twice: recorded once.
	evs := sessionEvents("s1", "aa:bb:cc:00:00:01", time.Now().Add(-time.Hour).Truncate(time.Second))
	ack, err := gw.SendEvents(ctx, evs)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(apiclient.EventAck{Recorded: ids(evs), Duplicates: []string{}}, ack); diff != "" {
		t.Errorf("first delivery (-want +got):\n%s", diff)
	}
	ack, err = gw.SendEvents(ctx, evs)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(apiclient.EventAck{Recorded: []string{}, Duplicates: ids(evs)}, ack); diff != "" {
		t.Errorf("second delivery (-want +got):\n%s", diff)
	}
	tot, err := c.st.SiteTotals(ctx, "parco")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(store.Totals{Sessions: 1, BytesDown: 9000, BytesUp: 900}, tot); diff != "" {
		t.Errorf("parco's totals (-want +got):\n%s", diff)
	}

	// A kick queued through the store reaches the gateway; its ack empties the queue.
	if _, err := c.srv.EnqueueCommand(ctx, "parco", store.Command{Kind: store.CommandKick, ClientMAC: "aa:bb:cc:00:00:01"}, "test"); err != nil {
		t.Fatal(err)
	}
	cmds, err := gw.Commands(ctx, 5*time.Second)
	if err != nil || len(cmds) != 1 || cmds[0].Kind != apiclient.CommandKick || cmds[0].ClientMAC != "aa:bb:cc:00:00:01" {
		t.Fatalf("commands: %+v, %v", cmds, err)
	}
	if err := gw.AckCommands(ctx, []apiclient.CommandAck{{ID: cmds[0].ID, OK: true}}); err != nil {
		t.Fatal(err)
	}
	if left, err := c.st.Pending(ctx, "parco-gw1"); err != nil || len(left) != 0 {
		t.Errorf("pending after ack: %+v, %v", left, err)
	}

	// controller plan compares a candidate file with the one the controller runs.
	running, err := os.ReadFile(l.sitesPath)
	if err != nil {
		t.Fatal(err)
	}
	candidate := filepath.Join(l.dir, "candidate.yaml")
	if err := os.WriteFile(candidate, bytes.Replace(running, []byte("down: 5mbit"), []byte("down: 2mbit"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCmd("plan", candidate, "-config", l.configPath); code != 0 || !strings.Contains(out, "5mbit -> 2mbit") {
		t.Errorf("plan against the running controller: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// sites.yaml changes (down 5mbit -> 2mbit): the waiting long poll returns the new policy within 3 s.
	type result struct {
		p       apiclient.Policy
		changed bool
		err     error
		at      time.Time
	}
	res := make(chan result, 1)
	go func() {
		p, ch, err := gw.FetchPolicy(ctx, p1.Version, 25*time.Second)
		res <- result{p, ch, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // the poll is waiting
	wrote := time.Now()
	l.writeSites(t, "2mbit")
	var p2 apiclient.Policy
	select {
	case r := <-res:
		if r.err != nil || !r.changed {
			t.Fatalf("long poll: changed=%v err=%v", r.changed, r.err)
		}
		took := r.at.Sub(wrote)
		t.Logf("sites.yaml change reached the waiting gateway in %v", took)
		if took > 3*time.Second {
			t.Errorf("the change took %v, want at most 3 s", took)
		}
		p2 = r.p
	case <-time.After(5 * time.Second):
		t.Fatalf("long poll did not return within 5 s of the change\n%s", c.logs)
	}
	if diff := cmp.Diff(wantParco(2_000_000), decodePolicy(t, p2)); diff != "" {
		t.Errorf("policy after the change (-want +got):\n%s", diff)
	}
	if applied := c.logs.logLines("sites.yaml applied"); len(applied) != 1 ||
		!strings.Contains(applied[0]["plan"].(string), `effective.down = 5mbit -> 2mbit`) {
		t.Errorf("want one 'sites.yaml applied' line with the plan, got %v", applied)
	}

	// A broken sites.yaml: logged with its place, and the running policy stays.
	l.writeSites(t, "2 Mbps")
	line := 1 + strings.Count(sitesTemplate[:strings.Index(sitesTemplate, "DOWN")], "\n")
	place := fmt.Sprintf("%s:%d:", l.sitesPath, line)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found bool
		for _, m := range c.logs.logLines("sites.yaml problem") {
			if p, _ := m["problem"].(string); strings.HasPrefix(p, place) && strings.Contains(p, `"2 Mbps"`) {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no problem logged at %s within 5 s:\n%s", place, c.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p3, _, err := gw.FetchPolicy(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if p3.Version != p2.Version || !bytes.Equal(p3.Body, p2.Body) {
		t.Errorf("after a broken sites.yaml the policy changed: %s", p3.Body)
	}
	metrics := httpGet(t, c.metrics)
	for _, want := range []string{
		"civicwifi_controller_sites_last_reload_ok 0",
		`civicwifi_controller_sites_reloads_total{result="applied"} 1`,
		`civicwifi_controller_sites_reloads_total{result="rejected"} 1`,
		`civicwifi_controller_gateway_refusals_total{reason="other site"} 1`,
		`civicwifi_controller_session_events_total{result="duplicate"} 3`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if h := httpGet(t, c.base+"/healthz"); !strings.HasPrefix(h, "ok ") {
		t.Errorf("healthz: %q", h)
	}

	// An access point of parco enrolls with the token and checks in: it gets parco's SSID, VLAN and radios.
	var prov struct {
		Secret string `json:"secret"`
	}
	postJSON(t, c.base+"/ap/v1/provision", l.token, `{"mac":"02:00:00:00:00:01","model":"test","firmware":"1"}`, &prov)
	var chk struct {
		Config struct {
			SSID   string `json:"ssid"`
			VLAN   int    `json:"vlan"`
			Radios []struct {
				Device  string `json:"device"`
				Channel string `json:"channel"`
				TxPower int    `json:"txpower_dbm"`
			} `json:"radios"`
		} `json:"config"`
	}
	postJSON(t, c.base+"/ap/v1/checkin", prov.Secret, `{"mac":"02:00:00:00:00:01","firmware":"1","uptime_s":5,"clients":0,"radios":[],"applied_version":""}`, &chk)
	wantAP := `{Prova WiFi 20 [{radio0 6 20} {radio1 36 23}]}`
	if got := fmt.Sprint(chk.Config); got != wantAP {
		t.Errorf("AP config %s, want %s", got, wantAP)
	}
	if a, err := c.st.AccessPoint(ctx, "02:00:00:00:00:01"); err != nil || time.Since(a.LastCheckIn) > 10*time.Second {
		t.Errorf("AP check-in in the store: %+v, %v", a, err)
	}

	// The fleet as Prometheus sees it: the AP up, then offline after two missed check-ins; parco-gw1 up with
	// its 7 clients, piazza-gw1 (never heard from) down.
	metrics = httpGet(t, c.metrics)
	for _, want := range []string{
		`civicwifi_controller_access_point_up{mac="02:00:00:00:00:01",site="parco"} 1`,
		`civicwifi_controller_gateway_up{gateway="parco-gw1",site="parco"} 1`,
		`civicwifi_controller_gateway_clients{gateway="parco-gw1",site="parco"} 7`,
		`civicwifi_controller_gateway_up{gateway="piazza-gw1",site="piazza"} 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	time.Sleep(2500 * time.Millisecond)
	if want := `civicwifi_controller_access_point_up{mac="02:00:00:00:00:01",site="parco"} 0`; !strings.Contains(httpGet(t, c.metrics), want+"\n") {
		t.Errorf("2.5 s after its check-in the AP is not offline: metrics lack %q", want)
	}

	if code := c.stop(); code != 0 {
		t.Errorf("controller exit code %d\n%s", code, c.logs)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func postJSON(t *testing.T, url, bearer, body string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("POST %s: %s: %v", url, b, err)
	}
}
