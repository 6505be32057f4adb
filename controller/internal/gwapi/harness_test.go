package gwapi_test

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
)

// harness is a controller's gateway API on a loopback port with two enrolled gateways of two sites (gw-a of
// site-a, gw-b of site-b) and one key pair that is not enrolled (gw-rogue). Keys are real files made by Enroll.
type harness struct {
	dir      string
	ctrlKey  ed25519.PrivateKey
	ctrlPub  ed25519.PublicKey
	priv     map[string]ed25519.PrivateKey
	keys     fakeKeys
	nonces   *fakeNonces
	policies *fakePolicies
	sink     *fakeSink
	commands *fakeCommands
	srv      *gwapi.Server
	http     *httptest.Server
	logs     *logBuffer
}

var siteOf = map[string]string{"gw-a": "site-a", "gw-b": "site-b", "gw-rogue": "site-a"}

func newHarness(t testing.TB, mod func(*gwapi.Config)) *harness {
	t.Helper()
	h := newHarnessNoListen(t, mod)
	h.http = httptest.NewServer(h.srv.Handler())
	t.Cleanup(h.http.Close)
	return h
}

func newHarnessNoListen(t testing.TB, mod func(*gwapi.Config)) *harness {
	t.Helper()
	h := &harness{
		dir: t.TempDir(), priv: map[string]ed25519.PrivateKey{}, keys: fakeKeys{},
		nonces: &fakeNonces{}, policies: &fakePolicies{}, sink: &fakeSink{}, commands: &fakeCommands{},
		logs: &logBuffer{},
	}
	keyDir := filepath.Join(h.dir, "keys")
	e, err := apiclient.Enroll(keyDir, "controller")
	if err != nil {
		t.Fatal(err)
	}
	if h.ctrlKey, err = apiclient.LoadPrivateKey(e.KeyFile); err != nil {
		t.Fatal(err)
	}
	if h.ctrlPub, err = apiclient.LoadPublicKey(e.PublicKeyFile); err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{"gw-a", "gw-b", "gw-rogue"} {
		e, err := apiclient.Enroll(keyDir, gw)
		if err != nil {
			t.Fatal(err)
		}
		if h.priv[gw], err = apiclient.LoadPrivateKey(e.KeyFile); err != nil {
			t.Fatal(err)
		}
		if gw == "gw-rogue" {
			continue // made a key, never registered
		}
		pub, err := apiclient.LoadPublicKey(e.PublicKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		h.keys[gw] = gwapi.GatewayKey{PublicKey: pub, Site: siteOf[gw]}
	}
	h.policies.set("site-a", `{"rate_down":"5mbit"}`)
	h.policies.set("site-b", `{"rate_down":"20mbit"}`)
	cfg := gwapi.Config{
		Keys: h.keys, Nonces: h.nonces, Policies: h.policies, Sink: h.sink, Commands: h.commands,
		SigningKey: h.ctrlKey, Log: slog.New(slog.NewJSONHandler(h.logs, nil)), // no Recheck: only a notify wakes a poll
	}
	if mod != nil {
		mod(&cfg)
	}
	if h.srv, err = gwapi.New(cfg); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) client(t testing.TB, gw string, mod func(*apiclient.Config)) *apiclient.Client {
	t.Helper()
	cfg := apiclient.Config{
		BaseURL: h.http.URL, Site: siteOf[gw], GatewayID: gw, Key: h.priv[gw], ControllerKey: h.ctrlPub,
		CacheFile: filepath.Join(h.dir, gw, "policy.json"),
		Backoff:   apiclient.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := apiclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records returns the log lines with msg, decoded.
func (l *logBuffer) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
