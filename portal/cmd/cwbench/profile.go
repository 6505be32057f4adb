package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// The profile rows say where an allow's time and the daemon's background
// work go: what the exec of one ipset or tc costs in the gateway
// namespace, what an fsync costs (bbolt syncs twice per transaction),
// and how long the kernel reads of the periodic poll and reconcile take
// at the current number of sessions.

func (b *bench) prof(metric string, scale int, result string) {
	r := row{Metric: metric, Clients: strconv.Itoa(scale), Result: result}
	b.profRows = append(b.profRows, r)
	b.logf("profile: %s | %d | %s", metric, scale, result)
}

// cpuTime returns pid's CPU time with that of the children it waited
// for: the daemon and the tc/ipset/iptables processes it ran.
func cpuTime(pid int) (time.Duration, error) {
	c, err := lab.ProcessCPU(pid)
	return c.Self + c.Children, err
}

// idleCPU measures the daemon's CPU use (with its children) over d while
// nobody talks to it: the cost of the periodic poll, reconcile and flush.
func (b *bench) idleCPU(ctx context.Context, scale int, d time.Duration) error {
	pid := b.daemon.Process.Pid
	c0, err := cpuTime(pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, d); err != nil {
		return err
	}
	c1, err := cpuTime(pid)
	if err != nil {
		return err
	}
	pct := (c1 - c0).Seconds() / time.Since(t0).Seconds() * 100
	b.prof("daemon CPU while idle (poll 1 s, reconcile 2 s, flush 10 s), incl. its tc/ipset children", scale,
		fmt.Sprintf("%.0f%% of one core (over %s)", pct, fmtDur(d)))
	return nil
}

// memStats reads the Go memory figures from the daemon's metrics.
func (b *bench) memStats(ctx context.Context) string {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := b.l.Gateway.Dial(cctx, "tcp", "127.0.0.1:9102")
	if err != nil {
		return ""
	}
	defer conn.Close()
	if d, ok := cctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	want := map[string]string{
		"go_memstats_heap_inuse_bytes":    "heap in use",
		"go_memstats_heap_idle_bytes":     "heap idle",
		"go_memstats_heap_released_bytes": "released to the OS",
		"go_memstats_sys_bytes":           "Go sys",
	}
	got := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			if _, ok := want[f[0]]; ok {
				got[f[0]], _ = strconv.ParseFloat(f[1], 64)
			}
		}
	}
	var parts []string
	for _, k := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_sys_bytes"} {
		if v, ok := got[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f MB", want[k], v/(1<<20)))
		}
	}
	return strings.Join(parts, ", ")
}

// shTime runs script in the gateway namespace n times and returns the
// mean wall time per run, measured inside the namespace (so the cost of
// `ip netns exec` itself is not counted).
func (b *bench) shTime(ctx context.Context, n int, script string) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	sh := fmt.Sprintf(`a=$(date +%%s%%N); i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done; b=$(date +%%s%%N); echo $((b-a))`, n, script)
	out, err := b.l.Gateway.Run(cctx, "sh", "-c", sh)
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	ns, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("timing %q: %q", script, out)
	}
	return time.Duration(ns) / time.Duration(n), nil
}

// execCosts measures the fixed costs an allow pays.
func (b *bench) execCosts(ctx context.Context, scale int) error {
	// A scratch set of our own, removed at once.
	const scratch = "cwbench-scratch"
	if _, err := b.l.Gateway.Run(ctx, "ipset", "create", scratch, "bitmap:ip", "range", "10.20.0.0/18", "counters"); err != nil {
		return err
	}
	defer b.l.Gateway.Run(context.WithoutCancel(ctx), "ipset", "destroy", scratch)
	for _, c := range []struct{ what, script string }{
		{"one `ipset -exist add` exec (for comparison: an allow now writes its 3 elements by netlink)", "ipset -exist add " + scratch + " 10.20.5.$((i % 250 + 1)) packets 0 bytes 0"},
		{"one `tc` exec (`tc qdisc show dev lo`; for comparison: an allow now shapes by netlink)", "tc qdisc show dev lo >/dev/null"},
		{"one `/bin/true` exec (fork+exec floor)", "/bin/true"},
	} {
		d, err := b.shTime(ctx, 200, c.script)
		if err != nil {
			return err
		}
		b.prof(c.what, scale, fmtDur(d)+" each (mean of 200, in the gateway namespace)")
	}
	// fsync on the file system of the daemon's state directory.
	f, err := os.CreateTemp(filepath.Join(b.l.Dir, "state"), "fsync-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var lat []time.Duration
	for i := range 100 {
		t := time.Now()
		if _, err := f.WriteAt(buf, int64(i%16)*4096); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	st := summarise(lat)
	b.prof("4 KiB write + fsync in the state directory (bbolt: 2 per commit; allows arriving together share one)", scale,
		fmt.Sprintf("mean %s, p99 %s (n=100)", fmtDur(st.mean), fmtDur(st.p99)))
	return nil
}

// kernelReads times the reads the daemon's poll and reconcile make, at
// the current scale. The shaper's reconcile holds its lock (and an
// allow's shaper call waits for it) while it reads and parses tc state.
func (b *bench) kernelReads(ctx context.Context, scale int) error {
	for _, c := range []struct{ what, script string }{
		{"`ipset list cw-acct` command, for comparison (the daemon reads cw-acct and cw-dl every 1 s through netlink)", "ipset list cw-acct >/dev/null"},
		{"`ipset list cw-auth` command, for comparison (the reconcile reads the three sets every 2 s through netlink)", "ipset list cw-auth >/dev/null"},
		{"`tc class show dev br-cw` command, for comparison (the full reconcile reads classes through netlink)", "tc class show dev br-cw >/dev/null"},
		{"`tc filter show dev br-cw` command, for comparison (idem, filters)", "tc filter show dev br-cw >/dev/null"},
		{"`tc -s class show dev cwifb0` command, for comparison", "tc -s class show dev cwifb0 >/dev/null"},
	} {
		d, err := b.shTime(ctx, 3, c.script)
		if err != nil {
			return err
		}
		b.prof(c.what, scale, fmtDur(d)+" (mean of 3)")
	}
	return nil
}

// startLog returns the daemon's start-up log lines that time its phases.
func startLog(path string) []string {
	data, _ := os.ReadFile(path)
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		for _, m := range []string{`msg="firewall set up"`, `msg="shaper set up"`, `msg="firewall drift repaired"`, `msg="shaper repaired"`, `msg="sessions enforced"`, `msg="gateway running"`} {
			if strings.Contains(line, m) {
				out = append(out, line)
			}
		}
	}
	return out
}

// clientsCost times one `ctl clients` call (every session as JSON).
func (b *bench) clientsCost(ctx context.Context, scale int) error {
	t0 := time.Now()
	cs, err := b.ctl.Clients(ctx)
	if err != nil {
		return err
	}
	b.prof(fmt.Sprintf("`ctl clients` (control API, %d clients as JSON)", len(cs)), scale, fmtDur(time.Since(t0)))
	return nil
}

// repairs reports the daemon's count of drift repairs. Nothing but the
// daemon touches the kernel during the bench (until the "reboot"), so
// every repair means its periodic reconcile undid something it had just
// done itself: a reconcile that plans from a snapshot of the sessions
// taken before a concurrent allow removes that allow's set element and
// classes, and the next reconcile (2 s later) puts them back.
func (b *bench) repairs(ctx context.Context, scale int) error {
	st, err := b.ctl.Status(ctx)
	if err != nil {
		return err
	}
	b.add(row{
		Metric:  "drift repairs by the daemon's reconcile, with no outside drift (cumulative since start)",
		Clients: strconv.Itoa(scale),
		Result:  strconv.FormatUint(st.Repairs, 10),
		Target:  "0",
		OK:      okMark(st.Repairs == 0),
	})
	return nil
}

// pausedForwarding measures forwarding with the daemon stopped
// (SIGSTOP), to tell the kernel's per-packet cost at this scale from the
// CPU the daemon's background work takes away on a small machine.
func (b *bench) pausedForwarding(ctx context.Context, scale int) error {
	pid := b.daemon.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return err
	}
	defer syscall.Kill(pid, syscall.SIGCONT)
	for i, dir := range []string{"upload", "download"} {
		bps, err := b.iperf3(ctx, b.bulk, i == 1)
		if err != nil {
			return err
		}
		b.prof("forwarding, unshaped client, "+dir+", with the daemon paused (SIGSTOP)", scale, fmt.Sprintf("%.0f Mbit/s", bps/1e6))
	}
	return nil
}
