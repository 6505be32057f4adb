package dashboard

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"
)

type reportsData struct {
	Period  string // hour, day, month
	Site    string // "" all
	Sites   []sites.Site
	Range   string
	Charts  []barChart
	Totals  []fact
	Periods []string
	Months  []string // the last 12, newest first, for the exports
}

type fact struct{ Name, Value string }

// period returns the bucket starts of the chosen period (ending with the
// current hour, day or month) and the end of the range.
func (d *Dashboard) period(p string, now time.Time) (starts []time.Time, to time.Time, layout string) {
	loc := d.loc()
	switch p {
	case "hour":
		to = now.Truncate(time.Hour).Add(time.Hour)
		return buckets(to.Add(-48*time.Hour), 48, func(t time.Time) time.Time { return t.Add(time.Hour) }), to, "02/01 15h"
	case "month":
		n := now.In(loc)
		first := time.Date(n.Year(), n.Month(), 1, 0, 0, 0, 0, loc)
		to = first.AddDate(0, 1, 0)
		return buckets(first.AddDate(0, -11, 0), 12, func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }), to, "Jan 2006"
	default:
		day := d.dayStart(now)
		to = day.AddDate(0, 0, 1)
		return buckets(day.AddDate(0, 0, -30), 31, func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }), to, "02/01"
	}
}

func (d *Dashboard) reports(c echo.Context) error {
	ctx := c.Request().Context()
	cfg := d.o.Sites()
	rd := reportsData{Period: c.QueryParam("period"), Site: c.QueryParam("site"), Sites: cfg.Sites, Periods: []string{"hour", "day", "month"}}
	if rd.Period != "hour" && rd.Period != "month" {
		rd.Period = "day"
	}
	var ids []string
	if rd.Site != "" {
		if cfg.Site(rd.Site) == nil {
			return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no site %q in sites.yaml", rd.Site))
		}
		ids = []string{rd.Site}
	} else {
		for _, s := range cfg.Sites {
			ids = append(ids, s.ID)
		}
	}
	now := d.o.Now()
	m := now.In(d.loc())
	for i := 0; i < 12; i++ {
		rd.Months = append(rd.Months, time.Date(m.Year(), m.Month()-time.Month(i), 1, 0, 0, 0, 0, d.loc()).Format("2006-01"))
	}
	starts, to, layout := d.period(rd.Period, now)
	from := starts[0]
	rd.Range = fmt.Sprintf("%s – %s", from.In(d.loc()).Format("2006-01-02 15:04"), to.In(d.loc()).Format("2006-01-02 15:04 MST"))
	// The numbers are package stats' (the same as the exports'): its series per hour, day or month, and its
	// totals over the whole range.
	eng := stats.New(d.o.Store, d.loc())
	pts, err := eng.Series(ctx, ids, from, to, stats.Step(rd.Period))
	if err != nil {
		return fmt.Errorf("reading the series: %w", err)
	}
	// The range's totals are the points' sums (the rollups are read once), with the distinct users of the
	// whole range counted once by the store (as stats.Engine.Totals does).
	tot := stats.Totals{Methods: map[string]int64{}}
	for _, p := range pts {
		tot.Sessions += p.Sessions
		tot.OnlineMS += p.OnlineMS
		tot.BytesDown += p.BytesDown
		tot.BytesUp += p.BytesUp
	}
	if rd.Period != "hour" {
		if tot.DistinctUsers, err = d.o.Store.DistinctUsers(ctx, from, to.Add(-time.Millisecond), ids...); err != nil {
			return fmt.Errorf("counting distinct users: %w", err)
		}
	}
	labels := make([]string, len(pts))
	col := func(f func(stats.Totals) float64) []float64 {
		v := make([]float64, len(pts))
		for i, p := range pts {
			v[i] = f(p.Totals)
		}
		return v
	}
	for i, p := range pts {
		labels[i] = p.Start.In(d.loc()).Format(layout)
	}
	rd.Charts = append(rd.Charts, stacked("Sessions started", labels, []seriesData{
		{Name: "sessions", Values: col(func(t stats.Totals) float64 { return float64(t.Sessions) }), Format: count}}))
	users := stacked("Distinct users", labels, []seriesData{
		{Name: "users", Values: col(func(t stats.Totals) float64 { return float64(t.DistinctUsers) }), Format: count}})
	if rd.Period == "hour" {
		users.Note = "Distinct users are counted per day, not per hour: choose day or month."
		users.SVG = ""
	} else {
		users.Note = "Each user counted once per bar, across the sites shown. Days whose user lists were purged after the retention period count nobody."
	}
	rd.Charts = append(rd.Charts, users)
	bytesF := func(v float64) string { return humanBytes(v) }
	rd.Charts = append(rd.Charts, stacked("Data (down + up)", labels, []seriesData{
		{Name: "down", Values: col(func(t stats.Totals) float64 { return float64(t.BytesDown) }), Format: bytesF},
		{Name: "up", Values: col(func(t stats.Totals) float64 { return float64(t.BytesUp) }), Format: bytesF},
	}))
	methods := map[string]bool{}
	for _, p := range pts {
		for m, n := range p.Methods {
			if n > 0 {
				methods[m] = true
			}
		}
	}
	var ms []seriesData
	for _, m := range sortedKeys(methods) {
		ms = append(ms, seriesData{Name: m, Values: col(func(t stats.Totals) float64 { return float64(t.Methods[m]) }), Format: count})
	}
	mc := stacked("Login methods", labels, ms)
	if len(ms) == 0 {
		mc.Note = "No session in this range recorded a login method."
	}
	rd.Charts = append(rd.Charts, mc)
	rd.Totals = []fact{
		{"Sessions", fmt.Sprint(tot.Sessions)},
		{"Hours online", fmt.Sprintf("%.1f", tot.OnlineHours())},
		{"Data down", humanBytes(tot.BytesDown)},
		{"Data up", humanBytes(tot.BytesUp)},
	}
	if rd.Period != "hour" {
		rd.Totals = append([]fact{{"Distinct users", fmt.Sprint(tot.DistinctUsers)}}, rd.Totals...)
	}
	return d.render(c, http.StatusOK, "reports", page{Title: "Reports", Session: sessionOf(c), Nav: "reports", Data: rd})
}

// metricRow is one sample of a metric family, for the health page.
type metricRow struct {
	Name, Labels string
	Value        float64
	Failure      bool // a result other than ok, sent or granted; an exhausted budget
}

type healthData struct {
	SMSMetrics    []metricRow
	SMSFailures   float64
	SMSCounters   []fact // store counters named sms* over the last 24 h
	Refusals      []metricRow
	LoginRefusals []metricRow // residents' logins refused (login package's civicwifi_controller_logins_total)
	HasGatherer   bool
	LoginFailures []store.AuditEntry
}

// health shows what the controller knows of failing SMS deliveries and
// authentication errors: its metrics (gateway refusals; any sms family),
// the store's sms* hourly counters, and the dashboard's own failed logins.
func (d *Dashboard) health(c echo.Context) error {
	ctx := c.Request().Context()
	hd := healthData{HasGatherer: d.o.Gatherer != nil}
	if d.o.Gatherer != nil {
		fams, err := d.o.Gatherer.Gather()
		if err != nil {
			d.log.Warn("reading metrics", "err", err)
		}
		for _, f := range fams {
			name := f.GetName()
			switch {
			case name == "civicwifi_controller_gateway_refusals_total":
				hd.Refusals = append(hd.Refusals, rowsOf(f)...)
			case name == "civicwifi_controller_logins_total":
				for _, r := range rowsOf(f) {
					if r.Failure && r.Value > 0 {
						hd.LoginRefusals = append(hd.LoginRefusals, r)
					}
				}
			case strings.Contains(name, "sms"):
				for _, r := range rowsOf(f) {
					hd.SMSMetrics = append(hd.SMSMetrics, r)
					if r.Failure {
						hd.SMSFailures += r.Value
					}
				}
			}
		}
	}
	now := d.o.Now()
	sms := map[string]int64{}
	for _, s := range d.o.Sites().Sites {
		rs, err := d.o.Store.Hourly(ctx, s.ID, now.Add(-24*time.Hour), now.Add(time.Hour))
		if err != nil {
			return fmt.Errorf("reading counters of %s: %w", s.ID, err)
		}
		for _, r := range rs {
			for k, v := range r.Counters {
				if strings.HasPrefix(k, "sms") {
					sms[k] += v
				}
			}
		}
	}
	for _, k := range sortedKeys(sms) {
		hd.SMSCounters = append(hd.SMSCounters, fact{k, fmt.Sprint(sms[k])})
	}
	es, err := d.o.Store.ListAudit(ctx, now.Add(-24*time.Hour), now.Add(time.Second), 500)
	if err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	for _, e := range es {
		if e.Action == "login.fail" || e.Action == "login.limited" || e.Action == "sso.fail" {
			hd.LoginFailures = append(hd.LoginFailures, e)
		}
	}
	return d.render(c, http.StatusOK, "health", page{Title: "Failures", Session: sessionOf(c), Nav: "health", Data: hd})
}

func rowsOf(f *dto.MetricFamily) []metricRow {
	var out []metricRow
	for _, m := range f.GetMetric() {
		var ls []string
		fail := false
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
			if l.GetName() == "result" {
				switch l.GetValue() {
				case "ok", "sent", "granted":
				default:
					fail = true
				}
			}
		}
		v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
		if f.GetType() == dto.MetricType_GAUGE && strings.Contains(f.GetName(), "exhausted") {
			fail = true
		}
		out = append(out, metricRow{Name: f.GetName(), Labels: strings.Join(ls, " "), Value: v, Failure: fail && v > 0})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Labels < out[j].Labels })
	return out
}
