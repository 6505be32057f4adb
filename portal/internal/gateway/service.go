package gateway

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/portal/internal/control"
)

// seenWindow is how recently a device must have been seen to count as a
// captive client on the network.
const seenWindow = 5 * time.Minute

var _ control.Service = (*Gateway)(nil)

// Status implements control.Service.
func (g *Gateway) Status(ctx context.Context) (control.Status, error) {
	clients, _ := g.Clients(ctx)
	st := control.Status{
		Version: g.o.Version, Site: g.o.Config.Site,
		ClientInterface: g.o.Config.ClientIf, UplinkInterface: g.o.Config.UplinkIf,
	}
	for _, c := range clients {
		if c.State == "authorised" {
			st.Authorised++
		} else {
			st.Captive++
		}
	}
	g.mu.Lock()
	st.Started, st.Repairs, st.LastReconcile = g.started, g.repairs, g.lastRec
	g.mu.Unlock()
	if g.o.DNSRunning != nil {
		st.DNSRunning = g.o.DNSRunning()
	}
	if g.o.Controller != nil {
		st.Controller = g.o.Controller()
	}
	return st, nil
}

// Clients implements control.Service: every authorised client and every
// device seen recently on the client network.
func (g *Gateway) Clients(ctx context.Context) ([]control.Client, error) {
	now := g.now()
	byIP := map[netip.Addr]*control.Client{}
	for _, s := range g.Sessions() {
		cs := wireSession(&s)
		byIP[s.IP] = &control.Client{MAC: cs.MAC, IP: cs.IP, State: "authorised", Session: &cs}
	}
	for _, h := range g.o.Hosts.All() {
		if !g.o.Config.ClientSubnet.Contains(h.IP) || h.IP == g.o.Config.GatewayIP {
			continue
		}
		c, ok := byIP[h.IP]
		if ok {
			if c.MAC == h.MAC.String() {
				c.Hostname, c.LastSeen = h.Hostname, h.LastSeen
			}
			continue
		}
		if now.Sub(h.LastSeen) > seenWindow {
			continue
		}
		byIP[h.IP] = &control.Client{MAC: h.MAC.String(), IP: h.IP.String(), Hostname: h.Hostname, LastSeen: h.LastSeen, State: "captive"}
	}
	out := make([]control.Client, 0, len(byIP))
	auth, captive := 0, 0
	for _, c := range byIP {
		out = append(out, *c)
		if c.State == "authorised" {
			auth++
		} else {
			captive++
		}
	}
	g.o.Metrics.clients.WithLabelValues("authorised").Set(float64(auth))
	g.o.Metrics.clients.WithLabelValues("captive").Set(float64(captive))
	sort.Slice(out, func(i, j int) bool {
		a, _ := netip.ParseAddr(out[i].IP)
		b, _ := netip.ParseAddr(out[j].IP)
		return a.Less(b)
	})
	return out, nil
}

// refreshGauges counts authorised and captive clients for the metrics
// without building the full client list.
func (g *Gateway) refreshGauges() {
	now := g.now()
	g.mu.Lock()
	auth := len(g.sessions)
	authed := make(map[netip.Addr]bool, len(g.byIP))
	for ip := range g.byIP {
		authed[ip] = true
	}
	g.mu.Unlock()
	captive := 0
	for _, h := range g.o.Hosts.All() {
		if !authed[h.IP] && g.o.Config.ClientSubnet.Contains(h.IP) && h.IP != g.o.Config.GatewayIP && now.Sub(h.LastSeen) <= seenWindow {
			captive++
		}
	}
	g.o.Metrics.clients.WithLabelValues("authorised").Set(float64(auth))
	g.o.Metrics.clients.WithLabelValues("captive").Set(float64(captive))
}

// Allow implements control.Service.
func (g *Gateway) Allow(ctx context.Context, req control.AllowRequest) (control.Session, error) {
	p, err := req.Parse() // the same checks as the ctl client and the socket server
	if err != nil {
		return control.Session{}, err
	}
	grant := Grant{MAC: p.MAC, IP: p.IP, Method: p.Method, Limits: g.Limits()}
	if grant.Method == "" {
		grant.Method = "ctl"
	}
	// A field left empty keeps the site's default; "0" means no limit.
	l := &grant.Limits
	if req.Duration != "" {
		l.Session = p.Duration
	}
	if req.Idle != "" {
		l.Idle = p.Idle
	}
	if req.Quota != "" {
		l.Quota = p.Quota
	}
	if req.Down != "" {
		l.Down = p.Down
	}
	if req.Up != "" {
		l.Up = p.Up
	}
	s, err := g.Open(ctx, grant)
	if err != nil {
		return control.Session{}, err
	}
	return wireSession(s), nil
}

// Kick implements control.Service.
func (g *Gateway) Kick(ctx context.Context, req control.KickRequest) (control.Session, error) {
	mac, ip, err := control.ParseTarget(req.MAC, req.IP)
	if err != nil {
		return control.Session{}, err
	}
	reason := req.Reason
	if reason == "" {
		reason = "kicked"
	}
	s, err := g.Close(ctx, mac, ip, reason)
	if err != nil {
		return control.Session{}, err
	}
	return wireSession(s), nil
}

func wireSession(s *Session) control.Session {
	return control.Session{
		ID: s.ID, MAC: strings.ToLower(s.MAC.String()), IP: s.IP.String(), Method: s.Method,
		Started: s.Started, Expires: s.Expires, IdleTimeout: s.IdleTimeout, LastActive: s.LastActive,
		QuotaBytes: s.QuotaBytes, DownRate: s.DownRate, UpRate: s.UpRate,
		BytesDown: s.BytesDown, BytesUp: s.BytesUp, Packets: s.Packets,
		Ended: s.Ended, EndReason: s.EndReason,
	}
}
