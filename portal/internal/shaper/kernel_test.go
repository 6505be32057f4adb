package shaper_test

// Tier 2: the real kernel, in a lab of namespaces (internal/lab), proven with
// iperf3 traffic between the clients and the upstream namespace.

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/shaper"
)

const (
	iperfSecs = "5"
	tolerance = 0.05
)

type site struct {
	*lab.Lab
	sh *shaper.TC
}

// newSite builds a lab with n clients, routes the client prefix back from
// the upstream (no NAT needed), starts one iperf3 server per client in the
// upstream (ports 5201+i) and sets the shaper up in the gateway.
func newSite(t *testing.T, n int) *site {
	t.Helper()
	lab.Require(t, "tc", "iperf3", "ss")
	l := lab.NewT(t, lab.Options{Clients: n})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := l.Upstream.Run(ctx, "ip", "route", "add", l.ClientPrefix.Masked().String(), "via", l.GatewayWANIP.String()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := l.StartIperf3(ctx, l.Upstream, lab.IperfPort+i); err != nil {
			t.Fatal(err)
		}
	}
	sh, err := shaper.New(shaper.Config{ClientIf: l.LANIf, Subnet: l.ClientPrefix.Masked(), Netns: l.Gateway.Name}, slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sh.Teardown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return &site{Lab: l, sh: sh}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// measure runs iperf3 from client i (0-based) against its server; down
// means -R (the upstream sends). It returns the receiver's bits per second.
func (s *site) measure(t *testing.T, i int, down bool) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	secs, _ := strconv.Atoi(iperfSecs)
	bps, err := lab.Iperf3(ctx, s.Clients[i].NS, s.UpstreamIP.String(), lab.IperfPort+i, secs, down)
	if err != nil {
		t.Fatal(err)
	}
	return bps
}

func (s *site) set(t *testing.T, l shaper.Limit) {
	t.Helper()
	if err := s.sh.Set(context.Background(), l); err != nil {
		t.Fatal(err)
	}
}

func dirName(down bool) string {
	if down {
		return "down"
	}
	return "up"
}

// tries is how many times a measurement may run: a shaper cannot make
// traffic faster than its limit, but on a loaded 2-core machine (other test
// runs, fuzzers) a starved iperf3 can measure less; such a figure is
// measured again, and the test fails only if every try is off. A figure
// above the tolerance is never retried away: it would be a shaping error.
const tries = 3

func ok(got float64, want quantity.Rate) bool {
	ratio := got / float64(want)
	return ratio >= 1-tolerance && ratio <= 1+tolerance
}

func within(t *testing.T, what string, got float64, want quantity.Rate) {
	t.Helper()
	t.Logf("%s: limit %s, measured %.3f Mbit/s (%.1f%%)", what, want, got/1e6, got/float64(want)*100)
	if !ok(got, want) {
		t.Errorf("%s: measured %.3f Mbit/s, want %s ±%.0f%%", what, got/1e6, want, tolerance*100)
	}
}

// measureWithin measures client i until the figure is within tolerance of
// want, or is too high, or tries run out.
func (s *site) measureWithin(t *testing.T, what string, i int, down bool, want quantity.Rate) {
	t.Helper()
	var got float64
	for try := 1; try <= tries; try++ {
		got = s.measure(t, i, down)
		if ok(got, want) || got > float64(want) || try == tries {
			break
		}
		t.Logf("%s: measured %.3f Mbit/s (%.1f%%), low: measuring again", what, got/1e6, got/float64(want)*100)
	}
	within(t, what, got, want)
}

func unshaped(t *testing.T, what string, got float64) {
	t.Helper()
	t.Logf("%s: unshaped, measured %.1f Mbit/s", what, got/1e6)
	if got < 200e6 {
		t.Errorf("%s: measured %.1f Mbit/s, want unshaped (> 200 Mbit/s)", what, got/1e6)
	}
}

func TestKernelRates(t *testing.T) {
	s := newSite(t, 1)
	ip := s.Clients[0].IP
	for _, r := range []quantity.Rate{2 * quantity.Mbit, 20 * quantity.Mbit} {
		s.set(t, shaper.Limit{IP: ip, Down: r, Up: r})
		for _, down := range []bool{true, false} {
			s.measureWithin(t, fmt.Sprintf("%s %s", r, dirName(down)), 0, down, r)
		}
	}
	stats, err := s.sh.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st := stats[ip]; st.DownBytes < 1e6 || st.UpBytes < 1e6 {
		t.Errorf("Stats()[%s] = %+v, want over 1 MB each way", ip, st)
	}
	// 256 kbit/s, 100 Mbit/s and 1 Gbit/s: reported, not asserted (see README).
	for _, r := range []quantity.Rate{256 * quantity.Kbit, 100 * quantity.Mbit, quantity.Gbit} {
		s.set(t, shaper.Limit{IP: ip, Down: r, Up: r})
		for _, down := range []bool{true, false} {
			got := s.measure(t, 0, down)
			t.Logf("%s %s: measured %.3f Mbit/s (%.1f%%)", r, dirName(down), got/1e6, got/float64(r)*100)
		}
	}
}

func TestKernelTwoClients(t *testing.T) {
	s := newSite(t, 2)
	rates := []quantity.Rate{2 * quantity.Mbit, 20 * quantity.Mbit}
	for i, c := range s.Clients {
		s.set(t, shaper.Limit{IP: c.IP, Down: rates[i], Up: rates[i]})
	}
	for _, down := range []bool{true, false} {
		got := make([]float64, len(s.Clients))
		for try := 1; try <= tries; try++ {
			var wg sync.WaitGroup
			for i := range s.Clients {
				wg.Go(func() { got[i] = s.measure(t, i, down) })
			}
			wg.Wait()
			retry := false
			for i := range s.Clients {
				retry = retry || !ok(got[i], rates[i]) && got[i] < float64(rates[i])
			}
			if !retry || try == tries {
				break
			}
			t.Logf("%s together: measured %.3f and %.3f Mbit/s, low: measuring again", dirName(down), got[0]/1e6, got[1]/1e6)
		}
		for i, c := range s.Clients {
			within(t, fmt.Sprintf("client %s %s together", c.IP, dirName(down)), got[i], rates[i])
		}
	}
}

func TestKernelUnclassifiedAndRemove(t *testing.T) {
	s := newSite(t, 2)
	s.set(t, shaper.Limit{IP: s.Clients[0].IP, Down: 2 * quantity.Mbit, Up: 2 * quantity.Mbit})
	// Client 2 has no class: its traffic is not held back.
	unshaped(t, "unclassified client down", s.measure(t, 1, true))
	unshaped(t, "unclassified client up", s.measure(t, 1, false))
	s.measureWithin(t, "shaped client down", 0, true, 2*quantity.Mbit)

	// One direction only: a zero rate leaves upload unshaped.
	s.set(t, shaper.Limit{IP: s.Clients[0].IP, Down: 2 * quantity.Mbit})
	unshaped(t, "down-only client up", s.measure(t, 0, false))

	if err := s.sh.Remove(context.Background(), s.Clients[0].IP); err != nil {
		t.Fatal(err)
	}
	unshaped(t, "removed client down", s.measure(t, 0, true))
	out, err := s.Gateway.Run(context.Background(), "tc", "class", "show", "dev", s.LANIf)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("after Remove, classes on %s: %q, %v; want none", s.LANIf, out, err)
	}
	if err := s.sh.Remove(context.Background(), s.Clients[0].IP); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestKernelReconcile(t *testing.T) {
	s := newSite(t, 2)
	ctx := context.Background()
	want := []shaper.Limit{
		{IP: s.Clients[0].IP, Down: 2 * quantity.Mbit, Up: 2 * quantity.Mbit},
	}
	if n, err := s.sh.Reconcile(ctx, want, nil); err != nil || n == 0 {
		t.Fatalf("first Reconcile = %d, %v; want some repairs (the client's classes)", n, err)
	}
	if n, err := s.sh.Reconcile(ctx, want, nil); err != nil || n != 0 {
		t.Fatalf("second Reconcile = %d, %v; want 0", n, err)
	}
	// Someone deletes the root qdisc and the IFB device, and adds a stray class.
	for _, argv := range [][]string{
		{"tc", "qdisc", "del", "dev", s.LANIf, "root"},
		{"ip", "link", "del", "cwifb0"},
	} {
		if _, err := s.Gateway.Run(ctx, argv...); err != nil {
			t.Fatal(err)
		}
	}
	// (Until the repair, the ingress redirect points at a missing device and
	// drops the clients' packets: see README.)
	n, err := s.sh.Reconcile(ctx, want, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Reconcile after drift: %d repairs", n)
	if n == 0 {
		t.Errorf("Reconcile after drift = 0 repairs")
	}
	s.measureWithin(t, "repaired down", 0, true, 2*quantity.Mbit)
	s.measureWithin(t, "repaired up", 0, false, 2*quantity.Mbit)

	// A class and filter made behind our back for client 2, and a wrong rate
	// for client 1: Reconcile removes the first and fixes the second.
	s.set(t, shaper.Limit{IP: s.Clients[1].IP, Down: 5 * quantity.Mbit})
	if _, err := s.Gateway.Run(ctx, "tc", "class", "change", "dev", s.LANIf, "parent", "1:", "classid", "1:b", "htb", "rate", "7mbit", "ceil", "7mbit"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.sh.Reconcile(ctx, want, nil); err != nil || n != 3 {
		t.Errorf("Reconcile of stray client and wrong rate = %d, %v; want 3 (filter, class, rate)", n, err)
	}
	unshaped(t, "stray client removed, down", s.measure(t, 1, true))
	s.measureWithin(t, "rate fixed, down", 0, true, 2*quantity.Mbit)
	if n, err := s.sh.Reconcile(ctx, want, nil); err != nil || n != 0 {
		t.Errorf("last Reconcile = %d, %v; want 0", n, err)
	}
}

func TestKernelTeardown(t *testing.T) {
	lab.Require(t, "tc", "iperf3", "ss")
	l := lab.NewT(t, lab.Options{Clients: 1})
	ctx := context.Background()
	snapshot := func() string {
		var b strings.Builder
		for _, argv := range [][]string{{"ip", "-o", "link", "show"}, {"tc", "qdisc", "show"}, {"tc", "filter", "show", "dev", l.LANIf, "ingress"}} {
			out, err := l.Gateway.Run(ctx, argv...)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(out, "\n") {
				if argv[0] == "ip" { // names and kinds only: carrier state changes by itself
					if f := strings.Fields(line); len(f) > 1 {
						line = f[1]
					}
				}
				b.WriteString(line + "\n")
			}
		}
		return b.String()
	}
	before := snapshot()
	sh, err := shaper.New(shaper.Config{ClientIf: l.LANIf, Subnet: l.ClientPrefix, Netns: l.Gateway.Name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sh.Setup(ctx); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if err := sh.Set(ctx, shaper.Limit{IP: l.Clients[0].IP, Down: quantity.Mbit, Up: quantity.Mbit}); err != nil {
		t.Fatal(err)
	}
	if during := snapshot(); during == before {
		t.Fatal("Setup changed nothing")
	}
	if err := sh.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(); after != before {
		t.Errorf("after Teardown:\n%s\nbefore Setup:\n%s", after, before)
	}
	if err := sh.Teardown(ctx); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

func TestKernelIntact(t *testing.T) {
	s := newSite(t, 1)
	ctx := context.Background()
	want := []shaper.Limit{{IP: s.Clients[0].IP, Down: 2 * quantity.Mbit, Up: 2 * quantity.Mbit}}
	if _, err := s.sh.Reconcile(ctx, want, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		break_ []string
	}{
		{"root qdisc deleted", []string{"tc", "qdisc", "del", "dev", s.LANIf, "root"}},
		{"ingress qdisc deleted", []string{"tc", "qdisc", "del", "dev", s.LANIf, "ingress"}},
		{"IFB root deleted", []string{"tc", "qdisc", "del", "dev", "cwifb0", "root"}},
		{"IFB down", []string{"ip", "link", "set", "cwifb0", "down"}},
		{"IFB deleted", []string{"ip", "link", "del", "cwifb0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ok, err := s.sh.Intact(ctx); err != nil || !ok {
				t.Fatalf("Intact before = %v, %v; want true", ok, err)
			}
			if out, err := s.Gateway.Run(ctx, tc.break_...); err != nil {
				t.Fatalf("%v: %v %s", tc.break_, err, out)
			}
			if ok, err := s.sh.Intact(ctx); err != nil || ok {
				t.Fatalf("Intact after %s = %v, %v; want false", tc.name, ok, err)
			}
			if _, err := s.sh.Reconcile(ctx, want, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}
