package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestUpstream(t *testing.T) {
	t.Parallel()
	Require(t, "curl")
	l := NewT(t, Options{Clients: 1, Upstream: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("dns", func(t *testing.T) {
		r := l.Gateway.Resolver("198.51.100.1:53")
		tests := []struct {
			name, network string
			want          []netip.Addr
		}{
			{WWWHost, "ip4", []netip.Addr{mustAddr("198.51.100.11")}},
			{WWWHost, "ip6", []netip.Addr{mustAddr("2001:db8:100::1")}},
			{GardenHost, "ip4", []netip.Addr{mustAddr("198.51.100.10")}},
			{OtherHost, "ip4", []netip.Addr{mustAddr("198.51.100.11")}},
		}
		for _, tt := range tests {
			t.Run(tt.name+"/"+tt.network, func(t *testing.T) {
				got, err := r.LookupNetIP(ctx, tt.network, tt.name)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
					t.Errorf("%s %s (-want +got):\n%s", tt.network, tt.name, diff)
				}
			})
		}
		_, err := r.LookupNetIP(ctx, "ip4", "nosuch.example.test")
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("nosuch.example.test: got %v, want not found", err)
		}
	})

	t.Run("gateway curls upstream", func(t *testing.T) {
		tests := []struct {
			name string
			argv []string
			want string
		}{
			{"http", []string{"http://198.51.100.1/"}, "upstream ok\n"},
			{"http by name", []string{"--resolve", "www.example.test:80:198.51.100.11", "http://www.example.test/"}, "upstream ok\n"},
			{"http by name through the upstream dns", []string{"-4", "http://garden.example.test/ip"}, "198.51.100.2\n"},
			{"http ipv6", []string{"http://[2001:db8:100::1]/"}, "upstream ok\n"},
			{"https", []string{"--cacert", l.UpstreamCAFile, "--resolve", "garden.example.test:443:198.51.100.10", "https://garden.example.test/"}, "upstream ok\n"},
			{"ip", []string{"http://198.51.100.1/ip"}, "198.51.100.2\n"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				argv := append([]string{"curl", "-sS", "--fail", "--max-time", "10", "--noproxy", "*"}, tt.argv...)
				got, err := l.Gateway.Run(ctx, argv...)
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Errorf("%v = %q, want %q", tt.argv, got, tt.want)
				}
			})
		}
	})

	t.Run("client reaches upstream over IPv6 through the gateway", func(t *testing.T) {
		resp, err := l.HTTPClient(l.Clients[0].NS).Get("http://[2001:db8:100::1]/ip")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if want := l.Clients[0].IP6.String() + "\n"; string(b) != want {
			t.Errorf("/ip = %q, want %q", b, want)
		}
	})

	t.Run("bytes", func(t *testing.T) {
		c := l.HTTPClient(l.Gateway)
		for _, n := range []int{0, 1, 65537, 3 << 20} {
			resp, err := c.Get(fmt.Sprintf("https://198.51.100.11/bytes?n=%d", n))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || got != int64(n) || resp.StatusCode != 200 {
				t.Errorf("/bytes?n=%d: status %d, %d bytes, %v", n, resp.StatusCode, got, err)
			}
		}
	})

	t.Run("stream", func(t *testing.T) {
		resp, err := l.HTTPClient(l.Gateway).Get("http://198.51.100.1/stream?s=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		start := time.Now()
		got, err := io.Copy(io.Discard, resp.Body)
		el := time.Since(start)
		if err != nil || got < 8*StreamChunk || got > 12*StreamChunk {
			t.Errorf("/stream?s=1: %d bytes in %v (%v), want about 10 KiB in 1 s", got, el, err)
		}
	})

	t.Run("dot port accepts", func(t *testing.T) {
		c, err := l.Clients[0].Dial(ctx, "tcp", "[2001:db8:100::1]:853")
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})

	t.Run("iperf3", func(t *testing.T) {
		out, err := l.Gateway.Run(ctx, "iperf3", "-c", "198.51.100.1", "-p", strconv.Itoa(IperfPort), "-t", "1", "-J")
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		bps := res.End.SumReceived.BitsPerSecond
		t.Logf("gateway -> upstream iperf3: %.0f Mbit/s", bps/1e6)
		if bps < 1e6 {
			t.Errorf("iperf3: %.0f bit/s", bps)
		}
	})
}

func TestCloseStopsUpstream(t *testing.T) {
	t.Parallel()
	Require(t, "ip", "bridge", "dnsmasq", "iperf3", "ss")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := New(ctx, Options{Clients: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartUpstream(ctx); err != nil {
		l.Close()
		t.Fatal(err)
	}
	pids := pidsIn(ctx, l.Upstream.Name)
	if len(pids) < 2 {
		t.Errorf("pids in upstream = %v, want dnsmasq and iperf3", pids)
	}
	// An open /stream must die with the lab, not run for a minute.
	resp, err := l.HTTPClient(l.Gateway).Get("http://198.51.100.1/stream")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); done <- err }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("/stream still open 5 s after Close")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			out, _ := run(ctx, "ps", "-o", "pid,stat,args", "-p", strconv.Itoa(pid))
			if !strings.Contains(out, " Z") {
				t.Errorf("process %d still alive after Close:\n%s", pid, out)
			}
		}
	}
}

func TestRouteIPv4(t *testing.T) {
	t.Parallel()
	l := NewT(t, Options{Clients: 1, Upstream: true, RouteIPv4: true})
	c, err := l.AddClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Index != 2 || c.IP != ClientIP(2) {
		t.Errorf("AddClient = index %d IP %v, want 2 %v", c.Index, c.IP, ClientIP(2))
	}
	for _, cl := range l.Clients {
		resp, err := l.HTTPClient(cl.NS).Get("http://198.51.100.11/ip")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := cl.IP.String() + "\n"; string(b) != want {
			t.Errorf("client %d: /ip = %q, want %q (routed, not NATed)", cl.Index, b, want)
		}
	}
}

func TestIPv4NeedsNATByDefault(t *testing.T) {
	t.Parallel()
	l := NewT(t, Options{Clients: 1, Upstream: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// The gateway forwards, but the upstream has no route back.
	if err := l.Clients[0].Ping(ctx, l.UpstreamIP); !errors.Is(err, ErrNoReply) {
		t.Errorf("client -> upstream over IPv4 without NAT: %v, want ErrNoReply", err)
	}
}
