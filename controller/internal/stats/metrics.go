package stats

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's counters that the login package does not
// keep itself (it counts logins by method and result, SMS requests and
// provider attempts, and whether the daily budget is used up): what the SMS
// cost, how much of the daily budget is used, and the store's latency.
// A nil *Metrics does nothing, so code under test may hold one without a
// registry. Safe for concurrent use.
type Metrics struct {
	smsCost      *prometheus.CounterVec
	budgetUsed   prometheus.Gauge
	budgetLimit  prometheus.Gauge
	storeSeconds *prometheus.HistogramVec
	storeErrors  *prometheus.CounterVec
}

// NewMetrics makes the controller's counters and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		smsCost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "civicwifi_controller_sms_cost_euros_total",
			Help: "What the SMS handed to the provider cost, in euros, by provider.",
		}, []string{"provider"}),
		budgetUsed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "civicwifi_controller_sms_daily_budget_used",
			Help: "SMS codes counted against today's budget of the town.",
		}),
		budgetLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "civicwifi_controller_sms_daily_budget_limit",
			Help: "The town's daily SMS budget (codes per day); 0: none.",
		}),
		storeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "civicwifi_controller_store_seconds",
			Help:    "Latency of store operations, by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12), // 100 µs .. 2.4 s
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "civicwifi_controller_store_errors_total",
			Help: "Store operations that failed (not-found answers excluded), by operation.",
		}, []string{"op"}),
	}
	for _, c := range []prometheus.Collector{m.smsCost, m.budgetUsed, m.budgetLimit, m.storeSeconds, m.storeErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// SMSCost adds what one SMS handed to provider cost, in euros.
func (m *Metrics) SMSCost(provider string, euros float64) {
	if m != nil && euros > 0 {
		m.smsCost.WithLabelValues(provider).Add(euros)
	}
}

// SMSBudget sets today's count against the daily SMS budget and the
// budget (0: none); the alert "budget near limit" compares them.
func (m *Metrics) SMSBudget(used, limit int64) {
	if m != nil {
		m.budgetUsed.Set(float64(used))
		m.budgetLimit.Set(float64(limit))
	}
}

// observe records one store operation that started at t0.
func (m *Metrics) observe(op string, t0 time.Time, err error) {
	m.storeSeconds.WithLabelValues(op).Observe(time.Since(t0).Seconds())
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, context.Canceled) {
		m.storeErrors.WithLabelValues(op).Inc()
	}
}

// Collector is a prometheus.Collector that reads the store on each scrape:
// per site of sites.yaml, residents and sessions online (open sessions),
// sessions and bytes since the store began, and whether a gateway of the
// site is up (a heartbeat within UpWithin).
type Collector struct {
	st       store.Store
	cfg      func() *sites.Config
	log      *slog.Logger
	now      func() time.Time
	upWithin time.Duration
	errs     prometheus.Counter
}

// CollectorOptions tune a Collector; the zero value is fine.
type CollectorOptions struct {
	UpWithin time.Duration    // a gateway is up with a heartbeat this recent (default 90 s: three heartbeats)
	Log      *slog.Logger     // store errors while scraping; nil discards
	Now      func() time.Time // default time.Now
}

var (
	residentsDesc = prometheus.NewDesc("civicwifi_controller_residents_online",
		"Distinct people online at the site now: open sessions counted once per pseudonymous user (per device without one).",
		[]string{"site"}, nil)
	openDesc = prometheus.NewDesc("civicwifi_controller_sessions_open",
		"Open sessions (devices online) at the site now.", []string{"site"}, nil)
	startedDesc = prometheus.NewDesc("civicwifi_controller_sessions_started_total",
		"Sessions started at the site since the store began.", []string{"site"}, nil)
	bytesDesc = prometheus.NewDesc("civicwifi_controller_site_bytes_total",
		"Bytes of the site's sessions since the store began, by direction (down: to the clients).",
		[]string{"site", "direction"}, nil)
	siteUpDesc = prometheus.NewDesc("civicwifi_controller_site_up",
		"1 if a gateway of the site sent a heartbeat within the last 90 s.", []string{"site"}, nil)
)

// NewCollector returns a collector over st for the sites of cfg() (read on
// each scrape, so a reload of sites.yaml shows at once; the server's
// Config method fits). It also counts its own failed reads in
// civicwifi_controller_stats_scrape_errors_total; register it with
// reg.MustRegister(c).
func NewCollector(st store.Store, cfg func() *sites.Config, o CollectorOptions) *Collector {
	if o.UpWithin <= 0 {
		o.UpWithin = 90 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Collector{st: st, cfg: cfg, log: o.Log, now: o.Now, upWithin: o.UpWithin,
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "civicwifi_controller_stats_scrape_errors_total",
			Help: "Store reads that failed while collecting the per-site metrics (the site's series are then missing).",
		})}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{residentsDesc, openDesc, startedDesc, bytesDesc, siteUpDesc} {
		ch <- d
	}
	c.errs.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	defer c.errs.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := c.cfg()
	if cfg == nil {
		return
	}
	now := c.now()
	up := map[string]bool{}
	if gws, err := c.st.ListGateways(ctx); err != nil {
		c.fail("listing gateways", "", err)
	} else {
		for _, g := range gws {
			up[g.ID] = g.Up(now, c.upWithin)
		}
		for _, s := range cfg.Sites {
			v := 0.0
			for _, g := range s.Gateways {
				if up[g.ID] {
					v = 1
				}
			}
			ch <- prometheus.MustNewConstMetric(siteUpDesc, prometheus.GaugeValue, v, s.ID)
		}
	}
	for _, s := range cfg.Sites {
		open, err := c.st.OpenSessions(ctx, s.ID)
		if err != nil {
			c.fail("reading open sessions", s.ID, err)
		} else {
			people := map[string]bool{}
			for _, x := range open {
				if x.UserID != "" {
					people["u:"+x.UserID] = true
				} else {
					people["m:"+x.ClientMAC] = true
				}
			}
			ch <- prometheus.MustNewConstMetric(residentsDesc, prometheus.GaugeValue, float64(len(people)), s.ID)
			ch <- prometheus.MustNewConstMetric(openDesc, prometheus.GaugeValue, float64(len(open)), s.ID)
		}
		t, err := c.st.SiteTotals(ctx, s.ID)
		if err != nil {
			c.fail("reading totals", s.ID, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(startedDesc, prometheus.CounterValue, float64(t.Sessions), s.ID)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(t.BytesDown), s.ID, "down")
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(t.BytesUp), s.ID, "up")
	}
}

func (c *Collector) fail(what, site string, err error) {
	c.errs.Inc()
	c.log.Warn("collecting metrics", "what", what, "site", site, "err", err)
}
