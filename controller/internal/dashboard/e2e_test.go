package dashboard

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
)

const e2eSites = `town:
  name: Comune di Prova
  ssid: Prova WiFi
  contacts: {email: urp@comune.prova.it, dpo: dpo@comune.prova.it}
  privacy: {it: Informativa}
  terms: {url: "https://comune.prova.it/termini"}
policies:
  - name: parks
    session: 1h
    login: {methods: [click-through]}
sites:
  - id: parco
    name: Parco
    kind: park
    coordinates: {lat: 44.99, lon: 9.01}
    policy: parks
    client_network: {address: 10.20.0.1/22}
    gateways:
      - {id: parco-gw1, credential: "file:DIR/parco-gw1.pub"}
`

// The dashboard mounted on the real controller (server.New, its gateway
// API, Mount): a gateway signs in with its key, reports a session and a
// heartbeat through the API, the overview shows them, and a kick clicked
// by an operator reaches the gateway's waiting command long poll.
func TestOnTheController(t *testing.T) {
	dir := t.TempDir()
	if _, err := apiclient.Enroll(dir, "parco-gw1"); err != nil {
		t.Fatal(err)
	}
	if _, err := apiclient.Enroll(dir, "controller"); err != nil {
		t.Fatal(err)
	}
	sitesPath := filepath.Join(dir, "sites.yaml")
	writeFile(t, sitesPath, strings.ReplaceAll(e2eSites, "DIR", dir))
	st, err := boltstore.Open(filepath.Join(dir, "c.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ckey, err := apiclient.LoadPrivateKey(filepath.Join(dir, "controller.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{SitesPath: sitesPath, Store: st, SigningKey: ckey, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	accts := filepath.Join(dir, "admins")
	hash, _ := auth.HashPasswordWith(password("oscar"), cheap)
	if err := auth.SetAccount(accts, auth.Account{Name: "oscar", Role: auth.Operator, Hash: hash}); err != nil {
		t.Fatal(err)
	}
	dash, err := Setup(context.Background(), FileConfig{Accounts: accts}, Deps{Store: st, Sites: srv.Config, Commands: srv})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(Mount(srv.Handler(), dash))
	defer ts.Close()

	gkey, _ := apiclient.LoadPrivateKey(filepath.Join(dir, "parco-gw1.key"))
	cpub, _ := apiclient.LoadPublicKey(filepath.Join(dir, "controller.pub"))
	gw, err := apiclient.New(apiclient.Config{BaseURL: ts.URL, Site: "parco", GatewayID: "parco-gw1", Key: gkey, ControllerKey: cpub, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const mac = "02:00:5e:10:00:07"
	start := time.Now().Add(-5 * time.Minute)
	if _, err := gw.SendEvents(ctx, []apiclient.SessionEvent{{ID: "e1", Kind: apiclient.EventStart, SessionID: "s1", Start: start, At: start,
		ClientMAC: mac, User: "u-7f3a", Method: "click-through"}}); err != nil {
		t.Fatal(err)
	}
	if err := gw.Heartbeat(ctx, apiclient.Heartbeat{Version: "0.9.1", UptimeSeconds: 3600, ClientsOnline: 1, SentAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	h := &harness{t: t, srv: ts}
	c := h.client()
	page := h.do(c, "GET", "/admin/login", nil)
	if r := h.do(c, "POST", "/admin/login", url.Values{"csrf": {csrfOf(page.body)}, "name": {"oscar"}, "password": {password("oscar")}}); r.code != http.StatusSeeOther {
		t.Fatalf("login: %d", r.code)
	}
	ov := h.do(c, "GET", "/admin/overview", nil)
	if !strings.Contains(ov.body, `<div class="n" id="online">1</div>`) || !strings.Contains(ov.body, `<span class="state up">up</span> 1/1`) {
		t.Errorf("overview does not show the gateway's session and heartbeat: %.2000s", ov.body)
	}
	site := h.do(c, "GET", "/admin/sites/parco", nil)
	if !strings.Contains(site.body, mac) || !strings.Contains(site.body, "0.9.1") {
		t.Errorf("site page lacks the session or the gateway's version")
	}

	// The gateway waits for commands; the operator clicks Disconnect.
	got := make(chan []apiclient.Command, 1)
	go func() {
		cmds, err := gw.Commands(ctx, 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- cmds
	}()
	time.Sleep(200 * time.Millisecond) // the poll is waiting
	clicked := time.Now()
	if r := h.do(c, "POST", "/admin/sites/parco/kick", url.Values{"csrf": {csrfOf(site.body)}, "mac": {mac}}); r.code != http.StatusSeeOther {
		t.Fatalf("kick: %d %.300s", r.code, r.body)
	}
	select {
	case cmds := <-got:
		if len(cmds) != 1 || cmds[0].Kind != "kick" || cmds[0].ClientMAC != mac {
			t.Fatalf("the gateway got %+v", cmds)
		}
		t.Logf("kick reached the waiting gateway %v after the click", time.Since(clicked).Round(time.Millisecond))
		if err := gw.AckCommands(ctx, []apiclient.CommandAck{{ID: cmds[0].ID, OK: true}}); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the kick did not reach the gateway's long poll within 10 s")
	}
	es, _ := st.ListAudit(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Minute), 0)
	var actions []string
	for _, e := range es {
		actions = append(actions, e.Actor+" "+e.Action)
	}
	if s := strings.Join(actions, ", "); !strings.Contains(s, "oscar command.kick") || !strings.Contains(s, "oscar login") {
		t.Errorf("audit: %s", s)
	}
}
