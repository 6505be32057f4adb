package lab

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestTopology(t *testing.T) {
	t.Parallel()
	l := NewT(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c1, c2 := l.Clients[0], l.Clients[1]

	t.Run("client reaches gateway", func(t *testing.T) {
		for _, dst := range []string{"10.20.0.1", "2001:db8:20::1"} {
			if err := c1.Ping(ctx, mustAddr(dst)); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("gateway reaches upstream", func(t *testing.T) {
		for _, dst := range []string{"198.51.100.1", "198.51.100.10", "198.51.100.11", "2001:db8:100::1"} {
			if err := l.Gateway.Ping(ctx, mustAddr(dst)); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("client has its MAC and addresses", func(t *testing.T) {
		out, err := c1.Run(ctx, "ip", "-o", "addr", "show", "dev", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"10.20.0.11/22", "2001:db8:20::b/64"} {
			if !strings.Contains(out, want) {
				t.Errorf("eth0 lacks %s:\n%s", want, out)
			}
		}
		out, err = c1.Run(ctx, "cat", "/sys/class/net/eth0/address")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out); got != "02:00:00:00:00:01" || got != c1.MAC.String() {
			t.Errorf("eth0 MAC = %s, want 02:00:00:00:00:01 (Client.MAC %s)", got, c1.MAC)
		}
	})
	t.Run("namespaces have their own resolv.conf", func(t *testing.T) {
		for ns, want := range map[NS]string{c1.NS: "nameserver 10.20.0.1\n", l.Gateway: "nameserver 198.51.100.1\n"} {
			got, err := ns.Run(ctx, "cat", "/etc/resolv.conf")
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s: /etc/resolv.conf = %q, want %q", ns, got, want)
			}
		}
	})
	t.Run("clients are isolated at L2", func(t *testing.T) {
		// A static neighbour entry takes ARP out of the picture: only the
		// bridge's port isolation can stop the frames.
		if _, err := c1.Run(ctx, "ip", "neigh", "replace", c2.IP.String(), "lladdr", c2.MAC.String(), "dev", "eth0", "nud", "permanent"); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := c1.Ping(short, c2.IP); !errors.Is(err, ErrNoReply) {
			t.Errorf("client1 -> client2 with isolation: got %v, want ErrNoReply", err)
		}
		// Control: the same ping works once isolation is off, so the
		// failure above is the isolation's doing.
		if _, err := l.Gateway.Run(ctx, "bridge", "link", "set", "dev", c1.Port, "isolated", "off"); err != nil {
			t.Fatal(err)
		}
		defer l.Gateway.Run(ctx, "bridge", "link", "set", "dev", c1.Port, "isolated", "on")
		if err := c1.Ping(ctx, c2.IP); err != nil {
			t.Errorf("client1 -> client2 without isolation: %v", err)
		}
	})
}

func TestCloseLeavesNothing(t *testing.T) {
	t.Parallel()
	Require(t, "ip", "bridge")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := New(ctx, Options{Clients: 3})
	if err != nil {
		t.Fatal(err)
	}
	// A stray process inside a namespace must not keep it alive.
	if _, err := l.Start(l.Clients[2].NS, "sleeper", "sleep", "300"); err != nil {
		l.Close()
		t.Fatal(err)
	}
	names := l.Namespaces()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range names {
		if strings.Contains(out, ns.Name) {
			t.Errorf("namespace %s left behind:\n%s", ns.Name, out)
		}
	}
	if _, err := os.Stat(filepath.Join(MarkerDir, l.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker left behind: %v", err)
	}
	for _, ns := range names {
		if _, err := os.Stat(filepath.Join(EtcDir, ns.Name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s/%s left behind: %v", EtcDir, ns.Name, err)
		}
	}
	if _, err := os.Stat(l.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir %s left behind: %v", l.Dir, err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestDHCPClientsHaveNoIPv4(t *testing.T) {
	t.Parallel()
	l := NewT(t, Options{Clients: 1, DHCP: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := l.Clients[0]
	if c.IP.IsValid() {
		t.Errorf("Client.IP = %v with DHCP, want invalid", c.IP)
	}
	out, err := c.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("eth0 has IPv4 with DHCP:\n%s", out)
	}
	if err := c.Ping(ctx, l.GatewayIP6); err != nil {
		t.Errorf("IPv6 to the gateway: %v", err)
	}
}

func TestDoRestoresNamespace(t *testing.T) {
	t.Parallel()
	l := NewT(t, Options{Clients: 1})
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	err = l.Gateway.Do(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside == self {
		t.Errorf("Do ran fn in this process's namespace %s", self)
	}
	func() {
		defer func() { recover() }()
		l.Gateway.Do(func() error { panic("boom") })
	}()
	// This goroutine may now be on any thread; none may be left in the lab.
	for range 50 {
		if got, _ := os.Readlink("/proc/thread-self/ns/net"); got != self {
			t.Fatalf("thread left in %s after a panic in Do, want %s", got, self)
		}
		runtime.Gosched()
	}
}
