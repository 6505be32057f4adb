package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gateway's Prometheus metrics.
type Metrics struct {
	clients        *prometheus.GaugeVec
	bytes          *prometheus.CounterVec
	authorisations *prometheus.CounterVec
	ended          *prometheus.CounterVec
	repairs        *prometheus.CounterVec
	errors         *prometheus.CounterVec
	allowSeconds   prometheus.Histogram
	restoreSeconds prometheus.Gauge
}

// NewMetrics registers the gateway's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "civicwifi_gateway_clients", Help: "Clients on the client network by state (authorised, captive).",
		}, []string{"state"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "civicwifi_gateway_client_bytes_total", Help: "Bytes forwarded for authorised clients, by direction.",
		}, []string{"direction"}),
		authorisations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "civicwifi_gateway_authorisations_total", Help: "Sessions opened, by login method.",
		}, []string{"method"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "civicwifi_gateway_sessions_ended_total", Help: "Sessions ended, by reason.",
		}, []string{"reason"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "civicwifi_gateway_reconcile_repairs_total", Help: "Drift repaired by the reconcile loop, by kind.",
		}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "civicwifi_gateway_errors_total", Help: "Errors, by operation.",
		}, []string{"op"}),
		allowSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "civicwifi_gateway_allow_seconds",
			Help:    "Time to authorise a client in the kernel (store, shaper, firewall).",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, 1},
		}),
		restoreSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "civicwifi_gateway_restore_seconds", Help: "Time the last start took to enforce every stored session.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.clients, m.bytes, m.authorisations, m.ended, m.repairs, m.errors, m.allowSeconds, m.restoreSeconds)
	}
	return m
}

// addBytes counts bytes forwarded since the last poll.
func (m *Metrics) addBytes(down, up uint64) {
	m.bytes.WithLabelValues("down").Add(float64(down))
	m.bytes.WithLabelValues("up").Add(float64(up))
}
