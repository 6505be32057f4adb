package captive

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeGate keeps sessions in a map, as the gateway would.
type fakeGate struct {
	mu       sync.Mutex
	sessions map[netip.Addr]Session
	refuse   error // returned by ClickThrough when set
	granted  []netip.Addr
	logouts  []netip.Addr
	now      func() time.Time
}

func (g *fakeGate) Session(ip netip.Addr) (Session, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.sessions[ip]
	return s, ok
}

func (g *fakeGate) ClickThrough(_ context.Context, ip netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuse != nil {
		return g.refuse
	}
	g.granted = append(g.granted, ip)
	now := g.now()
	g.sessions[ip] = Session{Started: now, Expires: now.Add(2 * time.Hour), QuotaBytes: 1e9}
	return nil
}

func (g *fakeGate) Logout(_ context.Context, ip netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.logouts = append(g.logouts, ip)
	delete(g.sessions, ip)
	return nil
}

var t0 = time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)

const (
	phone   = "10.20.0.11"
	portal  = "10.20.0.1:2050"
	gwHTTPS = "10.20.0.1:2443"
)

type testPortal struct {
	s    *Server
	gate *fakeGate
	now  time.Time
	lang string // the phone's Accept-Language, unless a request sets one
}

func newTestPortal(t testing.TB, mod ...func(*Config)) *testPortal {
	t.Helper()
	tp := &testPortal{now: t0}
	tp.gate = &fakeGate{sessions: map[netip.Addr]Session{}, now: func() time.Time { return tp.now }}
	cfg := Config{
		GatewayIP: netip.MustParseAddr("10.20.0.1"), HTTPPort: 2050, HTTPSPort: 2443,
		APIURL:   "https://10.20.0.1:2443/api/captive",
		SiteName: "Parco Pertini", Town: "Comune di Voghera", ClickThrough: true,
		Key: []byte("0123456789abcdef0123456789abcdef"), Rate: 0,
		Now: func() time.Time { return tp.now },
	}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := New(cfg, tp.gate, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	tp.s = s
	return tp
}

type req struct {
	method, target, host, from string
	form                       url.Values
	header                     map[string]string
	tls                        bool
	body                       string
}

func (tp *testPortal) do(r req) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = "GET"
	}
	var body io.Reader
	if r.form != nil {
		body = strings.NewReader(r.form.Encode())
	} else if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, "http://x"+r.target, body)
	hr.RequestURI = r.target
	hr.Host = r.host
	if r.from == "" {
		r.from = phone
	}
	hr.RemoteAddr = r.from + ":40000"
	if r.form != nil || r.body != "" {
		hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if tp.lang != "" {
		hr.Header.Set("Accept-Language", tp.lang)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	if r.tls {
		hr.TLS = &tls.ConnectionState{}
	}
	w := httptest.NewRecorder()
	tp.s.ServeHTTP(w, hr)
	return w
}

func (tp *testPortal) login(ip string) {
	tp.gate.sessions[netip.MustParseAddr(ip)] = Session{Started: tp.now, Expires: tp.now.Add(90 * time.Minute), QuotaBytes: 1e9, UsedBytes: 250e6}
}

// Every probe, before and after login, with the exact status and body.
func TestProbes(t *testing.T) {
	tp := newTestPortal(t)
	for _, p := range Probes() {
		path := p.Path
		if path == "" {
			path = "/hotspot-detect.html"
		}
		t.Run(p.OS+" "+p.Host+path, func(t *testing.T) {
			delete(tp.gate.sessions, netip.MustParseAddr(phone))
			w := tp.do(req{target: path, host: p.Host})
			if w.Code != http.StatusFound {
				t.Fatalf("before login: status %d, want 302", w.Code)
			}
			loc := w.Header().Get("Location")
			if !strings.HasPrefix(loc, "http://10.20.0.1:2050/portal/?url="+url.QueryEscape("http://"+p.Host+path)+"&sig=") {
				t.Errorf("before login: Location %q does not carry the probe's URL", loc)
			}
			tp.login(phone)
			w = tp.do(req{target: path, host: p.Host, header: map[string]string{"User-Agent": "CaptiveNetworkSupport-481.0.1 wispr"}})
			if w.Code != p.Status {
				t.Fatalf("after login: status %d, want %d", w.Code, p.Status)
			}
			if got := w.Body.String(); got != p.Body {
				t.Errorf("after login: body %q, want %q", got, p.Body)
			}
			if p.ContentType != "" && w.Header().Get("Content-Type") != p.ContentType {
				t.Errorf("Content-Type %q, want %q", w.Header().Get("Content-Type"), p.ContentType)
			}
		})
	}
	// The bodies themselves, as the real services send them.
	want := map[string]string{
		"captive.apple.com":        "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n",
		"www.msftconnecttest.com":  "Microsoft Connect Test",
		"www.msftncsi.com":         "Microsoft NCSI",
		"nmcheck.gnome.org":        "NetworkManager is online\n",
		"detectportal.firefox.com": `<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>`,
	}
	for _, p := range Probes() {
		if w, ok := want[p.Host]; ok && p.Path != "/success.txt" && p.Body != w {
			t.Errorf("%s: body %q, want %q", p.Host, p.Body, w)
		}
	}
}

// After the session's time or quota runs out, the next probe gets the
// portal again even before the gateway's poll ends the session.
func TestProbeAfterExpiry(t *testing.T) {
	tp := newTestPortal(t)
	ip := netip.MustParseAddr(phone)
	tp.gate.sessions[ip] = Session{Started: t0, Expires: t0.Add(time.Hour)}
	if w := tp.do(req{target: "/generate_204", host: "connectivitycheck.gstatic.com"}); w.Code != 204 {
		t.Fatalf("during the session: %d", w.Code)
	}
	tp.now = t0.Add(time.Hour)
	if w := tp.do(req{target: "/generate_204", host: "connectivitycheck.gstatic.com"}); w.Code != 302 {
		t.Fatalf("at expiry: %d, want 302", w.Code)
	}
	tp.gate.sessions[ip] = Session{Started: t0, QuotaBytes: 100, UsedBytes: 100}
	if w := tp.do(req{target: "/hotspot-detect.html", host: "captive.apple.com"}); w.Code != 302 {
		t.Fatalf("quota used up: %d, want 302", w.Code)
	}
}

func TestRedirect(t *testing.T) {
	tp := newTestPortal(t)
	sig := func(u string) string { return tp.s.sign.urlSig(u) }
	for _, tc := range []struct {
		name, target, host, want string
	}{
		{"plain", "/news?id=1", "www.example.it", "http://10.20.0.1:2050/portal/?url=http%3A%2F%2Fwww.example.it%2Fnews%3Fid%3D1&sig=" + sig("http://www.example.it/news?id=1")},
		{"upper-case host", "/", "WWW.Example.IT", "http://10.20.0.1:2050/portal/?url=http%3A%2F%2Fwww.example.it%2F&sig=" + sig("http://www.example.it/")},
		{"host with port", "/a%20b", "example.it:8080", "http://10.20.0.1:2050/portal/?url=http%3A%2F%2Fexample.it%3A8080%2Fa%2520b&sig=" + sig("http://example.it:8080/a%20b")},
		{"script in host", "/", "evil.example/<script>", "http://10.20.0.1:2050/portal/"},
		{"user info in host", "/", "user@evil.example", "http://10.20.0.1:2050/portal/"},
		{"empty host", "/", "", "http://10.20.0.1:2050/portal/"},
		{"protocol-relative path", "//evil.example/x", "www.example.it", "http://10.20.0.1:2050/portal/"},
		{"huge URL", "/" + strings.Repeat("a", 3000), "www.example.it", "http://10.20.0.1:2050/portal/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tp.do(req{target: tc.target, host: tc.host})
			if w.Code != http.StatusFound {
				t.Fatalf("status = %d, want 302", w.Code)
			}
			if diff := cmp.Diff(tc.want, w.Header().Get("Location")); diff != "" {
				t.Errorf("Location (-want +got)\n%s", diff)
			}
			if w.Header().Get("Connection") != "close" {
				t.Error("redirect does not close the connection")
			}
		})
	}
	t.Run("a probe's connection stays open", func(t *testing.T) {
		w := tp.do(req{target: "/generate_204", host: "connectivitycheck.gstatic.com"})
		if w.Code != 302 || w.Header().Get("Connection") != "" {
			t.Errorf("got %d, Connection %q", w.Code, w.Header().Get("Connection"))
		}
	})
	t.Run("authorised client on a pre-login connection goes to the same URL on a new one", func(t *testing.T) {
		tp.login(phone)
		defer delete(tp.gate.sessions, netip.MustParseAddr(phone))
		w := tp.do(req{target: "/news?id=1", host: "www.example.it"})
		if w.Code != 302 || w.Header().Get("Location") != "http://www.example.it/news?id=1" || w.Header().Get("Connection") != "close" {
			t.Fatalf("got %d %q Connection %q", w.Code, w.Header().Get("Location"), w.Header().Get("Connection"))
		}
		// A URL that cannot be carried safely: the status page.
		w = tp.do(req{target: "//evil.example/x", host: "www.example.it"})
		if w.Code != 302 || w.Header().Get("Location") != "http://10.20.0.1:2050/portal/status" {
			t.Fatalf("unsafe URL: got %d %q", w.Code, w.Header().Get("Location"))
		}
	})
}

// The portal's own name from api_url is the portal too, and the links use
// it.
func TestPortalHostName(t *testing.T) {
	tp := newTestPortal(t, func(c *Config) { c.APIURL = "https://portal.civicwifi.lan:2443/api/captive" })
	w := tp.do(req{target: "/x", host: "www.example.it"})
	if !strings.HasPrefix(w.Header().Get("Location"), "http://portal.civicwifi.lan:2050/portal/?url=") {
		t.Errorf("Location %q", w.Header().Get("Location"))
	}
	for _, host := range []string{"portal.civicwifi.lan", "PORTAL.civicwifi.lan:2050", "10.20.0.1", "10.20.0.1:2050"} {
		if w := tp.do(req{target: "/portal/", host: host}); w.Code != 200 || !strings.Contains(w.Body.String(), "<form") {
			t.Errorf("Host %s: %d, want the landing page", host, w.Code)
		}
	}
}

// landingURL follows a redirect's Location to the portal's path.
func landingPath(t *testing.T, loc string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.RequestURI()
}

var (
	csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	sigRE  = regexp.MustCompile(`name="sig" value="([^"]+)"`)
	urlRE  = regexp.MustCompile(`name="url" value="([^"]+)"`)
)

func field(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in\n%s", re, body)
	}
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

// The whole walk: redirect, landing, click-through, back to the original
// URL, status, logout, captive again.
func TestClickThroughWalk(t *testing.T) {
	tp := newTestPortal(t)
	w := tp.do(req{target: "/news?id=1", host: "www.example.it"})
	land := tp.do(req{target: landingPath(t, w.Header().Get("Location")), host: portal})
	if land.Code != 200 {
		t.Fatalf("landing: %d", land.Code)
	}
	body := land.Body.String()
	if !strings.Contains(body, `<html lang="it">`) || !strings.Contains(body, "Parco Pertini") || !strings.Contains(body, "Comune di Voghera") {
		t.Errorf("landing is not the Italian page of the site:\n%s", body)
	}
	form := url.Values{"csrf": {field(t, csrfRE, body)}, "lang": {"it"}, "url": {field(t, urlRE, body)}, "sig": {field(t, sigRE, body)}}

	// Without the accept button's field: the landing again, with the reason.
	w = tp.do(req{method: "POST", target: "/portal/grant", host: portal, form: form})
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "devi accettare") || len(tp.gate.granted) != 0 {
		t.Fatalf("grant without accepting: %d, granted %v", w.Code, tp.gate.granted)
	}
	form.Set("accept", "1")
	w = tp.do(req{method: "POST", target: "/portal/grant", host: portal, form: form})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "http://www.example.it/news?id=1" {
		t.Fatalf("grant: %d %q, want 303 to the original URL", w.Code, w.Header().Get("Location"))
	}
	if diff := cmp.Diff([]netip.Addr{netip.MustParseAddr(phone)}, tp.gate.granted, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("granted (-want +got)\n%s", diff)
	}
	tp.now = tp.now.Add(30 * time.Minute)
	st := tp.do(req{target: "/portal/status?lang=en", host: portal})
	for _, want := range []string{"You are connected", "1 h 30 min", "1000 MB", `action="/portal/logout"`} {
		if !strings.Contains(st.Body.String(), want) {
			t.Errorf("status page lacks %q:\n%s", want, st.Body.String())
		}
	}
	lo := url.Values{"csrf": {field(t, csrfRE, st.Body.String())}, "lang": {"en"}}
	w = tp.do(req{method: "POST", target: "/portal/logout", host: portal, form: lo})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "You are logged out") || len(tp.gate.logouts) != 1 {
		t.Fatalf("logout: %d, logouts %v\n%s", w.Code, tp.gate.logouts, w.Body.String())
	}
	if w := tp.do(req{target: "/generate_204", host: "connectivitycheck.gstatic.com"}); w.Code != 302 {
		t.Errorf("probe after logout: %d, want 302", w.Code)
	}
}

func TestGrantWithoutTarget(t *testing.T) {
	tp := newTestPortal(t)
	land := tp.do(req{target: "/portal/?lang=de", host: portal})
	form := url.Values{"csrf": {field(t, csrfRE, land.Body.String())}, "lang": {"de"}, "accept": {"1"}}
	w := tp.do(req{method: "POST", target: "/portal/grant", host: portal, form: form})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/portal/status?lang=de" {
		t.Fatalf("grant: %d %q", w.Code, w.Header().Get("Location"))
	}
}

func TestGrantRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code int
		text string
	}{
		{"kicked", fmt.Errorf("%w: may not log in again", ErrRefused), 403, "chiedi al personale"},
		{"gateway failing", errors.New("ipset: no such set"), 503, "Riprova tra poco"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTestPortal(t)
			tp.gate.refuse = tc.err
			land := tp.do(req{target: "/portal/", host: portal})
			form := url.Values{"csrf": {field(t, csrfRE, land.Body.String())}, "accept": {"1"}}
			w := tp.do(req{method: "POST", target: "/portal/grant", host: portal, form: form})
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.text) || strings.Contains(w.Body.String(), "ipset") {
				t.Fatalf("got %d\n%s", w.Code, w.Body.String())
			}
		})
	}
}

func TestGrantDisabled(t *testing.T) {
	tp := newTestPortal(t, func(c *Config) { c.ClickThrough = false })
	land := tp.do(req{target: "/portal/", host: portal})
	if strings.Contains(land.Body.String(), `action="/portal/grant"`) {
		t.Error("landing page offers click-through on a site without it")
	}
	form := url.Values{"csrf": {tp.s.sign.csrf(netip.MustParseAddr(phone), t0)}, "accept": {"1"}}
	w := tp.do(req{method: "POST", target: "/portal/grant", host: portal, form: form})
	if w.Code != http.StatusForbidden || len(tp.gate.granted) != 0 {
		t.Fatalf("grant on a site without click-through = %d, granted %v", w.Code, tp.gate.granted)
	}
}

// A signed original URL survives; an unsigned or altered one is dropped
// (the resident still logs in, and lands on the status page).
func TestNoOpenRedirect(t *testing.T) {
	tp := newTestPortal(t)
	ip := netip.MustParseAddr(phone)
	good := "http://www.example.it/x"
	for _, tc := range []struct {
		name, url, sig, want string
	}{
		{"signed", good, tp.s.sign.urlSig(good), good},
		{"unsigned", good, "", "/portal/status?lang=it"},
		{"altered", "http://evil.example/x", tp.s.sign.urlSig(good), "/portal/status?lang=it"},
		{"javascript", "javascript:alert(1)", tp.s.sign.urlSig("javascript:alert(1)"), "/portal/status?lang=it"},
		{"data", "data:text/html,x", tp.s.sign.urlSig("data:text/html,x"), "/portal/status?lang=it"},
		{"protocol-relative", "//evil.example/", tp.s.sign.urlSig("//evil.example/"), "/portal/status?lang=it"},
		{"file", "file:///etc/passwd", tp.s.sign.urlSig("file:///etc/passwd"), "/portal/status?lang=it"},
		{"user info", "http://a@evil.example/", tp.s.sign.urlSig("http://a@evil.example/"), "/portal/status?lang=it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			delete(tp.gate.sessions, ip)
			form := url.Values{"csrf": {tp.s.sign.csrf(ip, t0)}, "accept": {"1"}, "url": {tc.url}, "sig": {tc.sig}}
			w := tp.do(req{method: "POST", target: "/portal/grant", host: portal, form: form})
			if w.Code != http.StatusSeeOther || w.Header().Get("Location") != tc.want {
				t.Fatalf("got %d %q, want 303 %q", w.Code, w.Header().Get("Location"), tc.want)
			}
		})
	}
}

func TestCSRF(t *testing.T) {
	tp := newTestPortal(t)
	ip := netip.MustParseAddr(phone)
	for _, tc := range []struct {
		name, token, from string
		at                time.Time
	}{
		{"missing", "", phone, t0},
		{"garbage", "not-a-token", phone, t0},
		{"another client's", tp.s.sign.csrf(netip.MustParseAddr("10.20.0.12"), t0), phone, t0},
		{"expired", tp.s.sign.csrf(ip, t0.Add(-3*time.Hour)), phone, t0},
		{"from the future", tp.s.sign.csrf(ip, t0.Add(time.Hour)), phone, t0},
		{"other key", newSigner([]byte("another key, another gateway...")).csrf(ip, t0), phone, t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/portal/grant", "/portal/logout"} {
				form := url.Values{"csrf": {tc.token}, "accept": {"1"}}
				w := tp.do(req{method: "POST", target: path, host: portal, form: form, from: tc.from})
				if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "Il modulo è scaduto") {
					t.Errorf("%s: %d, want 403 with the reason\n%s", path, w.Code, w.Body.String())
				}
			}
			if len(tp.gate.granted)+len(tp.gate.logouts) != 0 {
				t.Fatalf("a bad token changed something: granted %v, logouts %v", tp.gate.granted, tp.gate.logouts)
			}
		})
	}
}

func TestLanguage(t *testing.T) {
	tp := newTestPortal(t)
	for _, tc := range []struct {
		name, target, accept, want string
		code                       int
	}{
		{"default Italian", "/portal/", "", "it", 200},
		{"English phone", "/portal/", "en-GB,en;q=0.9", "en", 200},
		{"German by weight", "/portal/", "ja;q=0.9,de;q=0.8,it;q=0.1", "de", 200},
		{"French Swiss", "/portal/", "fr-CH", "fr", 200},
		{"unknown language", "/portal/", "ja, zh", "it", 200},
		{"switch beats the phone", "/portal/?lang=fr", "en", "fr", 200},
		{"garbage header", "/portal/", strings.Repeat("x;q=", 300), "it", 200},
		{"invalid choice", "/portal/?lang=xx", "en", "en", 400},
		{"invalid choice on info", "/portal/info?lang=../../etc", "", "it", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tp.do(req{target: tc.target, host: portal, header: map[string]string{"Accept-Language": tc.accept}})
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d", w.Code, tc.code)
			}
			if !strings.Contains(w.Body.String(), `<html lang="`+tc.want+`">`) {
				t.Errorf("page is not in %s:\n%.300s", tc.want, w.Body.String())
			}
		})
	}
	// The switch: a link per language, the current one marked, and the
	// original URL kept.
	u := "http://www.example.it/x"
	w := tp.do(req{target: "/portal/?url=" + url.QueryEscape(u) + "&sig=" + tp.s.sign.urlSig(u), host: portal})
	for _, l := range langs {
		href := fmt.Sprintf(`href="/portal/?lang=%s&amp;sig=%s&amp;url=%s"`, l.Code, tp.s.sign.urlSig(u), url.QueryEscape(u))
		if !strings.Contains(w.Body.String(), href) {
			t.Errorf("no switch link %s", href)
		}
	}
	if !strings.Contains(w.Body.String(), `lang="it" aria-current="page">Italiano`) {
		t.Error("the current language is not marked")
	}
}

func TestAPI(t *testing.T) {
	tp := newTestPortal(t)
	get := func(from string) (int, http.Header, map[string]any) {
		w := tp.do(req{target: "/api/captive", host: gwHTTPS, from: from, tls: true})
		var m map[string]any
		json.Unmarshal(w.Body.Bytes(), &m)
		return w.Code, w.Header(), m
	}
	code, h, m := get(phone)
	if code != 200 || h.Get("Content-Type") != "application/captive+json" {
		t.Fatalf("%d %q", code, h.Get("Content-Type"))
	}
	want := map[string]any{"captive": true, "user-portal-url": "https://10.20.0.1:2443/portal/", "venue-info-url": "https://10.20.0.1:2443/portal/info"}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("captive client (-want +got)\n%s", diff)
	}
	tp.login(phone)
	tp.now = tp.now.Add(10 * time.Minute)
	_, _, m = get(phone)
	want = map[string]any{"captive": false, "user-portal-url": "https://10.20.0.1:2443/portal/", "venue-info-url": "https://10.20.0.1:2443/portal/info",
		"seconds-remaining": float64(80 * 60), "bytes-remaining": float64(750e6), "can-extend-session": false}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("authorised client (-want +got)\n%s", diff)
	}
	// Per client: another phone is still captive.
	if _, _, m := get("10.20.0.12"); m["captive"] != true {
		t.Errorf("another client: %v", m)
	}
	// Not over plain HTTP.
	if w := tp.do(req{target: "/api/captive", host: portal}); w.Code != 404 {
		t.Errorf("API over HTTP: %d, want 404", w.Code)
	}
}

func TestRateLimit(t *testing.T) {
	counted := 0 // OnRequest (the memory governor's count): served requests only
	tp := newTestPortal(t, func(c *Config) { c.Rate = 5; c.OnRequest = func() { counted++ } })
	hammer := "10.20.0.66"
	got := map[int]int{}
	for range 50 {
		got[tp.do(req{target: "/generate_204", host: "connectivitycheck.gstatic.com", from: hammer}).Code]++
	}
	if got[302] != 10 || got[429] != 40 {
		t.Errorf("hammering phone: %v, want 10 302s (the burst) then 429s", got)
	}
	w := tp.do(req{target: "/portal/", host: portal, from: hammer, header: map[string]string{"Accept-Language": "en"}})
	if w.Code != 429 || !strings.Contains(w.Body.String(), "Too many requests") || w.Header().Get("Retry-After") != "1" {
		t.Errorf("429 page: %d %q", w.Code, w.Body.String())
	}
	if counted != 10 {
		t.Errorf("OnRequest counted %d of the hammering phone's requests, want the 10 served", counted)
	}
	// Everyone else is served meanwhile.
	for i := range 20 {
		if w := tp.do(req{target: "/portal/", host: portal, from: fmt.Sprintf("10.20.0.%d", 100+i)}); w.Code != 200 {
			t.Fatalf("another client: %d", w.Code)
		}
	}
	if counted != 30 {
		t.Errorf("OnRequest counted %d, want 30", counted)
	}
	// The bucket refills with time.
	tp.now = tp.now.Add(time.Second)
	ok := 0
	for range 10 {
		if tp.do(req{target: "/x", host: "a.example", from: hammer}).Code == 302 {
			ok++
		}
	}
	if ok != 5 {
		t.Errorf("after a second: %d served, want 5", ok)
	}
}

// Bad input gets a clean 4xx page in the resident's language: never a
// 500, never a stack trace or an internal detail.
func TestBadInput(t *testing.T) {
	tp := newTestPortal(t)
	csrf := tp.s.sign.csrf(netip.MustParseAddr(phone), t0)
	for _, tc := range []struct {
		name string
		r    req
		code int
	}{
		{"oversized form", req{method: "POST", target: "/portal/grant", host: portal, body: "csrf=" + csrf + "&accept=1&pad=" + strings.Repeat("a", 10000)}, 413},
		{"bad form encoding", req{method: "POST", target: "/portal/grant", host: portal, body: "csrf=%zz"}, 400},
		{"bad CSRF", req{method: "POST", target: "/portal/grant", host: portal, form: url.Values{"csrf": {"x"}, "accept": {"1"}}}, 403},
		{"invalid language", req{target: "/portal/?lang=klingon", host: portal}, 400},
		{"invalid language in a form", req{method: "POST", target: "/portal/grant", host: portal, form: url.Values{"csrf": {csrf}, "lang": {"xx"}}}, 400},
		{"path traversal", req{target: "/portal/static/../../../etc/passwd", host: portal}, 404},
		{"encoded traversal", req{target: "/portal/static/..%2f..%2fetc%2fpasswd", host: portal}, 404},
		{"unknown page", req{target: "/portal/admin", host: portal}, 404},
		{"wrong method", req{method: "DELETE", target: "/portal/", host: portal}, 405},
		{"GET on a form target", req{target: "/portal/grant", host: portal}, 405},
		{"no logo configured", req{target: "/portal/logo", host: portal}, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tp.do(tc.r)
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d\n%s", w.Code, tc.code, w.Body.String())
			}
			b := w.Body.String()
			if !strings.Contains(b, `<html lang="it">`) || !strings.Contains(b, fmt.Sprintf("Codice di errore: %d", tc.code)) {
				t.Errorf("not an Italian error page:\n%s", b)
			}
			for _, leak := range []string{"goroutine", ".go:", "echo", "runtime."} {
				if strings.Contains(b, leak) {
					t.Errorf("page leaks %q", leak)
				}
			}
		})
	}
	t.Run("oversized form without a length", func(t *testing.T) {
		r := httptest.NewRequest("POST", "/portal/grant", io.MultiReader(strings.NewReader("csrf="+csrf+"&accept=1&pad="), strings.NewReader(strings.Repeat("a", 10000))))
		r.Host, r.RemoteAddr, r.ContentLength = portal, phone+":1", -1
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		tp.s.ServeHTTP(w, r)
		if w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), "Codice di errore: 413") {
			t.Errorf("got %d\n%s", w.Code, w.Body.String())
		}
	})
	if len(tp.gate.granted) != 0 {
		t.Errorf("bad input granted %v", tp.gate.granted)
	}
	// A hostile Host never comes back in a header or a page.
	for _, host := range []string{"evil.example\r\nX-Injected: 1", "<script>alert(1)</script>", "10.20.0.1:2050@evil.example", strings.Repeat("a", 5000)} {
		w := tp.do(req{target: "/", host: host})
		if w.Code != 302 || w.Header().Get("Location") != "http://10.20.0.1:2050/portal/" {
			t.Errorf("Host %.40q: %d %q", host, w.Code, w.Header().Get("Location"))
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	tp := newTestPortal(t)
	w := tp.do(req{target: "/portal/", host: portal})
	for k, want := range map[string]string{
		"Content-Security-Policy": csp, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
	} {
		if got := w.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if strings.Contains(csp, "script-src") || strings.Contains(csp, "unsafe-inline") {
		t.Error("CSP allows scripts")
	}
}
