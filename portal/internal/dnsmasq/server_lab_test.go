package dnsmasq_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/civicwifi/civicwifi/portal/internal/dnsmasq"
)

const portalURL = "https://portal.civicwifi.test/api/captive?site=parco-pertini"

// TestServerLab runs the real dnsmasq in the lab's gateway namespace and
// proves DHCP (address and option 114), the lease file, the walled-garden
// ipset, restart after kill -9 and adoption by a second Server.
func TestServerLab(t *testing.T) {
	lab.Require(t, "dnsmasq", "dhclient", "ipset", "ss", "dig")
	l := lab.NewT(t, lab.Options{Clients: 1, DHCP: true, Upstream: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gw, client := l.Gateway, l.Clients[0]

	if out, err := gw.Run(ctx, "ipset", "create", "cw-garden", "hash:net", "timeout", "0"); err != nil {
		t.Fatalf("creating set: %v\n%s", err, out)
	}

	// dnsmasq runs in the gateway namespace through a wrapper that execs
	// it there, so the pid the Server starts is dnsmasq's own.
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "dnsmasq-in-gw")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s dnsmasq \"$@\"\n", gw.Name)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := dnsmasq.Config{
		Binary:           wrapper,
		Interface:        l.LANIf,
		Address:          l.GatewayIP,
		Subnet:           l.ClientPrefix.Masked(),
		RangeStart:       netip.MustParseAddr("10.20.1.0"),
		RangeEnd:         netip.MustParseAddr("10.20.1.200"),
		LeaseTime:        10 * time.Minute,
		Upstreams:        []netip.AddrPort{netip.AddrPortFrom(l.UpstreamIP, 53)},
		CaptivePortalURL: portalURL,
		GardenDomains:    []string{"garden.example.test"},
		GardenSet:        "cw-garden",
		StateDir:         filepath.Join(dir, "state"),
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	srv, err := dnsmasq.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.Stop(sctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(runCtx) }()
	if err := lab.WaitListening(ctx, gw, "udp", 53); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitListening(ctx, gw, "udp", 67); err != nil {
		t.Fatal(err)
	}
	first := srv.PID()
	if first == 0 {
		t.Fatal("Running dnsmasq has no pid")
	}
	if sid := sessionID(t, first); sid != first {
		t.Errorf("dnsmasq session = %d, want its own session %d (so it outlives the daemon)", sid, first)
	}
	if out, _ := gw.Run(ctx, "ss", "-Hlun", "sport = :53"); strings.Contains(out, "127.0.0.1") || strings.Contains(out, "198.51.100.2") {
		t.Errorf("dnsmasq listens beyond the client network:\n%s", out)
	}

	t.Run("dhcp", func(t *testing.T) {
		resolv, _ := os.ReadFile("/etc/resolv.conf")
		env := dhcpClient(t, ctx, client, "anna-phone")
		if after, _ := os.ReadFile("/etc/resolv.conf"); string(after) != string(resolv) {
			t.Errorf("the DHCP client changed the root namespace's /etc/resolv.conf")
		}
		ip, err := netip.ParseAddr(env["new_ip_address"])
		if err != nil {
			t.Fatalf("no address: %v (env %v)", err, env)
		}
		if ip.Less(cfg.RangeStart) || cfg.RangeEnd.Less(ip) {
			t.Errorf("address %s outside %s-%s", ip, cfg.RangeStart, cfg.RangeEnd)
		}
		if got := env["new_captive_portal"]; got != portalURL {
			t.Errorf("option 114 = %q, want %q", got, portalURL)
		}
		if got := env["new_routers"]; got != "10.20.0.1" {
			t.Errorf("routers = %q, want 10.20.0.1", got)
		}
		if got := env["new_domain_name_servers"]; got != "10.20.0.1" {
			t.Errorf("dns = %q, want 10.20.0.1", got)
		}
		leases, err := srv.Leases()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, le := range leases {
			if le.MAC.String() == client.MAC.String() {
				found = true
				if le.IP != ip || le.Hostname != "anna-phone" || le.Expires.Before(time.Now()) {
					t.Errorf("lease = %+v, want IP %s hostname anna-phone, in the future", le, ip)
				}
			}
		}
		if !found {
			t.Errorf("no lease for %s in %+v", client.MAC, leases)
		}
	})

	t.Run("garden set", func(t *testing.T) {
		r := client.Resolver(l.GatewayIP.String() + ":53")
		addrs, err := r.LookupNetIP(ctx, "ip4", "garden.example.test")
		if err != nil {
			t.Fatalf("resolving through the gateway: %v", err)
		}
		if len(addrs) != 1 || addrs[0] != l.GardenIP {
			t.Errorf("garden.example.test = %v, want %s", addrs, l.GardenIP)
		}
		if _, err := r.LookupNetIP(ctx, "ip4", "www.example.test"); err != nil {
			t.Fatalf("resolving www: %v", err)
		}
		set := setMembers(t, ctx, gw)
		if !strings.Contains(set, l.GardenIP.String()) {
			t.Errorf("cw-garden lacks %s:\n%s", l.GardenIP, set)
		}
		if strings.Contains(set, l.OtherIP.String()) {
			t.Errorf("cw-garden holds the non-garden %s:\n%s", l.OtherIP, set)
		}
		// After a flush of the set and of the cache, the name refills it.
		gw.Run(ctx, "ipset", "flush", "cw-garden")
		if err := srv.FlushCache(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.LookupNetIP(ctx, "ip4", "garden.example.test"); err != nil {
			t.Fatal(err)
		}
		if set := setMembers(t, ctx, gw); !strings.Contains(set, l.GardenIP.String()) {
			t.Errorf("after FlushCache, cw-garden lacks %s:\n%s", l.GardenIP, set)
		}
	})

	t.Run("probe hosts and the portal answered by the gateway", func(t *testing.T) {
		// The lab's internet knows every probe host (198.51.100.11 and an
		// AAAA): the gateway's own address proves dnsmasq answered itself.
		for _, name := range append(append([]string{}, dnsmasq.ProbeHosts...), "portal.civicwifi.test", "x.captive.apple.com") {
			if got := dig(t, ctx, client.NS, l.GatewayIP, name, "A"); got != "NOERROR "+l.GatewayIP.String() {
				t.Errorf("%s A = %q, want NOERROR %s", name, got, l.GatewayIP)
			}
			for _, typ := range []string{"AAAA", "HTTPS"} {
				if got := dig(t, ctx, client.NS, l.GatewayIP, name, typ); got != "NOERROR" {
					t.Errorf("%s %s = %q, want NOERROR without an answer (never forwarded)", name, typ, got)
				}
			}
		}
		// Control: upstream, the names exist elsewhere.
		if got := dig(t, ctx, gw, l.UpstreamIP, "captive.apple.com", "A"); got != "NOERROR "+l.OtherIP.String() {
			t.Errorf("upstream captive.apple.com A = %q, want NOERROR %s", got, l.OtherIP)
		}
		// Shared probe hosts serve real content: they resolve upstream.
		for _, name := range dnsmasq.SharedProbeHosts {
			if got := dig(t, ctx, client.NS, l.GatewayIP, name, "A"); got != "NOERROR "+l.OtherIP.String() {
				t.Errorf("%s A = %q, want the real NOERROR %s", name, got, l.OtherIP)
			}
		}
	})

	t.Run("walled garden changed by the policy", func(t *testing.T) {
		r := client.Resolver(l.GatewayIP.String() + ":53")
		// A bad list (a probe host) changes nothing: same dnsmasq.
		before := srv.PID()
		if err := srv.SetGardenDomains(ctx, []string{"captive.apple.com"}); err == nil {
			t.Fatal("a probe host was accepted in the walled garden")
		}
		if srv.PID() != before {
			t.Errorf("a refused garden restarted dnsmasq")
		}
		gw.Run(ctx, "ipset", "flush", "cw-garden")
		if err := srv.SetGardenDomains(ctx, []string{"other.example.test"}); err != nil {
			t.Fatal(err)
		}
		waitNewPID(t, ctx, srv, before)
		if err := lab.WaitListening(ctx, gw, "udp", 53); err != nil {
			t.Fatal(err)
		}
		var set string
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			r.LookupNetIP(ctx, "ip4", "other.example.test")
			r.LookupNetIP(ctx, "ip4", "garden.example.test")
			if set = setMembers(t, ctx, gw); strings.Contains(set, l.OtherIP.String()) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(set, l.OtherIP.String()) || strings.Contains(set, l.GardenIP.String()) {
			t.Errorf("cw-garden after the change = %q, want only other.example.test's %s", set, l.OtherIP)
		}
		// And back, for the subtests that follow.
		if err := srv.SetGardenDomains(ctx, cfg.GardenDomains); err != nil {
			t.Fatal(err)
		}
		if err := lab.WaitListening(ctx, gw, "udp", 53); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("restart after kill -9", func(t *testing.T) {
		old := srv.PID()
		syscall.Kill(old, syscall.SIGKILL)
		start := time.Now()
		pid := waitNewPID(t, ctx, srv, old)
		if err := lab.WaitListening(ctx, gw, "udp", 53); err != nil {
			t.Fatal(err)
		}
		t.Logf("dnsmasq %d killed, %d serving again after %s", old, pid, time.Since(start).Round(time.Millisecond))
	})

	t.Run("adopt", func(t *testing.T) {
		running := srv.PID()
		stopRun() // the daemon stops (SIGTERM or crash): dnsmasq stays
		if err := <-runDone; err != nil {
			t.Fatalf("Run: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
		if !srv.Running() || srv.PID() != running {
			t.Fatalf("dnsmasq %d did not survive the end of Run", running)
		}
		srv2, err := dnsmasq.New(cfg, log.With("server", 2))
		if err != nil {
			t.Fatal(err)
		}
		ctx2, cancel2 := context.WithCancel(ctx)
		done2 := make(chan error, 1)
		go func() { done2 <- srv2.Run(ctx2) }()
		defer func() { cancel2(); <-done2 }()
		time.Sleep(time.Second)
		if got := srv2.PID(); got != running {
			t.Errorf("second Server runs pid %d, want adopted %d", got, running)
		}
		if pids := dnsmasqPIDs(t, cfg.StateDir); len(pids) != 1 {
			t.Errorf("dnsmasq processes on this state dir: %v, want one", pids)
		}
		// The adopted process is supervised by polling: kill -9 restarts it.
		syscall.Kill(running, syscall.SIGKILL)
		start := time.Now()
		pid := waitNewPID(t, ctx, srv2, running)
		t.Logf("adopted dnsmasq %d killed, %d started after %s", running, pid, time.Since(start).Round(time.Millisecond))
		// The new pid runs the wrapper (sh, then ip netns exec) for a
		// moment before it execs dnsmasq: wait for that, bounded.
		var pids []int
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if pids = dnsmasqPIDs(t, cfg.StateDir); len(pids) == 1 || time.Now().After(deadline) {
				break
			}
		}
		if len(pids) != 1 || pids[0] != pid {
			t.Errorf("dnsmasq processes on this state dir: %v, want one (%d)", pids, pid)
		}
	})

	t.Run("config change restarts", func(t *testing.T) {
		running := srv.PID()
		cfg3 := cfg
		cfg3.LeaseTime = 20 * time.Minute
		srv3, err := dnsmasq.New(cfg3, log.With("server", 3))
		if err != nil {
			t.Fatal(err)
		}
		ctx3, cancel3 := context.WithCancel(ctx)
		done3 := make(chan error, 1)
		go func() { done3 <- srv3.Run(ctx3) }()
		defer func() { cancel3(); <-done3 }()
		pid := waitNewPID(t, ctx, srv3, running)
		if pids := dnsmasqPIDs(t, cfg.StateDir); len(pids) != 1 || pids[0] != pid {
			t.Errorf("dnsmasq processes: %v, want only %d", pids, pid)
		}
		conf, _ := os.ReadFile(cfg.StateDir + "/dnsmasq.conf")
		if !strings.Contains(string(conf), ",20m\n") {
			t.Errorf("config not rewritten:\n%s", conf)
		}
	})

	t.Run("daemon killed -9", func(t *testing.T) {
		// A separate daemon process (this test binary re-executed) starts
		// dnsmasq, is killed -9, and dnsmasq keeps serving; a second
		// daemon adopts it and is killed -9 too.
		cfg4 := cfg
		cfg4.LeaseTime = 30 * time.Minute // a change: the first daemon restarts dnsmasq as its child
		var running int
		for i, msg := range []string{"started dnsmasq", "adopted running dnsmasq"} {
			daemon := startDaemon(t, cfg4)
			pid := waitDaemonLog(t, daemon, msg)
			if i == 0 {
				running = pid
				if err := lab.WaitListening(ctx, gw, "udp", 53); err != nil {
					t.Fatal(err)
				}
			} else if pid != running {
				t.Errorf("daemon %d adopted pid %d, want %d", i, pid, running)
			}
			daemon.Process.Signal(syscall.SIGKILL)
			daemon.Wait()
			time.Sleep(200 * time.Millisecond)
			if pids := dnsmasqPIDs(t, cfg.StateDir); len(pids) != 1 || pids[0] != running {
				t.Fatalf("after kill -9 of daemon %d, dnsmasq processes = %v, want [%d]", i, pids, running)
			}
			r := client.Resolver(l.GatewayIP.String() + ":53")
			if _, err := r.LookupNetIP(ctx, "ip4", "www.example.test"); err != nil {
				t.Fatalf("DNS after kill -9 of daemon %d: %v", i, err)
			}
		}
		env := dhcpClient(t, ctx, l.Clients[0], "anna-phone") // renews through the orphaned dnsmasq
		if env["new_ip_address"] == "" {
			t.Errorf("no DHCP after the daemon died: %v", env)
		}
	})

	t.Run("stop", func(t *testing.T) {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		if err := srv.Stop(sctx); err != nil {
			t.Fatal(err)
		}
		if pids := dnsmasqPIDs(t, cfg.StateDir); len(pids) != 0 {
			t.Errorf("dnsmasq still running after Stop: %v", pids)
		}
		if srv.Running() {
			t.Error("Running after Stop")
		}
	})
}

// helperDaemon stands in for the portal daemon in a child process (see
// TestMain and startDaemon): it runs one Server until SIGTERM or SIGKILL.
func helperDaemon(js string) int {
	var cfg dnsmasq.Config
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv, err := dnsmasq.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startDaemon runs helperDaemon in a new process with stderr in a file.
func startDaemon(t *testing.T, cfg dnsmasq.Config) *daemonProc {
	t.Helper()
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logf := filepath.Join(t.TempDir(), "daemon.log")
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CW_DNSMASQ_DAEMON="+string(js))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &daemonProc{Cmd: cmd, log: logf}
}

type daemonProc struct {
	*exec.Cmd
	log string
}

// waitDaemonLog waits for a log line with msg and returns its pid attribute.
func waitDaemonLog(t *testing.T, d *daemonProc, msg string) int {
	t.Helper()
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `".* pid=(\d+)`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(d.log)
		if m := re.FindSubmatch(b); m != nil {
			pid, _ := strconv.Atoi(string(m[1]))
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(d.log)
	t.Fatalf("daemon did not log %q within 10s:\n%s", msg, b)
	return 0
}

// dhcpClient runs dhclient once in ns with a script that records the
// environment and configures the address (and touches nothing else, e.g. no
// resolv.conf). It returns the environment of the BOUND call.
func dhcpClient(t *testing.T, ctx context.Context, ns *lab.Client, hostname string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`option captive-portal code 114 = text;
send host-name "%s";
request subnet-mask, broadcast-address, routers, domain-name-servers, captive-portal;
timeout 20;
retry 1;
`, hostname)
	script := `#!/bin/sh
env > "` + dir + `/env.$reason"
case "$reason" in
BOUND|RENEW|REBIND|REBOOT)
	ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
esac
exit 0
`
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(dir+"/dhclient.conf", []byte(conf), 0o644))
	must(os.WriteFile(dir+"/script", []byte(script), 0o755))
	pidFile := dir + "/dhclient.pid"
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	})
	start := time.Now()
	out, err := ns.Run(ctx, "dhclient", "-1", "-v", "-cf", dir+"/dhclient.conf", "-sf", dir+"/script",
		"-lf", dir+"/dhclient.leases", "-pf", pidFile, "eth0")
	if err != nil {
		t.Fatalf("dhclient: %v\n%s", err, out)
	}
	t.Logf("DHCP exchange took %s", time.Since(start).Round(time.Millisecond))
	b, err := os.ReadFile(dir + "/env.BOUND")
	if err != nil {
		t.Fatalf("no BOUND call of the script: %v\n%s", err, out)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

func setMembers(t *testing.T, ctx context.Context, gw lab.NS) string {
	t.Helper()
	out, err := gw.Run(ctx, "ipset", "list", "cw-garden")
	if err != nil {
		t.Fatalf("listing set: %v\n%s", err, out)
	}
	_, members, _ := strings.Cut(out, "Members:")
	return members
}

func waitNewPID(t *testing.T, ctx context.Context, srv *dnsmasq.Server, old int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if pid := srv.PID(); pid != 0 && pid != old {
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no new dnsmasq within 10s after %d", old)
	return 0
}

// dnsmasqPIDs lists the live dnsmasq processes whose command line names a
// configuration file in stateDir.
func dnsmasqPIDs(t *testing.T, stateDir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.HasPrefix(string(cmd), "dnsmasq\x00") || !strings.Contains(string(cmd), "--conf-file="+stateDir+"/") {
			continue
		}
		if stat, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && strings.Contains(string(stat), ") Z ") {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func sessionID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	sid, _ := strconv.Atoi(f[3]) // state ppid pgrp session
	return sid
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dig asks server for one record type of name from ns: the status and the
// answers, e.g. "NOERROR 10.20.0.1", or "NOERROR" for an empty answer.
func dig(t *testing.T, ctx context.Context, ns lab.NS, server netip.Addr, name, typ string) string {
	t.Helper()
	out, err := ns.Run(ctx, "dig", "+tries=2", "+time=2", "+noall", "+comments", "+answer", "@"+server.String(), name, typ)
	if err != nil {
		t.Fatalf("dig %s %s: %v\n%s", name, typ, err, out)
	}
	status := regexp.MustCompile(`status: ([A-Z]+)`).FindStringSubmatch(out)
	if status == nil {
		t.Fatalf("dig %s %s: no status in\n%s", name, typ, out)
	}
	got := []string{status[1]}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && !strings.HasPrefix(line, ";") && f[3] == typ {
			got = append(got, f[4])
		}
	}
	return strings.Join(got, " ")
}
