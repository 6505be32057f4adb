package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Devices in one client namespace reach the gateway each with its own MAC
// and address, over UDP and TCP, and the gateway's neighbour table learns
// each pair; the namespace's own eth0 stays as it was.
func TestDevices(t *testing.T) {
	t.Parallel()
	l := NewT(t, Options{Clients: 1, ClientBits: 20})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := l.Clients[0]
	devs, err := l.AddDevices(ctx, c, 3)
	if err != nil {
		t.Fatal(err)
	}
	more, err := l.AddDevices(ctx, c, 1)
	if err != nil {
		t.Fatal(err)
	}
	devs = append(devs, more...)
	if got, want := devs[3].IP, netip.MustParseAddr("10.20.1.3"); got != want {
		t.Errorf("fourth device's IP = %s, want %s (numbered on across calls)", got, want)
	}

	pc, err := l.Gateway.ListenPacket("udp4", "10.20.0.1:7001")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := l.Gateway.Listen("tcp4", "10.20.0.1:7002")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "%s\n", conn.RemoteAddr().(*net.TCPAddr).IP)
			conn.Close()
		}
	}()
	udpTo := &net.UDPAddr{IP: net.IPv4(10, 20, 0, 1), Port: 7001}
	for _, d := range devs {
		u, err := d.ListenPacket("udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.WriteTo([]byte(d.Name), udpTo); err != nil {
			t.Fatal(err)
		}
		u.Close()
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%s: no datagram at the gateway: %v", d.Name, err)
		}
		if got := from.(*net.UDPAddr).IP.String(); string(buf[:n]) != d.Name || got != d.IP.String() {
			t.Errorf("datagram %q from %s, want %q from %s", buf[:n], got, d.Name, d.IP)
		}
		conn, err := d.Dial(ctx, "tcp4", "10.20.0.1:7002")
		if err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 32)
		n, _ = conn.Read(line)
		conn.Close()
		if got := strings.TrimSpace(string(line[:n])); got != d.IP.String() {
			t.Errorf("%s: the gateway saw a TCP connection from %s, want %s", d.Name, got, d.IP)
		}
		neigh, err := l.Gateway.Run(ctx, "ip", "neigh", "show", d.IP.String(), "dev", "br-cw")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(neigh, "lladdr "+d.MAC.String()) {
			t.Errorf("gateway's neighbour entry for %s = %q, want lladdr %s", d.IP, neigh, d.MAC)
		}
	}
	out, err := c.Run(ctx, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "10.20.0.11/20") {
		t.Errorf("eth0 = %q, want 10.20.0.11/20", out)
	}

	// No room: refused, nothing added.
	if _, err := l.AddDevices(ctx, c, 4000); err == nil || !strings.Contains(err.Error(), "10.20.0.0/20 has room for 3835 more") {
		t.Errorf("4,000 more devices in a /20: err = %v, want room for 3,835", err)
	}
	if _, err := c.Run(ctx, "ip", "link", "show", "mv4"); err == nil {
		t.Error("a refused AddDevices made mv4")
	}
}
