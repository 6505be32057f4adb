package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"github.com/civicwifi/civicwifi/portal/internal/discovery"
	"github.com/civicwifi/civicwifi/portal/internal/firewall"
	"github.com/civicwifi/civicwifi/portal/internal/shaper"
)

// fakeFW keeps the kernel state as a map; counters are set by the test.
type fakeFW struct {
	mu      sync.Mutex
	allowed map[netip.Addr]firewall.Grant
	usage   map[netip.Addr]firewall.Usage
	revoked []netip.Addr
	// revokeCalls is the number of clients of each Revoke call.
	revokeCalls []int
	fail        error
	// onUsage runs after Usage has read the state, before it returns.
	onUsage func()
	// onReconcileRead runs when Reconcile starts, before it reads the
	// state (want is already taken) and before it takes the guard.
	onReconcileRead func()
	// onAllow, if set, runs at the start of Allow (outside mu).
	onAllow func(g firewall.Grant)
}

func newFakeFW() *fakeFW {
	return &fakeFW{allowed: map[netip.Addr]firewall.Grant{}, usage: map[netip.Addr]firewall.Usage{}}
}
func (f *fakeFW) Setup(context.Context) error { return nil }
func (f *fakeFW) Allow(_ context.Context, g firewall.Grant) error {
	if f.onAllow != nil {
		f.onAllow(g)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.allowed[g.IP] = g
	if _, ok := f.usage[g.IP]; !ok {
		f.usage[g.IP] = firewall.Usage{Bytes: g.UsedBytes, DownBytes: g.UsedDownBytes}
	}
	return nil
}
func (f *fakeFW) Revoke(_ context.Context, cs ...firewall.Client) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokeCalls = append(f.revokeCalls, len(cs))
	for _, c := range cs {
		delete(f.allowed, c.IP)
		delete(f.usage, c.IP)
		f.revoked = append(f.revoked, c.IP)
	}
	return nil
}

// Reconcile behaves like the kernel's: it reads unlocked, then repairs
// under the guard, leaving stale clients alone.
func (f *fakeFW) Reconcile(_ context.Context, want []firewall.Grant, gd firewall.Guard) (firewall.Repairs, error) {
	f.mu.Lock()
	hook := f.onReconcileRead
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	f.mu.Lock()
	read := maps.Clone(f.allowed)
	f.mu.Unlock()
	if gd != nil {
		gd.Lock()
		defer gd.Unlock()
	}
	stale := func(ip netip.Addr) bool { return gd != nil && gd.Stale(ip) }
	f.mu.Lock()
	defer f.mu.Unlock()
	var r firewall.Repairs
	keep := map[netip.Addr]bool{}
	for _, g := range want {
		if stale(g.IP) {
			continue
		}
		keep[g.IP] = true
		if _, ok := read[g.IP]; !ok {
			f.allowed[g.IP] = g
			f.usage[g.IP] = firewall.Usage{Bytes: g.UsedBytes, DownBytes: g.UsedDownBytes}
			r.Entries++
		}
	}
	for ip := range read {
		if !keep[ip] && !stale(ip) {
			delete(f.allowed, ip)
			r.Entries++
		}
	}
	return r, nil
}
func (f *fakeFW) Usage(context.Context) (map[netip.Addr]firewall.Usage, error) {
	f.mu.Lock()
	out := map[netip.Addr]firewall.Usage{}
	for ip, u := range f.usage {
		if _, ok := f.allowed[ip]; ok {
			out[ip] = u
		}
	}
	hook := f.onUsage
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	return out, nil
}
func (f *fakeFW) Teardown(context.Context) error { return nil }
func (f *fakeFW) set(ip netip.Addr, u firewall.Usage) {
	f.mu.Lock()
	f.usage[ip] = u
	f.mu.Unlock()
}

type fakeShaper struct {
	mu     sync.Mutex
	limits map[netip.Addr]shaper.Limit
	setErr error  // Set fails with it when set
	onSet  func() // runs at the start of Set, without s.mu
}

func (s *fakeShaper) Setup(context.Context) error { return nil }
func (s *fakeShaper) Set(_ context.Context, l shaper.Limit) error {
	s.mu.Lock()
	hook := s.onSet
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.setErr != nil {
		return s.setErr
	}
	s.limits[l.IP] = l
	return nil
}
func (s *fakeShaper) Remove(_ context.Context, ip netip.Addr) error {
	s.mu.Lock()
	delete(s.limits, ip)
	s.mu.Unlock()
	return nil
}
func (s *fakeShaper) Reconcile(_ context.Context, want []shaper.Limit, gd shaper.Guard) (int, error) {
	if gd != nil {
		gd.Lock()
		defer gd.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[netip.Addr]shaper.Limit{}
	for ip, l := range s.limits {
		if gd != nil && gd.Stale(ip) {
			next[ip] = l
		}
	}
	for _, l := range want {
		if gd == nil || !gd.Stale(l.IP) {
			next[l.IP] = l
		}
	}
	s.limits = next
	return 0, nil
}
func (s *fakeShaper) Teardown(context.Context) error       { return nil }
func (s *fakeShaper) Intact(context.Context) (bool, error) { return true, nil }

type fakeHosts struct{ hosts []discovery.Host }

func (h fakeHosts) Lookup(ip netip.Addr) (discovery.Host, bool) {
	for _, x := range h.hosts {
		if x.IP == ip {
			return x, true
		}
	}
	return discovery.Host{}, false
}
func (h fakeHosts) LookupMAC(mac net.HardwareAddr) (discovery.Host, bool) {
	for _, x := range h.hosts {
		if x.MAC.String() == mac.String() {
			return x, true
		}
	}
	return discovery.Host{}, false
}
func (h fakeHosts) All() []discovery.Host { return h.hosts }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type rig struct {
	gw    *Gateway
	fw    *fakeFW
	sh    *fakeShaper
	store *Store
	clk   *clock
	dir   string
}

var (
	mac1 = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	mac2 = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	ip1  = netip.MustParseAddr("10.20.0.11")
	ip2  = netip.MustParseAddr("10.20.0.12")
)

func testConfig() *config.Config {
	return &config.Config{
		Site: "t", ClientIf: "br-cw", UplinkIf: "wan0",
		GatewayIP: netip.MustParseAddr("10.20.0.1"), ClientSubnet: netip.MustParsePrefix("10.20.0.0/22"),
		Limits: config.Limits{Down: 2 * quantity.Mbit, Up: quantity.Mbit, Session: time.Hour, Idle: 10 * time.Minute, Quota: 100 * quantity.MB},
	}
}

func newRig(t *testing.T, dir string, fw *fakeFW, opts ...func(*Options)) *rig {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if fw == nil {
		fw = newFakeFW()
	}
	clk := &clock{t: time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)}
	sh := &fakeShaper{limits: map[netip.Addr]shaper.Limit{}}
	o := Options{
		Config: testConfig(), FW: fw, Shaper: sh, Store: store,
		Hosts: fakeHosts{hosts: []discovery.Host{{MAC: mac1, IP: ip1, LastSeen: clk.now()}, {MAC: mac2, IP: ip2, LastSeen: clk.now()}}},
		Log:   slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clk.now,
	}
	for _, f := range opts {
		f(&o)
	}
	gw := New(o)
	if err := gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &rig{gw: gw, fw: fw, sh: sh, store: store, clk: clk, dir: dir}
}

func TestSessionEnds(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		limits func(*config.Limits)
		drive  func(r *rig)
		reason string
	}{
		{"expiry", func(l *config.Limits) { l.Session = time.Minute }, func(r *rig) { r.clk.add(61 * time.Second) }, "expired"},
		{"idle", func(l *config.Limits) { l.Idle = 5 * time.Minute }, func(r *rig) {
			r.clk.add(4 * time.Minute)
			r.fw.set(ip1, firewall.Usage{Bytes: 100, Packets: 2})
			if err := r.gw.poll(ctx); err != nil {
				panic(err)
			}
			if _, ok := r.gw.SessionFor(ip1); !ok {
				panic("ended while active")
			}
			r.clk.add(5*time.Minute + time.Second)
		}, "idle"},
		{"quota", func(l *config.Limits) { l.Quota = 1000 }, func(r *rig) { r.fw.set(ip1, firewall.Usage{Bytes: 1001, Packets: 3, DownBytes: 900}) }, "quota"},
		{"kernel says over quota", func(l *config.Limits) { l.Quota = 1000 }, func(r *rig) { r.fw.set(ip1, firewall.Usage{Bytes: 999, Packets: 3, OverQuota: true}) }, "quota"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "", nil)
			l := testConfig().Limits
			tc.limits(&l)
			if _, err := r.gw.Open(ctx, Grant{MAC: mac1, Method: "ctl", Limits: l}); err != nil {
				t.Fatal(err)
			}
			if _, ok := r.fw.allowed[ip1]; !ok {
				t.Fatal("not allowed in the firewall")
			}
			tc.drive(r)
			if err := r.gw.poll(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := r.gw.SessionFor(ip1); ok {
				t.Fatal("session still active")
			}
			if _, ok := r.fw.allowed[ip1]; ok {
				t.Error("still allowed in the firewall")
			}
			// Its shaping class is parked for the address's next
			// session, and removed once unused for parkFor.
			if _, ok := r.gw.parked[ip1]; !ok {
				t.Error("shaping class not parked")
			}
			r.clk.add(parkFor)
			r.gw.unpark(ctx, 256)
			if _, ok := r.sh.limits[ip1]; ok {
				t.Error("still shaped after parkFor")
			}
			ended, _ := r.store.Ended()
			if len(ended) != 1 || ended[0].EndReason != tc.reason {
				t.Fatalf("ended = %+v, want one with reason %q", ended, tc.reason)
			}
		})
	}
}

func TestRestartAdoptsSessionsWithCounters(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fw := newFakeFW()
	r := newRig(t, dir, fw)
	if _, err := r.gw.Open(ctx, Grant{IP: ip1, Method: "ctl", Limits: testConfig().Limits}); err != nil {
		t.Fatal(err)
	}
	short := testConfig().Limits
	short.Session = time.Minute
	if _, err := r.gw.Open(ctx, Grant{IP: ip2, Method: "ctl", Limits: short}); err != nil {
		t.Fatal(err)
	}
	fw.set(ip1, firewall.Usage{Bytes: 5000, DownBytes: 4000, Packets: 10})
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.gw.flush(); err != nil {
		t.Fatal(err)
	}
	r.store.Close()

	// The kernel lost everything (reboot); two minutes passed.
	fw2 := newFakeFW()
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	clk := &clock{t: r.clk.now().Add(2 * time.Minute)}
	gw := New(Options{Config: testConfig(), FW: fw2, Shaper: &fakeShaper{limits: map[netip.Addr]shaper.Limit{}}, Store: store,
		Hosts: fakeHosts{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clk.now})
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	g, ok := fw2.allowed[ip1]
	if !ok || g.UsedBytes != 5000 || g.UsedDownBytes != 4000 || g.MAC.String() != mac1.String() {
		t.Fatalf("re-enforced grant = %+v, %v; want ip1 with counters 5000/4000", g, ok)
	}
	if _, ok := fw2.allowed[ip2]; ok {
		t.Error("a session that expired while the daemon was down was enforced again")
	}
	ended, _ := store.Ended()
	if len(ended) != 1 || ended[0].IP != ip2 || ended[0].EndReason != "expired" {
		t.Errorf("ended = %+v", ended)
	}
}

// Sessions that end together are revoked with one firewall call: those of
// one poll, and those that expired while the daemon was down.
func TestEndsRevokeInOneCall(t *testing.T) {
	ctx := context.Background()
	short := testConfig().Limits
	short.Session = time.Minute
	open := func(r *rig) {
		t.Helper()
		for _, ip := range []netip.Addr{ip1, ip2} {
			if _, err := r.gw.Open(ctx, Grant{IP: ip, Method: "ctl", Limits: short}); err != nil {
				t.Fatal(err)
			}
		}
	}
	both := []netip.Addr{ip1, ip2}
	sorted := func(ips []netip.Addr) []netip.Addr {
		ips = slices.Clone(ips)
		slices.SortFunc(ips, netip.Addr.Compare)
		return ips
	}

	r := newRig(t, "", nil)
	open(r)
	r.clk.add(61 * time.Second)
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{2}, r.fw.revokeCalls); diff != "" {
		t.Errorf("clients of each Revoke after one poll ended two sessions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(both, sorted(r.fw.revoked), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("revoked (-want +got):\n%s", diff)
	}
	r.clk.add(parkFor)
	r.gw.unpark(ctx, 256)
	if len(r.sh.limits) != 0 {
		t.Errorf("still shaped after parkFor: %v", r.sh.limits)
	}

	dir := t.TempDir()
	r = newRig(t, dir, nil)
	open(r)
	r.store.Close()
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	fw := newFakeFW()
	clk := &clock{t: r.clk.now().Add(2 * time.Minute)}
	gw := New(Options{Config: testConfig(), FW: fw, Shaper: &fakeShaper{limits: map[netip.Addr]shaper.Limit{}}, Store: store,
		Hosts: fakeHosts{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clk.now})
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{2}, fw.revokeCalls); diff != "" {
		t.Errorf("clients of each Revoke at a start after two sessions expired (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(both, sorted(fw.revoked), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("revoked at start (-want +got):\n%s", diff)
	}
	if ended, _ := store.Ended(); len(ended) != 2 {
		t.Errorf("ended at start = %+v, want both", ended)
	}
}

func TestAllowErrors(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	for _, tc := range []struct {
		name string
		req  control.AllowRequest
		want error
	}{
		{"nothing", control.AllowRequest{}, control.ErrBadRequest},
		{"bad mac", control.AllowRequest{MAC: "02:00:00:00:00"}, control.ErrBadRequest},
		{"bad ip", control.AllowRequest{IP: "10.20.0.300"}, control.ErrBadRequest},
		{"outside subnet", control.AllowRequest{IP: "192.168.1.5", MAC: "02:00:00:00:00:09"}, control.ErrBadRequest},
		{"gateway address", control.AllowRequest{IP: "10.20.0.1", MAC: "02:00:00:00:00:09"}, control.ErrBadRequest},
		{"multicast mac", control.AllowRequest{IP: "10.20.0.50", MAC: "01:00:5e:00:00:01"}, control.ErrBadRequest},
		{"unknown client", control.AllowRequest{IP: "10.20.0.99"}, control.ErrNotFound},
		{"bad rate", control.AllowRequest{IP: "10.20.0.11", Down: "5 Mbps"}, control.ErrBadRequest},
		{"bad duration", control.AllowRequest{IP: "10.20.0.11", Duration: "1 day"}, control.ErrBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.gw.Allow(ctx, tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if len(r.gw.Sessions()) != 0 || len(r.fw.allowed) != 0 {
				t.Fatal("a rejected request changed state")
			}
		})
	}
}

func TestAllowUpdatesAndDisplaces(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	s1, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String()})
	if err != nil {
		t.Fatal(err)
	}
	if s1.MAC != mac1.String() || s1.DownRate != uint64(2*quantity.Mbit) {
		t.Fatalf("session = %+v", s1)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 700, DownBytes: 500, Packets: 4})
	r.gw.poll(ctx)
	s2, err := r.gw.Allow(ctx, control.AllowRequest{MAC: mac1.String(), IP: ip1.String(), Down: "20mbit", Quota: "1GB"})
	if err != nil {
		t.Fatal(err)
	}
	if s2.ID != s1.ID || s2.BytesDown != 500 || s2.BytesUp != 200 || s2.QuotaBytes != 1e9 {
		t.Fatalf("updated session = %+v, want same id and counters kept", s2)
	}
	if got := r.sh.limits[ip1].Down; got != 20*quantity.Mbit {
		t.Errorf("shaper down = %v, want 20mbit", got)
	}
	// Another device takes the address: the old session ends.
	s3, err := r.gw.Allow(ctx, control.AllowRequest{MAC: mac2.String(), IP: ip1.String()})
	if err != nil {
		t.Fatal(err)
	}
	if s3.ID == s1.ID || len(r.gw.Sessions()) != 1 {
		t.Fatalf("sessions = %+v", r.gw.Sessions())
	}
	if _, err := r.gw.Kick(ctx, control.KickRequest{MAC: mac1.String()}); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("kick of displaced = %v, want not found", err)
	}
	if _, err := r.gw.Kick(ctx, control.KickRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	if len(r.fw.allowed) != 0 {
		t.Error("kick left the client allowed")
	}
}

func TestReconcileRepairsDrift(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 300, DownBytes: 100, Packets: 3})
	r.gw.poll(ctx)
	// Someone flushed the set.
	r.fw.mu.Lock()
	delete(r.fw.allowed, ip1)
	delete(r.fw.usage, ip1)
	r.fw.allowed[ip2] = firewall.Grant{Client: firewall.Client{IP: ip2, MAC: mac2}}
	r.fw.mu.Unlock()
	n, err := r.gw.reconcile(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("repairs = %d, want 2", n)
	}
	if g := r.fw.allowed[ip1]; g.UsedBytes != 300 || g.UsedDownBytes != 100 {
		t.Errorf("re-added grant = %+v, want counters carried", g)
	}
	if _, ok := r.fw.allowed[ip2]; ok {
		t.Error("an element nobody granted was left in place")
	}
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	r := newRig(t, "", nil)
	r.gw.o.Metrics = NewMetrics(reg)
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 1500, DownBytes: 1000, Packets: 3})
	r.gw.poll(ctx)
	r.fw.set(ip1, firewall.Usage{Bytes: 2500, DownBytes: 1800, Packets: 5})
	r.gw.poll(ctx)
	r.gw.refreshGauges()
	if _, err := r.gw.Kick(ctx, control.KickRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	m := r.gw.o.Metrics
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"authorisations ctl", m.authorisations.WithLabelValues("ctl"), 1},
		{"ended kicked", m.ended.WithLabelValues("kicked"), 1},
		{"bytes down", m.bytes.WithLabelValues("down"), 1800},
		{"bytes up", m.bytes.WithLabelValues("up"), 700},
		{"authorised gauge before kick", m.clients.WithLabelValues("authorised"), 1},
		{"captive gauge", m.clients.WithLabelValues("captive"), 1},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestClickThroughRules(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	// An operator's session with tight limits cannot be lifted by a click.
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String(), Down: "128kbit", Quota: "1MB"}); err != nil {
		t.Fatal(err)
	}
	s, err := r.gw.ClickThrough(ctx, ip1)
	if err != nil || s.DownRate != uint64(128*quantity.Kbit) || s.QuotaBytes != 1e6 {
		t.Fatalf("click on an existing session = %+v, %v; want it unchanged", s, err)
	}
	// The same device on another address cannot open a second session.
	r.gw.o.Hosts = fakeHosts{hosts: []discovery.Host{{MAC: mac1, IP: ip2, LastSeen: r.clk.now()}}}
	if _, err := r.gw.ClickThrough(ctx, ip2); !errors.Is(err, ErrRefused) {
		t.Fatalf("second session for one MAC: %v, want refused", err)
	}
	// Another device cannot take the address of a session by clicking.
	r.gw.o.Hosts = fakeHosts{hosts: []discovery.Host{{MAC: mac2, IP: ip1, LastSeen: r.clk.now()}}}
	if _, err := r.gw.ClickThrough(ctx, ip1); !errors.Is(err, ErrRefused) {
		t.Fatalf("click taking another device's address: %v, want refused", err)
	}
	if got := r.fw.allowed[ip1]; got.MAC.String() != mac1.String() {
		t.Fatalf("the session's owner changed: %+v", got)
	}
	// Kicked: no way back in by click-through until the session would have expired.
	r.gw.o.Hosts = fakeHosts{hosts: []discovery.Host{{MAC: mac1, IP: ip1, LastSeen: r.clk.now()}}}
	if _, err := r.gw.Kick(ctx, control.KickRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.gw.ClickThrough(ctx, ip1); !errors.Is(err, ErrRefused) {
		t.Fatalf("click after kick: %v, want refused", err)
	}
	r.clk.add(2 * time.Hour)
	if s, err := r.gw.ClickThrough(ctx, ip1); err != nil || s.Method != "click-through" {
		t.Fatalf("click after the lockout: %+v, %v", s, err)
	}
}

func TestRefusedAllowLeavesNothing(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String(), Down: "1kbit"}); !errors.Is(err, control.ErrBadRequest) {
		t.Fatalf("rate below the minimum: %v, want bad request", err)
	}
	r.fw.fail = errors.New("kernel says no")
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String()}); err == nil {
		t.Fatal("allow succeeded although the kernel refused")
	}
	if len(r.gw.Sessions()) != 0 || len(r.fw.allowed) != 0 {
		t.Fatalf("a refused allow left a session: %+v", r.gw.Sessions())
	}
	if _, err := r.gw.reconcile(ctx, true); err != nil {
		t.Fatal(err)
	}
	if len(r.fw.allowed) != 0 {
		t.Fatal("reconcile let in a client whose allow was refused")
	}
	active, _ := r.store.Active()
	if len(active) != 0 {
		t.Fatalf("store keeps %d active sessions", len(active))
	}
	// A refused update keeps the session as it was.
	r.fw.fail = nil
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String(), Down: "2mbit"}); err != nil {
		t.Fatal(err)
	}
	r.fw.fail = errors.New("kernel says no")
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String(), Down: "50mbit"}); err == nil {
		t.Fatal("update succeeded although the kernel refused")
	}
	if got := r.gw.Sessions(); len(got) != 1 || got[0].DownRate != uint64(2*quantity.Mbit) {
		t.Fatalf("after a refused update: %+v", got)
	}
}

func TestCountersNeverMoveBetweenDirections(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 1000, DownBytes: 800, Packets: 5})
	r.gw.poll(ctx)
	// Someone flushed cw-dl: the kernel now says all bytes went up.
	r.fw.set(ip1, firewall.Usage{Bytes: 1100, DownBytes: 0, Packets: 6})
	r.gw.poll(ctx)
	if s := r.gw.Sessions()[0]; s.BytesDown != 800 || s.BytesUp != 200 {
		t.Fatalf("counters = %d down / %d up, want 800 / 200 kept", s.BytesDown, s.BytesUp)
	}
}

func TestFlushDoesNotResurrectEndedSessions(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 10, Packets: 1})
	r.gw.poll(ctx)
	// A copy taken before the kick, written after it.
	stale := r.gw.Sessions()[0]
	if _, err := r.gw.Kick(ctx, control.KickRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	if err := r.store.UpdateActive(&stale); err != nil {
		t.Fatal(err)
	}
	if active, _ := r.store.Active(); len(active) != 0 {
		t.Fatalf("a kicked session is active again in the store: %+v", active[0])
	}
}

func TestReusedAddressDoesNotInheritCounters(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String(), MAC: mac1.String(), Quota: "1GB"}); err != nil {
		t.Fatal(err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 999_000_000, DownBytes: 900_000_000, Packets: 9})
	// While the poll reads the kernel, the first device leaves and a
	// second one gets its address and a session.
	r.fw.onUsage = func() {
		r.fw.onUsage = nil
		if _, err := r.gw.Kick(ctx, control.KickRequest{IP: ip1.String()}); err != nil {
			t.Error(err)
		}
		if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String(), MAC: mac2.String(), Quota: "1GB"}); err != nil {
			t.Error(err)
		}
	}
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	got := r.gw.Sessions()
	if len(got) != 1 || got[0].MAC.String() != mac2.String() || got[0].BytesDown+got[0].BytesUp != 0 {
		t.Fatalf("the new device's session = %+v; want it with no bytes (not the previous device's)", got)
	}
}

// A reconcile reads the kernel without holding allows up: an allow and a
// kick made while it reads finish at once, and the reconcile's repairs,
// planned from its older list, neither undo the allow nor bring the kicked
// client back.
func TestAllowsAndKicksDuringAReconcileRead(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String(), MAC: mac1.String()}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	r.fw.onReconcileRead = func() {
		r.fw.onReconcileRead = nil
		go func() {
			if _, err := r.gw.Kick(ctx, control.KickRequest{IP: ip1.String()}); err != nil {
				done <- err
				return
			}
			_, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip2.String(), MAC: mac2.String()})
			done <- err
		}()
		if ok, err := within(done, 5*time.Second); !ok {
			t.Error("kick and allow blocked behind the reconcile's read")
		} else if err != nil {
			t.Error(err)
		}
	}
	if _, err := r.gw.reconcile(ctx, true); err != nil {
		t.Fatal(err)
	}
	r.fw.mu.Lock()
	_, has1 := r.fw.allowed[ip1]
	_, has2 := r.fw.allowed[ip2]
	r.fw.mu.Unlock()
	if has1 || !has2 {
		t.Errorf("after the reconcile: kicked client allowed=%v (want false), new client allowed=%v (want true)", has1, has2)
	}
	r.sh.mu.Lock()
	_, shaped1 := r.sh.limits[ip1]
	_, shaped2 := r.sh.limits[ip2]
	r.sh.mu.Unlock()
	if !shaped1 || !shaped2 {
		t.Errorf("after the reconcile: kicked client shaped=%v (want true: parked), new client shaped=%v (want true)", shaped1, shaped2)
	}
	// The next round sees them settled: nothing to repair, nothing left
	// marked as touched.
	if n, err := r.gw.reconcile(ctx, true); err != nil || n != 0 {
		t.Errorf("second reconcile = %d, %v; want no repairs", n, err)
	}
	r.gw.mu.Lock()
	left := len(r.gw.touched)
	r.gw.mu.Unlock()
	if left != 0 {
		t.Errorf("%d clients still marked touched after two rounds", left)
	}
}

// The poll tick and the reconcile (which polls first) fall due together
// every other tick: Run reads the counters once for both, and still at
// least once per poll interval, so a session out of quota ends as soon.
func TestRunPollsOncePerInterval(t *testing.T) {
	const poll = 100 * time.Millisecond
	fw := newFakeFW()
	var reads atomic.Int64
	fw.onUsage = func() { reads.Add(1) }
	r := newRig(t, "", fw, func(o *Options) {
		o.PollInterval, o.ReconcileInterval, o.FullReconcileInterval = poll, 2*poll, time.Hour
	})
	l := testConfig().Limits
	l.Quota = 1000
	if _, err := r.gw.Open(t.Context(), Grant{MAC: mac1, Method: "ctl", Limits: l}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.gw.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	reads.Store(0)
	t0 := time.Now()
	time.Sleep(20 * poll)
	n, took := reads.Load(), time.Since(t0)
	// Over quota: ended by the next poll.
	r.fw.set(ip1, firewall.Usage{Bytes: 1001, Packets: 3})
	t1 := time.Now()
	for {
		if _, ok := r.gw.SessionFor(ip1); !ok {
			break
		}
		if time.Since(t1) > 5*poll {
			t.Errorf("a session out of quota still open %v later", time.Since(t1))
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	ended := time.Since(t1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// One reading per interval: ~20; reading again for each reconcile
	// would make ~30.
	if want := float64(took) / float64(poll); float64(n) < want*0.6 || float64(n) > want*1.25 {
		t.Errorf("%d readings of the counters in %v, want one per %v (~%.0f)", n, took.Round(time.Millisecond), poll, want)
	}
	t.Logf("%d readings in %v; quota end after %v", n, took.Round(time.Millisecond), ended.Round(time.Millisecond))
}

// within waits up to d for what c says; ok is false if nothing came.
func within(c <-chan error, d time.Duration) (ok bool, err error) {
	select {
	case err := <-c:
		return true, err
	case <-time.After(d):
		return false, nil
	}
}
