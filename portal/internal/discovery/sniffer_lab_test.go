package discovery_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/civicwifi/civicwifi/portal/internal/discovery"
)

// TestSnifferLab runs the Sniffer inside the lab's gateway namespace and
// proves it learns a client from real traffic (ping) and a hostname from a
// real DHCP exchange, and that Neighbors reads the kernel's table.
func TestSnifferLab(t *testing.T) {
	lab.Require(t, "dnsmasq", "dhclient")
	l := lab.NewT(t, lab.Options{Clients: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c1, c2 := l.Clients[0], l.Clients[1]

	tab := discovery.NewTable()
	sn := &discovery.Sniffer{Interface: l.LANIf, Subnet: l.ClientPrefix.Masked(), Table: tab,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		// The AF_PACKET socket is opened by Run on this thread, in the
		// gateway's namespace, and stays there.
		done <- l.Gateway.Do(func() error { return sn.Run(runCtx) })
	}()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("Run did not return within 2s of cancel")
		}
	}()

	t.Run("ping", func(t *testing.T) {
		start := time.Now()
		var h discovery.Host
		for ok := false; !ok; h, ok = tab.Lookup(c1.IP) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("client %s not seen within 5s; table %+v", c1.IP, tab.All())
			}
			c1.Ping(ctx, l.GatewayIP)
		}
		if h.MAC.String() != c1.MAC.String() {
			t.Errorf("Lookup(%s).MAC = %s, want %s", c1.IP, h.MAC, c1.MAC)
		}
		t.Logf("client seen after %s: %+v", time.Since(start).Round(time.Millisecond), h)
		if _, ok := tab.Lookup(l.GatewayIP); ok {
			t.Errorf("the gateway's own address is in the table")
		}
	})

	t.Run("neighbors", func(t *testing.T) {
		var hosts []discovery.Host
		err := l.Gateway.Do(func() (err error) {
			hosts, err = discovery.Neighbors(l.LANIf)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, h := range hosts {
			if h.IP == c1.IP && h.MAC.String() == c1.MAC.String() && h.Source == discovery.SourceNeighbor {
				found = true
			}
		}
		if !found {
			t.Errorf("Neighbors(%s) = %+v, want %s at %s", l.LANIf, hosts, c1.MAC, c1.IP)
		}
	})

	t.Run("dhcp hostname", func(t *testing.T) {
		pid := l.Dir + "/dhcp-server.pid"
		if _, err := l.Start(l.Gateway, "dnsmasq-dhcp", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
			"--port=0", "--interface="+l.LANIf, "--bind-interfaces", "--except-interface=lo",
			"--dhcp-range=10.20.1.0,10.20.1.100,255.255.252.0,10m", "--dhcp-leasefile="+l.Dir+"/dhcp-server.leases",
			"--user=root", "--group=root", "--pid-file="+pid, "--log-facility=-"); err != nil {
			t.Fatal(err)
		}
		if err := lab.WaitListening(ctx, l.Gateway, "udp", 67); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		conf := "send host-name \"bob-laptop\";\ntimeout 20;\n"
		if err := os.WriteFile(dir+"/dhclient.conf", []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { killPidFile(dir + "/dhclient.pid") })
		out, err := c2.Run(ctx, "dhclient", "-1", "-cf", dir+"/dhclient.conf", "-sf", "/bin/true",
			"-lf", dir+"/dhclient.leases", "-pf", dir+"/dhclient.pid", "eth0")
		if err != nil {
			t.Fatalf("dhclient: %v\n%s", err, out)
		}
		var h discovery.Host
		deadline := time.Now().Add(3 * time.Second)
		for {
			var ok bool
			h, ok = tab.LookupMAC(c2.MAC)
			if ok && h.Hostname != "" && h.Source == discovery.SourceDHCPAck || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if h.Hostname != "bob-laptop" {
			t.Errorf("hostname of %s = %q, want bob-laptop (host %+v)", c2.MAC, h.Hostname, h)
		}
		leased := leasedIP(t, dir+"/dhclient.leases")
		if h.IP.String() != leased || h.Source != discovery.SourceDHCPAck {
			t.Errorf("host %+v, want IP %s from the DHCPACK", h, leased)
		}
	})
}

func leasedIP(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "fixed-address" {
			return strings.TrimSuffix(f[1], ";")
		}
	}
	t.Fatalf("no fixed-address in %s:\n%s", path, b)
	return ""
}

func killPidFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		syscall.Kill(pid, syscall.SIGTERM)
	}
}

// TestSnifferReopenLab proves Run waits for a missing interface and reopens
// its socket after the interface is deleted and created again.
func TestSnifferReopenLab(t *testing.T) {
	lab.Require(t, "ip")
	l := lab.NewT(t, lab.Options{Clients: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c1 := l.Clients[0]
	subnet := netip.MustParsePrefix("10.99.0.0/24")
	gwIP, clientIP := netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")

	tab := discovery.NewTable()
	sn := &discovery.Sniffer{Interface: "cw-late", Subnet: subnet, Table: tab,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Gateway.Do(func() error { return sn.Run(runCtx) }) }()
	defer func() { stop(); <-done }()

	// plug creates the gateway's cw-late with its peer in the client and
	// pings across it until the sniffer has seen the client, or 10 s.
	plug := func(round int) {
		t.Helper()
		run := func(ns lab.NS, argv ...string) {
			t.Helper()
			if out, err := ns.Run(ctx, argv...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		}
		run(l.Gateway, "ip", "link", "add", "cw-late", "type", "veth", "peer", "name", "cw-late-p")
		run(l.Gateway, "ip", "link", "set", "cw-late-p", "netns", c1.Name)
		run(l.Gateway, "ip", "addr", "add", gwIP.String()+"/24", "dev", "cw-late")
		run(l.Gateway, "ip", "link", "set", "cw-late", "up")
		run(c1.NS, "ip", "addr", "add", clientIP.String()+"/24", "dev", "cw-late-p")
		run(c1.NS, "ip", "link", "set", "cw-late-p", "up")
		tab.Forget(time.Now().Add(time.Hour))
		start := time.Now()
		for _, ok := tab.Lookup(clientIP); !ok; _, ok = tab.Lookup(clientIP) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("round %d: client not seen within 10s", round)
			}
			c1.Ping(ctx, gwIP)
		}
		t.Logf("round %d: client seen %s after the interface came up", round, time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(time.Second) // Run fails to open the missing interface and backs off
	plug(1)
	if out, err := l.Gateway.Run(ctx, "ip", "link", "del", "cw-late"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	plug(2)
}
