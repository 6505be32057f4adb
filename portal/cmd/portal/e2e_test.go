package main

// End-to-end tests of the gateway daemon: the real portal binary runs in the
// gateway namespace of a lab site, residents' phones are client namespaces,
// and every check is real traffic (curl, dig, iperf3) through the real
// kernel (iptables, ipset, tc, conntrack) and a real dnsmasq.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/civicwifi/civicwifi/portal/internal/control"
)

// portalBinary builds the portal once per test run.
func portalBinary(t *testing.T) string {
	return lab.Binary(t, "github.com/civicwifi/civicwifi/portal/cmd/portal")
}

func TestMain(m *testing.M) {
	code := m.Run()
	lab.RemoveBinaries()
	os.Exit(code)
}

// site is a lab with the gateway daemon running in it.
type site struct {
	t      *testing.T
	l      *lab.Lab
	bin    string
	cfg    string
	sock   string
	daemon *exec.Cmd
}

const labConfig = `site: lab
interfaces: {clients: br-cw, uplink: wan0, ifb: cwifb0}
client_network: {address: 10.20.0.1/22, dhcp_range: 10.20.0.100-10.20.0.200}
dns: {upstreams: [198.51.100.1]}
portal: {http_port: 2050, https_port: 2443, api_url: "https://10.20.0.1:2443/api/captive", click_through: true, tls_cert: %[1]s/portal.pem, tls_key: %[1]s/portal-key.pem}
walled_garden: {domains: [garden.example.test]}
limits: {down: "0", up: "0", session: 2h, idle: 15m, quota: "0"}
state_dir: %[1]s/state
control_socket: %[1]s/portal.sock
metrics_listen: 127.0.0.1:9102
`

func newSite(t *testing.T, clients int) *site { return newSiteWith(t, clients, "", nil) }

// newSiteWith is newSite with extra lines appended to portal.yaml and a
// hook that runs once the lab exists, before the daemon starts.
func newSiteWith(t *testing.T, clients int, extra string, before func(*lab.Lab)) *site {
	t.Helper()
	lab.Require(t, "iptables", "ip6tables", "ipset", "tc", "conntrack", "dnsmasq", "curl", "dig", "iperf3")
	bin := portalBinary(t)
	l := lab.NewT(t, lab.Options{Clients: clients, Upstream: true})
	s := &site{t: t, l: l, bin: bin, cfg: filepath.Join(l.Dir, "portal.yaml"), sock: filepath.Join(l.Dir, "portal.sock")}
	// The portal's HTTPS certificate (api_url needs one): Dir/portal.pem
	// and Dir/portal-key.pem from a throwaway lab CA.
	ca, err := lab.NewCA(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Issue("portal", "10.20.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.cfg, []byte(fmt.Sprintf(labConfig, l.Dir)+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(l)
	}
	s.start()
	t.Cleanup(func() {
		// Leave nothing behind even though the namespaces go too: this
		// is also the test that teardown works after every scenario.
		s.stop(syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := l.Gateway.Run(ctx, s.bin, "teardown", "-config", s.cfg); err != nil {
			t.Errorf("teardown: %v\n%s", err, out)
		}
	})
	return s
}

func (s *site) start() {
	s.t.Helper()
	cmd, err := s.l.Start(s.l.Gateway, "portal", s.bin, "run", "-config", s.cfg, "-log-format", "text")
	if err != nil {
		s.t.Fatal(err)
	}
	s.daemon = cmd
	s.waitReady()
}

// waitReady waits for the control socket to answer.
func (s *site) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := s.ctl(ctx, "status")
		cancel()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("gateway did not come up; log:\n%s", s.log())
}

func (s *site) log() string {
	b, _ := os.ReadFile(filepath.Join(s.l.Dir, "portal.log"))
	return string(b)
}

func (s *site) stop(sig syscall.Signal) {
	if s.daemon == nil || s.daemon.Process == nil {
		return
	}
	s.daemon.Process.Signal(sig)
	done := make(chan struct{})
	go func() { s.daemon.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		s.daemon.Process.Kill()
		<-done
	}
	s.daemon = nil
}

func (s *site) ctl(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{s.bin, "ctl", "--socket", s.sock}, args...)
	return s.l.Gateway.Run(ctx, argv...)
}

func (s *site) allow(args ...string) control.Session {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.ctl(ctx, append([]string{"--json", "allow"}, args...)...)
	if err != nil {
		s.t.Fatalf("ctl allow %v: %v\n%s", args, err, out)
	}
	var sess control.Session
	if err := json.Unmarshal([]byte(out), &sess); err != nil {
		s.t.Fatalf("ctl allow output %q: %v", out, err)
	}
	return sess
}

func (s *site) clients() []control.Client {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.ctl(ctx, "--json", "clients")
	if err != nil {
		s.t.Fatalf("ctl clients: %v\n%s", err, out)
	}
	var cs []control.Client
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		s.t.Fatalf("ctl clients output %q: %v", out, err)
	}
	return cs
}

// fetch is one HTTP request with curl from a namespace: body, status code
// and redirect target, or the curl error.
type fetchResult struct {
	Body, Redirect string
	Code           int
	Err            error
	Took           time.Duration
}

func fetch(ns lab.NS, timeout time.Duration, args ...string) fetchResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	argv := append([]string{"curl", "-sS", "--max-time", strconv.FormatFloat(timeout.Seconds(), 'f', 1, 64),
		"-w", "\n@@%{http_code} %{redirect_url}"}, args...)
	t0 := time.Now()
	out, err := ns.Run(ctx, argv...)
	r := fetchResult{Took: time.Since(t0), Err: err}
	body, meta, ok := strings.Cut(out, "\n@@")
	if !ok {
		r.Body = out
		return r
	}
	r.Body = body
	code, redirect, _ := strings.Cut(strings.TrimSpace(meta), " ")
	r.Code, _ = strconv.Atoi(code)
	r.Redirect = redirect
	return r
}

func (r fetchResult) upstream() bool {
	return r.Err == nil && r.Code == 200 && r.Body == "upstream ok\n"
}

func (r fetchResult) String() string {
	return fmt.Sprintf("code=%d redirect=%q body=%.60q err=%v took=%v", r.Code, r.Redirect, r.Body, r.Err, r.Took.Round(time.Millisecond))
}

func dig(ns lab.NS, server, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "dig", "+short", "+tries=1", "+time=2", "@"+server, name)
	if err == nil && (strings.Contains(out, "timed out") || strings.Contains(out, "no servers could be reached") || strings.Contains(out, "refused")) {
		err = fmt.Errorf("dig: %s", out)
	}
	return strings.TrimSpace(out), err
}

// eventually retries cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestCaptiveUntilAllowed(t *testing.T) {
	s := newSite(t, 2)
	l := s.l
	c1, c2 := l.Clients[0], l.Clients[1]
	other := "http://" + l.OtherIP.String() + "/"

	t.Run("pre-auth HTTP is redirected to the portal", func(t *testing.T) {
		r := fetch(c1.NS, 3*time.Second, other+"news?id=1")
		if r.Code != 302 || !strings.HasPrefix(r.Redirect, "http://10.20.0.1:2050/portal/") || !strings.Contains(r.Redirect, "news%3Fid%3D1") {
			t.Fatalf("got %v, want a 302 to the portal carrying the original URL", r)
		}
	})
	t.Run("pre-auth HTTPS is reset fast", func(t *testing.T) {
		r := fetch(c1.NS, 5*time.Second, "--cacert", l.UpstreamCAFile, "https://"+l.OtherIP.String()+"/")
		if r.Err == nil || r.Took > time.Second {
			t.Fatalf("got %v, want a fast failure", r)
		}
	})
	t.Run("pre-auth DNS to an outside resolver fails", func(t *testing.T) {
		if out, err := dig(c1.NS, l.UpstreamIP.String(), "www.example.test"); err == nil && out != "" {
			t.Fatalf("outside resolver answered %q", out)
		}
	})
	t.Run("pre-auth DNS-over-TLS port is blocked", func(t *testing.T) {
		r := fetch(c1.NS, 3*time.Second, "telnet://"+l.UpstreamIP.String()+":853")
		if r.Err == nil || r.Took > time.Second {
			t.Fatalf("got %v, want a fast failure", r)
		}
	})
	t.Run("gateway DNS works", func(t *testing.T) {
		out, err := dig(c1.NS, l.GatewayIP.String(), "www.example.test")
		if err != nil || out != l.OtherIP.String() {
			t.Fatalf("dig www.example.test @gateway = %q, %v", out, err)
		}
	})
	t.Run("walled-garden domain works", func(t *testing.T) {
		out, err := dig(c1.NS, l.GatewayIP.String(), "garden.example.test")
		if err != nil || out != l.GardenIP.String() {
			t.Fatalf("dig garden.example.test = %q, %v", out, err)
		}
		r := fetch(c1.NS, 3*time.Second, "http://garden.example.test/", "--resolve", "garden.example.test:80:"+out)
		if !r.upstream() {
			t.Fatalf("garden fetch: %v", r)
		}
		r = fetch(c1.NS, 3*time.Second, "--cacert", l.UpstreamCAFile, "--resolve", "garden.example.test:443:"+out, "https://garden.example.test/")
		if !r.upstream() {
			t.Fatalf("garden HTTPS fetch: %v", r)
		}
	})
	t.Run("IPv6 goes nowhere", func(t *testing.T) {
		r := fetch(c1.NS, 3*time.Second, "http://["+l.UpstreamIP6.String()+"]/")
		if r.Err == nil {
			t.Fatalf("IPv6 reached upstream: %v", r)
		}
	})

	sess := s.allow("--ip", c1.IP.String())
	if sess.MAC != c1.MAC.String() {
		t.Fatalf("session MAC = %s, want %s (looked up from the wire)", sess.MAC, c1.MAC)
	}

	t.Run("allowed client reaches upstream", func(t *testing.T) {
		if r := fetch(c1.NS, 3*time.Second, other); !r.upstream() {
			t.Fatalf("HTTP: %v", r)
		}
		if r := fetch(c1.NS, 3*time.Second, "--cacert", l.UpstreamCAFile, "https://"+l.OtherIP.String()+"/"); !r.upstream() {
			t.Fatalf("HTTPS: %v", r)
		}
		if out, err := dig(c1.NS, l.UpstreamIP.String(), "www.example.test"); err != nil || out != l.OtherIP.String() {
			t.Fatalf("outside DNS after login = %q, %v", out, err)
		}
	})
	t.Run("allowed client still has no IPv6 and no management ports", func(t *testing.T) {
		if r := fetch(c1.NS, 3*time.Second, "http://["+l.UpstreamIP6.String()+"]/"); r.Err == nil {
			t.Fatalf("IPv6 reached upstream: %v", r)
		}
		// Management services listening on the gateway (ssh, an admin web
		// page) on its client-side and uplink addresses.
		for _, addr := range []string{"10.20.0.1:22", "10.20.0.1:9100", l.GatewayWANIP.String() + ":22"} {
			ln, err := l.Gateway.Listen("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("SSH-2.0-mgmt\r\n"))
					c.Close()
				}
			}()
			// The gateway itself reaches it: the listener works.
			if out, err := l.Gateway.Run(context.Background(), "curl", "-sS", "--max-time", "2", "telnet://"+addr); err != nil && !strings.Contains(out, "SSH-2.0") {
				t.Fatalf("control: the gateway cannot reach its own %s: %v %s", addr, err, out)
			}
			if r := fetch(c1.NS, 3*time.Second, "telnet://"+addr); r.Err == nil || strings.Contains(r.Body, "SSH-2.0") || r.Took > time.Second {
				t.Fatalf("management port %s from an authorised client: %v", addr, r)
			}
		}
	})
	t.Run("second client stays captive", func(t *testing.T) {
		if r := fetch(c2.NS, 3*time.Second, other); r.Code != 302 {
			t.Fatalf("got %v, want redirect", r)
		}
		if r := fetch(c2.NS, 3*time.Second, "--cacert", l.UpstreamCAFile, "https://"+l.OtherIP.String()+"/"); r.Err == nil {
			t.Fatalf("HTTPS passed: %v", r)
		}
	})
	t.Run("a client copying the first one's IP but not its MAC stays captive", func(t *testing.T) {
		ctx := context.Background()
		if _, err := c2.Run(ctx, "ip", "addr", "flush", "dev", "eth0", "scope", "global"); err != nil {
			t.Fatal(err)
		}
		if _, err := c2.Run(ctx, "ip", "addr", "add", c1.IP.String()+"/22", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		c2.Run(ctx, "ip", "route", "replace", "default", "via", "10.20.0.1")
		for range 3 {
			if r := fetch(c2.NS, 2*time.Second, other); r.upstream() {
				t.Fatalf("spoofed IP reached upstream: %v", r)
			}
			if r := fetch(c2.NS, 2*time.Second, "--cacert", l.UpstreamCAFile, "https://"+l.OtherIP.String()+"/"); r.upstream() {
				t.Fatalf("spoofed IP reached upstream over HTTPS: %v", r)
			}
		}
	})
}

func TestSessionEndsMakeClientCaptive(t *testing.T) {
	s := newSite(t, 3)
	l := s.l
	other := "http://" + l.OtherIP.String() + "/"
	cases := []struct {
		name  string
		c     *lab.Client
		args  []string
		drive func(t *testing.T, c *lab.Client) // runs while a long transfer is open
	}{
		{"expiry", l.Clients[0], []string{"--duration", "4s", "--idle", "0"}, nil},
		{"idle", l.Clients[1], []string{"--idle", "3s"}, nil},
		{"quota", l.Clients[2], []string{"--quota", "10MB", "--idle", "0"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			// A phone talks before anyone lets it in: it gets the portal.
			if r := fetch(c.NS, 3*time.Second, other); r.Code != 302 {
				t.Fatalf("before allow: %v", r)
			}
			s.allow(append([]string{"--ip", c.IP.String()}, tc.args...)...)
			if r := fetch(c.NS, 3*time.Second, other); !r.upstream() {
				t.Fatalf("not through after allow: %v", r)
			}
			switch tc.name {
			case "idle":
				// Silence: the session ends after 3 s without traffic. Watch
				// it from the gateway only: a probe from the phone would be
				// traffic.
				eventually(t, 8*time.Second, "idle session ended", func() (bool, string) {
					for _, cl := range s.clients() {
						if cl.IP == c.IP.String() && cl.State == "authorised" {
							return false, fmt.Sprintf("%+v", cl.Session)
						}
					}
					return true, ""
				})
			case "expiry":
				// An open connection streaming the whole time dies at expiry.
				r := fetch(c.NS, 20*time.Second, "http://"+l.OtherIP.String()+"/stream")
				if r.Err == nil {
					t.Fatalf("stream survived the session's end: %v", r)
				}
				if r.Took > 8*time.Second {
					t.Fatalf("stream died only after %v (session was 4 s)", r.Took)
				}
			case "quota":
				r := fetch(c.NS, 20*time.Second, "-o", "/dev/null", "http://"+l.OtherIP.String()+"/bytes?n=40000000")
				if r.Err == nil {
					t.Fatalf("40 MB download passed a 10 MB quota: %v", r)
				}
			}
			eventually(t, 5*time.Second, "client captive again", func() (bool, string) {
				r := fetch(c.NS, 2*time.Second, other)
				return r.Code == 302, r.String()
			})
			eventually(t, 3*time.Second, "ctl clients shows the client captive", func() (bool, string) {
				for _, cl := range s.clients() {
					if cl.IP == c.IP.String() && cl.State == "authorised" {
						return false, fmt.Sprintf("%+v", cl)
					}
				}
				return true, ""
			})
		})
	}
	t.Run("quota overshoot under 1%", func(t *testing.T) {
		// The ended session's counters, as the daemon logged them. The kernel
		// lets the packet that crosses the quota through: with GRO that can
		// be a 64 KiB super-packet, so the quota here is 10 MB (< 0.7%).
		// The client leaves the in-memory table before the kernel revoke
		// and the log line finish: wait for the line.
		var out string
		eventually(t, 5*time.Second, "quota end in the log", func() (bool, string) {
			out = s.log()
			return strings.Contains(out, "reason=quota"), out
		})
		i := strings.LastIndex(out, "reason=quota")
		line := out[strings.LastIndex(out[:i], "\n")+1:]
		line = line[:strings.Index(line, "\n")]
		var down, up uint64
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "bytes_down="); ok {
				down, _ = strconv.ParseUint(v, 10, 64)
			}
			if v, ok := strings.CutPrefix(f, "bytes_up="); ok {
				up, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		const quota = 10_000_000
		if total := down + up; total < quota || total > quota*101/100 {
			t.Fatalf("session used %d bytes against a %d quota (want within +1%%)", total, quota)
		}
	})
}

// iperf3 measures one direction from a client to the upstream's iperf3
// server (download with reverse) and returns the receiver's bits/s.
func iperf3(t *testing.T, c *lab.Client, server string, reverse bool) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bps, err := lab.Iperf3(ctx, c.NS, server, lab.IperfPort, 4, reverse)
	if err != nil {
		t.Fatal(err)
	}
	return bps
}

func TestShapingThroughTheDaemon(t *testing.T) {
	s := newSite(t, 2)
	l := s.l
	c1, c2 := l.Clients[0], l.Clients[1]
	for _, c := range []*lab.Client{c1, c2} {
		fetch(c.NS, 2*time.Second, "http://"+l.OtherIP.String()+"/")
	}
	s.allow("--ip", c1.IP.String(), "--down", "20mbit", "--up", "2mbit")
	s.allow("--ip", c2.IP.String(), "--down", "2mbit", "--up", "20mbit")
	for _, tc := range []struct {
		name    string
		c       *lab.Client
		reverse bool
		want    float64
	}{
		{"client1 down 20mbit", c1, true, 20e6},
		{"client1 up 2mbit", c1, false, 2e6},
		{"client2 down 2mbit", c2, true, 2e6},
		{"client2 up 20mbit", c2, false, 20e6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := iperf3(t, tc.c, l.UpstreamIP.String(), tc.reverse)
			t.Logf("measured %.2f Mbit/s (limit %.0f)", got/1e6, tc.want/1e6)
			if got < tc.want*0.95 || got > tc.want*1.05 {
				// One short run can be skewed by the scheduler of a busy
				// machine (seen once at +5.5 %): the median of three.
				runs := []float64{got, iperf3(t, tc.c, l.UpstreamIP.String(), tc.reverse), iperf3(t, tc.c, l.UpstreamIP.String(), tc.reverse)}
				slices.Sort(runs)
				got = runs[1]
				t.Logf("runs %.2f, %.2f, %.2f Mbit/s: median %.2f", runs[0]/1e6, runs[1]/1e6, runs[2]/1e6, got/1e6)
			}
			if got < tc.want*0.95 || got > tc.want*1.05 {
				t.Errorf("measured %.2f Mbit/s, want %.0f ±5%%", got/1e6, tc.want/1e6)
			}
		})
	}
}

// TestLoginClosesPreLoginConnections: a browser keeps connections that the
// firewall sent to the portal before login (kept alive after a probe, or
// opened ahead as spares); after login the portal closes them, so the
// next request goes out on a new connection to the site. The phone's
// own connection to the portal stays.
func TestLoginClosesPreLoginConnections(t *testing.T) {
	s := newSite(t, 1)
	l := s.l
	c := l.Clients[0]
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dial := func(addr string) net.Conn {
		t.Helper()
		conn, err := c.Dial(ctx, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	get := func(conn net.Conn, host, path string) (*http.Response, error) {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	other := netip.AddrPortFrom(l.OtherIP, 80).String()
	probe, spare := dial(other), dial(other)
	if resp, err := get(probe, "connectivitycheck.gstatic.com", "/generate_204"); err != nil || resp.StatusCode != 302 || resp.Close {
		t.Fatalf("probe before login: %v, %v; want a 302 on a kept-alive connection", resp, err)
	}
	// The phone's own connections to the portal: to its port, and to the
	// gateway's :80, which the firewall translates to that port (the
	// address stays: not a connection meant for another host).
	own := dial(netip.AddrPortFrom(l.GatewayIP, 2050).String())
	own80 := dial(netip.AddrPortFrom(l.GatewayIP, 80).String())
	for _, conn := range []net.Conn{own, own80} {
		if resp, err := get(conn, l.GatewayIP.String(), "/portal/"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("landing page before login: %v, %v", resp, err)
		}
	}

	s.allow("--ip", c.IP.String())
	for name, conn := range map[string]net.Conn{"probe's kept-alive": probe, "spare": spare} {
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("%s connection after login: read %d bytes, %v; want it closed by the portal (EOF)", name, n, err)
		}
	}
	for name, conn := range map[string]net.Conn{"to the portal's port": own, "to the gateway's :80": own80} {
		if resp, err := get(conn, l.GatewayIP.String(), "/portal/status"); err != nil || resp.StatusCode != 200 {
			t.Errorf("the phone's own connection %s after login: %v, %v; want it kept", name, resp, err)
		}
	}
	if r := fetch(c.NS, 3*time.Second, "http://"+other+"/"); !r.upstream() {
		t.Errorf("a new connection after login: %v; want the site", r)
	}
}
