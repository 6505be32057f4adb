package login

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/captive"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/gateway"
)

const (
	site    = "parco-pertini"
	gwID    = "gw-1"
	phoneIP = "10.20.0.11"
	phoneHW = "02:00:00:aa:bb:01"
	portal  = "10.20.0.1:2050"
)

var t0 = time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)

// fakeController plays the controller: it signs real Ed25519 grants for
// the client it was asked about, "texts" the code 123456 (kept, so a test
// can read it as the provider would), and answers a refusal when told to.
type fakeController struct {
	mu    sync.Mutex
	key   ed25519.PrivateKey
	now   func() time.Time
	fail  map[string]error // by method name: returned instead of an answer
	reqs  []any            // every request, in order
	codes map[string]string
	n     int
	// grant, when set, changes the grant before it is signed (or replaces
	// it after, for forgeries).
	mutate func(g *apiclient.Grant)
	resign func(g *apiclient.Grant)
	// onSMS, when set, "texts" the code it returns (the test reads it as
	// the SMS provider would); else the code is 123456.
	onSMS func(apiclient.SMSStartRequest) string
	// hold, when set, keeps sms/verify waiting until it is closed.
	hold chan struct{}
}

func newFakeController(now func() time.Time) *fakeController {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	return &fakeController{key: key, now: now, fail: map[string]error{}, codes: map[string]string{}}
}

func (f *fakeController) pub() ed25519.PublicKey { return f.key.Public().(ed25519.PublicKey) }

func (f *fakeController) record(method string, req any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	return f.fail[method]
}

func (f *fakeController) requests() []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]any(nil), f.reqs...)
}

func (f *fakeController) grant(method, mac, ip string) (apiclient.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	now := f.now()
	g := apiclient.Grant{
		ID: fmt.Sprintf("g%d", f.n), Site: site, GatewayID: gwID, ClientMAC: mac, ClientIP: ip,
		User: "U7ZQK3", Method: method, DownBPS: 4_000_000, UpBPS: 1_000_000, Session: apiclient.Duration(2 * time.Hour),
		QuotaBytes: 2_000_000_000, IssuedAt: now, ExpiresAt: now.Add(apiclient.GrantTTL),
	}
	if f.mutate != nil {
		f.mutate(&g)
	}
	if err := apiclient.SignGrant(&g, f.key); err != nil {
		return g, err
	}
	if f.resign != nil {
		f.resign(&g)
	}
	return g, nil
}

func (f *fakeController) StartSMS(_ context.Context, req apiclient.SMSStartRequest) (apiclient.SMSStartAnswer, error) {
	if err := f.record("sms/start", req); err != nil {
		return apiclient.SMSStartAnswer{}, err
	}
	code := "123456"
	if f.onSMS != nil {
		code = f.onSMS(req)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("r%d", len(f.reqs))
	f.codes[id] = code
	return apiclient.SMSStartAnswer{RequestID: id, ResendAfterS: 30, ExpiresS: 600}, nil
}

func (f *fakeController) VerifySMS(ctx context.Context, req apiclient.SMSVerifyRequest) (apiclient.Grant, error) {
	if err := f.record("sms/verify", req); err != nil {
		return apiclient.Grant{}, err
	}
	f.mu.Lock()
	code, ok := f.codes[req.RequestID]
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return apiclient.Grant{}, ctx.Err()
		}
	}
	if !ok {
		return apiclient.Grant{}, &apiclient.LoginError{Code: apiclient.CodeExpired, Message: "no such request", Status: 400}
	}
	if req.Code != code {
		return apiclient.Grant{}, &apiclient.LoginError{Code: apiclient.CodeWrongCode, Message: "wrong code", TriesLeft: 4, Status: 400}
	}
	return f.grant(apiclient.MethodSMS, req.ClientMAC, req.ClientIP)
}

func (f *fakeController) RedeemVoucher(_ context.Context, req apiclient.VoucherRequest) (apiclient.Grant, error) {
	if err := f.record("voucher", req); err != nil {
		return apiclient.Grant{}, err
	}
	return f.grant(apiclient.MethodVoucher, req.ClientMAC, req.ClientIP)
}

func (f *fakeController) Remembered(_ context.Context, req apiclient.RememberedRequest) (apiclient.Grant, error) {
	if err := f.record("remembered", req); err != nil {
		return apiclient.Grant{}, err
	}
	return f.grant(apiclient.MethodRemembered, req.ClientMAC, req.ClientIP)
}

func (f *fakeController) StartSPID(_ context.Context, req apiclient.SPIDStartRequest) (apiclient.SPIDStartAnswer, error) {
	if err := f.record("spid/start", req); err != nil {
		return apiclient.SPIDStartAnswer{}, err
	}
	return apiclient.SPIDStartAnswer{RedirectURL: "https://login.comune.example/spid/sso?state=s1"}, nil
}

func (f *fakeController) SPIDGrant(_ context.Context, req apiclient.SPIDGrantRequest) (apiclient.Grant, error) {
	if err := f.record("spid/grant", req); err != nil {
		return apiclient.Grant{}, err
	}
	if req.State != "s1" {
		return apiclient.Grant{}, &apiclient.LoginError{Code: apiclient.CodeExpired, Status: 400}
	}
	return f.grant(apiclient.MethodSPID, req.ClientMAC, req.ClientIP)
}

func (f *fakeController) SPIDIdPs(context.Context) ([]apiclient.SPIDIdP, error) {
	f.mu.Lock()
	err := f.fail["spid/idps"]
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return []apiclient.SPIDIdP{{EntityID: "https://id.lepida.it/idp/shibboleth", Name: "Lepida ID"}, {EntityID: "https://posteid.poste.it", Name: "Poste ID"}}, nil
}

// fakeGateway knows one phone's MAC, opens sessions in a map and serves
// them to the portal (captive.Gate). Spent grant ids go into a real
// gateway.Store, as the gateway writes them: with the session, or alone.
type fakeGateway struct {
	mu       sync.Mutex
	macs     map[netip.Addr]net.HardwareAddr
	sessions map[netip.Addr]gateway.Grant
	opened   []gateway.Grant
	refuse   error // Open fails with it
	storeErr error // writes to the store fail with it
	store    *gateway.Store
}

func newFakeGateway(t testing.TB, dir string) *fakeGateway {
	t.Helper()
	st, err := gateway.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &fakeGateway{macs: map[netip.Addr]net.HardwareAddr{}, sessions: map[netip.Addr]gateway.Grant{}, store: st}
}

func (g *fakeGateway) GrantSpent(id string) (bool, error) { return g.store.IsSpent(id) }

func (g *fakeGateway) SpendGrant(sps ...gateway.Spent) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.storeErr != nil {
		return g.storeErr
	}
	return g.store.Write([]gateway.Change{{Spent: sps}})
}

func (g *fakeGateway) Identify(ip netip.Addr) (net.HardwareAddr, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if mac, ok := g.macs[ip]; ok {
		return mac, nil
	}
	return nil, errors.New("not seen")
}

func (g *fakeGateway) Open(_ context.Context, req gateway.Grant) (*gateway.Session, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuse != nil {
		return nil, g.refuse
	}
	sess := &gateway.Session{ID: "s1", MAC: req.MAC, IP: req.IP, Method: req.Method, User: req.User, Started: t0}
	ch := gateway.Change{Sessions: []*gateway.Session{sess}}
	if req.Spends.ID != "" {
		ch.Spent = []gateway.Spent{req.Spends}
	}
	if g.storeErr != nil {
		return nil, fmt.Errorf("recording session: %w", g.storeErr)
	}
	if err := g.store.Write([]gateway.Change{ch}); err != nil {
		return nil, err
	}
	g.opened = append(g.opened, req)
	g.sessions[req.IP] = req
	return sess, nil
}

func (g *fakeGateway) Limits() config.Limits {
	return config.Limits{Down: quantity.Rate(2_000_000), Up: quantity.Rate(500_000), Session: time.Hour, Idle: 10 * time.Minute, Quota: 0, MaxClients: 100}
}

func (g *fakeGateway) Session(ip netip.Addr) (captive.Session, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.sessions[ip]; ok {
		return captive.Session{Started: t0}, true
	}
	return captive.Session{}, false
}

func (g *fakeGateway) ClickThrough(context.Context, netip.Addr) error {
	return errors.New("click-through is not in these tests")
}

func (g *fakeGateway) Logout(_ context.Context, ip netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.sessions, ip)
	return nil
}

func (g *fakeGateway) openedList() []gateway.Grant {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gateway.Grant(nil), g.opened...)
}

// harness is a portal server with the real login service between it and
// the fake controller.
type harness struct {
	t    testing.TB
	now  time.Time
	ctl  *fakeController
	gw   *fakeGateway
	svc  *Service
	srv  *captive.Server
	lang string
	dir  string
}

func newHarness(t testing.TB, mod ...func(*captive.Config)) *harness {
	t.Helper()
	h := &harness{t: t, now: t0, lang: "en", dir: t.TempDir()}
	h.ctl = newFakeController(func() time.Time { return h.now })
	h.gw = newFakeGateway(t, h.dir)
	mac, _ := net.ParseMAC(phoneHW)
	h.gw.macs[netip.MustParseAddr(phoneIP)] = mac
	h.svc = h.newService(t)
	cfg := captive.Config{
		GatewayIP: netip.MustParseAddr("10.20.0.1"), HTTPPort: 2050, HTTPSPort: 2443,
		APIURL:   "https://10.20.0.1:2443/api/captive",
		SiteName: "Parco Pertini", Town: "Comune di Voghera",
		Key: []byte("0123456789abcdef0123456789abcdef"), Login: h.svc,
		Now: func() time.Time { return h.now },
	}
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := captive.New(cfg, h.gw, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	idps, err := h.svc.IdPs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv.SetOffer(captive.Offer{Methods: []string{"sms", "voucher", "spid"}, RememberDevice: true, IdPs: idps})
	return h
}

func (h *harness) newService(t testing.TB) *Service {
	t.Helper()
	svc, err := New(Config{Site: site, GatewayID: gwID, ControllerKey: h.ctl.pub(), StateDir: h.dir, Now: func() time.Time { return h.now }},
		h.ctl, h.gw, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

type page struct {
	code int
	loc  string
	body string
}

func (h *harness) get(target string) page { return h.do("GET", target, nil, phoneIP) }

func (h *harness) post(target string, form url.Values) page {
	return h.do("POST", target, form, phoneIP)
}

func (h *harness) do(method, target string, form url.Values, from string) page {
	return h.doHost(method, portal, target, form, from)
}

func (h *harness) doHost(method, host, target string, form url.Values, from string) page {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, "http://"+host+target, body)
	r.RemoteAddr = from + ":40000"
	r.Header.Set("Accept-Language", h.lang)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, r)
	return page{code: w.Code, loc: w.Header().Get("Location"), body: w.Body.String()}
}

var inputRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// hidden is the first form's hidden fields whose action is action.
func (p page) hidden(t testing.TB, action string) url.Values {
	t.Helper()
	i := strings.Index(p.body, `action="`+action+`"`)
	if i < 0 {
		t.Fatalf("no form for %s in:\n%s", action, p.body)
	}
	end := strings.Index(p.body[i:], "</form>")
	v := url.Values{}
	for _, m := range inputRE.FindAllStringSubmatch(p.body[i:i+end], -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	return v
}

func (p page) has(s string) bool { return strings.Contains(html.UnescapeString(p.body), s) }

func status(t testing.TB, p page, want int) {
	t.Helper()
	if p.code != want {
		t.Fatalf("status %d, want %d; page:\n%s", p.code, want, p.body)
	}
}
