package dashboard

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/google/go-cmp/cmp"
)

// seedHistory adds days of hourly counters ending at the harness's clock
// for the given sites (deterministic, varied by site and hour).
func seedHistory(t testing.TB, s store.Store, siteIDs []string, end time.Time, days int) {
	t.Helper()
	ctx := context.Background()
	start := end.Truncate(time.Hour).Add(-time.Duration(days*24) * time.Hour)
	for si, id := range siteIDs {
		for at := start; at.Before(end); at = at.Add(time.Hour) {
			h := at.Hour()
			n := int64((si%5+1)*(1+h%12)) / 2
			if h < 7 || h > 22 {
				continue
			}
			c := map[string]int64{
				store.CounterSessions: n, store.CounterBytesDown: n * 45_000_000, store.CounterBytesUp: n * 6_000_000,
				store.CounterOnlineMS: n * 40 * 60_000, store.MethodCounter("click-through"): n - n/3, store.MethodCounter("sms"): n / 3,
			}
			if err := s.IncrHourly(ctx, id, at, c); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A real headless Chromium signs in, opens the overview and a site page
// while the store holds known open sessions at two sites, and the numbers
// on the pages are checked against the store; it then disconnects a
// client with the page's button and the kick is queued for the gateway.
// Screenshots go to $CW_SCREENSHOTS (or the test's temp dir).
func TestChromiumDashboard(t *testing.T) {
	h := newHarnessAt(t, time.Now().UTC())
	sd := h.seed()
	seedHistory(t, h.st, []string{"parco-pertini", "biblioteca-ricottiana", "palazzo-comunale"}, h.clk.Now(), 14)
	ctx := context.Background()
	shots := os.Getenv("CW_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	c := lab.NewChrome(t, lab.ChromeOptions{Shots: shots, Timeout: 90 * time.Second,
		Flags: []chromedp.ExecAllocatorOption{chromedp.Flag("ignore-certificate-errors", true)}}) // httptest's own certificate
	bctx := c.Context()
	fail, do, text, location := c.Fail, c.Do, c.Text, c.Location
	shot := func(name string) {
		t.Helper()
		if n := c.Shot(name); n < 20000 {
			t.Errorf("screenshot %s: only %d bytes", name, n)
		}
	}
	base := h.srv.URL

	// Not signed in: the overview sends the browser to the sign-in page.
	do("open overview", chromedp.Navigate(base+"/admin/overview"), chromedp.WaitVisible("#name"))
	if loc := location(); !strings.HasPrefix(loc, base+"/admin/login?next=") {
		t.Errorf("not signed in: at %s", loc)
	}
	shot("dashboard-login.png")
	do("sign in",
		chromedp.SendKeys("#name", "oscar"),
		chromedp.SendKeys("#password", password("oscar")),
		chromedp.Click("#signin"),
		chromedp.WaitVisible("#online"))
	if loc := location(); loc != base+"/admin/overview" {
		t.Errorf("after sign-in: at %s", loc)
	}

	// The overview's numbers against the store.
	online, today, usersToday := text("#online"), text("#sessions-today"), text("#users-today")
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[[]map[string]string](`[...document.querySelectorAll("#sites tbody tr")].map(r => ({site: r.dataset.site, online: r.querySelector(".online").innerText, today: r.querySelector(".today").innerText, state: r.querySelector(".state").innerText}))`))
	if err != nil {
		fail("read overview rows", err)
	}
	wantOnline, wantToday := 0, int64(0)
	var ids []string
	gotRows, wantRows := map[string]string{}, map[string]string{}
	day := h.d.dayStart(h.clk.Now())
	for _, s := range h.cfg.Sites {
		ids = append(ids, s.ID)
		open, _ := h.st.OpenSessions(ctx, s.ID)
		ds, _ := h.st.Daily(ctx, s.ID, day, day.AddDate(0, 0, 1))
		var n int64
		for _, r := range ds {
			n += r.Counters[store.CounterSessions]
		}
		wantOnline += len(open)
		wantToday += n
		state := "unknown"
		switch s.ID {
		case "parco-pertini", "biblioteca-ricottiana":
			state = "up"
		case "palazzo-comunale":
			state = "down" // one of two gateways heard from, an hour ago
		}
		wantRows[s.ID] = fmt.Sprintf("online %d today %d %s", len(open), n, state)
	}
	for _, r := range rows {
		gotRows[r["site"]] = fmt.Sprintf("online %s today %s %s", r["online"], r["today"], r["state"])
	}
	if diff := cmp.Diff(wantRows, gotRows); diff != "" {
		t.Errorf("overview rows (-store +page):\n%s", diff)
	}
	users, _ := h.st.DistinctUsers(ctx, h.clk.Now(), h.clk.Now(), ids...)
	if online != fmt.Sprint(wantOnline) || today != fmt.Sprint(wantToday) || usersToday != fmt.Sprint(users) || wantOnline != 5 {
		t.Errorf("overview: online %s today %s users %s; store: %d, %d, %d", online, today, usersToday, wantOnline, wantToday, users)
	}
	shot("dashboard-overview.png")

	// The site page: one row per open session, with its MAC and bytes.
	do("open site", chromedp.Click(`#sites a[href="/admin/sites/parco-pertini"]`), chromedp.WaitVisible("#sessions"))
	macs, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#sessions tbody tr")].map(r => r.querySelector(".mac").innerText)`))
	if err != nil {
		fail("read MACs", err)
	}
	downs, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#sessions tbody tr")].map(r => r.querySelector(".down").innerText)`))
	if err != nil {
		fail("read bytes", err)
	}
	var wantMACs, wantDowns []string
	for _, s := range sd.open["parco-pertini"] {
		wantMACs = append(wantMACs, s.ClientMAC)
		wantDowns = append(wantDowns, humanBytes(s.BytesDown))
	}
	sort.Strings(wantMACs)
	sort.Strings(macs)
	if diff := cmp.Diff(wantMACs, macs); diff != "" {
		t.Errorf("site page MACs (-store +page):\n%s", diff)
	}
	if diff := cmp.Diff(wantDowns, downs); diff != "" {
		t.Errorf("site page bytes down (-store +page):\n%s", diff)
	}
	if n := text("#live-count"); n != fmt.Sprint(len(sd.open["parco-pertini"])) {
		t.Errorf("live count %s", n)
	}
	shot("dashboard-site.png")

	// Disconnect the first client with the page's own button.
	do("kick", chromedp.Click(`#sessions tbody tr:first-child button.danger`), chromedp.WaitVisible(".flash"))
	cmds := pending(t, h, "pertini-gw1")
	if len(cmds) != 1 || cmds[0].Kind != store.CommandKick || cmds[0].ClientMAC != sd.open["parco-pertini"][0].ClientMAC {
		t.Errorf("after the click, pending %+v", cmds)
	}
	do("reports", chromedp.Navigate(base+"/admin/reports?period=day"), chromedp.WaitVisible("svg.chart"))
	shot("dashboard-reports.png")

	// IT staff: sign out, sign in again, the failures page and a site's poster.
	do("sign out", chromedp.Click(`form[action="/admin/logout"] button`), chromedp.WaitVisible("#name"))
	do("sign in as IT", chromedp.SendKeys("#name", "ida"), chromedp.SendKeys("#password", password("ida")), chromedp.Click("#signin"), chromedp.WaitVisible("#online"))
	do("failures", chromedp.Navigate(base+"/admin/health"), chromedp.WaitVisible("#sms-none"))
	do("poster", chromedp.Navigate(base+"/admin/sites/parco-pertini/poster"), chromedp.WaitVisible("img"))
	if txt := text(".ssid"); txt != "Rete / Network: Voghera Free WiFi" {
		t.Errorf("poster SSID line %q", txt)
	}
	shot("dashboard-poster.png")
	t.Logf("screenshots in %s", shots)
}
