package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/civicwifi/civicwifi/portal/internal/control"
)

// clientPrefix is the bench's client network: the lab's clients
// (10.20.0.11..) and 10,000 synthetic ones (10.20.4.1..) both fit.
const clientPrefix = "10.20.0.1/18"

const benchConfig = `site: bench
interfaces: {clients: br-cw, uplink: wan0, ifb: cwifb0}
client_network: {address: ` + clientPrefix + `, dhcp_range: 10.20.0.100-10.20.0.200}
dns: {upstreams: [198.51.100.1]}
portal: {http_port: 2050, https_port: 2443, api_url: "https://10.20.0.1:2443/api/captive", click_through: true, tls_cert: %[2]s, tls_key: %[3]s, rate_limit: 0}
walled_garden: {domains: [garden.example.test]}
limits: {down: "0", up: "0", session: 2h, idle: "0", quota: "0"}
state_dir: %[1]s/state
control_socket: %[1]s/portal.sock
metrics_listen: 127.0.0.1:9102
`

// bench is one run: the lab, the daemon in it, and the rows measured so far.
type bench struct {
	o        options
	progress io.Writer
	started  time.Time

	l      *lab.Lab
	cfg    string
	sock   string
	daemon *exec.Cmd
	starts int
	ctl    *control.APIClient

	// captive stays captive (wrk); probe toggles (allow latency);
	// bulk is authorised unshaped or shaped (iperf3).
	captive, probe, bulk *lab.Client
	synthetic            int // synthetic sessions allowed so far

	rows     []row
	profRows []row
	notes    []string
	logs     []string // the daemon's start-up log lines of the "reboot"
}

// row is one line of the results table.
type row struct {
	Metric, Clients, Result, Target, OK string
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "[%5.1fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, args...))
}

func (b *bench) add(r row) {
	b.rows = append(b.rows, r)
	b.logf("%s | %s | %s | %s | %s", r.Metric, r.Clients, r.Result, r.Target, r.OK)
}

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

func okMark(ok bool) string {
	if ok {
		return "yes"
	}
	return "**NO**"
}

func (b *bench) run(ctx context.Context) error {
	if err := b.setup(ctx); err != nil {
		return err
	}
	if !b.o.idleOnly {
		if err := b.redirect(ctx); err != nil {
			return fmt.Errorf("measuring redirects: %w", err)
		}
		if err := b.portal(ctx); err != nil {
			return fmt.Errorf("measuring the portal: %w", err)
		}
	}
	if b.o.portalOnly {
		return nil
	}
	// bulk and probe are real clients: synthetic sessions fill the rest.
	if _, err := b.allow(ctx, b.bulk, "0", "0"); err != nil {
		return err
	}
	lat, err := newLatencyProbe(ctx, b)
	if err != nil {
		return err
	}
	defer lat.close()

	var thr10 [2]float64
	for i, scale := range b.o.scales {
		if err := b.fill(ctx, scale-2); err != nil {
			return fmt.Errorf("filling to %d clients: %w", scale, err)
		}
		if err := lat.measure(ctx, scale); err != nil {
			return fmt.Errorf("measuring allow latency at %d clients: %w", scale, err)
		}
		if err := b.repairs(ctx, scale); err != nil {
			return err
		}
		if err := b.rss(ctx, scale); err != nil {
			return err
		}
		if err := b.idleCPU(ctx, scale, b.o.idle); err != nil {
			return err
		}
		if b.o.idleOnly {
			continue
		}
		switch i {
		case 0:
			if err := b.execCosts(ctx, scale); err != nil {
				return fmt.Errorf("profiling: %w", err)
			}
			if thr10, err = b.forwarding(ctx, scale, nil); err != nil {
				return err
			}
		case len(b.o.scales) - 1:
			if _, err := b.forwarding(ctx, scale, &thr10); err != nil {
				return err
			}
			if err := b.shaping(ctx, scale); err != nil {
				return err
			}
			if err := b.kernelReads(ctx, scale); err != nil {
				return fmt.Errorf("profiling: %w", err)
			}
			if err := b.clientsCost(ctx, scale); err != nil {
				return fmt.Errorf("profiling: %w", err)
			}
			if err := b.pausedForwarding(ctx, scale); err != nil {
				return fmt.Errorf("profiling: %w", err)
			}
			if err := b.restart(ctx, scale); err != nil {
				return err
			}
			if err := b.reboot(ctx, scale); err != nil {
				return err
			}
		}
	}
	return nil
}

// setup builds the lab with a /18 client network and starts the daemon.
func (b *bench) setup(ctx context.Context) error {
	b.logf("building the lab")
	l, err := lab.New(ctx, lab.Options{Clients: 3})
	if err != nil {
		return err
	}
	b.l = l
	b.captive, b.probe, b.bulk = l.Clients[0], l.Clients[1], l.Clients[2]
	if err := l.StartUpstream(ctx); err != nil {
		return err
	}
	// The lab's bridge has 10.20.0.1/22; the bench needs room for 10,000
	// clients. The clients keep their /22 addresses: the gateway is on
	// their link either way.
	if _, err := l.Gateway.Run(ctx, "ip", "addr", "del", l.ClientPrefix.String(), "dev", l.LANIf); err != nil {
		return err
	}
	if _, err := l.Gateway.Run(ctx, "ip", "addr", "replace", clientPrefix, "dev", l.LANIf); err != nil {
		return err
	}
	b.cfg = filepath.Join(l.Dir, "portal.yaml")
	b.sock = filepath.Join(l.Dir, "portal.sock")
	ca, err := lab.NewCA(l.Dir)
	if err != nil {
		return err
	}
	cert, key, err := ca.Issue("portal", l.GatewayIP.String())
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.cfg, []byte(fmt.Sprintf(benchConfig, l.Dir, cert, key)), 0o644); err != nil {
		return err
	}
	b.ctl = control.NewClient(b.sock)
	if _, _, err := b.start(ctx); err != nil {
		return err
	}
	if st, err := b.ctl.Status(ctx); err == nil {
		b.note("The daemon's repair count right after its first start (empty store): %d.", st.Repairs)
	}
	// Clients still reach the gateway with the bridge's new address.
	for _, c := range l.Clients {
		if err := c.Ping(ctx, l.GatewayIP); err != nil {
			return fmt.Errorf("client %d pinging the gateway after re-addressing br-cw: %w", c.Index, err)
		}
	}
	return nil
}

// start runs `portal run` in the gateway namespace and waits for its
// control socket to answer: it returns how long that took, and the
// `took=` of its `sessions enforced` log line.
func (b *bench) start(ctx context.Context) (ready time.Duration, took string, err error) {
	b.starts++
	name := fmt.Sprintf("portal-%d", b.starts)
	t0 := time.Now()
	cmd, err := b.l.Start(b.l.Gateway, name, b.o.portal, "run", "-config", b.cfg, "-log-format", "text")
	if err != nil {
		return 0, "", err
	}
	b.daemon = cmd
	exited := b.l.Exited(cmd)
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := b.ctl.Status(cctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-exited:
			return 0, "", fmt.Errorf("portal exited while starting; log:\n%s", tail(b.l.LogFile(name), 20))
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, "", fmt.Errorf("portal did not answer within 60 s; log:\n%s", tail(b.l.LogFile(name), 20))
		}
	}
	ready = time.Since(t0)
	log, _ := os.ReadFile(b.l.LogFile(name))
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "sessions enforced") {
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, "took="); ok {
					took = v
				}
			}
		}
	}
	return ready, took, nil
}

// kill9 kills the daemon (only its own PID: dnsmasq lives on, as after a
// crash) and waits for it to be gone.
func (b *bench) kill9() error {
	if b.daemon == nil {
		return nil
	}
	exited := b.l.Exited(b.daemon)
	if err := syscall.Kill(b.daemon.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing the portal: %w", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("portal %d still running 10 s after SIGKILL", b.daemon.Process.Pid)
	}
	b.daemon = nil
	return nil
}

// close stops the daemon, removes its kernel state and the lab.
func (b *bench) close() error {
	if b.l == nil {
		return nil
	}
	b.logf("cleaning up lab %s", b.l.ID)
	if b.daemon != nil {
		b.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.l.Exited(b.daemon):
		case <-time.After(10 * time.Second):
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if b.cfg != "" {
		b.l.Gateway.Run(ctx, b.o.portal, "teardown", "-config", b.cfg)
	}
	return b.l.Close()
}

// allow authorises a real lab client with the given rates.
func (b *bench) allow(ctx context.Context, c *lab.Client, down, up string) (control.Session, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := b.ctl.Allow(cctx, control.AllowRequest{MAC: c.MAC.String(), IP: c.IP.String(), Down: down, Up: up})
	if err != nil {
		return s, fmt.Errorf("allowing client %d: %w", c.Index, err)
	}
	return s, nil
}

// syntheticClient is the n-th (0-based) made-up device: MAC 02:01:..,
// IP from 10.20.4.1 up, away from the lab's clients and DHCP range.
func syntheticClient(n int) (net.HardwareAddr, netip.Addr) {
	mac := net.HardwareAddr{0x02, 0x01, 0, byte(n >> 16), byte(n >> 8), byte(n)}
	base := uint32(10)<<24 | 20<<16 | 4<<8 | 1
	v := base + uint32(n)
	return mac, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// fill allows synthetic sessions until there are want of them, one at a
// time through the control socket, and reports the time per allow.
func (b *bench) fill(ctx context.Context, want int) error {
	n := want - b.synthetic
	if n <= 0 {
		return nil
	}
	total := want + 2
	b.logf("allowing %d synthetic clients (to %d authorised)", n, total)
	var lat []time.Duration
	t0 := time.Now()
	for i := b.synthetic; i < want; i++ {
		mac, ip := syntheticClient(i)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t := time.Now()
		_, err := b.ctl.Allow(cctx, control.AllowRequest{MAC: mac.String(), IP: ip.String(), Down: b.o.fillDown, Up: b.o.fillUp})
		cancel()
		if err != nil {
			return fmt.Errorf("allowing synthetic %s %s: %w", mac, ip, err)
		}
		lat = append(lat, time.Since(t))
		b.synthetic = i + 1
		if b.synthetic%1000 == 0 {
			b.logf("  %d synthetic allowed", b.synthetic)
		}
	}
	took := time.Since(t0)
	if n < 50 {
		return nil // too few to be a figure
	}
	st := summarise(lat)
	last := lat
	if len(last) > 1000 {
		last = last[len(last)-1000:]
	}
	stLast := summarise(last)
	per1000 := took * 1000 / time.Duration(n)
	b.add(row{
		Metric:  fmt.Sprintf("authorising %d more clients (ctl allow, sequential, %s/%s shaping each)", n, b.o.fillDown, b.o.fillUp),
		Clients: fmt.Sprintf("%d → %d", total-n, total),
		Result: fmt.Sprintf("%s total (%s per 1,000); per allow mean %s, p99 %s; last 1,000: mean %s, p99 %s",
			fmtDur(took), fmtDur(per1000), fmtDur(st.mean), fmtDur(st.p99), fmtDur(stLast.mean), fmtDur(stLast.p99)),
		Target: "< 15 s per 1,000 (nodogsplash)",
		OK:     okMark(per1000 < 15*time.Second),
	})
	return nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
