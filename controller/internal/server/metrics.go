package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GatewayDownAfter is how long after its last heartbeat a gateway counts as down (three 30 s heartbeats).
const GatewayDownAfter = 90 * time.Second

var (
	apUpDesc = prometheus.NewDesc("civicwifi_controller_access_point_up",
		"1 if the access point of sites.yaml checked in within its missed check-ins, 0 if it is offline or never enrolled.",
		[]string{"site", "mac"}, nil)
	gwUpDesc = prometheus.NewDesc("civicwifi_controller_gateway_up",
		"1 if the gateway of sites.yaml sent a heartbeat within the last 90 s.",
		[]string{"site", "gateway"}, nil)
	gwClientsDesc = prometheus.NewDesc("civicwifi_controller_gateway_clients",
		"Authorised clients on the gateway at its last heartbeat.",
		[]string{"site", "gateway"}, nil)
)

// fleet is a collector that reads the state of the gateways and access points of sites.yaml on each scrape.
type fleet struct{ srv *Server }

func (f fleet) Describe(ch chan<- *prometheus.Desc) {
	ch <- apUpDesc
	ch <- gwUpDesc
	ch <- gwClientsDesc
}

func (f fleet) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, now := f.srv.snap.Load(), time.Now()
	for _, site := range snap.cfg.Sites {
		for _, g := range site.Gateways {
			up, clients := 0.0, 0.0
			if st, err := f.srv.st.Gateway(ctx, g.ID); err == nil {
				if st.Up(now, GatewayDownAfter) {
					up = 1
				}
				clients = float64(st.Health.ClientsOnline)
			}
			ch <- prometheus.MustNewConstMetric(gwUpDesc, prometheus.GaugeValue, up, site.ID, g.ID)
			ch <- prometheus.MustNewConstMetric(gwClientsDesc, prometheus.GaugeValue, clients, site.ID, g.ID)
		}
		for _, ap := range site.AccessPoints {
			up := 0.0
			if rec, err := registry(f).GetAP(ctx, ap.MAC); err == nil && !rec.Offline(now, f.srv.ap.OfflineAfter()) {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(apUpDesc, prometheus.GaugeValue, up, site.ID, ap.MAC)
		}
	}
}
