package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// The reports page's totals and bars are the store's numbers.
func TestReportsNumbers(t *testing.T) {
	h := newHarness(t)
	h.seed()
	seedHistory(t, h.st, []string{"parco-pertini", "biblioteca-ricottiana"}, h.clk.Now(), 40)
	c, _ := h.login("aude")
	kpi := regexp.MustCompile(`<div class="n">([^<]*)</div><div class="l">([^<]*)</div>`)
	for _, tc := range []struct {
		query string
		sites []string
		bars  int
	}{
		{"period=day&site=parco-pertini", []string{"parco-pertini"}, 31},
		{"period=month", nil, 12},
		{"period=hour&site=biblioteca-ricottiana", []string{"biblioteca-ricottiana"}, 48},
	} {
		t.Run(tc.query, func(t *testing.T) {
			r := h.do(c, "GET", "/admin/reports?"+tc.query, nil)
			if r.code != http.StatusOK {
				t.Fatalf("%d %.300s", r.code, r.body)
			}
			got := map[string]string{}
			for _, m := range kpi.FindAllStringSubmatch(r.body, -1) {
				got[m[2]] = m[1]
			}
			// Independently: sum the store's hourly rollups over the page's range.
			starts, to, _ := h.d.period(strings.TrimPrefix(strings.Split(tc.query, "&")[0], "period="), h.clk.Now())
			ids := tc.sites
			if ids == nil {
				for _, s := range h.cfg.Sites {
					ids = append(ids, s.ID)
				}
			}
			var sessions, down int64
			for _, id := range ids {
				rs, err := h.st.Hourly(context.Background(), id, starts[0], to)
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range rs {
					sessions += x.Counters[store.CounterSessions]
					down += x.Counters[store.CounterBytesDown]
				}
			}
			if sessions < 100 {
				t.Fatalf("the seed put only %d sessions in range", sessions)
			}
			if got["Sessions"] != fmt.Sprint(sessions) || got["Data down"] != humanBytes(down) {
				t.Errorf("page: sessions %s, down %s; store: %d, %s", got["Sessions"], got["Data down"], sessions, humanBytes(down))
			}
			// The first chart's numbers table has one row per bar.
			first := r.body[strings.Index(r.body, "<h2>Sessions started</h2>"):]
			first = first[:strings.Index(first, "</table>")]
			if n := strings.Count(first, "<tr><td>"); n != tc.bars {
				t.Errorf("%d bars, want %d", n, tc.bars)
			}
			if strings.HasPrefix(tc.query, "period=hour") != strings.Contains(r.body, "Distinct users are counted per day, not per hour") {
				t.Error("the per-hour note on distinct users is wrong")
			}
		})
	}
}
