package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/google/go-cmp/cmp"
)

func pending(t *testing.T, h *harness, gw string) []store.Command {
	t.Helper()
	cs, err := h.st.Pending(context.Background(), gw)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func auditOf(t *testing.T, h *harness) []store.AuditEntry {
	t.Helper()
	es, err := h.st.ListAudit(context.Background(), h.clk.Now().AddDate(0, 0, -7), h.clk.Now().Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// Each role sees and does exactly what it may; refused requests change
// nothing.
func TestRoles(t *testing.T) {
	h := newHarness(t)
	sd := h.seed()
	mac := sd.open["parco-pertini"][0].ClientMAC
	type route struct {
		name, method, path string
		form               url.Values
	}
	routes := []route{
		{"overview", "GET", "/admin/overview", nil},
		{"site", "GET", "/admin/sites/parco-pertini", nil},
		{"kick", "POST", "/admin/sites/parco-pertini/kick", url.Values{"mac": {mac}}},
		{"extend", "POST", "/admin/sites/parco-pertini/extend", url.Values{"mac": {mac}, "minutes": {"30"}}},
		{"poster", "GET", "/admin/sites/parco-pertini/poster", nil},
		{"vouchers", "POST", "/admin/sites/parco-pertini/vouchers", url.Values{"count": {"3"}, "minutes": {"60"}, "devices": {"1"}, "days": {"7"}, "data_mb": {"0"}}},
		{"reports", "GET", "/admin/reports?period=month", nil},
		{"export", "GET", "/admin/reports/export?month=2026-11&format=csv", nil},
		{"health", "GET", "/admin/health", nil},
		{"audit", "GET", "/admin/audit", nil},
	}
	ok, redirect, forbidden := http.StatusOK, http.StatusSeeOther, http.StatusForbidden
	want := map[auth.Role][]int{
		//           overview   site       kick      extend    poster  vouchers  reports export health     audit
		auth.IT:       {ok, ok, redirect, redirect, ok, ok, ok, ok, ok, ok},
		auth.Operator: {ok, ok, redirect, forbidden, forbidden, forbidden, ok, forbidden, ok, forbidden},
		auth.Auditor:  {forbidden, forbidden, forbidden, forbidden, forbidden, forbidden, ok, ok, forbidden, ok},
	}
	for _, name := range []string{"ida", "oscar", "aude"} {
		role := testAccounts[name]
		t.Run(string(role), func(t *testing.T) {
			c, tok := h.login(name)
			var got []int
			for _, r := range routes {
				var form url.Values
				if r.form != nil {
					form = url.Values{"csrf": {tok}}
					for k, v := range r.form {
						form[k] = v
					}
				}
				before := len(pending(t, h, "pertini-gw1"))
				res := h.do(c, r.method, r.path, form)
				got = append(got, res.code)
				after := len(pending(t, h, "pertini-gw1"))
				if r.method == "POST" && res.code != redirect && after != before {
					t.Errorf("%s refused (%d) but queued %d commands", r.name, res.code, after-before)
				}
				if r.method == "POST" && res.code == redirect && after != before+1 {
					t.Errorf("%s accepted but pending %d -> %d", r.name, before, after)
				}
			}
			if diff := cmp.Diff(want[role], got); diff != "" {
				t.Errorf("status per route %v (-want +got):\n%s", names(routes, func(r route) string { return r.name }), diff)
			}
			// What each sees: the site page's buttons and the navigation.
			home := h.do(c, "GET", "/admin/", nil)
			site := h.do(c, "GET", "/admin/sites/parco-pertini", nil)
			seen := map[string]bool{
				"kick button":   strings.Contains(site.body, ">Disconnect</button>"),
				"extend button": strings.Contains(site.body, ">Extend</button>"),
				"poster link":   strings.Contains(site.body, "/poster\">Poster</a>"),
				"voucher link":  strings.Contains(site.body, "/vouchers\">Vouchers</a>"),
				"export form":   strings.Contains(h.do(c, "GET", "/admin/reports", nil).body, `id="export"`),
				"audit nav":     strings.Contains(h.do(c, "GET", "/admin/reports", nil).body, `href="/admin/audit"`),
			}
			wantSeen := map[string]bool{
				"kick button": role.Can(auth.Kick), "extend button": role.Can(auth.Extend),
				"poster link": role.Can(auth.Poster), "audit nav": role.Can(auth.AuditLog), "voucher link": role.Can(auth.Vouchers),
				"export form": role.Can(auth.Exports),
			}
			if diff := cmp.Diff(wantSeen, seen); diff != "" {
				t.Errorf("what %s sees (-want +got):\n%s", role, diff)
			}
			wantHome := "/admin/overview"
			if role == auth.Auditor {
				wantHome = "/admin/reports"
			}
			if home.code != redirect || home.loc != wantHome {
				t.Errorf("home: %d -> %q, want -> %q", home.code, home.loc, wantHome)
			}
		})
	}
	// Not signed in: every route refused, nothing queued.
	c := h.client()
	before := len(pending(t, h, "pertini-gw1"))
	for _, r := range routes {
		res := h.do(c, r.method, r.path, r.form)
		wantCode := http.StatusSeeOther
		if r.method == "POST" {
			wantCode = http.StatusUnauthorized
		}
		if res.code != wantCode || (r.method == "GET" && !strings.HasPrefix(res.loc, "/admin/login?next=")) {
			t.Errorf("anonymous %s: %d -> %q", r.name, res.code, res.loc)
		}
	}
	if n := len(pending(t, h, "pertini-gw1")); n != before {
		t.Errorf("anonymous requests queued %d commands", n-before)
	}
}

func names[T any](xs []T, f func(T) string) []string {
	var out []string
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

// Forms without the session's token, with a forged one, another session's,
// or sent cross-origin are refused and change nothing.
func TestCSRF(t *testing.T) {
	h := newHarness(t)
	sd := h.seed()
	mac := sd.open["parco-pertini"][0].ClientMAC
	c, tok := h.login("ida")
	_, otherTok := h.login("oscar")
	cases := []struct {
		name string
		form url.Values
		hdr  []string
	}{
		{"no token", url.Values{"mac": {mac}}, nil},
		{"forged token", url.Values{"mac": {mac}, "csrf": {strings.Repeat("A", 43)}}, nil},
		{"another session's token", url.Values{"mac": {mac}, "csrf": {otherTok}}, nil},
		{"right token, cross-site", url.Values{"mac": {mac}, "csrf": {tok}}, []string{"Sec-Fetch-Site", "cross-site"}},
		{"right token, foreign Origin", url.Values{"mac": {mac}, "csrf": {tok}}, []string{"Origin", "https://evil.example"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do(c, "POST", "/admin/sites/parco-pertini/kick", tc.form, tc.hdr...)
			if res.code != http.StatusForbidden {
				t.Errorf("status %d, want 403", res.code)
			}
			if n := len(pending(t, h, "pertini-gw1")); n != 0 {
				t.Errorf("%d commands queued", n)
			}
		})
	}
	// Signing out needs the token too (no forced logout).
	if res := h.do(c, "POST", "/admin/logout", url.Values{"csrf": {"x"}}); res.code != http.StatusForbidden {
		t.Errorf("logout with a forged token: %d", res.code)
	}
	if res := h.do(c, "GET", "/admin/overview", nil); res.code != http.StatusOK {
		t.Errorf("still signed in after the forged logout? %d", res.code)
	}
	// The login form: a forged double-submit token is refused even with the right password.
	lc := h.client()
	h.do(lc, "GET", "/admin/login", nil)
	res := h.do(lc, "POST", "/admin/login", url.Values{"csrf": {"forged"}, "name": {"ida"}, "password": {password("ida")}})
	if res.code != http.StatusForbidden {
		t.Errorf("login with a forged token: %d", res.code)
	}
	// And the right one works: the control case.
	if res := h.do(c, "POST", "/admin/sites/parco-pertini/kick", url.Values{"mac": {mac}, "csrf": {tok}}); res.code != http.StatusSeeOther {
		t.Errorf("kick with the right token: %d %s", res.code, res.body)
	}
}

func TestLoginRateLimit(t *testing.T) {
	h := newHarness(t)
	c := h.client()
	var codes []int
	for i := 0; i < 5; i++ {
		codes = append(codes, h.loginAttempt(c, "ida", "wrong-password").code)
	}
	// The sixth try has the right password and is refused all the same.
	codes = append(codes, h.loginAttempt(c, "ida", password("ida")).code)
	want := []int{401, 401, 401, 401, 401, 429}
	if diff := cmp.Diff(want, codes); diff != "" {
		t.Errorf("per account (-want +got):\n%s", diff)
	}
	// Another account from the same address is not locked by ida's count.
	if r := h.loginAttempt(h.client(), "oscar", password("oscar")); r.code != http.StatusSeeOther {
		t.Errorf("oscar: %d", r.code)
	}
	// After the window, ida can sign in.
	h.clk.Advance(16 * time.Minute)
	if r := h.loginAttempt(c, "ida", password("ida")); r.code != http.StatusSeeOther {
		t.Errorf("ida after the window: %d", r.code)
	}

	// Per address: 20 attempts over many names, then even a right password is refused.
	h.clk.Advance(16 * time.Minute)
	c = h.client()
	for i := 0; i < 20; i++ {
		if r := h.loginAttempt(c, "nobody"+strings.Repeat("x", i), "pw"); r.code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, r.code)
		}
	}
	if r := h.loginAttempt(c, "aude", password("aude")); r.code != http.StatusTooManyRequests {
		t.Errorf("21st attempt from one address: %d, want 429", r.code)
	}
	var fails, limited int
	for _, e := range auditOf(t, h) {
		switch e.Action {
		case "login.fail":
			fails++
		case "login.limited":
			limited++
		}
	}
	if fails != 25 || limited != 2 {
		t.Errorf("audit: %d login.fail, %d login.limited; want 25, 2", fails, limited)
	}
}

func TestSessionExpiry(t *testing.T) {
	h := newHarness(t)
	get := func(c *http.Client) int { return h.do(c, "GET", "/admin/overview", nil).code }

	// Idle: 29 minutes apart keeps it, 31 minutes idle ends it.
	c, _ := h.login("ida")
	for i := 0; i < 3; i++ {
		h.clk.Advance(29 * time.Minute)
		if code := get(c); code != http.StatusOK {
			t.Fatalf("after %d x 29 min of use: %d", i+1, code)
		}
	}
	h.clk.Advance(31 * time.Minute)
	if code := get(c); code != http.StatusSeeOther {
		t.Errorf("after 31 idle minutes: %d, want 303 to the login page", code)
	}

	// Absolute: 8 hours after login, even if used all along.
	c, _ = h.login("oscar")
	for i := 0; i < 16; i++ {
		h.clk.Advance(29 * time.Minute)
		get(c)
	}
	h.clk.Advance(20 * time.Minute) // 8h04m
	if code := get(c); code != http.StatusSeeOther {
		t.Errorf("8 h after login: %d, want 303", code)
	}

	// Signing out ends it on the server, not only in the browser.
	c, tok := h.login("aude")
	ck := c.Jar.Cookies(mustURL(h.srv.URL))
	if r := h.do(c, "POST", "/admin/logout", url.Values{"csrf": {tok}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.code)
	}
	replay := h.client()
	replay.Jar.SetCookies(mustURL(h.srv.URL), ck)
	if code := h.do(replay, "GET", "/admin/reports", nil).code; code != http.StatusSeeOther {
		t.Errorf("the old cookie after sign-out: %d, want 303", code)
	}

	// An account removed from the file loses its sessions at once; a changed role applies at once.
	c, _ = h.login("oscar")
	hash, _ := auth.HashPasswordWith("x-correct-horse", cheap)
	if err := auth.SetAccount(h.accts, auth.Account{Name: "oscar", Role: auth.Auditor, Hash: hash}); err != nil {
		t.Fatal(err)
	}
	if code := get(c); code != http.StatusForbidden {
		t.Errorf("oscar made auditor: overview %d, want 403", code)
	}
	writeFile(t, h.accts, "")
	if code := h.do(c, "GET", "/admin/reports", nil).code; code != http.StatusSeeOther {
		t.Errorf("oscar removed: %d, want 303", code)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// Every action is in the audit log with who, what and when, and the audit
// page shows it.
func TestAuditEntries(t *testing.T) {
	h := newHarness(t)
	sd := h.seed()
	mac := sd.open["parco-pertini"][1].ClientMAC
	c, tok := h.login("ida")
	h.clk.Advance(time.Minute)
	for _, r := range []struct {
		path string
		form url.Values
	}{
		{"/admin/sites/parco-pertini/kick", url.Values{"mac": {mac}, "csrf": {tok}}},
		{"/admin/sites/parco-pertini/extend", url.Values{"mac": {mac}, "minutes": {"30"}, "csrf": {tok}}},
	} {
		if res := h.do(c, "POST", r.path, r.form); res.code != http.StatusSeeOther {
			t.Fatalf("%s: %d %s", r.path, res.code, res.body)
		}
		h.clk.Advance(time.Second)
	}
	// The time left shown grew by the extension: the parks' 2 h, minus 13m02s online, plus 30 min.
	site := h.do(c, "GET", "/admin/sites/parco-pertini", nil).body
	row := regexp.MustCompile(`(?s)<tr data-mac="` + mac + `">.*?</tr>`).FindString(site)
	if !strings.Contains(row, `<td class="num">2h16m</td>`) {
		t.Errorf("time left after a 30 min extension: row %s", row)
	}
	h.do(c, "GET", "/admin/sites/parco-pertini/poster", nil)
	h.clk.Advance(time.Second)
	h.do(c, "POST", "/admin/logout", url.Values{"csrf": {tok}})
	type entry struct{ At, Actor, Action, Target string }
	var got []entry
	cmds := pending(t, h, "pertini-gw1")
	for _, e := range auditOf(t, h) {
		got = append(got, entry{e.At.Format(time.TimeOnly), e.Actor, e.Action, e.Target})
	}
	want := []entry{ // newest first
		{"10:31:03", "ida", "logout", "127.0.0.1"},
		{"10:31:02", "ida", "poster.show", "parco-pertini"},
		{"10:31:01", "ida", "command.extend", mac},
		{"10:31:00", "ida", "command.kick", mac},
		{"10:30:00", "ida", "login", "127.0.0.1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	if len(cmds) != 2 || cmds[0].Kind != store.CommandKick || cmds[1].Kind != store.CommandExtend || cmds[1].Extend != 30*time.Minute || cmds[0].ClientMAC != mac {
		t.Errorf("queued %+v", cmds)
	}
	c, _ = h.login("aude")
	page := h.do(c, "GET", "/admin/audit", nil)
	for _, w := range []string{"command.kick", "command.extend", "poster.show", mac} {
		if !strings.Contains(page.body, w) {
			t.Errorf("audit page lacks %q", w)
		}
	}
}

// Bad input is refused with a clear message and queues nothing.
func TestBadInput(t *testing.T) {
	h := newHarness(t)
	sd := h.seed()
	c, tok := h.login("ida")
	offline := sd.open["biblioteca-ricottiana"][0].ClientMAC // online elsewhere
	cases := []struct {
		name, path string
		form       url.Values
		code       int
		msg        string
	}{
		{"not a mac", "/admin/sites/parco-pertini/kick", url.Values{"mac": {"zz:zz"}}, 400, "is not a MAC address"},
		{"not online here", "/admin/sites/parco-pertini/kick", url.Values{"mac": {offline}}, 409, "no open session of " + offline + " at parco-pertini"},
		{"unknown site", "/admin/sites/atlantide/kick", url.Values{"mac": {offline}}, 404, "no site &#34;atlantide&#34; in sites.yaml"},
		{"zero minutes", "/admin/sites/parco-pertini/extend", url.Values{"mac": {sd.open["parco-pertini"][0].ClientMAC}, "minutes": {"0"}}, 400, "give a whole number from 1 to 1440"},
		{"minutes not a number", "/admin/sites/parco-pertini/extend", url.Values{"mac": {sd.open["parco-pertini"][0].ClientMAC}, "minutes": {"1e3"}}, 400, "give a whole number from 1 to 1440"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.form.Set("csrf", tok)
			res := h.do(c, "POST", tc.path, tc.form)
			if res.code != tc.code || !strings.Contains(res.body, tc.msg) {
				t.Errorf("%d %q, want %d with %q", res.code, res.body, tc.code, tc.msg)
			}
		})
	}
	for _, gw := range []string{"pertini-gw1", "ricottiana-gw1"} {
		if n := len(pending(t, h, gw)); n != 0 {
			t.Errorf("%s: %d commands queued", gw, n)
		}
	}
	if next := safeNext("//evil.example/admin/"); next != "/admin/" {
		t.Errorf("safeNext let %q through", next)
	}
}

// IT staff create a batch: the sheet shows the codes once, they redeem at
// the site, and the batch is audited with who made it. Bad numbers are
// refused and create nothing.
func TestVouchers(t *testing.T) {
	h := newHarness(t)
	c, tok := h.login("ida")
	if r := h.do(c, "GET", "/admin/sites/parco-pertini/vouchers", nil); r.code != http.StatusOK || !strings.Contains(r.body, "Create and print") {
		t.Fatalf("form: %d", r.code)
	}
	bad := h.do(c, "POST", "/admin/sites/parco-pertini/vouchers", url.Values{"csrf": {tok}, "count": {"0"}, "minutes": {"60"}, "devices": {"1"}, "days": {"7"}, "data_mb": {"x"}})
	if bad.code != http.StatusBadRequest || !strings.Contains(bad.body, "count &#34;0&#34;: give a whole number from 1 to 10000") || !strings.Contains(bad.body, "data_mb &#34;x&#34;") {
		t.Errorf("bad form: %d %.400s", bad.code, bad.body)
	}
	res := h.do(c, "POST", "/admin/sites/parco-pertini/vouchers", url.Values{"csrf": {tok}, "count": {"4"}, "minutes": {"90"}, "devices": {"1"}, "days": {"7"}, "data_mb": {"500"}, "note": {"Notte bianca"}})
	if res.code != http.StatusOK {
		t.Fatalf("create: %d %.400s", res.code, res.body)
	}
	codes := regexp.MustCompile(`<div class="code">([2-9A-Z]{5}-[2-9A-Z]{5})</div>`).FindAllStringSubmatch(res.body, -1)
	if len(codes) != 4 {
		t.Fatalf("sheet has %d codes, want 4", len(codes))
	}
	for i, m := range codes {
		r, err := h.book.Redeem(context.Background(), "parco-pertini", fmt.Sprintf("02:cc:00:00:00:%02x", i), m[1])
		if err != nil || r.Remaining != 90*time.Minute || r.DataBytes != 500_000_000 {
			t.Errorf("redeeming %s: %+v %v", m[1], r, err)
		}
	}
	var created []string
	for _, e := range auditOf(t, h) {
		if e.Action == "voucher.create" {
			created = append(created, e.Actor+" "+e.Target)
		}
	}
	if diff := cmp.Diff([]string{"ida parco-pertini"}, created); diff != "" {
		t.Errorf("voucher.create audit (-want +got):\n%s", diff)
	}
}

// The controller's server is the Commander to pass (it wakes the gateways' long polls and audits).
var _ Commander = (*server.Server)(nil)

// The monthly export is package stats' report of the store's numbers,
// audited; bad parameters are refused.
func TestExport(t *testing.T) {
	h := newHarness(t)
	h.seed()
	c, _ := h.login("aude")
	r := h.do(c, "GET", "/admin/reports/export?month=2026-11&format=csv&site=parco-pertini", nil)
	if r.code != http.StatusOK || !strings.HasPrefix(r.body, "\ufeff") || !strings.Contains(r.body, "\r\n") {
		t.Fatalf("csv: %d %q", r.code, r.body)
	}
	// The seeded month at Parco Pertini: 5 sessions started (3 still open, 2 closed).
	tot, err := h.st.SiteTotals(context.Background(), "parco-pertini")
	if err != nil || tot.Sessions != 5 {
		t.Fatalf("store totals %+v %v", tot, err)
	}
	// Sessions 1-5 (users u001-u005; 1-5 MB down, 0.1-0.5 MB up; methods sms, spid, click, sms, spid).
	if !regexp.MustCompile(`\r\ntotal,2026-11,parco-pertini,Parco Pertini,park,5,5,5,\d+,15000000,1500000,1,2,2,0\r\n$`).MatchString(r.body) {
		t.Errorf("the CSV's total is not the store's: %q", r.body[max(0, len(r.body)-200):])
	}
	for _, q := range []string{"month=2026-13x&format=csv", "month=2026-11&format=xlsx", "month=2026-11&format=csv&site=atlantide"} {
		if r := h.do(c, "GET", "/admin/reports/export?"+q, nil); r.code != http.StatusBadRequest && r.code != http.StatusNotFound {
			t.Errorf("%s: %d", q, r.code)
		}
	}
	var got []string
	for _, e := range auditOf(t, h) {
		if e.Action == "report.export" {
			got = append(got, e.Actor+" "+e.Target+" "+e.Detail)
		}
	}
	if diff := cmp.Diff([]string{"aude parco-pertini 2026-11 csv"}, got); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
}

// Mount sends /admin/ to the dashboard and the rest to the API, untouched.
func TestMount(t *testing.T) {
	h := newHarness(t)
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("api " + r.URL.Path)) })
	m := Mount(api, h.d)
	for path, want := range map[string]string{"/v1/sites/x/policy": "200 api /v1/sites/x/policy", "/healthz": "200 api /healthz",
		"/admin/login": "200 <!doctype html>", "/admin": "303 ", "/admin/overview": "303 "} {
		w := httptest.NewRecorder()
		m.ServeHTTP(w, httptest.NewRequest("GET", "https://controller.example"+path, nil))
		if got := fmt.Sprintf("%d %s", w.Code, w.Body.String()); !strings.HasPrefix(got, want) {
			t.Errorf("%s: %.60q, want %q...", path, got, want)
		}
	}
}
