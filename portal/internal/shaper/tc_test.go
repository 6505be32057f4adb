package shaper

// Tier 0: no root needed. A fake runner stands in for ip and tc; it answers
// the read commands with real output captured from the kernel
// (testdata/kernel/, rewritten by `go test -run TestKernelCapture -capture`
// as root) and records every command, so the tests check the generated tc
// batch lines against golden files (testdata/*.golden, rewritten by -update).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// fakeRunner answers commands from outputs (keyed by the space-joined argv)
// and records them. A tc -batch fails with the next error of batchErrs.
type fakeRunner struct {
	outputs   map[string]string
	batchErrs []error
	log       strings.Builder
	batches   int
}

func (f *fakeRunner) run(_ context.Context, stdin string, argv ...string) ([]byte, error) {
	cmd := strings.Join(argv, " ")
	fmt.Fprintf(&f.log, "$ %s\n%s", cmd, stdin)
	if cmd == "tc -batch -" {
		f.batches++
		if len(f.batchErrs) > 0 {
			err := f.batchErrs[0]
			f.batchErrs = f.batchErrs[1:]
			return nil, err
		}
		return nil, nil
	}
	if cmd == "tc -j -batch -" { // filter shows, answered one by one
		var b strings.Builder
		for _, l := range strings.Split(strings.TrimSpace(stdin), "\n") {
			out, ok := f.outputs["tc -j "+l]
			if !ok {
				return nil, fmt.Errorf("fake: no output for %q", "tc -j "+l)
			}
			b.WriteString(strings.TrimSpace(out) + "\n")
		}
		return []byte(b.String()), nil
	}
	if out, ok := f.outputs[cmd]; ok {
		return []byte(out), nil
	}
	if argv[0] == "ip" && argv[1] == "link" || argv[0] == "tc" && argv[1] == "qdisc" {
		return nil, nil // a change outside the batch
	}
	return nil, fmt.Errorf("fake: no output for %q", cmd)
}

// fresh is a gateway with br-cw and nothing of ours.
func fresh() map[string]string {
	return map[string]string{
		"ip -d -j link show":                    `[{"ifname":"lo","flags":["LOOPBACK","UP"]},{"ifname":"br-cw","flags":["UP"],"linkinfo":{"info_kind":"bridge"}}]`,
		"tc -j qdisc show dev br-cw":            `[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]`,
		"tc -j qdisc show dev cwifb0":           `[]`,
		"tc -s class show dev br-cw":            ``,
		"tc -s class show dev cwifb0":           ``,
		"tc -j filter show dev br-cw parent 1:": `[]`,
	}
}

// capturedCommands are the read commands whose output the fixtures hold:
// the lab's /22 has four /24 qdiscs per device (100: to 103:).
func capturedCommands() [][]string {
	argvs := [][]string{{"ip", "-d", "-j", "link", "show"}}
	for _, dev := range []string{"br-cw", "cwifb0"} {
		argvs = append(argvs,
			[]string{"tc", "-j", "qdisc", "show", "dev", dev},
			[]string{"tc", "-s", "class", "show", "dev", dev})
		parents := []string{"1:", "100:", "101:", "102:", "103:"}
		if dev == "br-cw" {
			parents = append(parents, "ffff:")
		}
		for _, p := range parents {
			argvs = append(argvs, []string{"tc", "-j", "filter", "show", "dev", dev, "parent", p})
		}
	}
	return argvs
}

// fixtureFile is the file under testdata/kernel/ holding argv's output
// (no ':' or '/', which module zips do not allow).
func fixtureFile(argv []string) string {
	return filepath.Join("testdata/kernel", strings.NewReplacer(":", "", "/", "").Replace(strings.Join(argv, "_")))
}

// captured is the kernel's output after Setup, Set(10.20.0.11, 2mbit both
// ways) and Set(10.20.0.12, 5mbit down), in a lab with a /22.
func captured(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, argv := range capturedCommands() {
		name := strings.TrimPrefix(fixtureFile(argv), "testdata/kernel/")
		b, err := os.ReadFile(filepath.Join("testdata/kernel", name))
		if err != nil {
			t.Fatal(err)
		}
		m[strings.Join(argv, " ")] = string(b)
	}
	return m
}

// flatLayout is what version 1 of this package left in the kernel (one
// class per client under the root qdisc), for the same clients as
// captured: testdata/kernel-flat/.
func flatLayout(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	entries, err := os.ReadDir("testdata/kernel-flat")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("testdata/kernel-flat", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		cmd := strings.ReplaceAll(e.Name(), "_", " ")
		for _, p := range []string{" parent 1", " parent ffff"} {
			if strings.HasSuffix(cmd, p) {
				cmd += ":"
			}
		}
		m[cmd] = string(b)
	}
	return m
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

var lab22 = netip.MustParsePrefix("10.20.0.0/22")

func newFake(t *testing.T, subnet netip.Prefix, outputs map[string]string) (*TC, *fakeRunner) {
	t.Helper()
	f := &fakeRunner{outputs: outputs}
	tc, err := newTC(Config{ClientIf: "br-cw", Subnet: subnet}, nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return tc, f
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestSetupFresh(t *testing.T) {
	for _, subnet := range []string{"10.20.0.0/22", "10.20.8.0/27"} {
		t.Run(subnet, func(t *testing.T) {
			tc, f := newFake(t, netip.MustParsePrefix(subnet), fresh())
			if err := tc.Setup(context.Background()); err != nil {
				t.Fatal(err)
			}
			golden(t, "setup_"+strings.ReplaceAll(subnet, "/", "_"), f.log.String())
		})
	}
}

func TestSetupSlash16Size(t *testing.T) {
	tc, f := newFake(t, netip.MustParsePrefix("10.20.0.0/16"), fresh())
	if err := tc.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	var adds, links int
	for _, l := range strings.Split(f.log.String(), "\n") {
		switch {
		case strings.Contains(l, " divisor 256"):
			adds++
		case strings.Contains(l, " u32 ht ") && strings.Contains(l, " link "):
			links++
		}
	}
	// Per device: the octet table, 256 host tables and the table of each
	// of the 256 /24 qdiscs; 1 root link, 256 octet links and 256 links in
	// the /24 qdiscs.
	if adds != 2*513 || links != 2*513 {
		t.Errorf("/16 setup: %d tables, %d links; want %d each", adds, links, 2*513)
	}
}

func TestSetupKeepsClients(t *testing.T) {
	tc, f := newFake(t, lab22, captured(t))
	if err := tc.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.batches != 0 {
		t.Errorf("Setup on a set-up kernel ran %d batches:\n%s", f.batches, f.log.String())
	}
	want := map[netip.Addr]Limit{
		ip("10.20.0.11"): {IP: ip("10.20.0.11"), Down: 2 * quantity.Mbit, Up: 2 * quantity.Mbit},
		ip("10.20.0.12"): {IP: ip("10.20.0.12"), Down: 5 * quantity.Mbit},
	}
	// tc prints rates to three significant digits: the learned limits are
	// the configured ones within that precision.
	near := cmp.Comparer(func(a, b quantity.Rate) bool { return a == b || a != 0 && b != 0 && rateClose(wireBits(a), b) })
	if diff := cmp.Diff(want, tc.installed, near, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("learned clients (-want +got):\n%s", diff)
	}
	// And a Set of the same limits after a restart changes nothing.
	for _, l := range want {
		if err := tc.Set(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}
	if f.batches != 0 {
		t.Errorf("re-Setting learned limits ran %d batches:\n%s", f.batches, f.log.String())
	}
}

// TestSetRemove walks one client through its life; every Set/Remove is one
// batch (or none).
func TestSetRemove(t *testing.T) {
	tc, f := newFake(t, lab22, captured(t))
	ctx := context.Background()
	if err := tc.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	f.log.Reset()
	steps := []struct {
		name string
		do   func() error
	}{
		{"new client 10.20.1.0, 256kbit down, 1gbit up", func() error {
			return tc.Set(ctx, Limit{IP: ip("10.20.1.0"), Down: 256 * quantity.Kbit, Up: quantity.Gbit})
		}},
		{"same again: nothing", func() error {
			return tc.Set(ctx, Limit{IP: ip("10.20.1.0"), Down: 256 * quantity.Kbit, Up: quantity.Gbit})
		}},
		{"change rates", func() error {
			return tc.Set(ctx, Limit{IP: ip("10.20.1.0"), Down: 20 * quantity.Mbit, Up: 1500 * quantity.Kbit})
		}},
		{"upload unshaped", func() error {
			return tc.Set(ctx, Limit{IP: ip("10.20.1.0"), Down: 20 * quantity.Mbit})
		}},
		{"remove", func() error { return tc.Remove(ctx, ip("10.20.1.0")) }},
		{"remove again: nothing", func() error { return tc.Remove(ctx, ip("10.20.1.0")) }},
		{"remove a learned client", func() error { return tc.Remove(ctx, ip("10.20.0.12")) }},
		{"remove outside the subnet: nothing", func() error { return tc.Remove(ctx, ip("192.0.2.1")) }},
	}
	var got strings.Builder
	for _, s := range steps {
		before := f.batches
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if f.batches-before > 1 {
			t.Errorf("%s: %d batches, want at most 1", s.name, f.batches-before)
		}
		fmt.Fprintf(&got, "# %s\n%s", s.name, f.log.String())
		f.log.Reset()
	}
	golden(t, "set_remove", got.String())
}

func TestSetRejects(t *testing.T) {
	tc, f := newFake(t, lab22, fresh())
	for _, l := range []Limit{
		{IP: ip("10.20.0.0"), Down: quantity.Mbit},
		{IP: ip("10.20.3.255"), Down: quantity.Mbit},
		{IP: ip("10.20.4.1"), Down: quantity.Mbit},
		{IP: ip("2001:db8::1"), Down: quantity.Mbit},
		{IP: ip("10.20.0.5"), Down: 7 * quantity.Kbit},
	} {
		if err := tc.Set(context.Background(), l); err == nil {
			t.Errorf("Set(%+v) = nil, want an error", l)
		}
	}
	if f.log.Len() != 0 {
		t.Errorf("rejected Sets ran commands:\n%s", f.log.String())
	}
}

// TestSetRetriesAfterDrift: the cache says a class exists, the kernel lost
// it; the first batch fails, Set re-reads the kernel and succeeds.
func TestSetRetriesAfterDrift(t *testing.T) {
	tc, f := newFake(t, lab22, captured(t))
	ctx := context.Background()
	if err := tc.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	tc.installed[ip("10.20.0.20")] = Limit{IP: ip("10.20.0.20"), Down: quantity.Mbit}
	f.log.Reset()
	f.batchErrs = []error{errors.New("Error: Specified class not found.")}
	if err := tc.Set(ctx, Limit{IP: ip("10.20.0.20"), Up: quantity.Mbit}); err != nil {
		t.Fatal(err)
	}
	golden(t, "set_retry", f.log.String())
	if got := tc.installed[ip("10.20.0.20")]; got.Down != 0 || got.Up != quantity.Mbit {
		t.Errorf("cache after retry: %+v", got)
	}
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	same := []Limit{
		{IP: ip("10.20.0.11"), Down: 2 * quantity.Mbit, Up: 2 * quantity.Mbit},
		{IP: ip("10.20.0.12"), Down: 5 * quantity.Mbit},
	}
	tests := []struct {
		name    string
		base    func(*testing.T) map[string]string // default captured
		mutate  func(map[string]string)
		want    []Limit
		repairs int
	}{
		{"in sync", nil, nil, same, 0},
		{"want differs", nil, nil, []Limit{
			{IP: ip("10.20.0.11"), Down: 3 * quantity.Mbit, Up: 2 * quantity.Mbit}, // rate change down
			{IP: ip("10.20.2.7"), Up: quantity.Mbit},                               // new
			{IP: ip("10.20.9.9"), Up: quantity.Mbit},                               // outside: ignored
			{IP: ip("10.20.0.13")},                                                 // no limits: ignored
		}, 6}, // 100:10b down change (3mbit keeps the leaf limit); 10.20.2.7 up class + 2 filters; 10.20.0.12 down 2 filters (its class parked)
		{"root qdisc deleted", nil, func(m map[string]string) {
			m["tc -j qdisc show dev br-cw"] = `[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}},{"kind":"ingress","handle":"ffff:","parent":"ffff:fff1","options":{}}]`
			m["tc -s class show dev br-cw"] = ``
		}, same, 1 + 8 + 9 + 2 + 13}, // root; 4 /24 classes + qdiscs; 5 root + 4 /24 tables; 2 classes; 5+4 links, 2+2 host filters
		{"ifb deleted", nil, func(m map[string]string) {
			m["ip -d -j link show"] = `[{"ifname":"br-cw","flags":["UP"],"linkinfo":{"info_kind":"bridge"}}]`
		}, same, 1 + 1 + 8 + 9 + 1 + 11}, // link, root, /24 classes + qdiscs, tables, class, 9 links + 2 host filters
		{"foreign filter", nil, func(m map[string]string) {
			m["tc -j filter show dev br-cw parent 1:"] = strings.Replace(m["tc -j filter show dev br-cw parent 1:"], `[`, `[{"protocol":"all","pref":49152,"kind":"u32","chain":0},`, 1)
			m["tc -j filter show dev br-cw parent 101:"] = strings.Replace(m["tc -j filter show dev br-cw parent 101:"], `[`, `[{"protocol":"ip","pref":3,"kind":"u32","chain":0},`, 1)
		}, same, 2},
		{"stray class under the root: rebuilt", nil, func(m map[string]string) {
			m["tc -s class show dev br-cw"] += "class htb 1:fff root prio 0 rate 1Mbit ceil 1Mbit burst 1600b cburst 1600b\n"
		}, same, 1 + 8 + 9 + 2 + 13},
		{"stray class in a /24", nil, func(m map[string]string) {
			// 102:ff is no client's (minors start at 0x100); 102:1ff,
			// 10.20.2.255's, would be a parked class and stay.
			m["tc -s class show dev br-cw"] += "class htb 102:ff root prio 0 rate 1Mbit ceil 1Mbit burst 1600b cburst 1600b\n"
			m["tc -s class show dev br-cw"] += "class htb 102:1ff root prio 0 rate 1Mbit ceil 1Mbit burst 1600b cburst 1600b\n"
		}, same, 1},
		{"/24 qdisc deleted", nil, func(m map[string]string) {
			// tc qdisc del dev br-cw parent 1:100: HTB puts a default pfifo there.
			m["tc -j qdisc show dev br-cw"] = strings.Replace(m["tc -j qdisc show dev br-cw"],
				`{"kind":"htb","handle":"100:","parent":"1:100","options":{"r2q":100,"default":"0","direct_packets_stat":0,"direct_qlen":1000}}`,
				`{"kind":"pfifo","handle":"0:","parent":"1:100","options":{"limit":1000}}`, 1)
			var kept []string
			for _, l := range strings.SplitAfter(m["tc -s class show dev br-cw"], "\n\n") {
				if !strings.HasPrefix(l, "class htb 100:") {
					kept = append(kept, l)
				}
			}
			m["tc -s class show dev br-cw"] = strings.Join(kept, "")
		}, same, 7}, // qdisc, table, link, 2 classes (+ leaves), 2 host filters
		{"/24 class rate changed", nil, func(m map[string]string) {
			m["tc -s class show dev cwifb0"] = strings.Replace(m["tc -s class show dev cwifb0"], "1:103 root leaf 103: prio 0 rate 10Gbit", "1:103 root leaf 103: prio 0 rate 5Gbit", 1)
		}, same, 1},
		{"host filters deleted", nil, func(m map[string]string) {
			drop := func(key, fh string) {
				var fs []map[string]any
				if err := json.Unmarshal([]byte(m[key]), &fs); err != nil {
					t.Fatal(err)
				}
				fs = slices.DeleteFunc(fs, func(f map[string]any) bool {
					o, _ := f["options"].(map[string]any)
					return o != nil && o["fh"] == fh
				})
				b, _ := json.Marshal(fs)
				m[key] = string(b)
			}
			drop("tc -j filter show dev br-cw parent 100:", "1:b:1")
			drop("tc -j filter show dev cwifb0 parent 1:", "100:b:1")
		}, same, 2},
		{"flat layout of an older version: migrated", flatLayout, nil, same, 2 * (1 + 8 + 9 + 13)}, // per device as root qdisc deleted...

	}
	tests[len(tests)-1].repairs = (1 + 8 + 9 + 2 + 13) + (1 + 8 + 9 + 1 + 11) // ...with 2 clients down, 1 up
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.base == nil {
				tt.base = captured
			}
			out := tt.base(t)
			if tt.mutate != nil {
				tt.mutate(out)
			}
			tc, f := newFake(t, lab22, out)
			n, err := tc.Reconcile(ctx, tt.want, nil)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.repairs {
				t.Errorf("repairs = %d, want %d", n, tt.repairs)
			}
			if f.batches > 1 {
				t.Errorf("%d batches, want at most 1", f.batches)
			}
			golden(t, "reconcile_"+strings.NewReplacer(" ", "_", "/", "", ":", "").Replace(tt.name), f.log.String())

			// With a guard and nothing stale: the same repairs, and no
			// command before the lock but the reads.
			out = tt.base(t)
			if tt.mutate != nil {
				tt.mutate(out)
			}
			tc2, f2 := newFake(t, lab22, out)
			g := &fakeGuard{log: &f2.log}
			n2, err := tc2.Reconcile(ctx, tt.want, g)
			if err != nil {
				t.Fatal(err)
			}
			if n2 != n {
				t.Errorf("guarded repairs = %d, unguarded %d", n2, n)
			}
			before, _, _ := strings.Cut(f2.log.String(), "LOCK\n")
			for _, line := range strings.Split(strings.TrimSpace(before), "\n") {
				if line != "" && !strings.Contains(line, " show") && line != "$ tc -j -batch -" {
					t.Errorf("%q ran before the lock", line)
				}
			}
			if g.locks != 1 {
				t.Errorf("guard taken %d times, want 1", g.locks)
			}
		})
	}
	t.Run("stale client left alone", func(t *testing.T) {
		// 10.20.0.12 (class 1:c) is not in want, but it changed after want
		// was taken: the guarded reconcile must not delete it.
		tc, f := newFake(t, lab22, captured(t))
		g := &fakeGuard{log: &f.log, stale: map[netip.Addr]bool{ip("10.20.0.12"): true}}
		n, err := tc.Reconcile(ctx, tests[1].want, g)
		if err != nil {
			t.Fatal(err)
		}
		if n != 4 {
			t.Errorf("repairs = %d, want 4 (10.20.0.12's 3 left alone)", n)
		}
		if strings.Contains(f.log.String(), "handle 100:c:1") || strings.Contains(f.log.String(), "classid 100:10c\n") {
			t.Errorf("stale client's class touched:\n%s", f.log.String())
		}
	})
}

// A reading taken while logins go on can miss objects that were there all
// along (the kernel dumps in parts, by position): drift is repaired only as
// a second reading, under the lock, shows it.
func TestReconcilePhantomDrift(t *testing.T) {
	ctx := context.Background()
	same := []Limit{
		{IP: ip("10.20.0.11"), Down: 2 * quantity.Mbit, Up: 2 * quantity.Mbit},
		{IP: ip("10.20.0.12"), Down: 5 * quantity.Mbit},
	}
	for _, real := range []bool{false, true} {
		out := captured(t)
		intact := maps.Clone(out)
		// The first reading misses a class and its leaf.
		var kept []string
		for _, l := range strings.SplitAfter(out["tc -s class show dev br-cw"], "\n\n") {
			if !strings.HasPrefix(l, "class htb 100:10b") {
				kept = append(kept, l)
			}
		}
		out["tc -s class show dev br-cw"] = strings.Join(kept, "")
		tc, f := newFake(t, lab22, out)
		g := &fakeGuard{log: &f.log}
		if !real {
			g.onLock = func() { maps.Copy(f.outputs, intact) } // it was there all along
		}
		n, err := tc.Reconcile(ctx, same, g)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{false: 0, true: 1}[real]; n != want {
			t.Errorf("drift real %v: %d repairs, want %d\n%s", real, n, want, f.log.String())
		}
	}
}

// fakeGuard records Lock into the fake runner's log.
type fakeGuard struct {
	log    *strings.Builder
	stale  map[netip.Addr]bool
	locks  int
	held   bool
	onLock func()
}

func (g *fakeGuard) Lock() {
	g.locks++
	g.held = true
	g.log.WriteString("LOCK\n")
	if g.onLock != nil {
		g.onLock()
	}
}
func (g *fakeGuard) Unlock() { g.held = false; g.log.WriteString("UNLOCK\n") }
func (g *fakeGuard) Stale(ip netip.Addr) bool {
	if !g.held {
		panic("Stale without the lock")
	}
	return g.stale[ip]
}

func TestTeardown(t *testing.T) {
	ctx := context.Background()
	t.Run("set up", func(t *testing.T) {
		tc, f := newFake(t, lab22, captured(t))
		if err := tc.Teardown(ctx); err != nil {
			t.Fatal(err)
		}
		golden(t, "teardown", f.log.String())
	})
	t.Run("nothing there", func(t *testing.T) {
		tc, f := newFake(t, lab22, fresh())
		if err := tc.Teardown(ctx); err != nil {
			t.Fatal(err)
		}
		if f.batches != 0 || strings.Contains(f.log.String(), " del ") {
			t.Errorf("Teardown of nothing deleted something:\n%s", f.log.String())
		}
	})
}

func TestStats(t *testing.T) {
	tc, _ := newFake(t, lab22, captured(t))
	ctx := context.Background()
	if err := tc.Setup(ctx); err != nil { // learns the two clients
		t.Fatal(err)
	}
	got, err := tc.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, b := got[ip("10.20.0.11")], got[ip("10.20.0.12")]
	if len(got) != 2 || a.DownBytes == 0 || a.DownPackets == 0 || a.UpBytes == 0 || b.DownBytes != 0 || b.UpBytes != 0 {
		t.Errorf("Stats = %+v", got)
	}
	// A removed client's classes stay, parked: not a client's stats.
	if err := tc.Remove(ctx, ip("10.20.0.12")); err != nil {
		t.Fatal(err)
	}
	if got, err = tc.Stats(ctx); err != nil || len(got) != 1 || got[ip("10.20.0.11")].DownBytes == 0 {
		t.Errorf("Stats after Remove of 10.20.0.12 = %+v, %v; want 10.20.0.11's only", got, err)
	}
}

func TestClientClass(t *testing.T) {
	tests := []struct {
		subnet, ip string
		want       string // classid as tc prints it
		wantErr    bool
	}{
		{"10.20.0.0/16", "10.20.0.1", "100:101", false},
		{"10.20.0.0/16", "10.20.0.11", "100:10b", false},
		{"10.20.0.0/16", "10.20.1.0", "101:100", false},
		{"10.20.0.0/16", "10.20.255.254", "1ff:1fe", false},
		{"10.20.0.0/16", "10.20.255.255", "", true},
		{"10.20.0.0/16", "10.20.0.0", "", true},
		{"10.20.4.0/22", "10.20.4.1", "104:101", false},
		{"10.20.4.0/22", "10.20.7.254", "107:1fe", false},
		{"10.20.4.0/22", "10.20.5.255", "105:1ff", false},
		{"10.20.4.0/22", "10.20.3.254", "", true},
		{"192.168.1.4/30", "192.168.1.5", "101:105", false},
		{"192.168.1.4/30", "192.168.1.6", "101:106", false},
		{"192.168.1.4/30", "192.168.1.7", "", true},
		{"10.20.0.0/16", "::ffff:10.20.0.1", "", true},
		{"10.20.0.0/16", "2001:db8::1", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.subnet+" "+tt.ip, func(t *testing.T) {
			p := netip.MustParsePrefix(tt.subnet)
			err := checkClient(p, ip(tt.ip))
			if (err != nil) != tt.wantErr {
				t.Fatalf("checkClient = %v; want error %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrNotClient) {
					t.Errorf("error %v is not ErrNotClient", err)
				}
				return
			}
			id := clientClass(ip(tt.ip))
			if got := classString(id); got != tt.want {
				t.Errorf("clientClass = %s, want %s", got, tt.want)
			}
			if back, ok := addrOfClass(p, id); !ok || back != ip(tt.ip) {
				t.Errorf("addrOfClass(%s) = %s, %v", classString(id), back, ok)
			}
		})
	}
	// Classes that are no client of the subnet.
	p := netip.MustParsePrefix("10.20.4.0/22")
	for _, id := range []uint32{0x1_0104, 0x104_00ff, 0x108_0101, 0x104_0100, 0x107_01ff, 0x200_0101} {
		if a, ok := addrOfClass(p, id); ok {
			t.Errorf("addrOfClass(%s) = %s, want none", classString(id), a)
		}
	}
}

func TestHandles(t *testing.T) {
	for _, tt := range []struct {
		s string
		h uint32
	}{{"800:", 0x80000000}, {"800::1", 0x80000001}, {"2:a:1", 0x0020a001}, {"1ff:ff:1", 0x1ffff001}, {"1:", 0x00100000}} {
		h, err := parseHandle(tt.s)
		if err != nil || h != tt.h {
			t.Errorf("parseHandle(%q) = %#x, %v; want %#x", tt.s, h, err, tt.h)
		}
		if got := handleString(tt.h); got != tt.s {
			t.Errorf("handleString(%#x) = %q, want %q", tt.h, got, tt.s)
		}
	}
	for _, s := range []string{"", "1", "x:", "1000:", "1:100:", "1:2:3:4"} {
		if _, err := parseHandle(s); err == nil {
			t.Errorf("parseHandle(%q) = nil error", s)
		}
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok /16", Config{ClientIf: "br-cw", Subnet: netip.MustParsePrefix("10.20.0.0/16")}, ""},
		{"ok /30, host bits", Config{ClientIf: "br-cw", Subnet: netip.MustParsePrefix("10.20.0.5/30")}, ""},
		{"/15", Config{ClientIf: "br-cw", Subnet: netip.MustParsePrefix("10.20.0.0/15")}, "prefix length must be 16 to 30"},
		{"/31", Config{ClientIf: "br-cw", Subnet: netip.MustParsePrefix("10.20.0.0/31")}, "prefix length must be 16 to 30"},
		{"ipv6", Config{ClientIf: "br-cw", Subnet: netip.MustParsePrefix("2001:db8::/64")}, "not IPv4"},
		{"no subnet", Config{ClientIf: "br-cw"}, "subnet is not set"},
		{"no interface", Config{Subnet: netip.MustParsePrefix("10.20.0.0/16")}, "client interface is empty"},
		{"same names", Config{ClientIf: "x", IFB: "x", Subnet: netip.MustParsePrefix("10.20.0.0/16")}, "are the same"},
		{"long name", Config{ClientIf: "a-very-long-interface", Subnet: netip.MustParsePrefix("10.20.0.0/16")}, "not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := New(tt.cfg, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.Config().IFB != DefaultIFB || tc.Config().Subnet != tc.Config().Subnet.Masked() {
					t.Errorf("Config() = %+v", tc.Config())
				}
				return
			}
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New = %v, want ErrConfig containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParamsFor(t *testing.T) {
	tests := []struct {
		rate quantity.Rate
		want htbParams
	}{
		// Classes run at limit*1514/1448 so that TCP payload meets the limit.
		{256 * quantity.Kbit, htbParams{rateBytes: 33458, burst: 3028, quantum: 1514, limit: 32}},
		{2 * quantity.Mbit, htbParams{rateBytes: 261395, burst: 3028, quantum: 1514, limit: 32}},
		{20 * quantity.Mbit, htbParams{rateBytes: 2613950, burst: 26139, quantum: 1514, limit: 172}},
		{100 * quantity.Mbit, htbParams{rateBytes: 13069751, burst: 130697, quantum: 1514, limit: 863}},
		{quantity.Gbit, htbParams{rateBytes: 130697513, burst: 1306975, quantum: 1514, limit: 1000}},
	}
	for _, tt := range tests {
		if got := paramsFor(tt.rate); got != tt.want {
			t.Errorf("paramsFor(%s) = %+v, want %+v", tt.rate, got, tt.want)
		}
	}
}

func TestParseTCRate(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		err  bool
	}{
		{"2Mbit", 2e6, false}, {"256Kbit", 256e3, false}, {"1Gbit", 1e9, false},
		{"1234567bit", 1234567, false}, {"12345Kbit", 12345e3, false}, {"8bit", 8, false},
		{"2Mibit", 0, true}, {"2MB", 0, true}, {"", 0, true}, {"Mbit", 0, true},
	}
	for _, tt := range tests {
		got, err := parseTCRate(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseTCRate(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestRateClose(t *testing.T) {
	// tc prints 12908395bit as 12908Kbit: still the rate we set for a
	// limit of 12345678bit (12908395 on the wire).
	if w := wireBits(12345678); w != 12908395 {
		t.Fatalf("wireBits(12345678) = %d", w)
	}
	if !rateClose(12908000, 12345678) {
		t.Error("12908Kbit should match a limit of 12345678bit")
	}
	if got := limitOfWire(wireBits(20 * quantity.Mbit)); got != 20*quantity.Mbit {
		t.Errorf("limitOfWire(wireBits(20mbit)) = %v", got)
	}
	if rateClose(7e6, 2*quantity.Mbit) {
		t.Error("7Mbit should not match 2mbit")
	}
}

func TestExecRunnerErrors(t *testing.T) {
	r := execRunner{}
	_, err := r.run(context.Background(), "line one\nline two\n", "sh", "-c", `cat >/dev/null; echo "Error: bad." >&2; echo "Command failed -:2" >&2; exit 1`)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{`running ["sh" "-c"`, "exit status 1", "Error: bad.", "batch line 2: line two"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	out, err := r.run(context.Background(), "", "sh", "-c", `echo "$LC_ALL"`)
	if err != nil || strings.TrimSpace(string(out)) != "C" {
		t.Errorf("LC_ALL = %q, %v; want C", out, err)
	}
}

func FuzzParseClasses(f *testing.F) {
	for _, name := range []string{"tc_-s_class_show_dev_br-cw", "tc_-s_class_show_dev_cwifb0"} {
		b, err := os.ReadFile(filepath.Join("testdata/kernel", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseClasses(b)
	})
}

func FuzzParseFilters(f *testing.F) {
	for _, name := range []string{"tc_-j_filter_show_dev_br-cw_parent_1", "tc_-j_filter_show_dev_br-cw_parent_ffff"} {
		b, err := os.ReadFile(filepath.Join("testdata/kernel", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d devState
		var fs []tcFilter
		if json.Unmarshal(b, &fs) == nil {
			_ = parseFilters(fs, &d, 1)
			_ = parseFilters(fs, &d, 0x100)
			_ = parseFilters(fs, &d, 0xffff)
		}
		_ = parseQdiscs(b, &d)
	})
}

// FuzzNetlinkAttrs feeds the hand-written rtattr parsing (nlread.go) with
// anything: it must not panic or read out of bounds.
func FuzzNetlinkAttrs(f *testing.F) {
	// A class's attributes: TCA_KIND "htb", TCA_OPTIONS { TCA_HTB_PARMS }.
	f.Add([]byte{8, 0, 1, 0, 'h', 't', 'b', 0, 16, 0, 2, 0, 12, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{4, 0, 5, 0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		var a attrs
		parseAttrs(b, &a)
		_, _ = htbClass(&a)
		_ = htbDefault(b)
		_ = nodeOf(&a)
		for _, v := range a {
			var o attrs
			parseAttrs(v, &o)
			_ = nodeOf(&o)
		}
	})
}

func TestNoInterface(t *testing.T) {
	out := fresh()
	out["ip -d -j link show"] = `[{"ifname":"lo","flags":["LOOPBACK","UP"]}]`
	tc, f := newFake(t, lab22, out)
	err := tc.Setup(context.Background())
	if !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), "br-cw") {
		t.Errorf("Setup without br-cw = %v, want ErrNoInterface naming br-cw", err)
	}
	if _, err := tc.Reconcile(context.Background(), nil, nil); !errors.Is(err, ErrNoInterface) {
		t.Errorf("Reconcile without br-cw = %v, want ErrNoInterface", err)
	}
	if err := tc.Teardown(context.Background()); err != nil {
		t.Errorf("Teardown without br-cw = %v, want nil", err)
	}
	if f.batches != 0 {
		t.Errorf("ran %d batches without the interface", f.batches)
	}
}

// Warm makes a class and a leaf per address and device, for at most
// WarmMax addresses of the range, skipping the subnet's network address,
// clients already shaped and (through the reading) existing classes.
func TestWarm(t *testing.T) {
	tc, f := newFake(t, netip.MustParsePrefix("10.20.0.0/16"), fresh())
	ctx := context.Background()
	if err := tc.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tc.Set(ctx, Limit{IP: ip("10.20.0.5"), Down: quantity.Mbit, Up: quantity.Mbit}); err != nil {
		t.Fatal(err)
	}
	f.log.Reset()
	n, err := tc.Warm(ctx, ip("10.20.0.0"), ip("10.20.255.254"))
	if err != nil {
		t.Fatal(err)
	}
	classes := map[string]int{}
	leaves := 0
	for _, l := range strings.Split(f.log.String(), "\n") {
		if strings.HasPrefix(l, "class replace dev ") {
			classes[strings.Fields(l)[3]]++
			if !strings.Contains(l, fmt.Sprintf(" rate %dbit ", paramsFor(groupRate).rateBytes*8)) {
				t.Errorf("parked class not at the /24 rate: %s", l)
			}
		}
		if strings.HasPrefix(l, "qdisc replace dev ") && strings.Contains(l, " pfifo ") {
			leaves++
		}
		if strings.Contains(l, "classid 100:100 ") || strings.Contains(l, "classid 100:105 ") {
			t.Errorf("Warm touched the network address or the shaped client: %s", l)
		}
	}
	// 10.20.0.1 .. 10.20.16.0 less 10.20.0.5: 4,095 addresses.
	if want := WarmMax - 1; n != 2*want || classes["br-cw"] != want || classes["cwifb0"] != want || leaves != 2*want {
		t.Errorf("Warm = %d; classes %v, %d leaves; want %d, %d per device and leaves", n, classes, leaves, 2*want, want)
	}
	if strings.Contains(f.log.String(), "classid 110:101 ") {
		t.Error("Warm went past WarmMax addresses")
	}
}
