package dashboard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
)

// clock is a settable clock shared by the store (ephemeral TTLs), the
// session manager and the dashboard.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var cheap = auth.Params{Memory: 8 * 1024, Time: 1, Threads: 1}

// Passwords of the test accounts: one per role.
var testAccounts = map[string]auth.Role{"ida": auth.IT, "oscar": auth.Operator, "aude": auth.Auditor}

func password(name string) string { return name + "-correct-horse" }

type harness struct {
	t     *testing.T
	clk   *clock
	st    store.Store
	cfg   *sites.Config
	mgr   *auth.Manager
	d     *Dashboard
	srv   *httptest.Server
	accts string
	book  *voucher.Book
}

type harnessOpt func(*harness, *Options, *auth.Options)

// newHarness runs the dashboard over a real bbolt store and the repo's
// sites.yaml (Voghera's eleven sites) behind an httptest TLS server.
func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	return newHarnessAt(t, time.Date(2026, 11, 25, 10, 30, 0, 0, time.UTC), opts...)
}

func newHarnessAt(t *testing.T, start time.Time, opts ...harnessOpt) *harness {
	t.Helper()
	clk := &clock{t: start}
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "controller.db"), boltstore.Options{Now: clk.Now, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newHarnessOver(t, clk, st, "", opts...)
}

// newHarnessOver runs a dashboard over st (another replica's, perhaps),
// with the accounts file accts ("": a new one with the test accounts).
func newHarnessOver(t *testing.T, clk *clock, st store.Store, accts string, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, clk: clk, st: st, accts: accts}
	var err error
	if h.cfg, err = sites.Load("../../../sites.yaml"); err != nil {
		t.Fatal(err)
	}
	if h.accts == "" {
		h.accts = filepath.Join(t.TempDir(), "admins")
	}
	for name, role := range testAccounts {
		hash, err := auth.HashPasswordWith(password(name), cheap)
		if err != nil {
			t.Fatal(err)
		}
		if err := auth.SetAccount(h.accts, auth.Account{Name: name, Role: role, Hash: hash}); err != nil {
			t.Fatal(err)
		}
	}
	ao := auth.Options{Store: h.st, AccountsPath: h.accts, Now: h.clk.Now}
	pep, err := pepper.New([]byte("a test pepper of at least 32 bytes, not secret"))
	if err != nil {
		t.Fatal(err)
	}
	h.book = &voucher.Book{Store: h.st, Pepper: pep, Now: h.clk.Now}
	do := Options{Store: h.st, Sites: func() *sites.Config { return h.cfg }, Now: h.clk.Now, Location: time.UTC, Vouchers: h.book}
	// The server first (options may need its URL), the dashboard behind it after.
	mux := http.NewServeMux()
	h.srv = httptest.NewTLSServer(mux)
	t.Cleanup(h.srv.Close)
	for _, o := range opts {
		o(h, &do, &ao)
	}
	if h.mgr, err = auth.NewManager(ao); err != nil {
		t.Fatal(err)
	}
	do.Auth = h.mgr
	if h.d, err = New(do); err != nil {
		t.Fatal(err)
	}
	mux.Handle(Prefix+"/", h.d.Handler())
	return h
}

// client is a browser-like client: cookies kept, redirects not followed.
func (h *harness) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	c := *h.srv.Client() // a copy: the server's client is shared
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

type resp struct {
	code int
	loc  string
	body string
}

func (h *harness) do(c *http.Client, method, path string, form url.Values, hdr ...string) resp {
	h.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{code: r.StatusCode, loc: r.Header.Get("Location"), body: string(b)}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(body string) string {
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

// loginAttempt posts the login form as a browser would (after loading it).
func (h *harness) loginAttempt(c *http.Client, name, pw string) resp {
	h.t.Helper()
	page := h.do(c, "GET", "/admin/login", nil)
	return h.do(c, "POST", "/admin/login", url.Values{"csrf": {csrfOf(page.body)}, "name": {name}, "password": {pw}, "next": {"/admin/"}})
}

// login signs in and returns the client and the session's CSRF token.
func (h *harness) login(name string) (*http.Client, string) {
	h.t.Helper()
	c := h.client()
	r := h.loginAttempt(c, name, password(name))
	if r.code != http.StatusSeeOther {
		h.t.Fatalf("login %s: %d %s", name, r.code, r.body)
	}
	// Every page carries the session's token in its sign-out form.
	p := h.do(c, "GET", "/admin/reports", nil)
	tok := csrfOf(p.body)
	if tok == "" {
		h.t.Fatalf("no csrf token for %s: %d %s", name, p.code, p.body)
	}
	return c, tok
}

// seed puts known sessions, heartbeats and check-ins in the store.
type seeded struct {
	open map[string][]store.Session // site -> open sessions
}

func (h *harness) seed() seeded {
	h.t.Helper()
	ctx := context.Background()
	now := h.clk.Now()
	s := seeded{open: map[string][]store.Session{}}
	ev := func(e store.SessionEvent) {
		if _, err := h.st.RecordEvent(ctx, e); err != nil {
			h.t.Fatal(err)
		}
	}
	n := 0
	add := func(site, gw string, count int, closed int) {
		for i := 0; i < count+closed; i++ {
			n++
			id := fmt.Sprintf("s%03d", n)
			mac := fmt.Sprintf("02:aa:00:00:%02x:%02x", n/256, n%256)
			start := now.Add(-time.Duration(10+n) * time.Minute)
			method := []string{"click-through", "sms", "spid"}[n%3]
			ev(store.SessionEvent{ID: id + "-start", Kind: store.EventStart, SessionID: id, GatewayID: gw, SiteID: site, ClientMAC: mac,
				UserID: fmt.Sprintf("u%03d", n%7), Method: method, Start: start, At: start})
			ev(store.SessionEvent{ID: id + "-i", Kind: store.EventInterim, SessionID: id, GatewayID: gw, SiteID: site, ClientMAC: mac,
				At: now.Add(-time.Minute), BytesDown: uint64(n) * 1_000_000, BytesUp: uint64(n) * 100_000})
			if i >= count {
				ev(store.SessionEvent{ID: id + "-stop", Kind: store.EventStop, SessionID: id, GatewayID: gw, SiteID: site, ClientMAC: mac,
					At: now.Add(-30 * time.Second), BytesDown: uint64(n) * 1_000_000, BytesUp: uint64(n) * 100_000, Reason: "logout"})
			}
		}
		open, err := h.st.OpenSessions(ctx, site)
		if err != nil {
			h.t.Fatal(err)
		}
		s.open[site] = open
	}
	add("parco-pertini", "pertini-gw1", 3, 2)
	add("biblioteca-ricottiana", "ricottiana-gw1", 2, 1)
	hb := func(gw string, at time.Time) {
		if err := h.st.Heartbeat(ctx, gw, at, store.GatewayHealth{Version: "0.9.0", Uptime: 3 * time.Hour, ClientsOnline: 3}); err != nil {
			h.t.Fatal(err)
		}
	}
	hb("pertini-gw1", now.Add(-10*time.Second))
	hb("ricottiana-gw1", now.Add(-20*time.Second))
	hb("comunale-gw1", now.Add(-time.Hour)) // down
	if err := h.st.CheckIn(ctx, "02:76:67:00:02:01", now.Add(-30*time.Second), store.APState{Firmware: "OpenWrt 24.10", Clients: 2,
		Radios: []store.Radio{{Name: "radio0", Up: true, Channel: 6}}}, "v1"); err != nil {
		h.t.Fatal(err)
	}
	return s
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func chmod(path string, mode os.FileMode) error { return os.Chmod(path, mode) }
