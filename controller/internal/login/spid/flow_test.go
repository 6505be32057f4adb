package spid

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/spid/spidtest"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/crewjam/saml"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/html"
)

const (
	testMAC = "02:aa:bb:cc:dd:01"
)

var testPepper = bytes.Repeat([]byte("p"), 32)

func newKeyCert(t testing.TB, cn string) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, Country: []string{"IT"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

type harness struct {
	t        testing.TB
	sp       *SP
	idp      *spidtest.IdP
	ctrl     *httptest.Server
	gateway  *httptest.Server // stands in for the gateway's /portal/spid/done
	dump     func() []byte    // every byte the store holds
	reg      *prometheus.Registry
	spCert   *x509.Certificate
	ctrlKey  ed25519.PrivateKey
	gwKeys   map[string]ed25519.PrivateKey // by gateway id
	pep      pepper.Pepper
	returnTo string
	logs     *syncBuffer
	acsTime  atomic.Int64 // ns spent in the ACS handler
}

// syncBuffer collects the logs of every component at debug level.
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

// gateways of testdata/sites.yaml: id -> site.
var testGateways = map[string]string{"parco-gw1": "parco", "biblio-gw1": "biblio", "museo-gw1": "museo"}

// a client address in each site's client network.
var testIPs = map[string]string{"parco": "10.20.0.57", "biblio": "10.20.4.57", "museo": "10.20.8.57"}

type fakeKeys map[string]gwapi.GatewayKey

func (k fakeKeys) GatewayKey(_ context.Context, id string) (gwapi.GatewayKey, error) {
	if g, ok := k[id]; ok {
		return g, nil
	}
	return gwapi.GatewayKey{}, gwapi.ErrUnknownGateway
}

type nonces struct{ st store.Ephemeral }

func (n nonces) PutIfAbsent(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return n.st.PutIfAbsent(ctx, key, []byte{1}, ttl)
}

// unused is the rest of the gateway API, which these tests do not call.
type unused struct{}

func (unused) Policy(context.Context, string) ([]byte, string, error) {
	return nil, "", errors.New("unused")
}
func (unused) Heartbeat(context.Context, gwapi.Origin, apiclient.Heartbeat) error {
	return errors.New("unused")
}
func (unused) SessionEvent(context.Context, gwapi.Origin, apiclient.SessionEvent) (bool, error) {
	return false, errors.New("unused")
}
func (unused) Pending(context.Context, string, string) ([]apiclient.Command, error) {
	return nil, errors.New("unused")
}
func (unused) Ack(context.Context, string, string, apiclient.CommandAck) error {
	return errors.New("unused")
}

// newHarness starts the controller (gateway API, SPID endpoints) on a bbolt store, a test IdP and a stand-in
// gateway page. mods change the IdP's metadata as the registry file lists it.
func newHarness(t testing.TB, mods ...func(*saml.EntityDescriptor)) *harness {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "c.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newHarnessOn(t, st, func() []byte {
		raw, err := os.ReadFile(st.Path())
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}, 1, mods...)
}

// newHarnessOn is newHarness on st (dump returns all of its bytes), with replicas controllers behind one public
// URL that hands each request to the next replica in turn, as a load balancer would.
func newHarnessOn(t testing.TB, st store.Store, dump func() []byte, replicas int, mods ...func(*saml.EntityDescriptor)) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry(), gwKeys: map[string]ed25519.PrivateKey{}, logs: &syncBuffer{}, dump: dump}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	data, err := os.ReadFile("testdata/sites.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := sites.Parse("testdata/sites.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	sitesFn := func() *sites.Config { return cfg }
	_, h.ctrlKey, _ = ed25519.GenerateKey(rand.Reader)
	keys := fakeKeys{}
	for gw, site := range testGateways {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		h.gwKeys[gw] = priv
		keys[gw] = gwapi.GatewayKey{PublicKey: pub, Site: site}
	}
	h.pep, err = pepper.New(testPepper)
	if err != nil {
		t.Fatal(err)
	}
	var muxes []*http.ServeMux
	var next atomic.Uint64
	h.ctrl = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		muxes[next.Add(1)%uint64(len(muxes))].ServeHTTP(w, r)
		if r.URL.Path == PathACS {
			h.acsTime.Add(int64(time.Since(start)))
		}
	}))
	t.Cleanup(h.ctrl.Close)
	h.idp = spidtest.Start(t, spidtest.Options{SPMetadata: func() ([]byte, error) { return h.sp.Metadata() }})
	registry, err := spidtest.Registry(func(ed *saml.EntityDescriptor) {
		for _, m := range mods {
			m(ed)
		}
	}, h.idp)
	if err != nil {
		t.Fatal(err)
	}
	key, cert := newKeyCert(t, "controller-sp")
	h.spCert = cert
	pub, _ := url.Parse(h.ctrl.URL)
	for i := range replicas {
		reg := h.reg
		if i > 0 {
			reg = prometheus.NewRegistry() // the metrics tests read the first replica's
		}
		gw, err := gwapi.New(gwapi.Config{Keys: keys, Nonces: nonces{st}, Policies: unused{}, Sink: unused{},
			Commands: unused{}, SigningKey: h.ctrlKey, Log: log, Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		ls, err := login.New(login.Config{Sites: sitesFn, Store: st, Pepper: h.pep, SigningKey: h.ctrlKey, Log: log, Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		idps, err := ParseRegistry("registry.xml", registry)
		if err != nil {
			t.Fatal(err)
		}
		sp, err := New(Options{
			EntityID: "https://wifi.comune.prova.it/spid", PublicURL: pub, Key: key, Certificate: cert, IdPs: idps,
			Store: st, Sites: sitesFn, Pepper: h.pep, Login: ls, Registerer: reg, Log: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			h.sp = sp
		}
		sp.Register(gw)
		mux := http.NewServeMux()
		mux.Handle("/v1/", gw.Handler())
		mux.Handle("/spid/", sp.Handler())
		muxes = append(muxes, mux)
	}
	gwMux := http.NewServeMux()
	gwMux.HandleFunc("/portal/spid/done", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "done") })
	h.gateway = httptest.NewServer(gwMux)
	t.Cleanup(h.gateway.Close)
	h.returnTo = h.gateway.URL + "/portal/spid/done"
	return h
}

func (h *harness) idpID() string { return h.idp.EntityID() }

// client is gateway gw's signed client of the controller.
func (h *harness) client(gw string) *apiclient.Client {
	h.t.Helper()
	c, err := apiclient.New(apiclient.Config{BaseURL: h.ctrl.URL, Site: testGateways[gw], GatewayID: gw,
		Key: h.gwKeys[gw], ControllerKey: h.ctrlKey.Public().(ed25519.PublicKey)})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// start asks spid/start as gateway gw, signed, over HTTP.
func (h *harness) start(gw string) string {
	h.t.Helper()
	a, err := h.client(gw).StartSPID(context.Background(), apiclient.SPIDStartRequest{
		ClientMAC: testMAC, ClientIP: testIPs[testGateways[gw]], IdPEntityID: h.idpID(), Lang: "it", Consent: true,
		ReturnURL: h.returnTo,
	})
	if err != nil {
		h.t.Fatalf("StartSPID: %v", err)
	}
	return a.RedirectURL
}

// grant asks spid/grant as gateway gw and checks the grant as the gateway does.
func (h *harness) grant(gw, state string) (apiclient.Grant, error) {
	site := testGateways[gw]
	g, err := h.client(gw).SPIDGrant(context.Background(), apiclient.SPIDGrantRequest{State: state, ClientMAC: testMAC, ClientIP: testIPs[site]})
	if err != nil {
		return g, err
	}
	if err := apiclient.VerifyGrant(g, h.ctrlKey.Public().(ed25519.PublicKey), site, gw, testMAC, testIPs[site], time.Now()); err != nil {
		h.t.Fatalf("VerifyGrant: %v", err)
	}
	return g, nil
}

// browser is an http.Client with a cookie jar that follows redirects and submits the auto-posting forms of the
// HTTP-POST binding, as a browser does with JavaScript.
type browser struct {
	t        testing.TB
	c        *http.Client
	requests [][]byte   // SAMLRequests it carried to the IdP (HTTP-POST binding)
	visited  []*url.URL // every URL a redirect led to
	acsForms []url.Values
	// tamper, if set, changes the SAMLResponse XML before it is posted to the ACS.
	tamper func([]byte) []byte
}

func newBrowser(t testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t}
	b.c = &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		b.visited = append(b.visited, r.URL)
		if len(via) > 10 {
			return errors.New("too many redirects")
		}
		return nil
	}}
	return b
}

// page is where a walk ended.
type page struct {
	status int
	url    *url.URL
	body   string
	reason string // X-Spid-Reason
}

func (b *browser) walk(start string) page {
	b.t.Helper()
	resp, err := b.c.Get(start)
	for i := 0; ; i++ {
		if err != nil {
			b.t.Fatalf("browsing: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		action, form := postForm(body)
		if action == "" || i > 5 {
			return page{status: resp.StatusCode, url: resp.Request.URL, body: string(body), reason: resp.Header.Get("X-Spid-Reason")}
		}
		target := resp.Request.URL.ResolveReference(mustParse(action))
		if v := form.Get("SAMLRequest"); v != "" {
			raw, _ := base64.StdEncoding.DecodeString(v)
			b.requests = append(b.requests, raw)
		}
		if v := form.Get("SAMLResponse"); v != "" {
			if b.tamper != nil {
				raw, _ := base64.StdEncoding.DecodeString(v)
				form.Set("SAMLResponse", base64.StdEncoding.EncodeToString(b.tamper(raw)))
			}
			b.acsForms = append(b.acsForms, cloneValues(form))
		}
		resp, err = b.c.PostForm(target.String(), form)
	}
}

func (b *browser) post(target string, form url.Values) page {
	b.t.Helper()
	resp, err := b.c.PostForm(target, form)
	if err != nil {
		b.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return page{status: resp.StatusCode, url: resp.Request.URL, body: string(body), reason: resp.Header.Get("X-Spid-Reason")}
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func mustParse(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// postForm finds the first form with method post and returns its action and its inputs' values.
func postForm(body []byte) (string, url.Values) {
	doc, err := html.Parse(bytes.NewReader(body))
	if err != nil {
		return "", nil
	}
	var action string
	vals := url.Values{}
	var walk func(n *html.Node, inForm bool)
	walk = func(n *html.Node, inForm bool) {
		if n.Type == html.ElementNode && n.Data == "form" && action == "" && strings.EqualFold(attr(n, "method"), "post") {
			action = attr(n, "action")
			inForm = true
		}
		if inForm && n.Type == html.ElementNode && n.Data == "input" && attr(n, "name") != "" {
			vals.Set(attr(n, "name"), attr(n, "value"))
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, inForm)
		}
	}
	walk(doc, false)
	return action, vals
}

func attr(n *html.Node, k string) string {
	for _, a := range n.Attr {
		if a.Key == k {
			return a.Val
		}
	}
	return ""
}

func stateOf(p page) string { return p.url.Query().Get("state") }

func TestFlow(t *testing.T) {
	h := newHarness(t)
	b := newBrowser(t)
	end := b.walk(h.start("parco-gw1"))
	if end.status != http.StatusOK || end.url.Path != "/portal/spid/done" || !strings.HasPrefix(end.url.String(), h.gateway.URL) {
		t.Fatalf("walk ended at %d %s (%s): %.300s", end.status, end.url, end.reason, end.body)
	}
	g, err := h.grant("parco-gw1", stateOf(end))
	if err != nil {
		t.Fatalf("SPIDGrant: %v", err)
	}
	want := apiclient.Grant{Site: "parco", GatewayID: "parco-gw1", ClientMAC: testMAC, ClientIP: testIPs["parco"],
		User: h.pep.Pseudonym("spid:TINIT-RSSMRA80A01H501U"), Method: "spid"}
	got := apiclient.Grant{Site: g.Site, GatewayID: g.GatewayID, ClientMAC: g.ClientMAC, ClientIP: g.ClientIP, User: g.User, Method: g.Method}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(apiclient.Grant{})); diff != "" {
		t.Errorf("grant (-want +got):\n%s", diff)
	}
	if len(g.User) != 52 || strings.Contains(strings.ToUpper(g.User), "RSSMRA") {
		t.Errorf("pseudonym %q", g.User)
	}
	// The state is single use at spid/grant.
	_, err = h.grant("parco-gw1", stateOf(end))
	wantCode(t, err, apiclient.CodeExpired)
	if got := testutil.ToFloat64(h.sp.outcomes.WithLabelValues("ok")); got != 1 {
		t.Errorf("ok logins = %v, want 1", got)
	}
	// The IdP list for the landing page.
	idps, err := h.client("parco-gw1").SPIDIdPs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]apiclient.SPIDIdP{{EntityID: h.idpID(), Name: "IdP di prova"}}, idps); diff != "" {
		t.Errorf("idps (-want +got):\n%s", diff)
	}
	// The fiscal code is nowhere in the store.
	assertNoFiscalCode(t, h)
}

func wantCode(t *testing.T, err error, code string) *apiclient.LoginError {
	t.Helper()
	var e *apiclient.LoginError
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("got error %v, want code %s", err, code)
	}
	return e
}

// assertNoFiscalCode: the fiscal code is nowhere in the store file, the logs (debug level) or the metrics.
func assertNoFiscalCode(t *testing.T, h *harness) {
	t.Helper()
	raw := h.dump()
	var metrics bytes.Buffer
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		metrics.WriteString(mf.String())
	}
	if metrics.Len() == 0 || !strings.Contains(metrics.String(), "civicwifi_controller_spid_logins_total") || h.logs.String() == "" {
		t.Fatal("no metrics or no logs to look at")
	}
	for where, data := range map[string]string{"store file": string(raw), "logs": h.logs.String(), "metrics": metrics.String()} {
		for _, s := range []string{"RSSMRA80A01H501U", "rssmra80a01h501u", "VRDGPP80A01H501X"} {
			if strings.Contains(data, s) {
				t.Errorf("the %s hold the fiscal code %s in clear", where, s)
			}
		}
	}
}

func b64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
