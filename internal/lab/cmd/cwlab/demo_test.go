package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// TestDemoTour runs what `make demo` runs, with -exit: the README promises
// that the tour works, so every step's expected answer is checked here.
func TestDemoTour(t *testing.T) {
	lab.Require(t, "ip", "bridge", "iptables", "ipset", "tc", "conntrack", "dnsmasq", "iperf3", "curl", "ss")
	dir := t.TempDir()
	portal := filepath.Join(dir, "portal")
	controller := filepath.Join(dir, "controller")
	self := filepath.Join(dir, "cwlab")
	for _, b := range []struct{ out, pkg string }{{portal, "../../../../portal/cmd/portal"}, {controller, "../../../../controller/cmd/controller"}, {self, "."}} {
		if out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "demo", "-portal", portal, "-controller", controller, "-exit")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cwlab demo: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{
		"302 -> http://10.20.0.1:2050/portal/?url=http%3A%2F%2F198.51.100.11%2F", // captive phone redirected
		"Failed to connect to 198.51.100.11 port 443",                            // HTTPS refused at once
		"allowed 02:00:00:00:00:01 (10.20.0.11)",                                 // ctl allow
		"upstream ok",                                                            // through after allow
		"5mbit",                                                                  // controller plan shows the change
		"down=5mbit",                                                             // the gateway applied the new policy
		"policy version",                                                         // ctl status shows the controller link
		"303 -> http://198.51.100.11/",                                           // click-through
		"kicked 02:00:00:00:00:02 (10.20.0.12)",                                  // kick
		`civicwifi_gateway_authorisations_total{method="click-through"} 1`, // metrics
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the tour's output lacks %q", want)
		}
	}
	// The shaped downloads: near 10 Mbit/s, then near 5 after the edit.
	var rates []float64
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); strings.Contains(line, "receiver") && len(f) > 6 && f[len(f)-2] == "Mbits/sec" {
			r, err := strconv.ParseFloat(f[len(f)-3], 64)
			if err == nil {
				rates = append(rates, r)
			}
		}
	}
	if len(rates) != 2 || rates[0] < 9 || rates[0] > 11 || rates[1] < 4.5 || rates[1] > 5.5 {
		t.Errorf("iperf3 figures in the tour %v, want about 10 then about 5 Mbit/s", rates)
	}
	if t.Failed() {
		t.Logf("tour output:\n%s", text)
	}
	// Nothing of the demo is left behind.
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "cwg-") {
		for _, line := range strings.Split(string(ns), "\n") {
			if strings.HasPrefix(line, "cwg-") && strings.Contains(text, strings.Fields(line)[0]) {
				t.Errorf("the demo left its namespace %s", line)
			}
		}
	}
}
