package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/google/go-cmp/cmp"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const sitesYAML = `town:
  name: Comune di Prova
  ssid: Prova WiFi
  contacts: {email: urp@comune.prova.it, dpo: dpo@comune.prova.it}
  privacy: {it: Informativa}
  terms: {url: "https://comune.prova.it/termini"}
policies:
  - name: parks
    down: 5mbit
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
  - id: piazza
    name: Piazza
    kind: square
    coordinates: {lat: 44.98, lon: 9.02}
    policy: parks
    client_network: {address: 10.20.4.1/22}
    gateways:
      - {id: piazza-gw1, credential: "env:TEST_PIAZZA_GW1_KEY"}
`

type fixture struct {
	dir, sites string
	srv        *Server
	st         store.Store
	logs       *logBuf
}

func newFixture(t *testing.T, yaml string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), logs: &logBuf{}}
	f.sites = filepath.Join(f.dir, "sites.yaml")
	f.write(t, yaml)
	st, err := boltstore.Open(filepath.Join(f.dir, "c.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	_, key, _ := ed25519.GenerateKey(nil)
	f.srv, err = New(Options{SitesPath: f.sites, Store: st, SigningKey: key, Log: slog.New(slog.NewTextHandler(f.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) write(t *testing.T, yaml string) {
	t.Helper()
	if err := os.WriteFile(f.sites, []byte(strings.ReplaceAll(yaml, "DIR", f.dir)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A key file installed after the sites.yaml line that names it starts working without a reload; a gateway
// removed from sites.yaml is refused after the reload; a key from the environment works.
func TestGatewayKeys(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	t.Setenv("TEST_PIAZZA_GW1_KEY", apiclient.MarshalPublicKey(pub))
	f := newFixture(t, sitesYAML)
	f.srv.keys.retry = 50 * time.Millisecond
	ctx := context.Background()
	if !strings.Contains(f.logs.String(), "gateway parco-gw1 of site parco: reading secret file:") {
		t.Errorf("the missing key file is not logged:\n%s", f.logs)
	}
	if _, err := f.srv.keys.GatewayKey(ctx, "parco-gw1"); !errors.Is(err, gwapi.ErrUnknownGateway) {
		t.Fatalf("parco-gw1 without a key file: %v, want ErrUnknownGateway", err)
	}
	en, err := apiclient.Enroll(f.dir, "parco-gw1")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	k, err := f.srv.keys.GatewayKey(ctx, "parco-gw1")
	if err != nil || k.Site != "parco" || apiclient.MarshalPublicKey(k.PublicKey) != en.PublicKeyLine {
		t.Fatalf("parco-gw1 after its key file appeared: %+v %v", k, err)
	}
	if k, err := f.srv.keys.GatewayKey(ctx, "piazza-gw1"); err != nil || k.Site != "piazza" || !k.PublicKey.Equal(pub) {
		t.Errorf("piazza-gw1 (env key): %+v %v", k, err)
	}
	if _, err := f.srv.keys.GatewayKey(ctx, "nobody"); !errors.Is(err, gwapi.ErrUnknownGateway) {
		t.Errorf("unknown gateway: %v", err)
	}
	f.write(t, strings.Replace(sitesYAML, `      - {id: piazza-gw1, credential: "env:TEST_PIAZZA_GW1_KEY"}`,
		`      - {id: piazza-gw2, credential: "env:TEST_PIAZZA_GW1_KEY"}`, 1))
	if err := f.srv.Reload(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.keys.GatewayKey(ctx, "piazza-gw1"); !errors.Is(err, gwapi.ErrUnknownGateway) {
		t.Errorf("piazza-gw1 after its removal: %v, want ErrUnknownGateway", err)
	}
}

// Ids are chosen by gateways: one gateway reusing another's event or session id neither pre-empts its event
// nor touches its session.
func TestSessionsAreScopedToTheGateway(t *testing.T) {
	f := newFixture(t, sitesYAML)
	ctx := context.Background()
	sk := sink{f.st}
	at := time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC()
	ev := apiclient.SessionEvent{ID: "e1", Kind: apiclient.EventInterim, SessionID: "s1", Start: at.Add(-time.Minute), At: at, ClientMAC: "aa:bb:cc:00:00:01",
		User: "u\x01ser", Method: "sms", BytesDown: 100, BytesUp: 10}
	a := gwapi.Origin{Site: "parco", Gateway: "parco-gw1"}
	b := gwapi.Origin{Site: "piazza", Gateway: "piazza-gw1"}
	if dup, err := sk.SessionEvent(ctx, a, ev); err != nil || dup {
		t.Fatalf("A's event: dup=%v %v", dup, err)
	}
	evil := ev
	evil.Kind, evil.BytesDown, evil.Reason = apiclient.EventStop, 1<<40, "kick"
	if dup, err := sk.SessionEvent(ctx, b, evil); err != nil || dup {
		t.Fatalf("B reusing A's ids: dup=%v %v, want a new event of its own", dup, err)
	}
	if dup, err := sk.SessionEvent(ctx, a, ev); err != nil || !dup {
		t.Errorf("A's event again: dup=%v %v, want duplicate", dup, err)
	}
	s, err := f.st.Session(ctx, "parco-gw1.s1")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Session{ID: "parco-gw1.s1", GatewayID: "parco-gw1", SiteID: "parco", ClientMAC: "aa:bb:cc:00:00:01",
		UserID: s.UserID, Method: "sms", Start: at.Add(-time.Minute), LastSeen: at, BytesDown: 100, BytesUp: 10}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("A's session (-want +got):\n%s", diff)
	}
	if strings.Contains(s.UserID, "ser") || len(s.UserID) != 33 {
		t.Errorf("a user id that is not a store id is kept as %q, want its hash", s.UserID)
	}
	for site, want := range map[string]store.Totals{"parco": {Sessions: 1, BytesDown: 100, BytesUp: 10}, "piazza": {Sessions: 1, BytesDown: 1 << 40, BytesUp: 10}} {
		if got, err := f.st.SiteTotals(ctx, site); err != nil || got != want {
			t.Errorf("%s totals %+v %v, want %+v", site, got, err, want)
		}
	}
}

// Reload: unchanged bytes do nothing, a broken file and a missing file keep the running config, and the old
// file back is recognised as the running one.
func TestReload(t *testing.T) {
	t.Setenv("TEST_PIAZZA_GW1_KEY", "")
	f := newFixture(t, sitesYAML)
	ctx := context.Background()
	v1, _, err := policies{f.srv}.Policy(ctx, "parco")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Reload(ctx, false); !errors.Is(err, ErrUnchanged) {
		t.Errorf("reload of the same bytes: %v", err)
	}
	f.write(t, strings.Replace(sitesYAML, "down: 5mbit", "down: 5 mbps", 1))
	err = f.srv.Reload(ctx, false)
	if err == nil || !strings.Contains(err.Error(), f.sites+":9:11: ") {
		t.Errorf("broken file: %v, want a problem at line 9", err)
	}
	if err := f.srv.Reload(ctx, false); !errors.Is(err, ErrUnchanged) {
		t.Errorf("the same broken file again: %v, want it reported once", err)
	}
	os.Remove(f.sites)
	if err := f.srv.Reload(ctx, false); err == nil {
		t.Error("missing file: no error")
	}
	if v, _, _ := (policies{f.srv}).Policy(ctx, "parco"); !bytes.Equal(v, v1) {
		t.Errorf("policy changed by a bad file: %s", v)
	}
	f.write(t, sitesYAML)
	if err := f.srv.Reload(ctx, false); !errors.Is(err, ErrUnchanged) {
		t.Errorf("the running file back: %v, want ErrUnchanged", err)
	}
	if got := strings.Count(f.logs.String(), `msg="sites.yaml problem"`); got != 1 {
		t.Errorf("%d problem lines logged, want 1:\n%s", got, f.logs)
	}
}

// Run applies a changed sites.yaml when the check timer fires (without file notifications), as soon as the
// file changes (fsnotify), and on SIGHUP.
func TestRunReloads(t *testing.T) {
	t.Setenv("TEST_PIAZZA_GW1_KEY", "")
	f := newFixture(t, sitesYAML)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	version := func() string { _, v, _ := policies{f.srv}.Policy(ctx, "parco"); return v }
	waitFor := func(what string, old string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for version() == old {
			if time.Now().After(deadline) {
				t.Fatalf("%s: policy unchanged after %v\n%s", what, within, f.logs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	f.srv.o.ReloadCheck, f.srv.noWatch = 300*time.Millisecond, true
	go func() { done <- f.srv.Run(ctx) }()
	v1 := version()
	f.write(t, strings.Replace(sitesYAML, "down: 5mbit", "down: 4mbit", 1))
	waitFor("timer", v1, 2*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	f.srv.o.ReloadCheck, f.srv.noWatch = time.Hour, false
	go func() { done <- f.srv.Run(ctx) }()
	time.Sleep(200 * time.Millisecond) // the watch is set up
	v2 := version()
	f.write(t, strings.Replace(sitesYAML, "down: 5mbit", "down: 6mbit", 1))
	waitFor("fsnotify", v2, time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	f.srv.o.ReloadCheck, f.srv.noWatch = time.Hour, true
	go func() { done <- f.srv.Run(ctx) }()
	time.Sleep(200 * time.Millisecond) // Run has installed its SIGHUP handler
	v3 := version()
	f.write(t, strings.Replace(sitesYAML, "down: 5mbit", "down: 3mbit", 1))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("SIGHUP", v3, 2*time.Second)
	if !strings.Contains(f.logs.String(), "SIGHUP: reloading sites.yaml") {
		t.Errorf("no SIGHUP line:\n%s", f.logs)
	}
}
