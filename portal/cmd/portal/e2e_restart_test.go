package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRestartKeepsResidentsAndRepairsDrift(t *testing.T) {
	s := newSite(t, 2)
	l := s.l
	c1, c2 := l.Clients[0], l.Clients[1]
	other := "http://" + l.OtherIP.String() + "/"
	if r := fetch(c1.NS, 3*time.Second, other); r.Code != 302 {
		t.Fatalf("before allow: %v", r)
	}
	s.allow("--ip", c1.IP.String())
	if r := fetch(c1.NS, 3*time.Second, "-o", "/dev/null", other+"bytes?n=3000000"); r.Err != nil || r.Code != 200 {
		t.Fatalf("download: %v", r)
	}
	before := s.clients()[0].Session
	if before == nil || before.BytesDown < 3_000_000 {
		// Counters are polled every second.
		time.Sleep(1500 * time.Millisecond)
		before = s.clients()[0].Session
	}
	if before == nil || before.BytesDown < 3_000_000 {
		t.Fatalf("session counters before the crash = %+v, want >= 3 MB down", before)
	}

	// A transfer in progress while the daemon dies.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var streamOut strings.Builder
	streamCmd := c1.Command(ctx, "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "8", other+"stream")
	streamCmd.Stdout = &streamOut
	if err := streamCmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	s.stop(syscall.SIGKILL)
	t.Run("while the daemon is dead", func(t *testing.T) {
		if r := fetch(c1.NS, 3*time.Second, other); !r.upstream() {
			t.Fatalf("authorised client lost access: %v", r)
		}
		if r := fetch(c2.NS, 3*time.Second, other); r.upstream() || r.Code == 200 {
			t.Fatalf("unauthorised client got out: %v", r)
		}
		if r := fetch(c2.NS, 3*time.Second, "--cacert", l.UpstreamCAFile, "https://"+l.OtherIP.String()+"/"); r.Err == nil {
			t.Fatalf("unauthorised client got out over HTTPS: %v", r)
		}
		if out, err := dig(c1.NS, l.GatewayIP.String(), "www.example.test"); err != nil || out != l.OtherIP.String() {
			t.Fatalf("DNS died with the daemon: %q %v", out, err)
		}
	})

	s.start()
	if err := streamCmd.Wait(); err != nil {
		// curl --max-time 8 exits 28 when the stream is still going: that
		// is success here (the connection lived through the restart).
		if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 28 {
			t.Fatalf("transfer across the restart: %v", err)
		}
	}
	// The stream sends 1 KiB every 100 ms: about 80 KiB in 8 s if it never
	// stalled across the kill and the restart.
	if n, _ := strconv.Atoi(strings.TrimSpace(streamOut.String())); n < 70*1024 {
		t.Fatalf("the transfer stalled across the restart: %d bytes in 8 s", n)
	}
	t.Run("adopted with counters", func(t *testing.T) {
		cs := s.clients()
		var got bool
		for _, c := range cs {
			if c.IP == c1.IP.String() && c.State == "authorised" && c.Session != nil {
				got = true
				if c.Session.ID != before.ID || c.Session.BytesDown < before.BytesDown {
					t.Fatalf("session after restart = %+v, before = %+v", c.Session, before)
				}
			}
		}
		if !got {
			t.Fatalf("client 1 not authorised after restart: %+v", cs)
		}
	})

	for _, tc := range []struct {
		name   string
		break_ []string
		check  []string // a command whose output must contain want once repaired
		want   string
	}{
		{"flushed chain", []string{"iptables", "-F", "cw-fwd"}, []string{"iptables", "-S", "cw-fwd"}, "cw-captive"},
		{"flushed nat chain", []string{"iptables", "-t", "nat", "-F", "cw-pre"}, []string{"iptables", "-t", "nat", "-S", "cw-pre"}, "DNAT"},
		{"flushed set", []string{"ipset", "flush", "cw-auth"}, []string{"ipset", "list", "cw-auth"}, c1.IP.String()},
		{"deleted counter element", []string{"ipset", "del", "cw-acct", c1.IP.String()}, []string{"ipset", "list", "cw-acct"}, c1.IP.String()},
		{"changed MAC", []string{"ipset", "add", "-exist", "cw-auth", c1.IP.String() + ",02:00:00:00:00:99"}, []string{"ipset", "list", "cw-auth"}, c1.IP.String() + "," + c1.MAC.String()},
		{"deleted jump", []string{"iptables", "-D", "FORWARD", "-j", "cw-fwd"}, []string{"iptables", "-S", "FORWARD"}, "-j cw-fwd"},
		{"deleted qdisc", []string{"tc", "qdisc", "del", "dev", "br-cw", "root"}, []string{"tc", "qdisc", "show", "dev", "br-cw"}, "htb"},
	} {
		t.Run("repairs "+tc.name, func(t *testing.T) {
			ctx := context.Background()
			if out, err := l.Gateway.Run(ctx, tc.break_...); err != nil {
				t.Fatalf("%v: %v\n%s", tc.break_, err, out)
			}
			if out, _ := l.Gateway.Run(ctx, tc.check...); strings.Contains(out, tc.want) {
				t.Fatalf("breaking did not break: %v shows %q", tc.check, tc.want)
			}
			t0 := time.Now()
			eventually(t, 5*time.Second, "repair", func() (bool, string) {
				out, _ := l.Gateway.Run(ctx, tc.check...)
				if !strings.Contains(out, tc.want) {
					return false, "not repaired yet: " + out
				}
				a := fetch(c1.NS, 1*time.Second, other)
				b := fetch(c2.NS, 1*time.Second, other)
				h := fetch(c2.NS, 1*time.Second, "--cacert", l.UpstreamCAFile, "https://"+l.OtherIP.String()+"/")
				return a.upstream() && b.Code == 302 && h.Err != nil, "c1: " + a.String() + " c2: " + b.String() + " c2 https: " + h.String()
			})
			t.Logf("repaired within %v", time.Since(t0).Round(100*time.Millisecond))
		})
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	s := newSite(t, 1)
	l := s.l
	ctx := context.Background()
	rules := func() string {
		out, _ := l.Gateway.Run(ctx, "sh", "-c", "iptables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'; ipset save | sed 's/ timeout [0-9]*//; s/ packets [0-9]* bytes [0-9]*//'")
		return out
	}
	base := rules()

	t.Run("ctl rejects bad MAC and IP", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string // the error names the bad value or what is missing
		}{
			{[]string{"allow", "--mac", "02:00:00:00:00"}, "02:00:00:00:00"},
			{[]string{"allow", "--ip", "10.20.0.300"}, "10.20.0.300"},
			{[]string{"allow", "--ip", "192.168.1.5", "--mac", "02:00:00:00:00:09"}, "not in the client network"},
			{[]string{"allow", "--ip", "10.20.0.50", "--down", "5 Mbps"}, "5 Mbps"},
			{[]string{"kick", "--mac", "zz:00:00:00:00:01"}, "zz:00:00:00:00:01"},
			{[]string{"allow"}, "--mac"},
			// Passes every syntax check; the gateway refuses it before
			// anything is recorded (the shaper's smallest rate is 8kbit).
			{[]string{"allow", "--ip", "10.20.0.11", "--mac", "02:00:00:00:00:01", "--down", "1kbit"}, "1kbit"},
		} {
			out, err := s.ctl(ctx, tc.args...)
			if err == nil {
				t.Errorf("ctl %v succeeded: %s", tc.args, out)
				continue
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("ctl %v: error %q does not name %q", tc.args, out, tc.want)
			}
		}
		if got := rules(); got != base {
			t.Fatalf("a rejected request changed the kernel:\n--- before\n%s\n--- after\n%s", base, got)
		}
	})

	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"bad config", strings.Replace(labConfig, "down: \"0\"", "down: 5 Mbps", 1), "limits.down"},
		{"subnet overlapping the uplink", strings.Replace(labConfig, "10.20.0.1/22, dhcp_range: 10.20.0.100-10.20.0.200", "198.51.100.129/25", 1), "overlaps the uplink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.stop(syscall.SIGTERM)
			defer s.start()
			before := rules()
			cfg := filepath.Join(l.Dir, "bad.yaml")
			if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(tc.yaml, "%[1]s", l.Dir)), 0o644); err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			out, err := l.Gateway.Run(cctx, s.bin, "run", "-config", cfg)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("portal run with %s: err=%v out=%s; want an error naming %q", tc.name, err, out, tc.want)
			}
			if tc.name == "bad config" && !strings.Contains(out, "bad.yaml:") {
				t.Errorf("error does not name file:line: %s", out)
			}
			if got := rules(); got != before {
				t.Fatalf("a refused start changed the kernel:\n--- before\n%s\n--- after\n%s", before, got)
			}
		})
	}
}

func TestTeardownRemovesOnlyOurs(t *testing.T) {
	s := newSite(t, 1)
	l := s.l
	ctx := context.Background()
	// Someone else's rule and set, which teardown must keep.
	for _, argv := range [][]string{
		{"iptables", "-A", "FORWARD", "-p", "tcp", "--dport", "25", "-j", "DROP"},
		{"ipset", "create", "theirs", "hash:ip"},
	} {
		if out, err := l.Gateway.Run(ctx, argv...); err != nil {
			t.Fatalf("%v: %v %s", argv, err, out)
		}
	}
	fetch(l.Clients[0].NS, 2*time.Second, "http://"+l.OtherIP.String()+"/")
	s.allow("--ip", l.Clients[0].IP.String())
	s.stop(syscall.SIGTERM)
	for range 2 {
		if out, err := l.Gateway.Run(ctx, s.bin, "teardown", "-config", s.cfg); err != nil {
			t.Fatalf("teardown: %v\n%s", err, out)
		}
	}
	out, _ := l.Gateway.Run(ctx, "sh", "-c", "iptables-save; ip6tables-save; ipset list -n; tc qdisc show; ip link show")
	for _, bad := range []string{"cw-", "cwifb0", "htb"} {
		if strings.Contains(out, bad) {
			t.Errorf("after teardown %q is still there:\n%s", bad, out)
		}
	}
	for _, keep := range []string{"--dport 25 -j DROP", "theirs"} {
		if !strings.Contains(out, keep) {
			t.Errorf("teardown removed someone else's %q", keep)
		}
	}
	if fwd, _ := l.Gateway.Run(ctx, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(fwd) != "0" {
		t.Errorf("after teardown ip_forward = %q, want 0 (clients would be routed unfiltered)", fwd)
	}
	pids, _ := l.Gateway.Run(ctx, "sh", "-c", "pgrep -a dnsmasq || true")
	if strings.Contains(pids, filepath.Join(l.Dir, "state")) {
		t.Errorf("dnsmasq still running after teardown: %s", pids)
	}
}

func TestTeardownRefusesWhileRunning(t *testing.T) {
	s := newSite(t, 1)
	ctx := context.Background()
	out, err := s.l.Gateway.Run(ctx, s.bin, "teardown", "-config", s.cfg)
	if err == nil || !strings.Contains(out, "daemon is running") {
		t.Fatalf("teardown with the daemon running: err=%v out=%s", err, out)
	}
	if out, _ := s.l.Gateway.Run(ctx, "iptables", "-S", "cw-fwd"); !strings.Contains(out, "cw-captive") {
		t.Fatalf("teardown removed rules of a running daemon:\n%s", out)
	}
}
