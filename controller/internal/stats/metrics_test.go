package stats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// needTools skips without the tools, and fails under CI=true.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ") + " (Debian package prometheus)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true, so this is a failure)")
	}
	t.Skip(msg)
}

// deployDir is the repository's deploy/prometheus.
func deployDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "prometheus")
}

func TestPromtool(t *testing.T) {
	needTools(t, "promtool")
	dir := deployDir(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// fleet seeds a store with the scene the metrics tests read: open and
// closed sessions at three sites and gateways' heartbeats.
type fleet struct {
	st        store.Store
	cfg       *sites.Config
	now       time.Time
	residents map[string]int // site -> distinct people online
	open      map[string]int // site -> open sessions
}

func seedFleet(t *testing.T) fleet {
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond)
	st := openStore(t)
	f := fleet{st: st, now: now,
		cfg: &sites.Config{Sites: []sites.Site{
			{ID: "parco-pertini", Gateways: []sites.Gateway{{ID: "pertini-gw1"}}},
			{ID: "biblioteca", Gateways: []sites.Gateway{{ID: "biblio-gw1"}, {ID: "biblio-gw2"}}},
			{ID: "museo", Gateways: []sites.Gateway{{ID: "museo-gw1"}}},
		}},
		residents: map[string]int{"parco-pertini": 3, "biblioteca": 2, "museo": 0},
		open:      map[string]int{"parco-pertini": 4, "biblioteca": 2, "museo": 0},
	}
	n := 0
	ev := func(site, user string, kind store.EventKind, down uint64) {
		n++
		e := store.SessionEvent{ID: fmt.Sprintf("e%d", n), Kind: store.EventStart, SessionID: fmt.Sprintf("s%d", n),
			GatewayID: "gw", SiteID: site, ClientMAC: fmt.Sprintf("02:00:00:00:00:%02x", n), UserID: user, Method: "sms",
			At: now.Add(-time.Hour)}
		if _, err := st.RecordEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
		if kind == store.EventStop || down > 0 {
			e.ID, e.Kind, e.At, e.BytesDown = e.ID+"b", kind, now.Add(-time.Minute), down
			if _, err := st.RecordEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	// parco-pertini: u1 on two devices, u2, and a device without a user id; one closed session
	ev("parco-pertini", "u1", store.EventInterim, 1000)
	ev("parco-pertini", "u1", store.EventInterim, 2000)
	ev("parco-pertini", "u2", store.EventStart, 0)
	ev("parco-pertini", "", store.EventStart, 0)
	ev("parco-pertini", "u3", store.EventStop, 500)
	// biblioteca: two people, one closed session of a third
	ev("biblioteca", "u1", store.EventStart, 0)
	ev("biblioteca", "u4", store.EventInterim, 7)
	ev("biblioteca", "u5", store.EventStop, 3)
	// museo: only closed sessions
	ev("museo", "u6", store.EventStop, 10)
	for _, hb := range []struct {
		id  string
		ago time.Duration
	}{{"pertini-gw1", 10 * time.Second}, {"biblio-gw1", 10 * time.Minute}, {"biblio-gw2", 20 * time.Second}, {"museo-gw1", 5 * time.Minute}} {
		if err := st.Heartbeat(ctx, hb.id, now.Add(-hb.ago), store.GatewayHealth{ClientsOnline: 1}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestCollector(t *testing.T) {
	f := seedFleet(t)
	c := stats.NewCollector(f.st, func() *sites.Config { return f.cfg }, stats.CollectorOptions{Now: func() time.Time { return f.now }})
	want := `
# HELP civicwifi_controller_residents_online Distinct people online at the site now: open sessions counted once per pseudonymous user (per device without one).
# TYPE civicwifi_controller_residents_online gauge
civicwifi_controller_residents_online{site="biblioteca"} 2
civicwifi_controller_residents_online{site="museo"} 0
civicwifi_controller_residents_online{site="parco-pertini"} 3
# HELP civicwifi_controller_sessions_open Open sessions (devices online) at the site now.
# TYPE civicwifi_controller_sessions_open gauge
civicwifi_controller_sessions_open{site="biblioteca"} 2
civicwifi_controller_sessions_open{site="museo"} 0
civicwifi_controller_sessions_open{site="parco-pertini"} 4
# HELP civicwifi_controller_sessions_started_total Sessions started at the site since the store began.
# TYPE civicwifi_controller_sessions_started_total counter
civicwifi_controller_sessions_started_total{site="biblioteca"} 3
civicwifi_controller_sessions_started_total{site="museo"} 1
civicwifi_controller_sessions_started_total{site="parco-pertini"} 5
# HELP civicwifi_controller_site_bytes_total Bytes of the site's sessions since the store began, by direction (down: to the clients).
# TYPE civicwifi_controller_site_bytes_total counter
civicwifi_controller_site_bytes_total{direction="down",site="biblioteca"} 10
civicwifi_controller_site_bytes_total{direction="down",site="museo"} 10
civicwifi_controller_site_bytes_total{direction="down",site="parco-pertini"} 3500
civicwifi_controller_site_bytes_total{direction="up",site="biblioteca"} 0
civicwifi_controller_site_bytes_total{direction="up",site="museo"} 0
civicwifi_controller_site_bytes_total{direction="up",site="parco-pertini"} 0
# HELP civicwifi_controller_site_up 1 if a gateway of the site sent a heartbeat within the last 90 s.
# TYPE civicwifi_controller_site_up gauge
civicwifi_controller_site_up{site="biblioteca"} 1
civicwifi_controller_site_up{site="museo"} 0
civicwifi_controller_site_up{site="parco-pertini"} 1
# HELP civicwifi_controller_stats_scrape_errors_total Store reads that failed while collecting the per-site metrics (the site's series are then missing).
# TYPE civicwifi_controller_stats_scrape_errors_total counter
civicwifi_controller_stats_scrape_errors_total 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// a closed store: the errors are counted, the scrape still answers
	f.st.Close()
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP civicwifi_controller_stats_scrape_errors_total Store reads that failed while collecting the per-site metrics (the site's series are then missing).
# TYPE civicwifi_controller_stats_scrape_errors_total counter
civicwifi_controller_stats_scrape_errors_total 7
`), "civicwifi_controller_stats_scrape_errors_total"); err != nil {
		t.Error(err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := stats.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.SMSCost("skebby", 0.05)
	m.SMSCost("skebby", 0.05)
	m.SMSCost("aruba", 0) // free: no series
	m.SMSBudget(420, 1000)
	var nilM *stats.Metrics // a nil Metrics is a no-op
	nilM.SMSCost("x", 1)
	nilM.SMSBudget(1, 2)
	if st := nilM.Instrument(nil); st != nil {
		t.Error("a nil Metrics wrapped the store")
	}

	st := m.Instrument(openStore(t))
	ctx := context.Background()
	if _, err := st.Session(ctx, "nope"); err == nil {
		t.Fatal("a missing session was found")
	}
	if err := st.IncrHourly(ctx, "bad site", time.Now(), map[string]int64{"x": 1}); err == nil {
		t.Fatal("a bad site id was accepted")
	}
	if _, err := st.Hourly(ctx, "a", time.Now().Add(-time.Hour), time.Now()); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP civicwifi_controller_sms_cost_euros_total What the SMS handed to the provider cost, in euros, by provider.
# TYPE civicwifi_controller_sms_cost_euros_total counter
civicwifi_controller_sms_cost_euros_total{provider="skebby"} 0.1
# HELP civicwifi_controller_sms_daily_budget_limit The town's daily SMS budget (codes per day); 0: none.
# TYPE civicwifi_controller_sms_daily_budget_limit gauge
civicwifi_controller_sms_daily_budget_limit 1000
# HELP civicwifi_controller_sms_daily_budget_used SMS codes counted against today's budget of the town.
# TYPE civicwifi_controller_sms_daily_budget_used gauge
civicwifi_controller_sms_daily_budget_used 420
# HELP civicwifi_controller_store_errors_total Store operations that failed (not-found answers excluded), by operation.
# TYPE civicwifi_controller_store_errors_total counter
civicwifi_controller_store_errors_total{op="incr_hourly"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"civicwifi_controller_sms_cost_euros_total", "civicwifi_controller_sms_daily_budget_limit", "civicwifi_controller_sms_daily_budget_used",
		"civicwifi_controller_store_errors_total"); err != nil {
		t.Error(err)
	}
	// one latency observation per call, by operation
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "civicwifi_controller_store_seconds" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			got[mm.GetLabel()[0].GetValue()] = mm.GetHistogram().GetSampleCount()
		}
	}
	if diff := cmp.Diff(map[string]uint64{"session": 1, "incr_hourly": 1, "hourly": 1}, got); diff != "" {
		t.Errorf("store latency samples (-want +got):\n%s", diff)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type promResult struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// promQuery runs an instant query through Prometheus's HTTP API.
func promQuery(base, q string) ([]promResult, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promResult `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", b, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, r.Error)
	}
	return r.Data.Result, nil
}

// TestPrometheusScrapes starts a real Prometheus that scrapes the
// controller's metrics (the collector over a seeded store) and a
// gateway-like endpoint, with the repository's alert rules loaded, and
// queries residents online per site through its HTTP API.
func TestPrometheusScrapes(t *testing.T) {
	needTools(t, "prometheus")
	f := seedFleet(t)

	reg := prometheus.NewRegistry()
	reg.MustRegister(stats.NewCollector(f.st, func() *sites.Config { return f.cfg }, stats.CollectorOptions{}))
	m, err := stats.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.SMSBudget(850, 1000)
	ctrl := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(ctrl.Close)

	// a gateway's own metrics, as portal serves them
	greg := prometheus.NewRegistry()
	clients := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "civicwifi_gateway_clients", Help: "Clients by state."}, []string{"state"})
	greg.MustRegister(clients)
	clients.WithLabelValues("authorised").Set(4)
	clients.WithLabelValues("captive").Set(1)
	gw := httptest.NewServer(promhttp.HandlerFor(greg, promhttp.HandlerOpts{}))
	t.Cleanup(gw.Close)

	dir := t.TempDir()
	alerts, err := os.ReadFile(filepath.Join(deployDir(t), "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), alerts, 0o644); err != nil {
		t.Fatal(err)
	}
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: civicwifi-controller
    static_configs: [{targets: ['%s']}]
  - job_name: civicwifi-gateway
    static_configs: [{targets: ['%s'], labels: {site: parco-pertini, gateway: pertini-gw1}}]
`, host(ctrl.URL), host(gw.URL))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "prometheus",
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
		"--log.level=warn")
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})

	// wait (at most 60 s) for both targets scraped and the residents of every site
	query := func(q string) map[string]string {
		rs, err := promQuery(base, q)
		if err != nil {
			return nil
		}
		out := map[string]string{}
		for _, r := range rs {
			out[r.Metric["site"]+r.Metric["state"]] = fmt.Sprint(r.Value[1])
		}
		return out
	}
	wantResidents := map[string]string{}
	for s, n := range f.residents {
		wantResidents[s] = fmt.Sprint(n)
	}
	var got map[string]string
	deadline := time.Now().Add(60 * time.Second)
	for {
		got = query("civicwifi_controller_residents_online")
		up := query(`count(up == 1)`)
		if cmp.Equal(wantResidents, got) && up[""] == "2" {
			break
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("residents online per site through Prometheus (-want +got):\n%s\nup: %v", cmp.Diff(wantResidents, got), up)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, c := range []struct {
		q    string
		want map[string]string
	}{
		{`civicwifi_controller_sessions_open`, map[string]string{"parco-pertini": "4", "biblioteca": "2", "museo": "0"}},
		{`civicwifi_controller_site_up`, map[string]string{"parco-pertini": "1", "biblioteca": "1", "museo": "0"}},
		{`sum by (site) (civicwifi_controller_residents_online)`, map[string]string{"parco-pertini": "3", "biblioteca": "2", "museo": "0"}},
		{`civicwifi_gateway_clients{job="civicwifi-gateway"}`, map[string]string{"parco-pertiniauthorised": "4", "parco-pertinicaptive": "1"}},
		{`civicwifi_controller_sms_daily_budget_used / civicwifi_controller_sms_daily_budget_limit`, map[string]string{"": "0.85"}},
	} {
		if diff := cmp.Diff(c.want, query(c.q)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.q, diff)
		}
	}
	// every query of the Grafana dashboard is valid PromQL over these metrics
	dash, err := os.ReadFile(filepath.Join(deployDir(t), "..", "grafana", "civicwifi.json"))
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatalf("deploy/grafana/civicwifi.json: %v", err)
	}
	grafana := strings.NewReplacer("$site", ".*", "$__rate_interval", "1m")
	exprs := map[string]string{}
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			exprs[p.Title] = grafana.Replace(tg.Expr)
			if _, err := promQuery(base, grafana.Replace(tg.Expr)); err != nil {
				t.Errorf("Grafana panel %q: %v", p.Title, err)
			}
		}
	}
	if len(exprs) < 15 {
		t.Errorf("only %d panels with queries", len(exprs))
	}
	for title, want := range map[string]map[string]string{
		"Residents online": {"": "5"},
		"Devices online":   {"": "6"},
		"Sites up":         {"": "2"},
		"Sites down":       {"": "1"},
	} {
		if diff := cmp.Diff(want, query(exprs[title])); diff != "" {
			t.Errorf("Grafana panel %q = %s (-want +got):\n%s", title, exprs[title], diff)
		}
	}

	// the repository's alert rules load and evaluate without error
	resp, err := http.Get(base + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rules); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Name)
			if r.Health == "err" {
				t.Errorf("rule %s: %s", r.Name, r.LastError)
			}
		}
	}
	if !slices.Contains(names, "CivicwifiSiteDown") || len(names) != 12 {
		t.Errorf("loaded rules: %v", names)
	}

	// and fire on the scraped numbers: the budget is 85% used, museo's only gateway is silent (pending for 5 min)
	want := map[string]string{"CivicwifiSMSBudgetNearLimit firing": "1", "CivicwifiSiteDown pending museo": "1"}
	var firing map[string]string
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		rs, err := promQuery(base, `ALERTS`)
		if err != nil {
			t.Fatal(err)
		}
		firing = map[string]string{}
		for _, r := range rs {
			firing[strings.TrimSpace(r.Metric["alertname"]+" "+r.Metric["alertstate"]+" "+r.Metric["site"])] = fmt.Sprint(r.Value[1])
		}
		if cmp.Equal(want, firing) {
			return
		}
	}
	t.Errorf("alerts (-want +got):\n%s", cmp.Diff(want, firing))
}
