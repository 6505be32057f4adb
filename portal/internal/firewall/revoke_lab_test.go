package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// udpPair is one UDP flow through the gateway: a socket of a client and
// the upstream's socket that answers it (connected to the gateway's NAT
// address of the flow, so that an ICMP error comes back as ECONNREFUSED).
type udpPair struct {
	src    netip.Addr
	cl, up *net.UDPConn
}

// udpFlows opens one flow per source address, from the client namespace
// ns to the upstream (ports base, base+1, ...), and checks it carries a
// datagram each way.
func udpFlows(t *testing.T, s *site, ns lab.NS, srcs []netip.Addr, base int) []udpPair {
	t.Helper()
	pairs := make([]udpPair, len(srcs))
	for i, src := range srcs {
		pc, err := s.Upstream.ListenPacket("udp4", netip.AddrPortFrom(s.OtherIP, uint16(base+i)).String())
		if err != nil {
			t.Fatal(err)
		}
		up := pc.(*net.UDPConn)
		t.Cleanup(func() { up.Close() })
		pc, err = ns.ListenPacket("udp4", netip.AddrPortFrom(src, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		cl := pc.(*net.UDPConn)
		t.Cleanup(func() { cl.Close() })
		pairs[i] = udpPair{src: src, cl: cl, up: up}
		if _, err := cl.WriteToUDPAddrPort([]byte("hello"), netip.AddrPortFrom(s.OtherIP, uint16(base+i))); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range pairs {
		p.up.SetReadDeadline(deadline)
		_, peer, err := p.up.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("the upstream heard nothing from %s: %v", p.src, err)
		}
		if peer.Addr() != s.GatewayWANIP {
			t.Fatalf("%s's datagram came from %s, want the gateway's NAT address %s", p.src, peer, s.GatewayWANIP)
		}
		rc, err := p.up.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var cerr error
		if err := rc.Control(func(fd uintptr) {
			cerr = unix.Connect(int(fd), &unix.SockaddrInet4{Port: int(peer.Port()), Addr: peer.Addr().As4()})
		}); err != nil || cerr != nil {
			t.Fatal(err, cerr)
		}
		if _, err := p.up.Write([]byte("back")); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pairs {
		p.cl.SetReadDeadline(deadline)
		if _, err := p.cl.Read(buf); err != nil {
			t.Fatalf("%s heard nothing back from the upstream: %v", p.src, err)
		}
	}
	return pairs
}

// deadFlows checks that the pairs' flows are gone from the gateway: the
// upstream's next datagram on each is refused (the gateway no longer
// translates it and answers port unreachable; a kept entry would forward
// it to the client's side, where cw-fwd drops it silently) and reaches
// no client. It returns how many were not refused.
func deadFlows(t *testing.T, pairs []udpPair) (alive int) {
	t.Helper()
	for _, p := range pairs {
		if _, err := p.up.Write([]byte("after")); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	deadline := time.Now().Add(2 * time.Second)
	for _, p := range pairs {
		p.up.SetReadDeadline(deadline)
		if _, err := p.up.Read(buf); !errors.Is(err, syscall.ECONNREFUSED) {
			alive++
			if alive <= 3 {
				t.Errorf("the upstream's datagram to %s's flow: %v, want ECONNREFUSED (flow gone)", p.src, err)
			}
		}
	}
	deadline = time.Now().Add(200 * time.Millisecond)
	for _, p := range pairs {
		p.cl.SetReadDeadline(deadline)
		if n, err := p.cl.Read(buf); err == nil {
			t.Errorf("%s received %q after its revoke", p.src, buf[:n])
		}
	}
	return alive
}

// 200 clients with a UDP flow each, revoked in one call: every flow is
// dead when Revoke returns and the clients are captive; another client's
// flow lives on. Then the same 200 again, revoked one by one: the time of
// both is logged.
func TestKernelRevokeBatch(t *testing.T) {
	const n = 200
	s := newSite(t)
	s.setup(t)
	ctx := t.Context()
	c1, c2 := s.Clients[0], s.Clients[1]
	// ICMP errors unthrottled in the gateway (200 port unreachables to one
	// host in a burst), so that every dead flow is seen refused.
	for _, kv := range []string{"net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000", "net.ipv4.icmp_msgs_burst=100000"} {
		if _, err := s.Gateway.Run(ctx, "sysctl", "-qw", kv); err != nil {
			t.Fatal(err)
		}
	}
	// The 200 clients: addresses 10.20.1.1-200 of the first client's
	// namespace (one MAC), each with its own grant.
	var batch []Client
	var srcs []netip.Addr
	var script strings.Builder
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, 20, 1, byte(1 + i)})
		srcs = append(srcs, ip)
		batch = append(batch, Client{IP: ip, MAC: c1.MAC})
		fmt.Fprintf(&script, "addr add %s/22 dev eth0\n", ip)
	}
	cmd := c1.Command(ctx, "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("adding the addresses: %v\n%s", err, out)
	}
	allowAll := func() {
		for _, c := range batch {
			s.allow(t, Grant{Client: c})
		}
	}
	allowAll()
	s.allow(t, s.grant(1))
	other := udpFlows(t, s, c2.NS, []netip.Addr{c2.IP}, 21000)
	tracked := func(src string) int {
		out, err := s.Gateway.Run(ctx, "conntrack", "-L", "-p", "udp")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(out, "src="+src)
	}

	pairs := udpFlows(t, s, c1.NS, srcs, 20000)
	if got := tracked("10.20.1."); got != n {
		t.Fatalf("%d UDP flows of the 200 clients tracked, want %d", got, n)
	}
	t0 := time.Now()
	if err := s.fw.Revoke(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	batchTook := time.Since(t0)
	if got := tracked("10.20.1."); got != 0 {
		t.Errorf("%d UDP flows of the revoked clients still tracked", got)
	}
	if alive := deadFlows(t, pairs); alive != 0 {
		t.Errorf("%d of %d flows still translated after the batch Revoke", alive, n)
	}
	if got := ipsetShows(t, s)[AuthSet]; len(got) != 1 || got[c2.IP].Key == "" {
		t.Errorf("cw-auth after the batch Revoke = %v, want only %s", got, c2.IP)
	}
	wantBody(t, "a revoked client is captive", s.curl(t, c1.NS, "--interface", srcs[n-1].String(), "http://"+s.OtherIP.String()+"/"), "portal\n")
	// The other client's flow lives: tracked, and both ways.
	if got := tracked(c2.IP.String()); got != 1 {
		t.Errorf("%d UDP flows of the other client tracked, want 1", got)
	}
	if _, err := other[0].up.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	other[0].cl.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := other[0].cl.Read(buf); err != nil {
		t.Errorf("the other client's flow after the batch Revoke: %v", err)
	}

	// The same, one Revoke per client.
	allowAll()
	pairs = udpFlows(t, s, c1.NS, srcs, 22000)
	t0 = time.Now()
	for _, c := range batch {
		if err := s.fw.Revoke(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	singleTook := time.Since(t0)
	if alive := deadFlows(t, pairs); alive != 0 {
		t.Errorf("%d of %d flows still translated after 200 single Revokes", alive, n)
	}
	t.Logf("revoking %d clients with a UDP flow each: one call %v, %d calls %v (%v each)", n,
		batchTook.Round(time.Microsecond), n, singleTook.Round(time.Millisecond), (singleTook / n).Round(time.Microsecond))
}
