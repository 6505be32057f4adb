package login

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	bolt "go.etcd.io/bbolt"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/captive"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/gateway"
)

// catalogue is a language's messages as the portal ships them.
func catalogue(t testing.TB, lang string) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../captive/catalog/" + lang + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]string
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

const orig = "http://www.example.it/news?id=1"

// The landing page offers what the site's policy allows, in its order,
// with the one-tap remembered device first; without the policy's methods
// there is nothing to log in with but what the config allows.
func TestLandingFollowsPolicy(t *testing.T) {
	h := newHarness(t)
	p := h.get("/portal/")
	status(t, p, 200)
	forms := formActions(p.body)
	if diff := cmp.Diff([]string{"/portal/remembered", "/portal/sms", "/portal/voucher", "/portal/spid"}, forms); diff != "" {
		t.Errorf("forms (-want +got)\n%s", diff)
	}
	for _, want := range []string{
		`<input type="tel" id="phone" name="phone" autocomplete="tel" inputmode="tel"`,
		`name="idp" value="https://id.lepida.it/idp/shibboleth">Lepida ID</button>`,
		`name="idp" value="https://posteid.poste.it">Poste ID</button>`,
		`<a href="https://10.20.0.1:2443/portal/">https://10.20.0.1:2443/portal/</a>`, // the CNA fallback: the RFC 8908 user-portal-url
		`<a href="/portal/info?lang=en">Read the terms of use and the privacy notice</a>`,
	} {
		if !strings.Contains(p.body, want) {
			t.Errorf("landing lacks %q", want)
		}
	}
	if strings.Contains(p.body, "/portal/grant") {
		t.Error("click-through offered though the policy does not allow it")
	}
	// The policy changes: click-through and SMS only, no remembered devices.
	h.srv.SetOffer(captive.Offer{Methods: []string{"click-through", "sms"}})
	p = h.get("/portal/")
	if diff := cmp.Diff([]string{"/portal/grant", "/portal/sms"}, formActions(p.body)); diff != "" {
		t.Errorf("after the change (-want +got)\n%s", diff)
	}
	// A method the offer no longer has is refused, and the controller is
	// not asked.
	n := len(h.ctl.requests())
	csrf := p.hidden(t, "/portal/sms").Get("csrf")
	for _, path := range []string{"/portal/voucher", "/portal/remembered", "/portal/spid"} {
		r := h.post(path, url.Values{"csrf": {csrf}, "accept": {"1"}, "voucher": {"ABCD-2345"}, "idp": {"https://posteid.poste.it"}})
		status(t, r, http.StatusForbidden)
		if !r.has(catalogue(t, "en")["login.err.method_not_allowed"]) {
			t.Errorf("%s: no method_not_allowed message", path)
		}
	}
	if got := len(h.ctl.requests()); got != n {
		t.Errorf("the controller was asked %d times for methods not offered", got-n)
	}
}

func formActions(body string) []string {
	var out []string
	for _, part := range strings.Split(body, `<form method="post" action="`)[1:] {
		out = append(out, part[:strings.IndexByte(part, '"')])
	}
	return out
}

// The SMS walk: number, code, session with the grant's limits and the
// resident's pseudonym, then the page they were opening.
func TestSMSLogin(t *testing.T) {
	h := newHarness(t)
	land := h.landingFor(orig)
	f := land.hidden(t, "/portal/sms")
	f.Set("phone", "+39 333 123 4567")
	f.Set("accept", "1")
	code := h.post("/portal/sms", f)
	status(t, code, 200)
	for _, want := range []string{
		`autocomplete="one-time-code" inputmode="numeric" pattern="[0-9]{6}"`,
		"We sent a 6-digit code by text message to the number ending in 567.",
		"You can ask for a new code in 30 seconds.",
		`<a href="/portal/?lang=en&sig=`, // "use another number" keeps the original URL
	} {
		if !code.has(want) {
			t.Errorf("code page lacks %q", want)
		}
	}
	want := []any{apiclient.SMSStartRequest{ClientMAC: phoneHW, ClientIP: phoneIP, Phone: "+39 333 123 4567", Lang: "en", Consent: true}}
	if diff := cmp.Diff(want, h.ctl.requests()); diff != "" {
		t.Fatalf("controller requests (-want +got)\n%s", diff)
	}
	// A wrong code: the page again, translated, with the tries left.
	v := code.hidden(t, "/portal/sms/verify")
	v.Set("code", "654321")
	wrong := h.post("/portal/sms/verify", v)
	status(t, wrong, http.StatusBadRequest)
	if !wrong.has("The code is not right. Attempts left: 4.") || wrong.has("wrong code") {
		t.Errorf("wrong code page:\n%s", wrong.body)
	}
	if len(h.gw.openedList()) != 0 {
		t.Fatal("a session was opened for a wrong code")
	}
	// A code that is not 6 digits never reaches the controller.
	n := len(h.ctl.requests())
	v.Set("code", "12a456")
	status(t, h.post("/portal/sms/verify", v), http.StatusBadRequest)
	if len(h.ctl.requests()) != n {
		t.Error("a malformed code was sent to the controller")
	}
	v.Set("code", "123456")
	ok := h.post("/portal/sms/verify", v)
	status(t, ok, http.StatusSeeOther)
	if ok.loc != orig {
		t.Errorf("after login: Location %q, want %q", ok.loc, orig)
	}
	mac, _ := net.ParseMAC(phoneHW)
	wantOpen := []gateway.Grant{{MAC: mac, IP: netip.MustParseAddr(phoneIP), Method: "sms", User: "U7ZQK3", Limits: config.Limits{
		Down: quantity.Rate(4_000_000), Up: quantity.Rate(1_000_000), Session: 2 * time.Hour, Idle: 10 * time.Minute,
		Quota: quantity.Bytes(2_000_000_000), MaxClients: 100,
	}}}
	opened := h.gw.openedList()
	if diff := cmp.Diff(wantOpen, opened, cmpopts.EquateComparable(netip.Addr{}), cmpopts.IgnoreFields(gateway.Grant{}, "Spends")); diff != "" {
		t.Errorf("sessions opened (-want +got)\n%s", diff)
	}
	if len(opened) == 1 && (opened[0].Spends.ID == "" || !opened[0].Spends.Expires.After(h.now)) {
		t.Errorf("the open does not spend the grant: %+v", opened[0].Spends)
	}
	if n, _ := h.gw.store.SpentCount(); n != 1 {
		t.Errorf("%d grant ids kept, want 1", n)
	}
	// The same form again: the controller answers (here: a new grant for
	// the same request) but the landing shows the status now.
	if p := h.get("/portal/"); !p.has("You are connected") {
		t.Error("the status page does not follow the login")
	}
}

// landingFor is the landing page a foreign request to target lands on.
func (h *harness) landingFor(target string) page {
	h.t.Helper()
	u, _ := url.Parse(target)
	r := h.doHost("GET", u.Host, u.RequestURI(), nil, phoneIP)
	if r.code != http.StatusFound {
		h.t.Fatalf("redirect: %d", r.code)
	}
	lu, _ := url.Parse(r.loc)
	return h.get(lu.RequestURI())
}

// The resend button: refused (without asking the controller) during the
// cool-down the controller gave, allowed after it; a tampered state is
// refused.
func TestSMSResend(t *testing.T) {
	h := newHarness(t)
	f := h.get("/portal/").hidden(t, "/portal/sms")
	f.Set("phone", "3331234567")
	f.Set("accept", "1")
	code := h.post("/portal/sms", f)
	status(t, code, 200)
	resend := code.hidden(t, "/portal/sms")
	if resend.Get("accept") != "1" || resend.Get("phone") != "3331234567" || resend.Get("state") == "" {
		t.Fatalf("resend form: %v", resend)
	}
	h.now = t0.Add(10 * time.Second)
	early := h.post("/portal/sms", resend)
	status(t, early, http.StatusTooManyRequests)
	if !early.has("Please wait 20 seconds before asking for a new code.") {
		t.Errorf("early resend page:\n%s", early.body)
	}
	if n := len(h.ctl.requests()); n != 1 {
		t.Fatalf("controller asked %d times, want 1", n)
	}
	h.now = t0.Add(31 * time.Second)
	status(t, h.post("/portal/sms", resend), 200)
	if n := len(h.ctl.requests()); n != 2 {
		t.Fatalf("controller asked %d times after the cool-down, want 2", n)
	}
	for name, mod := range map[string]func(url.Values){
		"other request id":  func(v url.Values) { v.Set("rid", "r99") },
		"earlier resend":    func(v url.Values) { v.Set("resend_at", "1") },
		"other number":      func(v url.Values) { v.Set("phone", "3339999999") },
		"no state":          func(v url.Values) { v.Del("state") },
		"garbage timestamp": func(v url.Values) { v.Set("expires", "x") },
	} {
		t.Run(name, func(t *testing.T) {
			v := url.Values{}
			for k, vs := range resend {
				v[k] = append([]string(nil), vs...)
			}
			mod(v)
			if name == "no state" {
				// Without a state it is a first request: it needs nothing more.
				return
			}
			status(t, h.post("/portal/sms", v), http.StatusForbidden)
			v.Set("code", "123456")
			status(t, h.post("/portal/sms/verify", v), http.StatusForbidden)
		})
	}
	// Another client cannot use this client's state.
	v := code.hidden(t, "/portal/sms/verify")
	v.Set("code", "123456")
	if p := h.do("POST", "/portal/sms/verify", v, "10.20.0.12"); p.code != http.StatusForbidden {
		t.Errorf("another client's state: %d", p.code)
	}
}

// Every refusal code the controller can answer shows its own translated
// message (never the controller's English text), with the right status,
// in every language.
func TestLoginErrorCodes(t *testing.T) {
	codes := []struct {
		code   string
		status int
	}{
		{"bad_number", 400}, {"country_not_allowed", 400}, {"not_mobile", 400}, {"rate_limited", 429},
		{"budget_exhausted", 429}, {"provider_failed", 503}, {"wrong_code", 400}, {"expired", 400},
		{"too_many_tries", 429}, {"bad_voucher", 400}, {"voucher_used", 403}, {"method_not_allowed", 403},
		{"no_consent", 400}, {"not_connected", 403}, {"not_remembered", 400}, {"unavailable", 503},
		{"bad_request", 400}, {"something_new", 400},
	}
	for _, lang := range []string{"it", "en", "de", "fr"} {
		cat := catalogue(t, lang)
		for _, c := range codes {
			t.Run(lang+"/"+c.code, func(t *testing.T) {
				h := newHarness(t)
				h.lang = lang
				le := &apiclient.LoginError{Code: c.code, Message: "CONTROLLER TEXT", RetryAfterSeconds: 0, TriesLeft: 0, Status: c.status}
				if c.code == "rate_limited" {
					le.RetryAfterSeconds = 42
				}
				key := "login.err." + c.code
				if _, ok := cat[key]; !ok {
					key = "login.err.other"
				}
				want := cat[key]
				// The step that can meet it: the number, the code, the voucher.
				var p page
				switch c.code {
				case "wrong_code", "expired", "too_many_tries":
					h.ctl.fail["sms/verify"] = le
					f := h.get("/portal/").hidden(t, "/portal/sms")
					f.Set("phone", "3331234567")
					f.Set("accept", "1")
					v := h.post("/portal/sms", f).hidden(t, "/portal/sms/verify")
					v.Set("code", "123456")
					p = h.post("/portal/sms/verify", v)
				case "bad_voucher", "voucher_used":
					h.ctl.fail["voucher"] = le
					f := h.get("/portal/").hidden(t, "/portal/voucher")
					f.Set("voucher", "ABCD-2345")
					f.Set("accept", "1")
					p = h.post("/portal/voucher", f)
				case "not_remembered":
					h.ctl.fail["remembered"] = le
					p = h.post("/portal/remembered", h.get("/portal/").hidden(t, "/portal/remembered"))
				default:
					h.ctl.fail["sms/start"] = le
					f := h.get("/portal/").hidden(t, "/portal/sms")
					f.Set("phone", "3331234567")
					f.Set("accept", "1")
					p = h.post("/portal/sms", f)
				}
				status(t, p, c.status)
				if !p.has(want) {
					t.Errorf("page lacks %q", want)
				}
				if c.code == "rate_limited" && !p.has(strings.Replace(cat["login.retry_after"], "%d", "42", 1)) {
					t.Errorf("page lacks the retry time")
				}
				if strings.Contains(p.body, "CONTROLLER TEXT") {
					t.Error("the controller's English text reached the page")
				}
				if len(h.gw.openedList()) != 0 {
					t.Error("a session was opened")
				}
			})
		}
	}
}

// The site's rules refuse a valid grant (closed, full): the resident is
// told so, not that the login failed.
func TestGatewayRefuses(t *testing.T) {
	h := newHarness(t)
	h.gw.refuse = fmt.Errorf("%w: the site is closed now (it opens Mon 08:00)", gateway.ErrRefused)
	f := h.get("/portal/").hidden(t, "/portal/voucher")
	f.Set("voucher", "ABCD-2345")
	f.Set("accept", "1")
	p := h.post("/portal/voucher", f)
	status(t, p, http.StatusForbidden)
	if !p.has(catalogue(t, "en")["login.err.gateway_refused"]) {
		t.Errorf("page:\n%s", p.body)
	}
}

// The controller unreachable: a clear 503, no hang, nothing opened.
func TestControllerUnreachable(t *testing.T) {
	h := newHarness(t)
	h.ctl.fail["voucher"] = errors.New("dial tcp 192.0.2.1:443: connect: no route to host")
	f := h.get("/portal/").hidden(t, "/portal/voucher")
	f.Set("voucher", "ABCD-2345")
	f.Set("accept", "1")
	p := h.post("/portal/voucher", f)
	status(t, p, http.StatusServiceUnavailable)
	if !p.has(catalogue(t, "en")["login.err.unavailable"]) || strings.Contains(p.body, "no route") {
		t.Errorf("page:\n%s", p.body)
	}
	if !strings.Contains(p.body, `value="ABCD-2345"`) {
		t.Error("the voucher code typed was not kept")
	}
}

// Consent before any data: without the terms accepted the controller is
// never asked, and the page says why. CSRF: every login form refuses a
// missing, forged, other-client or expired token.
func TestConsentAndCSRF(t *testing.T) {
	h := newHarness(t)
	land := h.get("/portal/")
	forms := map[string]url.Values{
		"/portal/sms":     {"phone": {"3331234567"}},
		"/portal/voucher": {"voucher": {"ABCD-2345"}},
		"/portal/spid":    {"idp": {"https://posteid.poste.it"}},
	}
	for path, extra := range forms {
		f := land.hidden(t, path)
		for k, v := range extra {
			f[k] = v
		}
		p := h.post(path, f)
		status(t, p, http.StatusBadRequest)
		if !p.has(catalogue(t, "en")["landing.must_accept"]) {
			t.Errorf("%s without consent: no must_accept message", path)
		}
	}
	if n := len(h.ctl.requests()); n != 0 {
		t.Fatalf("the controller was asked %d times without consent", n)
	}
	all := []string{"/portal/sms", "/portal/sms/verify", "/portal/voucher", "/portal/remembered", "/portal/spid"}
	h2 := newHarness(t, func(c *captive.Config) { c.Key = []byte("another key, another gateway....") }) // a token it made is a forgery here
	other := h2.get("/portal/").hidden(t, "/portal/sms").Get("csrf")
	mine := land.hidden(t, "/portal/sms").Get("csrf")
	for _, path := range all {
		for name, tok := range map[string]string{"missing": "", "forged": other, "garbage": "abc"} {
			f := url.Values{"accept": {"1"}, "phone": {"3331234567"}, "voucher": {"ABCD-2345"}, "idp": {"https://posteid.poste.it"}, "code": {"123456"}}
			if tok != "" {
				f.Set("csrf", tok)
			}
			if p := h.post(path, f); p.code != http.StatusForbidden || !p.has(catalogue(t, "en")["error.csrf"]) {
				t.Errorf("%s with a %s token: %d", path, name, p.code)
			}
		}
		f := url.Values{"csrf": {mine}, "accept": {"1"}, "phone": {"3331234567"}, "voucher": {"ABCD-2345"}}
		if p := h.do("POST", path, f, "10.20.0.12"); p.code != http.StatusForbidden {
			t.Errorf("%s with another client's token: %d", path, p.code)
		}
	}
	h.now = t0.Add(3 * time.Hour)
	f := url.Values{"csrf": {mine}, "accept": {"1"}, "phone": {"3331234567"}}
	if p := h.post("/portal/sms", f); p.code != http.StatusForbidden {
		t.Errorf("expired token: %d", p.code)
	}
	if n := len(h.ctl.requests()); n != 0 {
		t.Fatalf("the controller was asked %d times with bad tokens", n)
	}
}

// Vouchers: the printed QR code's URL puts the code in its field (the
// terms still to accept); redeeming it opens the session.
func TestVoucher(t *testing.T) {
	h := newHarness(t)
	p := h.get("/portal/?voucher=abcd-2345")
	status(t, p, 200)
	if !strings.Contains(p.body, `name="voucher" autocomplete="off" autocapitalize="characters" spellcheck="false" maxlength="40" required aria-describedby="voucher-hint" value="ABCD-2345"`) {
		t.Fatalf("the voucher from the QR code is not in its field:\n%s", p.body)
	}
	if q := h.get("/portal/?voucher=%3Cscript%3E"); strings.Contains(q.body, "<script>") || strings.Contains(q.body, `value="&lt;script`) {
		t.Error("a hostile voucher parameter reached the page")
	}
	f := p.hidden(t, "/portal/voucher")
	f.Set("voucher", " abcd-2345 ")
	f.Set("accept", "1")
	r := h.post("/portal/voucher", f)
	status(t, r, http.StatusSeeOther)
	if r.loc != "/portal/status?lang=en" {
		t.Errorf("Location %q", r.loc)
	}
	reqs := h.ctl.requests()
	want := apiclient.VoucherRequest{ClientMAC: phoneHW, ClientIP: phoneIP, Code: "ABCD-2345", Consent: true}
	if diff := cmp.Diff(want, reqs[len(reqs)-1]); diff != "" {
		t.Errorf("voucher request (-want +got)\n%s", diff)
	}
	if o := h.gw.openedList(); len(o) != 1 || o[0].Method != "voucher" {
		t.Errorf("opened %+v", o)
	}
	// A code that cannot be a voucher is refused at the gateway.
	f.Set("voucher", "A")
	status(t, h.post("/portal/voucher", f), http.StatusBadRequest)
}

// A remembered device gets in with one tap; an unknown one is told to
// choose a method.
func TestRemembered(t *testing.T) {
	h := newHarness(t)
	land := h.landingFor(orig)
	r := h.post("/portal/remembered", land.hidden(t, "/portal/remembered"))
	status(t, r, http.StatusSeeOther)
	if r.loc != orig {
		t.Errorf("Location %q", r.loc)
	}
	if o := h.gw.openedList(); len(o) != 1 || o[0].Method != "remembered" || o[0].User != "U7ZQK3" {
		t.Errorf("opened %+v", o)
	}
	if diff := cmp.Diff(apiclient.RememberedRequest{ClientMAC: phoneHW, ClientIP: phoneIP}, h.ctl.requests()[0]); diff != "" {
		t.Errorf("request (-want +got)\n%s", diff)
	}
}

// SPID: the IdP button sends the browser to the controller with a return
// URL that carries the original URL; the return fetches the grant.
func TestSPID(t *testing.T) {
	h := newHarness(t)
	land := h.landingFor(orig)
	f := land.hidden(t, "/portal/spid")
	f.Set("accept", "1")
	f.Set("idp", "https://posteid.poste.it")
	r := h.post("/portal/spid", f)
	status(t, r, http.StatusSeeOther)
	if r.loc != "https://login.comune.example/spid/sso?state=s1" {
		t.Errorf("Location %q", r.loc)
	}
	reqs := h.ctl.requests()
	start := reqs[len(reqs)-1].(apiclient.SPIDStartRequest)
	ret, err := url.Parse(start.ReturnURL)
	if err != nil || ret.Scheme != "http" || ret.Host != portal || ret.Path != "/portal/spid/done" || ret.Query().Get("url") != orig || ret.Query().Get("lang") != "en" {
		t.Fatalf("return URL %q", start.ReturnURL)
	}
	if start.IdPEntityID != "https://posteid.poste.it" || !start.Consent || start.ClientMAC != phoneHW {
		t.Errorf("start %+v", start)
	}
	// The controller sends the browser back with its state.
	q := ret.Query()
	q.Set("state", "s1")
	done := h.get(ret.Path + "?" + q.Encode())
	status(t, done, http.StatusSeeOther)
	if done.loc != orig {
		t.Errorf("after SPID: Location %q", done.loc)
	}
	if o := h.gw.openedList(); len(o) != 1 || o[0].Method != "spid" {
		t.Errorf("opened %+v", o)
	}
	// The same return again: the controller's state is single use (here: a
	// new grant); an unknown state is an error page with its message.
	q.Set("state", "other")
	bad := h.get(ret.Path + "?" + q.Encode())
	status(t, bad, http.StatusBadRequest)
	if !bad.has(catalogue(t, "en")["login.err.expired"]) {
		t.Errorf("bad state page:\n%s", bad.body)
	}
	// An IdP that is not offered is refused before the controller.
	n := len(h.ctl.requests())
	f.Set("idp", "https://evil.example")
	status(t, h.post("/portal/spid", f), http.StatusBadRequest)
	if len(h.ctl.requests()) != n {
		t.Error("an IdP not offered went to the controller")
	}
}

// The gateway refuses grants that are forged, replayed, expired, for
// another MAC, IP, site or gateway (real Ed25519 keys), and opens nothing
// for them.
func TestGrantChecks(t *testing.T) {
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name   string
		mutate func(g *apiclient.Grant)
		resign func(g *apiclient.Grant)
		at     time.Duration // when the gateway checks it, after issue
		want   error
	}{
		{name: "valid"},
		{name: "forged: signed by another key", resign: func(g *apiclient.Grant) { apiclient.SignGrant(g, otherKey) }, want: apiclient.ErrGrant},
		{name: "forged: limits raised after signing", resign: func(g *apiclient.Grant) { g.DownBPS = 1_000_000_000 }, want: apiclient.ErrGrant},
		{name: "forged: no signature", resign: func(g *apiclient.Grant) { g.Signature = "" }, want: apiclient.ErrGrant},
		{name: "expired", at: 61 * time.Second, want: apiclient.ErrGrant},
		{name: "other MAC", mutate: func(g *apiclient.Grant) { g.ClientMAC = "02:00:00:aa:bb:02" }, want: apiclient.ErrGrant},
		{name: "other IP", mutate: func(g *apiclient.Grant) { g.ClientIP = "10.20.0.12" }, want: apiclient.ErrGrant},
		{name: "other site", mutate: func(g *apiclient.Grant) { g.Site = "biblioteca" }, want: apiclient.ErrGrant},
		{name: "other gateway", mutate: func(g *apiclient.Grant) { g.GatewayID = "gw-2" }, want: apiclient.ErrGrant},
		{name: "issued in the future", mutate: func(g *apiclient.Grant) {
			g.IssuedAt = g.IssuedAt.Add(10 * time.Minute)
			g.ExpiresAt = g.ExpiresAt.Add(10 * time.Minute)
		}, want: apiclient.ErrGrant},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.ctl.mutate, h.ctl.resign = c.mutate, c.resign
			g, err := h.ctl.grant("voucher", phoneHW, phoneIP)
			if err != nil {
				t.Fatal(err)
			}
			h.now = t0.Add(c.at)
			err = h.svc.Use(context.Background(), g, phoneHW, phoneIP)
			if !errors.Is(err, c.want) {
				t.Fatalf("Use: %v, want %v", err, c.want)
			}
			var le *captive.LoginError
			if c.want != nil && (!errors.As(err, &le) || le.Code != "grant_refused") {
				t.Errorf("refusal %v is not a grant_refused LoginError", err)
			}
			opened := len(h.gw.openedList())
			if (c.want == nil) != (opened == 1) {
				t.Errorf("%d sessions opened", opened)
			}
		})
	}
	// Through the pages: a forged grant gives the resident a clear 403.
	h := newHarness(t)
	h.ctl.resign = func(g *apiclient.Grant) { apiclient.SignGrant(g, otherKey) }
	f := h.get("/portal/").hidden(t, "/portal/voucher")
	f.Set("voucher", "ABCD-2345")
	f.Set("accept", "1")
	p := h.post("/portal/voucher", f)
	status(t, p, http.StatusForbidden)
	if !p.has(catalogue(t, "en")["login.err.grant_refused"]) || len(h.gw.openedList()) != 0 {
		t.Errorf("forged grant through the page: %d sessions\n%s", len(h.gw.openedList()), p.body)
	}
}

// A grant is single use, also across a restart of the gateway (the ids are
// on disk until they expire), and expired ids are pruned.
func TestGrantReplay(t *testing.T) {
	h := newHarness(t)
	g, err := h.ctl.grant("sms", phoneHW, phoneIP)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Use(context.Background(), g, phoneHW, phoneIP); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Use(context.Background(), g, phoneHW, phoneIP); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v, want ErrReplay", err)
	}
	// The gateway restarts: a new service on the same store.
	h.gw.store.Close()
	h.gw = newFakeGateway(t, h.dir)
	h.gw.macs[netip.MustParseAddr(phoneIP)], _ = net.ParseMAC(phoneHW)
	svc := h.newService(t)
	h.now = t0.Add(30 * time.Second)
	if err := svc.Use(context.Background(), g, phoneHW, phoneIP); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay after restart: %v, want ErrReplay", err)
	}
	if n := len(h.gw.openedList()); n != 0 {
		t.Errorf("%d sessions opened after the restart, want 0", n)
	}
	// Two minutes on, the first id has expired: the gateway's prune drops
	// it and keeps the new one.
	h.now = t0.Add(2 * time.Minute)
	g2, _ := h.ctl.grant("sms", phoneHW, phoneIP)
	if err := svc.Use(context.Background(), g2, phoneHW, phoneIP); err != nil {
		t.Fatal(err)
	}
	if n, err := h.gw.store.PruneSpent(h.now); n != 1 || err != nil {
		t.Errorf("pruned %d ids (%v), want 1", n, err)
	}
	if n, _ := h.gw.store.SpentCount(); n != 1 {
		t.Errorf("%d ids kept after pruning, want 1 (the new one)", n)
	}
}

// A client the gateway has never seen cannot ask for anything: the
// controller is not asked.
func TestUnknownClient(t *testing.T) {
	h := newHarness(t)
	f := h.do("GET", "/portal/", nil, "10.20.0.99").hidden(t, "/portal/sms")
	f.Set("phone", "3331234567")
	f.Set("accept", "1")
	p := h.do("POST", "/portal/sms", f, "10.20.0.99")
	status(t, p, http.StatusForbidden)
	if !p.has(catalogue(t, "en")["login.err.not_connected"]) || len(h.ctl.requests()) != 0 {
		t.Errorf("unknown client: %d requests\n%s", len(h.ctl.requests()), p.body)
	}
}

// The SPID garden: the controller's host and each IdP's, once, lower
// case; addresses are left out and reported.
func TestSPIDGarden(t *testing.T) {
	domains, skipped := SPIDGarden("https://Login.Comune.Example:8443/base", []captive.IdP{
		{EntityID: "https://id.lepida.it/idp/shibboleth"}, {EntityID: "https://posteid.poste.it"},
		{EntityID: "https://login.comune.example/other"}, {EntityID: "urn:not-a-url"}, {EntityID: "https://192.0.2.7/idp"},
	})
	if diff := cmp.Diff([]string{"login.comune.example", "id.lepida.it", "posteid.poste.it"}, domains); diff != "" {
		t.Errorf("domains (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff([]string{"192.0.2.7"}, skipped); diff != "" {
		t.Errorf("skipped (-want +got)\n%s", diff)
	}
}

// The same grant presented many times at once (a replay racing the real
// login) opens one session; the others are refused as replays.
func TestConcurrentGrantUseOpensOnce(t *testing.T) {
	h := newHarness(t)
	g, err := h.ctl.grant("sms", phoneHW, phoneIP)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() { errs <- h.svc.Use(context.Background(), g, phoneHW, phoneIP) }()
	}
	ok, replays := 0, 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrReplay):
			replays++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || replays != n-1 {
		t.Errorf("%d uses succeeded and %d were refused as replays, want 1 and %d", ok, replays, n-1)
	}
	if got := len(h.gw.openedList()); got != 1 {
		t.Errorf("%d sessions opened, want 1", got)
	}
	if used, err := h.gw.store.SpentCount(); err != nil || used != 1 {
		t.Errorf("used grants on disk: %d (%v), want 1", used, err)
	}
}

// A grant whose session does not open (the site is full) is spent all the
// same, also across a restart: it cannot open a session later.
func TestRefusedGrantIsSpent(t *testing.T) {
	h := newHarness(t)
	g, err := h.ctl.grant("sms", phoneHW, phoneIP)
	if err != nil {
		t.Fatal(err)
	}
	h.gw.refuse = fmt.Errorf("%w: the site is full (100 clients)", gateway.ErrRefused)
	var le *captive.LoginError
	if err := h.svc.Use(context.Background(), g, phoneHW, phoneIP); !errors.As(err, &le) || le.Code != "gateway_refused" {
		t.Fatalf("use at a full site: %v, want gateway_refused", err)
	}
	h.gw.refuse = nil
	svc := h.newService(t) // a restart of the service; the store stays
	if err := svc.Use(context.Background(), g, phoneHW, phoneIP); !errors.Is(err, ErrReplay) {
		t.Fatalf("the refused grant again: %v, want ErrReplay", err)
	}
	if n := len(h.gw.openedList()); n != 0 {
		t.Errorf("%d sessions opened, want 0", n)
	}
}

// A grant whose id cannot be written (the store fails, so its session does
// not open either) is still refused again by this process.
func TestGrantNotRecordedStillSingleUse(t *testing.T) {
	h := newHarness(t)
	h.gw.storeErr = errors.New("disk full")
	g, err := h.ctl.grant("sms", phoneHW, phoneIP)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Use(context.Background(), g, phoneHW, phoneIP); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("use with the store failing: %v, want the store's error", err)
	}
	h.gw.storeErr = nil
	if err := h.svc.Use(context.Background(), g, phoneHW, phoneIP); !errors.Is(err, ErrReplay) {
		t.Fatalf("second use: %v, want ErrReplay", err)
	}
	if n := len(h.gw.openedList()); n != 0 {
		t.Errorf("%d sessions opened, want 0", n)
	}
	// Once the grant has expired (it fails its own check now), the next
	// login forgets its id.
	h.now = g.ExpiresAt.Add(time.Second)
	g2, _ := h.ctl.grant("sms", phoneHW, phoneIP)
	if err := h.svc.Use(context.Background(), g2, phoneHW, phoneIP); err != nil {
		t.Fatal(err)
	}
	h.svc.mu.Lock()
	n := len(h.svc.claimed)
	h.svc.mu.Unlock()
	if n != 0 {
		t.Errorf("%d ids still held in memory after expiry, want 0", n)
	}
}

// TestBusyRefusesAtOnce: with MaxLogins in flight (held in the
// controller), one more login is refused at once as "busy", without
// asking the controller, and the resident's code still works afterwards;
// the page says so in the resident's language, with a 503 and the code
// form kept.
func TestBusyRefusesAtOnce(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	ip := netip.MustParseAddr(phoneIP)
	sent, err := h.svc.StartSMS(ctx, ip, "+393331234567", "en")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Site: site, GatewayID: gwID, ControllerKey: h.ctl.pub(), StateDir: t.TempDir(), MaxLogins: 2, Now: func() time.Time { return h.now }},
		h.ctl, h.gw, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	h.ctl.mu.Lock()
	h.ctl.hold = release
	h.ctl.mu.Unlock()
	before := len(h.ctl.requests())
	done := make(chan error, 2)
	for range 2 {
		go func() { done <- svc.VerifySMS(ctx, ip, sent.RequestID, "123456") }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(h.ctl.requests()) < before+2 {
		if time.Now().After(deadline) {
			t.Fatal("the two logins never reached the controller")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	short, cancel := context.WithTimeout(ctx, 2*time.Second) // a wait would be held
	third := make(chan error, 1)
	go func() { third <- svc.VerifySMS(short, ip, sent.RequestID, "123456") }()
	select {
	case err = <-third:
	case <-time.After(3 * time.Second):
		// A queue for a slot (even one that ignores ctx) fails here
		// instead of hanging until the test binary's timeout.
		close(release)
		cancel()
		t.Fatal("the third login at MaxLogins 2 waited instead of being refused at once")
	}
	cancel()
	var le *captive.LoginError
	if !errors.As(err, &le) || le.Code != "busy" || !errors.Is(err, ErrBusy) || le.RetryAfter <= 0 {
		t.Errorf("third login at MaxLogins 2: %v, want a busy refusal with a retry time", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the busy refusal took %v: it must not wait", d)
	}
	if n := len(h.ctl.requests()); n != before+2 {
		t.Errorf("the busy login reached the controller (%d requests, want %d)", n, before+2)
	}
	close(release)
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("a held login: %v", err)
		}
	}
	if err := svc.VerifySMS(ctx, ip, sent.RequestID, "123456"); err != nil {
		t.Errorf("after the rush, the same code: %v", err)
	}

	// The page: every slot of the harness's service taken.
	for range cap(h.svc.slots) {
		h.svc.slots <- struct{}{}
	}
	h.gw.sessions = map[netip.Addr]gateway.Grant{} // logged out again
	f := h.landingFor(orig).hidden(t, "/portal/sms")
	f.Set("phone", "+39 333 123 4567")
	f.Set("accept", "1")
	code := h.post("/portal/sms", f)
	status(t, code, 200)
	v := code.hidden(t, "/portal/sms/verify")
	v.Set("code", "123456")
	n := len(h.ctl.requests())
	p := h.post("/portal/sms/verify", v)
	status(t, p, http.StatusServiceUnavailable)
	if !p.has("Many people are logging in right now. Try again in 3 seconds.") || !p.has(`action="/portal/sms/verify"`) {
		t.Errorf("busy page lacks the message or the code form:\n%s", p.body)
	}
	if len(h.ctl.requests()) != n {
		t.Error("a busy page's login reached the controller")
	}
}

// An older version's grants.db: its unexpired ids move into the gateway's
// store (a grant spent just before the upgrade stays spent), expired ones
// are dropped, and the file is removed.
func TestGrantsFileCarriedOver(t *testing.T) {
	h := newHarness(t)
	g, err := h.ctl.grant("sms", phoneHW, phoneIP)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.dir, "grants.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(id string, exp time.Time) {
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("grants"))
			if err != nil {
				return err
			}
			return b.Put([]byte(id), binary.BigEndian.AppendUint64(nil, uint64(exp.UnixNano())))
		}); err != nil {
			t.Fatal(err)
		}
	}
	put(g.ID, g.ExpiresAt)
	put("long-expired", h.now.Add(-time.Minute))
	db.Close()

	svc := h.newService(t) // the upgraded gateway starts
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("grants.db still there: %v", err)
	}
	if n, _ := h.gw.store.SpentCount(); n != 1 {
		t.Errorf("%d ids carried over, want 1 (the unexpired one)", n)
	}
	if err := svc.Use(context.Background(), g, phoneHW, phoneIP); !errors.Is(err, ErrReplay) {
		t.Fatalf("the grant spent before the upgrade: %v, want ErrReplay", err)
	}
}
