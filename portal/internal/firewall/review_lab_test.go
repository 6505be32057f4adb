package firewall

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// Tier 2 tests of the fixes after the firewall review: each failed on the
// code before its fix.

// addMgmtNet adds a third network to the gateway, as a management VLAN or
// the access points' network would be: mgmt0 192.168.77.1/24 in the gateway,
// a namespace at 192.168.77.2 behind it (default route back through the
// gateway) with TCP listeners on ports that answer "mgmt\n".
func addMgmtNet(t *testing.T, s *site, ports ...string) (lab.NS, netip.Addr) {
	t.Helper()
	ns := lab.NS{Name: "cwm-" + s.ID}
	ctx := context.WithoutCancel(t.Context())
	// Run from here, as the lab does: every command names its namespace.
	run := func(argv ...string) error {
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("running %q: %w\n%s", argv, err, out)
		}
		return nil
	}
	if err := run("ip", "netns", "add", ns.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run("ip", "netns", "del", ns.Name); err != nil {
			t.Error(err)
		}
	})
	for _, argv := range [][]string{
		{"ip", "link", "add", "mgmt0", "netns", s.Gateway.Name, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		{"ip", "-n", s.Gateway.Name, "addr", "add", "192.168.77.1/24", "dev", "mgmt0"},
		{"ip", "-n", s.Gateway.Name, "link", "set", "mgmt0", "up"},
		{"ip", "-n", ns.Name, "link", "set", "lo", "up"},
		{"ip", "-n", ns.Name, "addr", "add", "192.168.77.2/24", "dev", "eth0"},
		{"ip", "-n", ns.Name, "link", "set", "eth0", "up"},
		{"ip", "-n", ns.Name, "route", "add", "default", "via", "192.168.77.1"},
	} {
		if err := run(argv...); err != nil {
			t.Fatal(err)
		}
	}
	ip := netip.MustParseAddr("192.168.77.2")
	for _, p := range ports {
		serveLine(t, ns, net.JoinHostPort(ip.String(), p), "mgmt\n")
	}
	return ns, ip
}

// serveLine answers every TCP connection to addr in ns with line.
func serveLine(t *testing.T, ns lab.NS, addr, line string) {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, line)
			c.Close()
		}
	}()
}

// Clients leave the gateway through the uplink only: neither an authorised
// client nor the walled garden reaches another network of the gateway, and
// the garden is web traffic only.
func TestKernelClientsLeaveByTheUplinkOnly(t *testing.T) {
	s := newSite(t)
	c1, c2 := s.Clients[0], s.Clients[1]
	_, mgmt := addMgmtNet(t, s, "22", "443")
	mgmtSSH := "telnet://" + mgmt.String() + ":22"
	mgmtTLS := "telnet://" + mgmt.String() + ":443"
	serveLine(t, s.Upstream, s.GardenIP.String()+":2222", "garden ssh\n")
	serveLine(t, s.Upstream, s.OtherIP.String()+":2222", "other ssh\n")
	// Without the firewall the management network answers: the checks
	// below mean something.
	wantBody(t, "baseline management ssh", s.curl(t, c1.NS, mgmtSSH), "mgmt\n")
	if t.Failed() {
		t.FailNow()
	}
	s.setup(t)
	s.allow(t, s.grant(0))
	t.Run("authorised", func(t *testing.T) {
		wantBody(t, "upstream", s.curl(t, c1.NS, "http://"+s.OtherIP.String()+"/"), "upstream ok\n")
		wantBody(t, "upstream https", s.curl(t, c1.NS, "https://"+s.OtherIP.String()+"/"), "upstream ok\n")
		wantFastFail(t, "management ssh", s.curl(t, c1.NS, mgmtSSH))
		wantFastFail(t, "management 443", s.curl(t, c1.NS, mgmtTLS))
	})
	t.Run("captive, garden", func(t *testing.T) {
		// dnsmasq would add these: a garden name resolving into the
		// management network, and one on a shared (CDN) address.
		mustRun(t, s.Gateway, "ipset", "add", GardenSet, mgmt.String())
		mustRun(t, s.Gateway, "ipset", "add", GardenSet, s.OtherIP.String())
		wantFastFail(t, "management 443 through the garden", s.curl(t, c2.NS, mgmtTLS))
		wantBody(t, "static garden https", s.curl(t, c2.NS, "https://"+s.GardenIP.String()+"/"), "upstream ok\n")
		wantBody(t, "dynamic garden http", s.curl(t, c2.NS, "http://"+s.OtherIP.String()+"/"), "upstream ok\n")
		wantBody(t, "dynamic garden https", s.curl(t, c2.NS, "https://"+s.OtherIP.String()+"/"), "upstream ok\n")
		wantFastFail(t, "static garden, port 2222", s.curl(t, c2.NS, "telnet://"+s.GardenIP.String()+":2222"))
		wantFastFail(t, "dynamic garden, port 2222", s.curl(t, c2.NS, "telnet://"+s.OtherIP.String()+":2222"))
		wantBody(t, "authorised client, port 2222", s.curl(t, c1.NS, "telnet://"+s.OtherIP.String()+":2222"), "other ssh\n")
	})
}

// udpSeen counts the datagrams a socket receives until it is closed.
func udpSeen(t *testing.T, ns lab.NS, addr string) *atomic.Int64 {
	t.Helper()
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return &n
}

// sendFrom sends 3 datagrams from src (an address of ns) to dst.
func sendFrom(t *testing.T, ns lab.NS, src netip.Addr, dst string) {
	t.Helper()
	pc, err := ns.ListenPacket("udp", net.JoinHostPort(src.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := pc.WriteTo([]byte("hello"), to); err != nil {
			t.Fatal(err)
		}
	}
}

// A client that adds an address outside the client network gets no packet
// to the gateway or through it.
func TestKernelSpoofedSourceDropped(t *testing.T) {
	s := newSite(t)
	c1 := s.Clients[0]
	s.setup(t)
	s.allow(t, s.grant(0))
	spoofed := netip.MustParseAddr("10.99.0.5")
	mustRun(t, c1.NS, "ip", "addr", "add", spoofed.String()+"/32", "dev", "eth0")
	toGW := udpSeen(t, s.Gateway, netip.AddrPortFrom(s.GatewayIP, 53).String())
	toUp := udpSeen(t, s.Upstream, netip.AddrPortFrom(s.GardenIP, 443).String())
	wait := func() { time.Sleep(300 * time.Millisecond) }

	// Control: from the client's own address both arrive.
	sendFrom(t, c1.NS, c1.IP, netip.AddrPortFrom(s.GatewayIP, 53).String())
	sendFrom(t, c1.NS, c1.IP, netip.AddrPortFrom(s.GardenIP, 443).String())
	wait()
	if toGW.Load() == 0 || toUp.Load() == 0 {
		t.Fatalf("from the client's own address: %d datagrams reached the gateway, %d the upstream; want some", toGW.Load(), toUp.Load())
	}
	gw0, up0 := toGW.Load(), toUp.Load()
	sendFrom(t, c1.NS, spoofed, netip.AddrPortFrom(s.GatewayIP, 53).String())
	sendFrom(t, c1.NS, spoofed, netip.AddrPortFrom(s.GardenIP, 443).String())
	wait()
	if gw, up := toGW.Load()-gw0, toUp.Load()-up0; gw != 0 || up != 0 {
		t.Errorf("from %s: %d datagrams reached the gateway, %d the upstream; want none", spoofed, gw, up)
	}
}

// A session the kernel ends (cw-auth timeout, daemon down) stops in both
// directions: a UDP flow the upstream keeps sending on no longer reaches
// the client.
func TestKernelExpiredSessionStopsDownload(t *testing.T) {
	s := newSite(t)
	c1 := s.Clients[0]
	s.setup(t)
	g := s.grant(0)
	g.Expires = time.Now().Add(3 * time.Second)
	s.allow(t, g)

	// The upstream answers a datagram with one every 50 ms for 8 s.
	srv, err := s.Upstream.ListenPacket("udp", netip.AddrPortFrom(s.OtherIP, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 64)
		_, from, err := srv.ReadFrom(buf)
		if err != nil {
			return
		}
		for range 160 {
			if _, err := srv.WriteTo([]byte("tick"), from); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	cl, err := c1.ListenPacket("udp", netip.AddrPortFrom(c1.IP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	var last atomic.Int64 // unix ms of the last datagram
	var n atomic.Int64
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := cl.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
			last.Store(time.Now().UnixMilli())
		}
	}()
	to, _ := net.ResolveUDPAddr("udp", netip.AddrPortFrom(s.OtherIP, 7000).String())
	if _, err := cl.WriteTo([]byte("start"), to); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(g.Expires) + 3*time.Second)
	got, lastAt := n.Load(), time.UnixMilli(last.Load())
	t.Logf("%d datagrams, the last %v after the session's end", got, lastAt.Sub(g.Expires).Round(time.Millisecond))
	if got < 20 {
		t.Fatalf("only %d datagrams during the session, want the flow to work", got)
	}
	if lastAt.After(g.Expires.Add(1500 * time.Millisecond)) {
		t.Errorf("datagrams still arrived %v after the session's end, want none after 1.5 s", lastAt.Sub(g.Expires).Round(time.Millisecond))
	}
	u, err := s.fw.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u[c1.IP]; ok {
		t.Errorf("Usage still counts %s after its session ended: %+v", c1.IP, u[c1.IP])
	}
}

// cw-dl losing an element (ipset flush) gets it back with the grant's
// UsedDownBytes, not 0.
func TestKernelReconcileRestoresDownloadCounter(t *testing.T) {
	s := newSite(t)
	c1 := s.Clients[0]
	s.setup(t)
	g := s.grant(0)
	g.UsedBytes, g.UsedDownBytes = 90_000, 60_000
	s.allow(t, g)
	mustRun(t, s.Gateway, "ipset", "flush", DownSet)
	rep, err := s.fw.Reconcile(t.Context(), []Grant{g}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 1 {
		t.Errorf("Reconcile = %+v, want 1 entry repaired", rep)
	}
	u := usageOfClient(t, s, c1.IP)
	if u.Bytes != 90_000 || u.DownBytes != 60_000 {
		t.Errorf("Usage after the repair = %+v, want 90000 bytes, 60000 down", u)
	}
}

// A changed client subnet (/22 -> /21), and sets made by an older version
// with other options, are re-created in place: Reconcile works again, the
// clients and their counters stay.
func TestKernelSetsFollowTheConfig(t *testing.T) {
	s := newSite(t)
	c1 := s.Clients[0]
	ctx := t.Context()
	// An older version's sets: no timeout on cw-acct, a garden without
	// expiry.
	mustRun(t, s.Gateway, "ipset", "create", AcctSet, "bitmap:ip", "range", "10.20.0.0/22", "counters", "comment")
	mustRun(t, s.Gateway, "ipset", "create", GardenSet, "hash:net", "timeout", "0")
	mustRun(t, s.Gateway, "ipset", "add", GardenSet, "192.0.2.7")
	s.setup(t)
	out, err := s.Gateway.Run(ctx, "ipset", "list", "-t", "-o", "save")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"create cw-acct bitmap:ip range 10.20.0.0-10.20.3.255 timeout 0 counters comment", "hash:net family inet hashsize 1024 maxelem 65536 timeout 3600"} {
		if !strings.Contains(out, want) {
			t.Errorf("after Setup over old sets, no %q in:\n%s", want, out)
		}
	}
	if out, err := s.Gateway.Run(ctx, "ipset", "test", GardenSet, "192.0.2.7"); err != nil {
		t.Errorf("the garden lost what dnsmasq had added: %v %s", err, out)
	}

	g := s.grant(0)
	g.Expires = time.Now().Add(time.Hour)
	g.UsedBytes, g.UsedDownBytes = 5000, 3000
	s.allow(t, g)

	cfg := s.cfg
	cfg.Subnet = netip.MustParsePrefix("10.20.0.0/21")
	fw2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	far := Grant{Client: Client{IP: netip.MustParseAddr("10.20.5.5"), MAC: lab.ClientMAC(9)}, Expires: g.Expires}
	rep, err := fw2.Reconcile(ctx, []Grant{g, far}, nil)
	if err != nil {
		t.Fatalf("Reconcile after the subnet grew: %v", err)
	}
	if rep.Sets != 3 {
		t.Errorf("Reconcile = %+v, want the 3 bitmap sets re-created", rep)
	}
	if again, err := fw2.Reconcile(ctx, []Grant{g, far}, nil); err != nil || again.Total() != 0 {
		t.Errorf("second Reconcile = %+v, %v; want nothing to repair", again, err)
	}
	u, err := fw2.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := u[c1.IP]; got.Bytes != 5000 || got.DownBytes != 3000 {
		t.Errorf("Usage of %s after the re-creation = %+v, want 5000/3000", c1.IP, got)
	}
	if _, ok := u[far.IP]; !ok {
		t.Errorf("Usage has no %s (in the new part of the subnet): %v", far.IP, u)
	}
	wantBody(t, "client1 after the re-creation", s.curl(t, c1.NS, "http://"+s.OtherIP.String()+"/"), "upstream ok\n")
}

// ipset stops a restore at the first failing line; restoreSets names it and
// applies the rest, so one bad element does not block the others.
func TestKernelRestoreSkipsABadLine(t *testing.T) {
	s := newSite(t)
	s.setup(t)
	err := s.fw.restoreSets(t.Context(), []string{
		"add cw-dl 10.20.0.12 packets 0 bytes 5",
		"add cw-dl 10.99.0.1",
		"add cw-dl 10.20.0.13 packets 0 bytes 7",
	})
	if err == nil || !strings.Contains(err.Error(), `"add cw-dl 10.99.0.1"`) || !strings.Contains(err.Error(), "out of the range") {
		t.Errorf("restoreSets error = %v, want the bad line named", err)
	}
	out, err := s.Gateway.Run(t.Context(), "ipset", "list", DownSet, "-o", "save")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"add cw-dl 10.20.0.12 timeout 0 packets 0 bytes 5", "add cw-dl 10.20.0.13 timeout 0 packets 0 bytes 7"} {
		if !strings.Contains(out, want) {
			t.Errorf("cw-dl lacks %q:\n%s", want, out)
		}
	}
}

// The clients' sets read through netlink give exactly what `ipset list -o
// save` gives: keys, MACs, timeouts, counters (with the quota offset) and
// comments, also after real traffic.
func TestKernelNetlinkListingMatchesIpset(t *testing.T) {
	s := newSite(t)
	twoClientsThrough(t, s)
	names := []string{AuthSet, AcctSet, DownSet}
	viaNL, err := s.fw.listNL(netip.Addr{}, names...)
	if err != nil {
		t.Fatal(err)
	}
	nl := s.fw.nl
	s.fw.nl = nil
	viaExec, err := s.fw.list(t.Context(), names...)
	s.fw.nl = nl
	if err != nil {
		t.Fatal(err)
	}
	// Timeouts tick between the two reads: compare them within a second.
	approx := cmp.Comparer(func(a, b entry) bool {
		d := a.Timeout - b.Timeout
		a.Timeout, b.Timeout = 0, 0
		return a == b && d >= -1 && d <= 1
	})
	if diff := cmp.Diff(viaExec, viaNL, approx); diff != "" {
		t.Errorf("netlink listing differs from ipset's (-ipset +netlink):\n%s", diff)
	}
	acct := indexByIP(viaNL[AcctSet])[s.Clients[0].IP]
	if u := usageOf(acct, indexByIP(viaNL[DownSet])[s.Clients[0].IP]); u.Bytes <= 90_000 || u.DownBytes <= 60_000 || acct.Timeout < 3500 {
		t.Errorf("client1 through netlink: %+v (element %+v), want the grant's counters plus its traffic and ~3600 s left", u, acct)
	}
}
