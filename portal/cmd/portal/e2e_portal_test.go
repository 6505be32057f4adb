package main

// End-to-end tests of the captive portal as residents' devices meet it: the
// real gateway daemon in the lab's gateway namespace, its real dnsmasq and
// kernel rules, and from client namespaces each OS's connectivity probe
// (curl with the OS's exact Host, path and User-Agent, resolving through the
// gateway's DNS), an RFC 8908 client reading option 114 from its DHCP lease,
// a headless Chromium walking the click-through, and hostile requests.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// portalHost is the portal's name in the lab: api_url's host, answered by
// the gateway's dnsmasq, on the gateway's certificate.
const portalHost = "portal.lab.test"

const portalLabConfig = `site: lab
interfaces: {clients: br-cw, uplink: wan0, ifb: cwifb0}
client_network: {address: 10.20.0.1/22, dhcp_range: 10.20.0.100-10.20.0.200}
dns: {upstreams: [198.51.100.1]}
portal:
  http_port: 2050
  https_port: 2443
  api_url: "https://` + portalHost + `:2443/api/captive"
  click_through: true
  tls_cert: %[2]s
  tls_key: %[3]s
  name: Parco Pertini
  town: Comune di Voghera
  rate_limit: %[5]d
walled_garden: {domains: [garden.example.test]}
limits: {down: "0", up: "0", session: %[4]s, idle: "0", quota: "0"}
state_dir: %[1]s/state
control_socket: %[1]s/portal.sock
metrics_listen: 127.0.0.1:9102
`

// portalSite is a lab site whose daemon serves the portal over HTTP and,
// with a certificate from the lab's CA, HTTPS.
type portalSite struct {
	*site
	ca *lab.CA
}

type portalOptions struct {
	lab       lab.Options
	session   string // limits.session, e.g. "2h"
	rateLimit int    // portal.rate_limit (0: off)
}

func newPortalSite(t *testing.T, o portalOptions) *portalSite {
	t.Helper()
	lab.Require(t, "iptables", "ip6tables", "ipset", "tc", "conntrack", "dnsmasq", "curl", "dig")
	bin := portalBinary(t)
	o.lab.Upstream = true
	l := lab.NewT(t, o.lab)
	ca, err := lab.NewCA(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("portal", portalHost, "10.20.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := &site{t: t, l: l, bin: bin, cfg: filepath.Join(l.Dir, "portal.yaml"), sock: filepath.Join(l.Dir, "portal.sock")}
	conf := fmt.Sprintf(portalLabConfig, l.Dir, cert, key, o.session, o.rateLimit)
	if err := os.WriteFile(s.cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := l.Gateway.Run(ctx, s.bin, "teardown", "-config", s.cfg); err != nil {
			t.Errorf("teardown: %v\n%s", err, out)
		}
	})
	// The control socket answers first; wait (bounded) for the portal's
	// ports and the gateway's DNS too.
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	for _, w := range []struct {
		proto string
		port  int
	}{{"tcp", 2050}, {"tcp", 2443}, {"udp", 53}} {
		if err := lab.WaitListening(wctx, l.Gateway, w.proto, w.port); err != nil {
			t.Fatalf("gateway %s/%d: %v; log:\n%s", w.proto, w.port, err, s.log())
		}
	}
	return &portalSite{site: s, ca: ca}
}

// answer is one HTTP exchange seen by curl in a client namespace.
type answer struct {
	Code     int
	Body     string
	Location string
	RemoteIP string // the address curl connected to (after the client's DNS)
	CType    string
	Err      error
}

func (a answer) String() string {
	return fmt.Sprintf("code=%d remote=%s location=%q type=%q body=%.120q err=%v", a.Code, a.RemoteIP, a.Location, a.CType, a.Body, a.Err)
}

// curlIn runs one request with curl in ns (no redirects followed; names
// resolved by the namespace's resolver, i.e. the gateway's dnsmasq).
func curlIn(ns lab.NS, args ...string) answer {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "cw-curl-")
	if err != nil {
		return answer{Err: err}
	}
	defer os.RemoveAll(dir)
	bodyFile := filepath.Join(dir, "body")
	argv := append([]string{"curl", "-sS", "--max-time", "10", "-o", bodyFile,
		"-w", "%{http_code}\n%{remote_ip}\n%{redirect_url}\n%{content_type}\n"}, args...)
	cmd := ns.Command(ctx, argv...)
	out, err := cmd.Output()
	var a answer
	if err != nil {
		stderr := ""
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		a.Err = fmt.Errorf("curl %.300q: %v %s", strings.Join(args, " "), err, stderr)
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) >= 4 {
		a.Code, _ = strconv.Atoi(lines[0])
		a.RemoteIP, a.Location, a.CType = lines[1], lines[2], lines[3]
	}
	b, _ := os.ReadFile(bodyFile)
	a.Body = string(b)
	return a
}

// osProbe is one operating system's connectivity check, as it sends it,
// and the answer that makes it say "connected".
type osProbe struct {
	name   string
	url    string
	ua     string
	header []string // more request headers
	shared bool     // a host with real content: after login the real server answers
	status int
	body   string
}

const appleSuccess = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n"

var osProbes = []osProbe{
	{name: "iOS", url: "http://captive.apple.com/hotspot-detect.html", ua: "CaptiveNetworkSupport-481.0.1 wispr",
		status: 200, body: appleSuccess},
	{name: "macOS", url: "http://www.apple.com/library/test/success.html", ua: "CaptiveNetworkSupport-495.0.1 wispr",
		shared: true, status: 200, body: appleSuccess},
	{name: "Android", url: "http://connectivitycheck.gstatic.com/generate_204",
		ua: "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A.240805.005)", status: 204},
	{name: "Android NetworkMonitor", url: "http://connectivitycheck.gstatic.com/generate_204",
		ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.32 Safari/537.36", status: 204},
	{name: "Android old", url: "http://clients3.google.com/generate_204",
		ua: "Dalvik/2.1.0 (Linux; U; Android 9; SM-G960F Build/PPR1.180610.011)", status: 204},
	{name: "Android legacy", url: "http://connectivitycheck.android.com/generate_204",
		ua: "Dalvik/2.1.0 (Linux; U; Android 7.0; SM-G930F Build/NRD90M)", status: 204},
	{name: "Android fallback", url: "http://www.google.com/gen_204",
		ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.32 Safari/537.36", shared: true, status: 204},
	{name: "ChromeOS", url: "http://www.gstatic.com/generate_204",
		ua: "Mozilla/5.0 (X11; CrOS x86_64 15886.44.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", shared: true, status: 204},
	{name: "Windows", url: "http://www.msftconnecttest.com/connecttest.txt", ua: "Microsoft NCSI",
		status: 200, body: "Microsoft Connect Test"},
	{name: "Windows legacy", url: "http://www.msftncsi.com/ncsi.txt", ua: "Microsoft NCSI",
		status: 200, body: "Microsoft NCSI"},
	{name: "Firefox", url: "http://detectportal.firefox.com/canonical.html",
		ua: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", header: []string{"Cache-Control: no-cache", "Pragma: no-cache"},
		status: 200, body: `<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>`},
	{name: "Firefox success", url: "http://detectportal.firefox.com/success.txt",
		ua: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", header: []string{"Cache-Control: no-cache", "Pragma: no-cache"},
		status: 200, body: "success\n"},
	{name: "NetworkManager", url: "http://nmcheck.gnome.org/check_network_status.txt", ua: "NetworkManager/1.42.4",
		status: 200, body: "NetworkManager is online\n"},
}

func (p osProbe) send(ns lab.NS) answer {
	args := []string{"-A", p.ua}
	for _, h := range p.header {
		args = append(args, "-H", h)
	}
	return curlIn(ns, append(args, p.url)...)
}

// wantRemote is where the probe's connection must land: the gateway itself
// for a dedicated probe host (dnsmasq answers it), the real server's address
// for a shared host (DNATed to the portal before login, so curl still
// believes it talks to the real one).
func (p osProbe) wantRemote(l *lab.Lab) string {
	if p.shared {
		return l.OtherIP.String()
	}
	return l.GatewayIP.String()
}

// redirectedToPortal checks a pre-login answer: a 302 to the portal's
// landing page that carries the probe's URL.
func redirectedToPortal(a answer, orig string) error {
	if a.Err != nil || a.Code != 302 {
		return fmt.Errorf("want a 302 to the portal, got %v", a)
	}
	u, err := url.Parse(a.Location)
	if err != nil {
		return fmt.Errorf("Location %q: %v", a.Location, err)
	}
	if (u.Hostname() != portalHost && u.Hostname() != "10.20.0.1") || !strings.HasPrefix(u.Path, "/portal/") {
		return fmt.Errorf("Location %q is not the portal's landing page", a.Location)
	}
	if got := u.Query().Get("url"); got != orig {
		return fmt.Errorf("Location %q carries url=%q, want %q", a.Location, got, orig)
	}
	return nil
}

// genuine checks a post-login answer: exactly what the OS expects.
func (p osProbe) genuine(a answer, l *lab.Lab) error {
	body := a.Body
	if p.name == "Firefox" {
		body = strings.TrimSuffix(body, "\n") // compared trimmed by Firefox
	}
	if a.Err != nil || a.Code != p.status || body != p.body || a.RemoteIP != p.wantRemote(l) {
		return fmt.Errorf("want %d %q from %s, got %v", p.status, p.body, p.wantRemote(l), a)
	}
	return nil
}

// formOf fetches page in ns and returns the fields of the form posting to
// action (hidden inputs and the named submit button).
func formOf(t *testing.T, ns lab.NS, page, action string, extra ...string) url.Values {
	t.Helper()
	a := curlIn(ns, append(extra, page)...)
	if a.Err != nil || a.Code != 200 {
		t.Fatalf("GET %s: %v", page, a)
	}
	doc, err := html.Parse(strings.NewReader(a.Body))
	if err != nil {
		t.Fatal(err)
	}
	attr := func(n *html.Node, k string) string {
		for _, at := range n.Attr {
			if at.Key == k {
				return at.Val
			}
		}
		return ""
	}
	var form *html.Node
	var find func(*html.Node)
	find = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "form" && attr(n, "action") == action && form == nil {
			form = n
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			find(c)
		}
	}
	find(doc)
	if form == nil {
		t.Fatalf("no form posting to %s on %s:\n%.2000s", action, page, a.Body)
	}
	v := url.Values{}
	var collect func(*html.Node)
	collect = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "input" && attr(n, "type") == "hidden" || n.Data == "button" && attr(n, "name") != "") {
			v.Set(attr(n, "name"), attr(n, "value"))
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			collect(c)
		}
	}
	collect(form)
	return v
}

// postForm posts fields to target from ns.
func postForm(ns lab.NS, target string, fields url.Values, extra ...string) answer {
	args := append([]string{}, extra...)
	for k, vs := range fields {
		for _, v := range vs {
			args = append(args, "--data-urlencode", k+"="+v)
		}
	}
	return curlIn(ns, append(args, target)...)
}

// clickThrough logs the client in as a resident does, by the HTTP flow:
// the redirect from orig, the landing page's form, the accept button.
// It returns the answer to the POST (303 to orig).
func clickThrough(t *testing.T, c *lab.Client, orig string) answer {
	t.Helper()
	first := curlIn(c.NS, orig)
	if err := redirectedToPortal(first, orig); err != nil {
		t.Fatalf("before login: %v", err)
	}
	fields := formOf(t, c.NS, first.Location, "/portal/grant")
	if fields.Get("csrf") == "" || fields.Get("accept") != "1" {
		t.Fatalf("landing form fields %v: want csrf and accept=1", fields)
	}
	landing, _ := url.Parse(first.Location)
	grant := landing.ResolveReference(&url.URL{Path: "/portal/grant"}).String()
	a := postForm(c.NS, grant, fields)
	if a.Err != nil || a.Code != 303 || a.Location != orig {
		t.Fatalf("POST %s: %v, want a 303 back to %s", grant, a, orig)
	}
	return a
}

// TestProbesFromEveryOS replays each OS's connectivity probe from a client:
// before login a 302 to the portal, after login the genuine answer from the
// gateway itself (dedicated probe hosts) or the real server (shared ones),
// and once the session has expired, the portal again.
func TestProbesFromEveryOS(t *testing.T) {
	const session = 25 * time.Second
	s := newPortalSite(t, portalOptions{lab: lab.Options{Clients: 2}, session: session.String()})
	l := s.l
	c1, c2 := l.Clients[0], l.Clients[1]

	t.Run("before login", func(t *testing.T) {
		for _, p := range osProbes {
			a := p.send(c1.NS)
			if err := redirectedToPortal(a, p.url); err != nil {
				t.Errorf("%s %s: %v", p.name, p.url, err)
			}
			if a.RemoteIP != p.wantRemote(l) {
				t.Errorf("%s %s: connected to %s, want %s", p.name, p.url, a.RemoteIP, p.wantRemote(l))
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	orig := "http://" + l.OtherIP.String() + "/"
	clickThrough(t, c1, orig)
	loggedIn := time.Now()
	if a := curlIn(c1.NS, orig); a.Err != nil || a.Code != 200 || a.Body != "upstream ok\n" {
		t.Fatalf("after login %s: %v", orig, a)
	}

	t.Run("after login", func(t *testing.T) {
		for _, p := range osProbes {
			if err := p.genuine(p.send(c1.NS), l); err != nil {
				t.Errorf("%s %s: %v", p.name, p.url, err)
			}
		}
	})
	t.Run("another client is still captive", func(t *testing.T) {
		for _, p := range osProbes[:3] {
			if err := redirectedToPortal(p.send(c2.NS), p.url); err != nil {
				t.Errorf("%s: %v", p.name, err)
			}
		}
	})
	if el := time.Since(loggedIn); el > session-3*time.Second {
		t.Logf("the after-login checks took %v of the %v session", el, session)
	}

	t.Run("after the session expired", func(t *testing.T) {
		ios := osProbes[0]
		eventually(t, session+20*time.Second, "iOS probe redirected again", func() (bool, string) {
			a := ios.send(c1.NS)
			return redirectedToPortal(a, ios.url) == nil, a.String()
		})
		if took := time.Since(loggedIn); took < session-time.Second {
			t.Errorf("the portal came back %v after login, before the %v session ended", took, session)
		}
		for _, p := range osProbes {
			if err := redirectedToPortal(p.send(c1.NS), p.url); err != nil {
				t.Errorf("%s %s: %v", p.name, p.url, err)
			}
		}
	})
}

// dhclientLease runs dhclient once in c's namespace with a script that
// configures the address and records the lease's options (touching no
// resolv.conf: the lab's namespace copy says 10.20.0.1 already).
func dhclientLease(t *testing.T, c *lab.Client) map[string]string {
	t.Helper()
	dir := t.TempDir()
	conf := `option captive-portal code 114 = text;
request subnet-mask, broadcast-address, routers, domain-name-servers, captive-portal;
timeout 30;
retry 1;
`
	script := `#!/bin/sh
env > "` + dir + `/env.$reason"
case "$reason" in
BOUND|RENEW|REBIND|REBOOT)
	ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
	ip route replace default via "$new_routers" ;;
esac
exit 0
`
	if err := os.WriteFile(dir+"/dhclient.conf", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/script", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	pidFile := dir + "/dhclient.pid"
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := c.Run(ctx, "dhclient", "-1", "-v", "-cf", dir+"/dhclient.conf", "-sf", dir+"/script",
		"-lf", dir+"/dhclient.leases", "-pf", pidFile, "eth0")
	if err != nil {
		t.Fatalf("dhclient: %v\n%s", err, out)
	}
	b, err := os.ReadFile(dir + "/env.BOUND")
	if err != nil {
		t.Fatalf("no BOUND call of the script: %v\n%s", err, out)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

// captiveAPI is the RFC 8908 API state.
type captiveAPI struct {
	Captive          *bool  `json:"captive"`
	UserPortalURL    string `json:"user-portal-url"`
	VenueInfoURL     string `json:"venue-info-url"`
	SecondsRemaining *int64 `json:"seconds-remaining"`
	BytesRemaining   *int64 `json:"bytes-remaining"`
	CanExtend        *bool  `json:"can-extend-session"`
	raw              string
}

func readAPI(t *testing.T, ns lab.NS, apiURL, caFile string) captiveAPI {
	t.Helper()
	a := curlIn(ns, "--cacert", caFile, "-H", "Accept: application/captive+json", apiURL)
	if a.Err != nil || a.Code != 200 {
		t.Fatalf("GET %s: %v", apiURL, a)
	}
	if a.CType != "application/captive+json" {
		t.Errorf("Content-Type %q, want application/captive+json", a.CType)
	}
	var st captiveAPI
	if err := json.Unmarshal([]byte(a.Body), &st); err != nil {
		t.Fatalf("API body %q: %v", a.Body, err)
	}
	if st.Captive == nil {
		t.Fatalf("API body %q has no captive", a.Body)
	}
	st.raw = a.Body
	return st
}

// TestCaptivePortalAPI is RFC 8908 as a client does it: the API's URL from
// option 114 of its DHCP lease, fetched over HTTPS trusting only the lab's
// CA (the gateway's certificate names the portal), captive before login and
// not captive, with the time left, after.
func TestCaptivePortalAPI(t *testing.T) {
	lab.Require(t, "dhclient")
	s := newPortalSite(t, portalOptions{lab: lab.Options{Clients: 1, DHCP: true}, session: "2h"})
	c := s.l.Clients[0]
	env := dhclientLease(t, c)
	apiURL := env["new_captive_portal"]
	if want := "https://" + portalHost + ":2443/api/captive"; apiURL != want {
		t.Fatalf("option 114 = %q, want %q (lease %v)", apiURL, want, env)
	}

	before := readAPI(t, c.NS, apiURL, s.ca.CertFile)
	if !*before.Captive {
		t.Fatalf("before login: %s, want captive:true", before.raw)
	}
	portal, err := url.Parse(before.UserPortalURL)
	if err != nil || portal.Scheme != "https" || portal.Hostname() != portalHost {
		t.Errorf("user-portal-url %q: want an https URL on %s", before.UserPortalURL, portalHost)
	}
	// The portal the API names loads over HTTPS with the same trust.
	if a := curlIn(c.NS, "--cacert", s.ca.CertFile, before.UserPortalURL); a.Err != nil || a.Code != 200 || !strings.Contains(a.Body, "/portal/grant") {
		t.Errorf("user-portal-url: %v", a)
	}
	// Without the lab CA the certificate is refused: the trust is real.
	if a := curlIn(c.NS, apiURL); a.Err == nil {
		t.Errorf("API without the lab CA: %v, want a certificate error", a)
	}

	clickThrough(t, c, "http://"+s.l.OtherIP.String()+"/")

	after := readAPI(t, c.NS, apiURL, s.ca.CertFile)
	if *after.Captive {
		t.Fatalf("after login: %s, want captive:false", after.raw)
	}
	if after.SecondsRemaining == nil || *after.SecondsRemaining <= 0 || *after.SecondsRemaining > 7200 {
		t.Errorf("after login: %s, want 0 < seconds-remaining <= 7200", after.raw)
	}
	t.Logf("before: %s after: %s", before.raw, after.raw)
}

// artifactsDir is where the browser test writes its screenshots:
// $CW_ARTIFACTS if set (kept), else a temporary directory.
func artifactsDir(t *testing.T) string {
	if d := os.Getenv("CW_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestBrowserClickThrough is a phone's browser: headless Chromium in a client
// namespace loads a plain http page, lands on the portal, accepts the terms
// and ends on the page it asked for. Screenshots of the landing page, in
// Italian and in English, at phone size.
func TestBrowserClickThrough(t *testing.T) {
	bin := lab.BrowserBinary(t)
	s := newPortalSite(t, portalOptions{lab: lab.Options{Clients: 2}, session: "2h"})
	l := s.l
	dir := artifactsDir(t)
	orig := "http://" + l.OtherIP.String() + "/"
	for i, tc := range []struct{ lang, accept, word string }{
		{"it", "it-IT,it", "Accetta"},
		{"en", "en-GB,en", "Accept"},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			c := l.Clients[i]
			shot := filepath.Join(dir, "landing-"+tc.lang+".png")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := lab.Browse(ctx, c.NS, bin, []string{"-cacert", s.ca.CertFile, "-lang", tc.accept},
				"navigate="+orig, "snapshot", "screenshot="+shot,
				`click=form[action="/portal/grant"] button[name=accept]`, "wait_url="+orig, "wait_text=upstream ok")
			if err != nil {
				t.Fatalf("%v\n%+v", err, res)
			}
			t.Logf("screenshot: %s", shot)
			landing := res.Steps[1]
			u, _ := url.Parse(landing.URL)
			if u == nil || !strings.HasPrefix(u.Path, "/portal/") || (u.Hostname() != portalHost && u.Hostname() != "10.20.0.1") {
				t.Errorf("landed on %q, want the portal", landing.URL)
			}
			if !strings.Contains(landing.Text, "Parco Pertini") {
				t.Errorf("landing text lacks the site name:\n%s", landing.Text)
			}
			if !strings.Contains(landing.Text, tc.word) || res.Steps[1].Title == "" {
				t.Errorf("landing text (want %s) lacks %q:\n%s", tc.lang, tc.word, landing.Text)
			}
			if res.URL != orig || strings.TrimSpace(res.Text) != "upstream ok" {
				t.Errorf("ended on %q with %q, want %s with the upstream's page", res.URL, res.Text, orig)
			}
			for _, d := range res.Documents {
				if d.Status >= 400 {
					t.Errorf("page %s answered %d", d.URL, d.Status)
				}
			}
			f, err := os.Open(shot)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(f)
			f.Close()
			if err != nil {
				t.Fatalf("screenshot %s: %v", shot, err)
			}
			if b := img.Bounds(); b.Dx() != 780 || b.Dy() != 1688 {
				t.Errorf("screenshot %s is %dx%d, want a phone's 390x844 at 2x", shot, b.Dx(), b.Dy())
			}
		})
	}
}

// TestHostileRequests sends bad input from a captive client: each gets a
// clean 4xx page (never a 5xx, a stack trace or a reflected payload) and
// changes nothing (the client stays captive).
func TestHostileRequests(t *testing.T) {
	s := newPortalSite(t, portalOptions{lab: lab.Options{Clients: 1}, session: "2h"})
	c := s.l.Clients[0]
	portal := "http://10.20.0.1:2050"
	orig := "http://" + s.l.OtherIP.String() + "/"
	landing := curlIn(c.NS, orig)
	if err := redirectedToPortal(landing, orig); err != nil {
		t.Fatal(err)
	}
	fields := formOf(t, c.NS, landing.Location, "/portal/grant")
	bigForm := filepath.Join(t.TempDir(), "form")
	if err := os.WriteFile(bigForm, []byte("csrf="+url.QueryEscape(fields.Get("csrf"))+"&accept=1&pad="+strings.Repeat("A", 200<<10)), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		args []string
		want []int
	}{
		{"hostile Host header", []string{"-H", `Host: evil.test"><script>alert(1)</script>`, portal + "/portal/"}, []int{400}},
		{"hostile Host header on a foreign site", []string{"-H", "Host: <svg/onload=alert(1)>", orig}, []int{400}},
		{"oversized Host header", []string{"-H", "Host: " + strings.Repeat("a", 20<<10) + ".test", orig}, []int{400, 431}},
		{"path traversal", []string{"--path-as-is", portal + "/portal/static/../../../../etc/passwd"}, []int{400, 404}},
		{"encoded path traversal", []string{"--path-as-is", portal + "/portal/static/..%2f..%2f..%2fetc%2fpasswd"}, []int{400, 404}},
		{"oversized form", []string{"--data-binary", "@" + bigForm, portal + "/portal/grant"}, []int{413}},
		{"bad CSRF token", []string{"--data-urlencode", "csrf=forged", "--data-urlencode", "accept=1", portal + "/portal/grant"}, []int{400, 403}},
		{"invalid language", []string{portal + "/portal/?lang=xx%3Cscript%3E"}, []int{400}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := curlIn(c.NS, tc.args...)
			ok := false
			for _, w := range tc.want {
				ok = ok || a.Code == w
			}
			if !ok {
				t.Errorf("got %v, want one of %v", a, tc.want)
			}
			for _, bad := range []string{"<script>alert", "onload=alert", "goroutine ", "panic", "root:x:0:0", ".go:"} {
				if strings.Contains(a.Body, bad) {
					t.Errorf("answer contains %q: %.300q", bad, a.Body)
				}
			}
			// A Host with characters no host name has, or headers over the
			// limit, are refused by Go's HTTP server before any handler:
			// a plain-text status line ("400 Bad Request: ...", "431 ...").
			goRefusal := strings.HasPrefix(a.Body, strconv.Itoa(a.Code)+" ") && len(a.Body) < 200
			if a.Code >= 400 && a.Code < 500 && !goRefusal && !strings.HasPrefix(a.CType, "text/html") {
				t.Errorf("a %d answered with %q, want an HTML page: %.200q", a.Code, a.CType, a.Body)
			}
		})
	}
	t.Run("still captive", func(t *testing.T) {
		if err := redirectedToPortal(curlIn(c.NS, orig), orig); err != nil {
			t.Error(err)
		}
		for _, cl := range s.clients() {
			if cl.IP == c.IP.String() && cl.State == "authorised" {
				t.Errorf("client authorised after hostile requests: %+v", cl)
			}
		}
	})
}
