package gwapi_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// wire is one request as a gateway would put it on the wire.
type wire struct {
	gw, method, target string
	body               []byte
	ts                 int64
	nonce              string
	hdr                http.Header
}

// sign sets the protocol headers of m, signed with key.
func sign(t testing.TB, m *wire, key ed25519.PrivateKey) {
	t.Helper()
	msg, err := apiclient.SignedRequest{
		Gateway: m.gw, Method: m.method, Target: m.target, Timestamp: m.ts, Nonce: m.nonce,
		BodySHA256: sha256.Sum256(m.body),
	}.AppendMessage(nil)
	if err != nil {
		t.Fatal(err)
	}
	m.hdr = http.Header{}
	m.hdr.Set(apiclient.HeaderGateway, m.gw)
	m.hdr.Set(apiclient.HeaderTimestamp, strconv.FormatInt(m.ts, 10))
	m.hdr.Set(apiclient.HeaderNonce, m.nonce)
	m.hdr.Set(apiclient.HeaderSignature, apiclient.EncodeSignature(ed25519.Sign(key, msg)))
}

func send(t testing.TB, base string, m wire) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(m.method, base+m.target, bytes.NewReader(m.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = m.hdr
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestTamperedRequestsRefused changes one thing of a correctly signed request at a time; each must be refused
// with a bare 401/403, logged with the claimed gateway, the reason and the remote address, and reach nothing.
func TestTamperedRequestsRefused(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, func(c *gwapi.Config) { c.Registerer = reg })
	hb, _ := json.Marshal(apiclient.Heartbeat{Version: "1.0", ClientsOnline: 7})
	const hbPath = "/v1/sites/site-a/heartbeat"
	cases := []struct {
		name   string
		gw     string // claimed and, unless signer is set, signing
		signer string
		method string
		target string
		body   []byte
		skew   time.Duration
		after  func(m *wire) // applied after signing: the tampering
		repeat bool          // send the same request twice; the second is the one judged
		want   int
		reason string // "" for an accepted request
	}{
		{name: "valid", want: http.StatusNoContent},
		{name: "valid 59 s late", skew: -59 * time.Second, want: http.StatusNoContent},
		{name: "valid 59 s early", skew: 59 * time.Second, want: http.StatusNoContent},
		{name: "method changed", method: "POST", target: "/v1/sites/site-a/policy", body: []byte{},
			after: func(m *wire) { m.method = "GET" }, want: 401, reason: "bad signature"},
		{name: "path changed", target: "/v1/sites/site-a/events",
			after: func(m *wire) { m.target = hbPath }, want: 401, reason: "bad signature"},
		{name: "query changed", method: "GET", target: "/v1/sites/site-a/policy?wait=0", body: []byte{},
			after: func(m *wire) { m.target = "/v1/sites/site-a/policy?wait=1" }, want: 401, reason: "bad signature"},
		{name: "query added", method: "GET", target: "/v1/sites/site-a/policy", body: []byte{},
			after: func(m *wire) { m.target += "?wait=0" }, want: 401, reason: "bad signature"},
		{name: "body changed", after: func(m *wire) { m.body = bytes.Replace(m.body, []byte(`:7`), []byte(`:8`), 1) },
			want: 401, reason: "bad signature"},
		{name: "body dropped", after: func(m *wire) { m.body = nil }, want: 401, reason: "bad signature"},
		{name: "timestamp header changed", after: func(m *wire) {
			m.hdr.Set(apiclient.HeaderTimestamp, strconv.FormatInt(m.ts+1, 10))
		}, want: 401, reason: "bad signature"},
		{name: "nonce header changed", after: func(m *wire) { m.hdr.Set(apiclient.HeaderNonce, apiclient.NewNonce()) },
			want: 401, reason: "bad signature"},
		{name: "timestamp 61 s old", skew: -61 * time.Second, want: 401, reason: "clock skew"},
		{name: "timestamp 61 s ahead", skew: 61 * time.Second, want: 401, reason: "clock skew"},
		{name: "nonce replayed", repeat: true, want: 401, reason: "replayed nonce"},
		{name: "signed by another gateway's key", signer: "gw-b", want: 401, reason: "bad signature"},
		{name: "gateway header swapped after signing", after: func(m *wire) { m.hdr.Set(apiclient.HeaderGateway, "gw-b") },
			want: 401, reason: "bad signature"},
		{name: "key not enrolled", gw: "gw-rogue", want: 401, reason: "unknown gateway"},
		{name: "other site's gateway", gw: "gw-b", want: 403, reason: "other site"},
		{name: "other site's gateway reading policy", gw: "gw-b", method: "GET", target: "/v1/sites/site-a/policy",
			body: []byte{}, want: 403, reason: "other site"},
		{name: "no signature", after: func(m *wire) { m.hdr.Del(apiclient.HeaderSignature) }, want: 401, reason: "unsigned"},
		{name: "signature not base64", after: func(m *wire) { m.hdr.Set(apiclient.HeaderSignature, "!!") },
			want: 401, reason: "malformed"},
		{name: "short nonce", after: func(m *wire) { m.hdr.Set(apiclient.HeaderNonce, "abc") }, want: 401, reason: "malformed"},
		{name: "gateway id not an id", after: func(m *wire) { m.hdr.Set(apiclient.HeaderGateway, "../../gw-a") },
			want: 401, reason: "malformed"},
	}
	accepted := 0
	wantRefusals := map[string]float64{}
	for _, tc := range cases {
		if tc.reason != "" {
			wantRefusals[tc.reason]++
		}
		t.Run(tc.name, func(t *testing.T) {
			m := wire{gw: "gw-a", method: "POST", target: hbPath, body: hb}
			if tc.gw != "" {
				m.gw = tc.gw
			}
			if tc.method != "" {
				m.method = tc.method
			}
			if tc.target != "" {
				m.target = tc.target
			}
			if tc.body != nil {
				m.body = tc.body
			}
			m.ts = time.Now().Add(tc.skew).Unix()
			m.nonce = apiclient.NewNonce()
			signer := m.gw
			if tc.signer != "" {
				signer = tc.signer
			}
			sign(t, &m, h.priv[signer])
			if tc.after != nil {
				tc.after(&m)
			}
			before := len(h.logs.records("refused gateway request"))
			if tc.repeat {
				if resp, body := send(t, h.http.URL, m); resp.StatusCode != http.StatusNoContent {
					t.Fatalf("first send: %d %q, want 204", resp.StatusCode, body)
				}
				accepted++
			}
			resp, body := send(t, h.http.URL, m)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.want)
			}
			refusals := h.logs.records("refused gateway request")[before:]
			if tc.reason == "" {
				accepted++
				if len(refusals) != 0 {
					t.Errorf("accepted request logged as refused: %v", refusals)
				}
				if resp.Header.Get(apiclient.HeaderSignature) == "" {
					t.Error("answer not signed")
				}
				return
			}
			if want := http.StatusText(tc.want) + "\n"; body != want {
				t.Errorf("refusal body %q, want only %q", body, want)
			}
			if resp.Header.Get(apiclient.HeaderSignature) != "" {
				t.Error("refusal carries a signature")
			}
			if len(refusals) != 1 {
				t.Fatalf("%d refusal log lines, want 1", len(refusals))
			}
			got := refusals[0]
			wantGW := m.hdr.Get(apiclient.HeaderGateway)
			if got["reason"] != tc.reason || got["gateway"] != wantGW || !strings.HasPrefix(got["remote"].(string), "127.0.0.1:") {
				t.Errorf("log line %v, want reason %q gateway %q remote 127.0.0.1:*", got, tc.reason, wantGW)
			}
		})
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gotRefusals := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "civicwifi_controller_gateway_refusals_total" {
			for _, m := range mf.GetMetric() {
				gotRefusals[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if diff := cmp.Diff(wantRefusals, gotRefusals); diff != "" {
		t.Errorf("refusals_total by reason (-want +got):\n%s", diff)
	}

	// Only the accepted heartbeats reached the sink, each from gw-a of site-a.
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	if len(h.sink.heartbeats) != accepted {
		t.Errorf("sink got %d heartbeats, want %d (the accepted ones)", len(h.sink.heartbeats), accepted)
	}
	for _, got := range h.sink.heartbeats {
		if diff := cmp.Diff(apiclient.Heartbeat{Version: "1.0", ClientsOnline: 7}, got.HB); diff != "" || got.From.Gateway != "gw-a" || got.From.Site != "site-a" {
			t.Errorf("heartbeat from %+v (-want +got):\n%s", got.From, diff)
		}
	}
}

// TestAnswerSignature: a client refuses answers not signed by its controller's key, and answers altered on the
// way (here by a proxy that rewrites the policy).
func TestAnswerSignature(t *testing.T) {
	h := newHarness(t, nil)
	other, _, _ := ed25519.GenerateKey(nil)
	c := h.client(t, "gw-a", func(c *apiclient.Config) { c.ControllerKey = other; c.CacheFile = "" })
	if _, _, err := c.FetchPolicy(t.Context(), "", 0); !errorIs(err, apiclient.ErrBadSignature) {
		t.Errorf("with the wrong controller key: %v, want ErrBadSignature", err)
	}

	proxy := newRewritingProxy(t, h.http.URL, `"5mbit"`, `"50mbit"`)
	c = h.client(t, "gw-a", func(c *apiclient.Config) { c.BaseURL = proxy; c.CacheFile = "" })
	if _, _, err := c.FetchPolicy(t.Context(), "", 0); !errorIs(err, apiclient.ErrBadSignature) {
		t.Errorf("through a rewriting proxy: %v, want ErrBadSignature", err)
	}
	c = h.client(t, "gw-a", nil)
	p, _, err := c.FetchPolicy(t.Context(), "", 0)
	if err != nil || string(p.Body) != `{"rate_down":"5mbit"}` {
		t.Errorf("direct: %q, %v", p.Body, err)
	}
}

// FuzzUnsignedRequests: whatever headers and body arrive without gw-a's key, nothing gets past authentication.
func FuzzUnsignedRequests(f *testing.F) {
	h := newHarnessNoListen(f, nil)
	f.Add("gw-a", "1764064800", "AAAAAAAAAAAAAAAAAAAAAA", "AAAA", "POST", "/v1/sites/site-a/heartbeat", []byte("{}"))
	f.Add("gw-a", "-1", "", "", "GET", "/v1/sites/site-a/policy?wait=30", []byte(nil))
	f.Fuzz(func(t *testing.T, gw, ts, nonce, sig, method, target string, body []byte) {
		if method != "GET" && method != "POST" {
			method = "POST"
		}
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		req, err := http.NewRequest(method, "http://controller"+target, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.RequestURI = req.URL.RequestURI()
		for k, v := range map[string]string{apiclient.HeaderGateway: gw, apiclient.HeaderTimestamp: ts, apiclient.HeaderNonce: nonce, apiclient.HeaderSignature: sig} {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.srv.Handler().ServeHTTP(rec, req)
		if rec.Code/100 == 2 || rec.Code == http.StatusNotModified || rec.Header().Get(apiclient.HeaderSignature) != "" {
			t.Fatalf("unsigned request got %d %v", rec.Code, rec.Header()) // a 307 to a cleaned path is fine
		}
	})
}

// TestNonceAcrossReplicas: two controller replicas sharing one nonce store (Redis in production) refuse a
// request replayed from one to the other; and a forged request carrying a nonce does not burn it for the real
// gateway (nonces are stored only after the signature is checked).
func TestNonceAcrossReplicas(t *testing.T) {
	h := newHarness(t, nil)
	replica, err := gwapi.New(gwapi.Config{Keys: h.keys, Nonces: h.nonces, Policies: h.policies, Sink: h.sink,
		Commands: h.commands, SigningKey: h.ctrlKey})
	if err != nil {
		t.Fatal(err)
	}
	other := httptest.NewServer(replica.Handler())
	defer other.Close()

	hb, _ := json.Marshal(apiclient.Heartbeat{Version: "1.0"})
	m := wire{gw: "gw-a", method: "POST", target: "/v1/sites/site-a/heartbeat", body: hb, ts: time.Now().Unix(), nonce: apiclient.NewNonce()}

	forged := m
	sign(t, &forged, h.priv["gw-rogue"]) // the attacker's own key, gw-a's id and the nonce gw-a will use
	forged.hdr.Set(apiclient.HeaderGateway, "gw-a")
	if resp, _ := send(t, h.http.URL, forged); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged: %d, want 401", resp.StatusCode)
	}

	sign(t, &m, h.priv["gw-a"])
	if resp, body := send(t, h.http.URL, m); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("genuine request after a forged one with its nonce: %d %q, want 204", resp.StatusCode, body)
	}
	if resp, _ := send(t, other.URL, m); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("replayed to the other replica: %d, want 401", resp.StatusCode)
	}
}
