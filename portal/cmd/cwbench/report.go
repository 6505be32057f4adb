package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// references are the figures issue 2 quotes for the gateways in use today.
// They are not measured here.
var references = []row{
	{"nodogsplash 5.0.2: authorise one client", "few", "10–12 ms", "reported in issue 2", "—"},
	{"nodogsplash 5.0.2: authorise one client", "1,000", "34 ms (3 iptables rules per client)", "reported in issue 2", "—"},
	{"nodogsplash 5.0.2: authorise 1,000 clients", "0 → 1,000", "15 s", "reported in issue 2", "—"},
	{"nodogsplash 5.0.2: restart", "1,001", "9 s", "reported in issue 2", "—"},
	{"nodogsplash 5.0.2: stop", "1,001", "69 s", "reported in issue 2", "—"},
	{"openNDS 11 beta: authorise one client", "any", "1–1.9 s; crashed after about 217 clients", "reported in issue 2", "—"},
}

// report renders the results as markdown; err, if any, is said first.
func (b *bench) report(err error) string {
	var w strings.Builder
	fmt.Fprintf(&w, "# Gateway benchmark\n\n")
	fmt.Fprintf(&w, "`make bench` (`go run ./portal/cmd/cwbench`), run %s.\n\n", b.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&w, "- Machine: %d CPUs (%s), kernel %s, %s\n", runtime.NumCPU(), cpuModel(), kernel(), memTotal())
	fmt.Fprintf(&w, "- Portal: %s (%s)\n", version(b.o.portal), runtime.Version())
	fmt.Fprintf(&w, "- Whole run: %s; other engineers' tests were running on the machine at the same time (noisy).\n", fmtDur(time.Since(b.started)))
	if err != nil {
		fmt.Fprintf(&w, "\n**The run did not finish:** %s\n", firstLine(err.Error()))
	}
	fmt.Fprintf(&w, "\n| metric | clients | result | target | ok |\n|---|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %s |\n", r.Metric, r.Clients, r.Result, r.Target, r.OK)
	}
	if len(b.profRows) > 0 {
		fmt.Fprintf(&w, "\n## Where the time goes (profile, same run)\n\n| what | clients | cost |\n|---|---|---|\n")
		for _, r := range b.profRows {
			fmt.Fprintf(&w, "| %s | %s | %s |\n", r.Metric, r.Clients, r.Result)
		}
	}
	if len(b.logs) > 0 {
		fmt.Fprintf(&w, "\nThe daemon's start-up log of the \"reboot\" (phases by timestamp):\n\n```\n")
		for _, l := range b.logs {
			if len(l) > 240 {
				l = l[:240] + " …"
			}
			fmt.Fprintln(&w, l)
		}
		fmt.Fprintf(&w, "```\n")
	}
	fmt.Fprintf(&w, "\n## For scale: figures reported in issue 2 (not measured here)\n\n| gateway | clients | figure | source | |\n|---|---|---|---|---|\n")
	for _, r := range references {
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %s |\n", r.Metric, r.Clients, r.Result, r.Target, r.OK)
	}
	fmt.Fprintf(&w, "\n## How\n\n")
	for _, s := range []string{
		"A lab site in network namespaces (`internal/lab`): upstream, gateway (bridge `br-cw`, readdressed to " + clientPrefix + "), 3 client namespaces; the real `portal run` in the gateway namespace, driven through its control socket (`control.APIClient`).",
		"Synthetic sessions: MAC `02:01:00:…`, IPs from 10.20.4.1, each shaped " + b.o.fillDown + " down / " + b.o.fillUp + " up (one HTB class pair each), allowed one at a time; \"N clients\" counts them plus the two real authorised clients.",
		"Allow → first packet: a client namespace sends a 32-byte UDP packet every ~200 µs to a socket in the upstream namespace; each sample kicks the client, waits until no packet has arrived for 20 ms, takes t0, calls Allow, and records the arrival time of the first packet at the upstream.",
		"Throughput and shaping: iperf3 -t 5 -O 1 (first second omitted) from a real client to the upstream; \"download\" is -R. iperf3 reports TCP goodput; HTB limits whole frames, and a full segment carries 1448 payload bytes in a 1514-byte frame, so goodput at exactly the limit is 0.956 × limit: the ok column uses goodput × 1514/1448.",
		"Restart: SIGKILL to the daemon only (dnsmasq and the kernel state stay), then `portal run` again; \"reboot\": SIGKILL, `portal teardown` (removes chains, sets, qdiscs, dnsmasq; keeps the session store), then `portal run`; the clock stops when `ipset list -t cw-auth` counts every session and a real client fetches a page upstream.",
	} {
		fmt.Fprintf(&w, "- %s\n", s)
	}
	for _, n := range b.notes {
		fmt.Fprintf(&w, "- %s\n", n)
	}
	return w.String()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int
			fmt.Sscan(v, &kb)
			return fmt.Sprintf("%.1f GB RAM", float64(kb)/(1<<20))
		}
	}
	return "? RAM"
}

func version(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "portal ?"
	}
	return "portal " + strings.TrimSpace(string(out))
}
