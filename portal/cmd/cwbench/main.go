// Command cwbench measures the gateway daemon on this machine: it builds a
// lab site in network namespaces, runs the real portal binary in the
// gateway namespace, and measures the pre-auth redirect path, the time
// from an allow to the first forwarded packet at 10, 1,000 and 10,000
// authorised clients, forwarding throughput, shaping accuracy, memory and
// restart times. It writes a markdown table (also printed to stdout).
//
//	sudo go run ./portal/cmd/cwbench -portal bin/portal -out bench/results.md
//
// Every load loop is bounded in count and time; the lab (namespaces and
// every process started in them) is removed on return, on error and on
// Ctrl-C. Needs root, wrk, iperf3, iptables, ipset, tc, conntrack, dnsmasq.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line settings.
type options struct {
	portal     string
	out        string
	iterations int
	scales     []int
	fillDown   string
	fillUp     string
	timeout    time.Duration
	portalOnly bool
	idle       time.Duration // how long each idle-CPU row watches the daemon
	idleOnly   bool
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cwbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.portal, "portal", "", "portal binary (built from ./portal/cmd/portal if empty)")
	fs.StringVar(&o.out, "out", "", "write the markdown results here too (e.g. bench/results.md)")
	fs.IntVar(&o.iterations, "iterations", 100, "allow-latency samples per scale (1..1000)")
	small := fs.Bool("small", false, "quick run: scales 10, 100, 1000 instead of 10, 1000, 10000")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "abort (and clean up) after this long")
	fs.BoolVar(&o.portalOnly, "portal-only", false, "only the captive portal's rows (redirects, probe storm, landing page TTFB): about a minute")
	scales := fs.String("scales", "", "comma-separated client counts to measure at, ascending (default 10,1000,10000)")
	fs.DurationVar(&o.idle, "idle", 5*time.Second, "how long each idle-CPU row watches the daemon")
	fs.BoolVar(&o.idleOnly, "idle-only", false, "only the rows of each scale up to the idle CPU (fill, allow latency, drift repairs, RSS, idle CPU): no portal, forwarding, shaping or restart rows")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.iterations < 1 || o.iterations > 1000 {
		fmt.Fprintln(stderr, "cwbench: -iterations must be 1..1000")
		return 2
	}
	o.scales = []int{10, 1000, 10000}
	if *small {
		o.scales = []int{10, 100, 1000}
	}
	if *scales != "" {
		var err error
		if o.scales, err = parseScales(*scales); err != nil {
			fmt.Fprintln(stderr, "cwbench: -scales:", err)
			return 2
		}
	}
	if o.idle < time.Second {
		fmt.Fprintln(stderr, "cwbench: -idle must be at least 1s")
		return 2
	}
	o.fillDown, o.fillUp = "10mbit", "2mbit"
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "cwbench: needs root (network namespaces, iptables, tc)")
		return 1
	}
	for _, tool := range []string{"ip", "iptables", "ipset", "tc", "conntrack", "dnsmasq", "wrk", "iperf3", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(stderr, "cwbench: %s not found (make deps installs it)\n", tool)
			return 1
		}
	}

	// Signals cancel ctx; they stay caught until the lab is gone, so a
	// second Ctrl-C cannot interrupt the cleanup.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	if o.portal == "" {
		dir, err := os.MkdirTemp("", "cwbench-bin-")
		if err != nil {
			fmt.Fprintln(stderr, "cwbench:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		o.portal = filepath.Join(dir, "portal")
		fmt.Fprintln(stderr, "building the portal...")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", o.portal, "./portal/cmd/portal").CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "cwbench: building the portal: %v\n%s", err, out)
			return 1
		}
	}
	abs, err := filepath.Abs(o.portal)
	if err != nil {
		fmt.Fprintln(stderr, "cwbench:", err)
		return 1
	}
	o.portal = abs

	b := &bench{o: o, progress: stderr, started: time.Now()}
	err = b.run(ctx)
	if err != nil && ctx.Err() != nil {
		// Say why the step failed: the signal or the -timeout.
		err = fmt.Errorf("%w: %v", ctx.Err(), err)
	}
	if cerr := b.close(); cerr != nil {
		fmt.Fprintln(stderr, "cwbench: cleaning up:", cerr)
	}
	report := b.report(err)
	fmt.Fprint(stdout, report)
	if o.out != "" {
		if werr := os.MkdirAll(filepath.Dir(o.out), 0o755); werr != nil {
			fmt.Fprintln(stderr, "cwbench:", werr)
			return 1
		}
		if werr := os.WriteFile(o.out, []byte(report), 0o644); werr != nil {
			fmt.Fprintln(stderr, "cwbench:", werr)
			return 1
		}
		fmt.Fprintln(stderr, "wrote", o.out)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintln(stderr, "cwbench: interrupted or timed out; partial results above:", err)
		} else {
			fmt.Fprintln(stderr, "cwbench:", err)
		}
		return 1
	}
	return 0
}

// parseScales reads -scales: client counts, each at least 2 (the bench's
// own two real clients) and larger than the one before.
func parseScales(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		if n < 2 || n > 16000 {
			return nil, fmt.Errorf("%d: a scale must be 2..16000", n)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("%d: scales must ascend", n)
		}
		out = append(out, n)
	}
	return out, nil
}
