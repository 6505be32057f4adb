package firewall

import (
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Tier 0: no root, no kernel; a fake renders what the kernel would hold.

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func testConfig() Config {
	return Config{
		ClientIf: "br-cw", UplinkIf: "wan0",
		Subnet:         netip.MustParsePrefix("10.20.0.0/22"),
		GatewayIP:      netip.MustParseAddr("10.20.0.1"),
		PortalHTTPPort: 8080, PortalHTTPSPort: 8443,
		GardenNets: []netip.Prefix{netip.MustParsePrefix("198.51.100.10/32"), netip.MustParsePrefix("203.0.113.0/24")},
	}
}

var t0 = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)

func newFake(t *testing.T) (*Kernel, *fakeKernel) {
	t.Helper()
	f := newFakeKernel()
	k := newKernel(testConfig(), nil, f, f.ipt(v4), f.ipt(v6))
	k.now = func() time.Time { return t0 }
	return k, f
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got), rerun with -update if intended:\n%s", path, diff)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   []string // substrings of the error; none: valid
	}{
		{"valid", func(*Config) {}, nil},
		{"no interfaces", func(c *Config) { c.ClientIf, c.UplinkIf = "", "" }, []string{"client interface is empty", "uplink interface is empty"}},
		{"same interface", func(c *Config) { c.UplinkIf = "br-cw" }, []string{`both "br-cw"`}},
		{"bad interface name", func(c *Config) { c.ClientIf = "br cw" }, []string{`"br cw" is not an interface name`}},
		{"long interface name", func(c *Config) { c.ClientIf = "a-very-long-interface" }, []string{"is not an interface name"}},
		{"no subnet", func(c *Config) { c.Subnet = netip.Prefix{} }, []string{"client subnet is not set"}},
		{"subnet too large", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.0.0.0/8") }, []string{"larger than /16"}},
		{"ipv6 subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("2001:db8::/64") }, []string{"is not IPv4"}},
		{"gateway outside", func(c *Config) { c.GatewayIP = netip.MustParseAddr("10.30.0.1") }, []string{"10.30.0.1 is outside the client subnet 10.20.0.0/22"}},
		{"no gateway", func(c *Config) { c.GatewayIP = netip.Addr{} }, []string{"gateway IP is not set"}},
		{"no ports", func(c *Config) { c.PortalHTTPPort, c.PortalHTTPSPort = 0, 0 }, []string{"portal HTTP port is not set", "portal HTTPS port is not set"}},
		{"same ports", func(c *Config) { c.PortalHTTPSPort = 8080 }, []string{"both 8080"}},
		{"garden everything", func(c *Config) { c.GardenNets = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} }, []string{"would open everything"}},
		{"garden ipv6", func(c *Config) { c.GardenNets = []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")} }, []string{"not IPv4"}},
		{"bad netns", func(c *Config) { c.Netns = "../x" }, []string{"is not a name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			tc.change(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if _, err := New(c, nil); err == nil || !strings.Contains(err.Error(), "configuring the firewall") {
				t.Errorf("New() error = %v, want the validation error", err)
			}
		})
	}
}

func TestSetupRendersRules(t *testing.T) {
	k, f := newFake(t)
	if err := k.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	golden(t, "setup.golden", f.render())
	// The exact iptables-restore input, for review.
	var b strings.Builder
	for _, fam := range []family{v4, v6} {
		var cs []chain
		for _, c := range k.cfg.chains() {
			if c.fam == fam {
				cs = append(cs, c)
			}
		}
		b.WriteString("# " + fam.cmd() + "-restore --noflush\n" + restoreText(cs))
	}
	golden(t, "restore.golden", b.String())

	// A second Setup finds nothing to do: no writes at all.
	f.cmds = nil
	if err := k.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	reads := 0
	for _, c := range f.cmds {
		switch {
		case strings.HasPrefix(c, "ipset list"):
		case strings.HasSuffix(c, " -S"):
			reads++ // one listing per table, not one per chain
		default:
			t.Errorf("second Setup ran %q, want only reads", c)
		}
	}
	if reads != 3 {
		t.Errorf("second Setup listed %d tables, want 3 (IPv4 filter and nat, IPv6 filter)", reads)
	}
}

func TestAllowUsageRevoke(t *testing.T) {
	ctx := t.Context()
	k, f := newFake(t)
	if err := k.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.20.0.11")
	g := Grant{
		Client:     Client{IP: ip, MAC: mac("02:00:00:00:00:01")},
		Expires:    t0.Add(time.Hour),
		QuotaBytes: 1_000_000, UsedBytes: 3000, UsedDownBytes: 2000,
	}
	f.cmds = nil
	if err := k.Allow(ctx, g); err != nil {
		t.Fatal(err)
	}
	// A new client costs one restore (cw-acct, cw-dl, cw-auth) and no
	// read: O(1).
	if diff := cmp.Diff([]string{"ipset restore\n" +
		"add cw-acct 10.20.0.11 timeout 3600 packets 0 bytes 4611686018426390904 comment \"q=1000000\"\n" +
		"add cw-dl 10.20.0.11 timeout 3600 packets 0 bytes 2000\n" +
		"add cw-auth 10.20.0.11,02:00:00:00:00:01 timeout 3600\n",
	}, f.cmds); diff != "" {
		t.Errorf("commands of Allow (-want +got):\n%s", diff)
	}
	wantElems := "add cw-auth 10.20.0.11,02:00:00:00:00:01 timeout 3600\n"
	if !strings.Contains(f.render(), wantElems) {
		t.Errorf("state after Allow lacks %q:\n%s", wantElems, f.render())
	}
	if want := "add cw-acct 10.20.0.11 timeout 3600 packets 0 bytes 4611686018426390904 comment \"q=1000000\"\n"; !strings.Contains(f.render(), want) {
		t.Errorf("state after Allow lacks %q:\n%s", want, f.render())
	}
	usage := func() Usage {
		t.Helper()
		u, err := k.Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return u[ip]
	}
	if diff := cmp.Diff(Usage{Bytes: 3000, DownBytes: 2000}, usage()); diff != "" {
		t.Errorf("Usage after Allow (-want +got):\n%s", diff)
	}

	// The kernel counts 10000 more bytes, then the quota is raised: the
	// counters carry over, the offset moves.
	f.sets[AcctSet].elems["10.20.0.11"] = func() entry {
		e := f.sets[AcctSet].elems["10.20.0.11"]
		e.Bytes += 10000
		e.Packets = 10
		return e
	}()
	g.QuotaBytes = 2_000_000
	if err := k.Allow(ctx, g); err != nil {
		t.Fatal(err)
	}
	if got := usage(); got.Bytes != 13000 || got.OverQuota {
		t.Errorf("Usage after raising the quota = %+v, want 13000 bytes", got)
	}
	// Over quota shows.
	e := f.sets[AcctSet].elems["10.20.0.11"]
	e.Bytes = QuotaBase + 5
	f.sets[AcctSet].elems["10.20.0.11"] = e
	if got := usage(); !got.OverQuota || got.Bytes != 2_000_005 {
		t.Errorf("Usage over quota = %+v, want 2000005 bytes, over quota", got)
	}

	f.cmds = nil
	if err := k.Revoke(ctx, g.Client); err != nil {
		t.Fatal(err)
	}
	for _, set := range []string{AuthSet, AcctSet, DownSet} {
		if n := f.count(set); n != "0" {
			t.Errorf("%s has %s elements after Revoke", set, n)
		}
	}
	if want := "conntrack -D -s 10.20.0.11 -p udp"; !strings.Contains(strings.Join(f.cmds, "\n"), want) {
		t.Errorf("Revoke ran %q, want %q among them", f.cmds, want)
	}
	if err := k.Revoke(ctx, g.Client); err != nil {
		t.Errorf("revoking an unknown client: %v", err)
	}
}

func TestAllowRejectsBadGrants(t *testing.T) {
	k, _ := newFake(t)
	if err := k.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	good := Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")}}
	for _, tc := range []struct {
		name   string
		change func(*Grant)
		want   string
	}{
		{"outside the subnet", func(g *Grant) { g.IP = netip.MustParseAddr("10.30.0.1") }, "not in the client subnet"},
		{"no MAC", func(g *Grant) { g.MAC = nil }, "not an Ethernet address"},
		{"expired", func(g *Grant) { g.Expires = t0.Add(-time.Minute) }, "already expired"},
		{"huge quota", func(g *Grant) { g.QuotaBytes = QuotaBase }, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := good
			tc.change(&g)
			err := k.Allow(t.Context(), g)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Allow() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestReconcileRepairs(t *testing.T) {
	ip1, ip2 := netip.MustParseAddr("10.20.0.11"), netip.MustParseAddr("10.20.0.12")
	g1 := Grant{Client: Client{IP: ip1, MAC: mac("02:00:00:00:00:01")}, Expires: t0.Add(time.Hour), UsedBytes: 500, UsedDownBytes: 300}
	g2 := Grant{Client: Client{IP: ip2, MAC: mac("02:00:00:00:00:02")}, QuotaBytes: 1 << 20}
	for _, tc := range []struct {
		name   string
		damage func(*fakeKernel)
		want   []Grant
		rep    Repairs
	}{
		{"nothing", func(*fakeKernel) {}, []Grant{g1, g2}, Repairs{}},
		{"flushed chain", func(f *fakeKernel) { f.chains[v4]["filter/cw-fwd"] = nil }, []Grant{g1, g2}, Repairs{Rules: 1}},
		{"extra rule", func(f *fakeKernel) {
			f.chains[v4]["filter/cw-in"] = append(f.chains[v4]["filter/cw-in"], "-j ACCEPT")
		}, []Grant{g1, g2}, Repairs{Rules: 1}},
		{"missing jumps", func(f *fakeKernel) {
			f.chains[v4]["filter/FORWARD"] = nil
			f.chains[v6]["filter/INPUT"] = nil
		}, []Grant{g1, g2}, Repairs{Rules: 2}},
		{"deleted nat chain", func(f *fakeKernel) {
			f.chains[v4]["nat/PREROUTING"] = nil
			delete(f.chains[v4], "nat/cw-pre")
		}, []Grant{g1, g2}, Repairs{Rules: 2}},
		{"destroyed set", func(f *fakeKernel) { delete(f.sets, DownSet) }, []Grant{g1, g2}, Repairs{Sets: 1, Entries: 2}},
		{"flushed auth", func(f *fakeKernel) { f.sets[AuthSet].elems = map[string]entry{} }, []Grant{g1, g2}, Repairs{Entries: 2}},
		{"wrong MAC", func(f *fakeKernel) {
			e := f.sets[AuthSet].elems["10.20.0.11"]
			e.MAC = "02:00:00:00:00:99"
			f.sets[AuthSet].elems["10.20.0.11"] = e
		}, []Grant{g1, g2}, Repairs{Entries: 1}},
		{"garden entry gone", func(f *fakeKernel) { delete(f.sets[GardenNetSet].elems, "203.0.113.0/24") }, []Grant{g1, g2}, Repairs{Entries: 1}},
		{"garden net no longer configured", func(f *fakeKernel) {
			f.sets[GardenNetSet].elems["192.0.2.0/24"] = entry{Key: "192.0.2.0/24"}
		}, []Grant{g1, g2}, Repairs{Entries: 1}},
		{"flushed cw-dl", func(f *fakeKernel) { f.sets[DownSet].elems = map[string]entry{} }, []Grant{g1, g2}, Repairs{Entries: 2}},
		{"counters without the session's timeout", func(f *fakeKernel) {
			for _, set := range []string{AcctSet, DownSet} {
				e := f.sets[set].elems["10.20.0.11"]
				e.Timeout = 0
				f.sets[set].elems["10.20.0.11"] = e
			}
		}, []Grant{g1, g2}, Repairs{Entries: 2}},
		{"client no longer wanted", func(*fakeKernel) {}, []Grant{g1}, Repairs{Entries: 3}},
		{"expired grant", func(*fakeKernel) {}, []Grant{g1, func() Grant { g := g2; g.Expires = t0.Add(-time.Second); return g }()}, Repairs{Entries: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			k, f := newFake(t)
			if err := k.Setup(ctx); err != nil {
				t.Fatal(err)
			}
			for _, g := range []Grant{g1, g2} {
				if err := k.Allow(ctx, g); err != nil {
					t.Fatal(err)
				}
			}
			tc.damage(f)
			rep, err := k.Reconcile(ctx, tc.want, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.rep, rep); diff != "" {
				t.Errorf("Reconcile repairs (-want +got):\n%s", diff)
			}
			again, err := k.Reconcile(ctx, tc.want, nil)
			if err != nil || again.Total() != 0 {
				t.Errorf("second Reconcile = %+v, %v; want no repairs", again, err)
			}
			// The result equals a fresh Setup + Allow of want.
			k2, f2 := newFake(t)
			if err := k2.Setup(ctx); err != nil {
				t.Fatal(err)
			}
			for _, g := range tc.want {
				if g.Expires.IsZero() || g.Expires.After(t0) {
					if err := k2.Allow(ctx, g); err != nil {
						t.Fatal(err)
					}
				}
			}
			if diff := cmp.Diff(f2.render(), f.render()); diff != "" {
				t.Errorf("state after Reconcile differs from a fresh set-up (-fresh +reconciled):\n%s", diff)
			}
			u, err := k.Usage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := u[ip1]; got.Bytes != 500 || got.DownBytes != 300 {
				t.Errorf("Usage of %s after Reconcile = %+v, want the grant's 500/300", ip1, got)
			}
		})
	}
}

// recordingGuard logs Lock/Unlock into the fake kernel's command log, so a
// test sees which commands ran while it was held.
type recordingGuard struct {
	f     *fakeKernel
	stale map[netip.Addr]bool
	held  bool
}

func (g *recordingGuard) Lock()   { g.held = true; g.f.cmds = append(g.f.cmds, "LOCK") }
func (g *recordingGuard) Unlock() { g.held = false; g.f.cmds = append(g.f.cmds, "UNLOCK") }
func (g *recordingGuard) Stale(ip netip.Addr) bool {
	if !g.held {
		panic("Stale called without the lock")
	}
	return g.stale[ip]
}

func TestReconcileWithGuard(t *testing.T) {
	ip1, ip2, ip3 := netip.MustParseAddr("10.20.0.11"), netip.MustParseAddr("10.20.0.12"), netip.MustParseAddr("10.20.0.13")
	g1 := Grant{Client: Client{IP: ip1, MAC: mac("02:00:00:00:00:01")}}
	g2 := Grant{Client: Client{IP: ip2, MAC: mac("02:00:00:00:00:02")}}
	g3 := Grant{Client: Client{IP: ip3, MAC: mac("02:00:00:00:00:03")}}
	ctx := t.Context()
	t.Run("reads unlocked, nothing to repair", func(t *testing.T) {
		k, f := newFake(t)
		if err := k.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		if err := k.Allow(ctx, g1); err != nil {
			t.Fatal(err)
		}
		f.cmds = nil
		g := &recordingGuard{f: f}
		rep, err := k.Reconcile(ctx, []Grant{g1}, g)
		if err != nil || rep.Total() != 0 {
			t.Fatalf("Reconcile = %+v, %v", rep, err)
		}
		// Every listing happens before the lock; nothing runs under it.
		if diff := cmp.Diff([]string{"LOCK", "UNLOCK"}, f.cmds[len(f.cmds)-2:]); diff != "" {
			t.Errorf("tail of the command log (-want +got):\n%s\nall: %q", diff, f.cmds)
		}
	})
	t.Run("stale clients are left alone", func(t *testing.T) {
		k, f := newFake(t)
		if err := k.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		// ip2 was allowed after want was taken (so want lacks it), ip3 was
		// revoked after (so want still has it), ip1 really drifted.
		for _, g := range []Grant{g1, g2} {
			if err := k.Allow(ctx, g); err != nil {
				t.Fatal(err)
			}
		}
		delete(f.sets[AuthSet].elems, "10.20.0.11")
		g := &recordingGuard{f: f, stale: map[netip.Addr]bool{ip2: true, ip3: true}}
		rep, err := k.Reconcile(ctx, []Grant{g1, g3}, g)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Entries != 1 {
			t.Errorf("repairs = %+v, want only ip1's cw-auth element", rep)
		}
		for ip, want := range map[string]bool{"10.20.0.11": true, "10.20.0.12": true, "10.20.0.13": false} {
			if _, got := f.sets[AuthSet].elems[ip]; got != want {
				t.Errorf("%s in cw-auth = %v, want %v", ip, got, want)
			}
		}
	})
	t.Run("infrastructure drift is repaired under the lock", func(t *testing.T) {
		k, f := newFake(t)
		if err := k.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		f.chains[v4]["filter/FORWARD"] = nil
		f.cmds = nil
		g := &recordingGuard{f: f}
		rep, err := k.Reconcile(ctx, nil, g)
		if err != nil || rep.Rules != 1 {
			t.Fatalf("Reconcile = %+v, %v; want the jump repaired", rep, err)
		}
		lockAt := slices.Index(f.cmds, "LOCK")
		insertAt := slices.IndexFunc(f.cmds, func(c string) bool { return strings.Contains(c, "-I FORWARD") })
		unlockAt := slices.Index(f.cmds, "UNLOCK")
		if lockAt < 0 || insertAt < lockAt || unlockAt < insertAt {
			t.Errorf("jump inserted outside the lock: %q", f.cmds)
		}
	})
}

func TestReconcileKeepsDynamicGarden(t *testing.T) {
	ctx := t.Context()
	k, f := newFake(t)
	if err := k.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	// What dnsmasq added stays; the static set is exactly GardenNets.
	f.sets[GardenSet].elems["192.0.2.7"] = entry{Key: "192.0.2.7", Timeout: 3000}
	f.sets[GardenNetSet].elems["192.0.2.0/24"] = entry{Key: "192.0.2.0/24"}
	if _, err := k.Reconcile(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	want := "create cw-garden hash:net timeout 3600\nadd cw-garden 192.0.2.7 timeout 3000\n" +
		"create cw-garden-net hash:net\nadd cw-garden-net 198.51.100.10\nadd cw-garden-net 203.0.113.0/24\n"
	if got := f.render(); !strings.HasSuffix(got, want) {
		t.Errorf("garden sets after Reconcile:\n%s\nwant them to end with:\n%s", got, want)
	}
}

// A set made with other options (an older version, another client subnet)
// is re-created in place, keeping the elements that fit.
func TestSetupRecreatesChangedSets(t *testing.T) {
	ctx := t.Context()
	k, f := newFake(t)
	f.sets[AcctSet] = &fakeSet{create: "bitmap:ip range 10.20.0.0/22 counters comment", elems: map[string]entry{
		"10.20.0.11": {Key: "10.20.0.11", Packets: 4, Bytes: 4000, Comment: "q=0", HasCounters: true},
	}}
	f.sets[GardenSet] = &fakeSet{create: "hash:net timeout 0", elems: map[string]entry{
		"192.0.2.7": {Key: "192.0.2.7"},
	}}
	if err := k.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"create cw-acct bitmap:ip range 10.20.0.0/22 timeout 0 counters comment\nadd cw-acct 10.20.0.11 timeout 0 packets 4 bytes 4000 comment \"q=0\"\n",
		"create cw-garden hash:net timeout 3600\nadd cw-garden 192.0.2.7 timeout 0\n",
	} {
		if got := f.render(); !strings.Contains(got, want) {
			t.Errorf("after Setup:\n%s\nwant it to contain:\n%s", got, want)
		}
	}
	if n := f.count(AcctSet + "-new"); n != "none" {
		t.Errorf("temporary set left behind (%s elements)", n)
	}

	// The client subnet grows from /22 to /21: every bitmap set follows,
	// and a client in the new part can be allowed.
	g := Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")}, Expires: t0.Add(time.Hour), UsedBytes: 4000, UsedDownBytes: 1000}
	if err := k.Allow(ctx, g); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Subnet = netip.MustParsePrefix("10.20.0.0/21")
	k2 := newKernel(cfg, nil, f, f.ipt(v4), f.ipt(v6))
	k2.now = k.now
	g2 := Grant{Client: Client{IP: netip.MustParseAddr("10.20.5.5"), MAC: mac("02:00:00:00:00:02")}, Expires: t0.Add(time.Hour)}
	rep, err := k2.Reconcile(ctx, []Grant{g, g2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sets != 3 {
		t.Errorf("Reconcile after the subnet change = %+v, want 3 sets re-created", rep)
	}
	u, err := k2.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[netip.Addr]Usage{g.IP: {Bytes: 4000, Packets: 4, DownBytes: 1000}, g2.IP: {}}, u); diff != "" {
		t.Errorf("Usage after the subnet change (-want +got):\n%s", diff)
	}
	if again, err := k2.Reconcile(ctx, []Grant{g, g2}, nil); err != nil || again.Total() != 0 {
		t.Errorf("second Reconcile = %+v, %v; want nothing", again, err)
	}
}

// One element ipset refuses does not keep the others from being repaired,
// and removals go first.
func TestRestoreSetsSkipsABadLine(t *testing.T) {
	ctx := t.Context()
	k, f := newFake(t)
	if err := k.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	f.sets[AuthSet].elems["10.20.0.99"] = entry{Key: "10.20.0.99", MAC: "02:00:00:00:00:99"}
	err := k.restoreSets(ctx, []string{
		"del cw-auth 10.20.0.99",
		"add cw-dl 10.99.0.1",
		"add cw-dl 10.20.0.12",
		"add cw-dl 10.99.0.2",
		"add cw-dl 10.20.0.13",
	})
	if err == nil || !strings.Contains(err.Error(), "add cw-dl 10.99.0.1") || !strings.Contains(err.Error(), "add cw-dl 10.99.0.2") {
		t.Errorf("restoreSets error = %v, want both bad lines named", err)
	}
	if n := f.count(DownSet); n != "2" {
		t.Errorf("cw-dl has %s elements, want the 2 good ones", n)
	}
	if n := f.count(AuthSet); n != "0" {
		t.Errorf("cw-auth has %s elements, want the stranger removed", n)
	}

	stranger := map[string][]entry{AuthSet: {{Key: "10.20.0.99", MAC: "02:00:00:00:00:99"}}}
	g := Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")}}
	lines, n := k.diffElements([]Grant{g}, clientSetsOf(k.cfg.Subnet, stranger), nil)
	if diff := cmp.Diff([]string{
		"del cw-auth 10.20.0.99",
		"add cw-acct 10.20.0.11 timeout 0 packets 0 bytes 0 comment \"q=0\"",
		"add cw-dl 10.20.0.11 timeout 0 packets 0 bytes 0",
		"add cw-auth 10.20.0.11,02:00:00:00:00:01 timeout 0",
	}, lines); diff != "" || n != 4 {
		t.Errorf("diffElements = %d lines (-want +got):\n%s", n, diff)
	}
}

func TestAllowKeepsCountersOfAKnownClient(t *testing.T) {
	ctx := t.Context()
	k, f := newFake(t)
	if err := k.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	g := Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")}, Expires: t0.Add(time.Hour)}
	// A stale cw-dl element (no cw-acct): the fresh restore stops at it,
	// Allow reads and rewrites, and the larger counter wins.
	f.sets[DownSet].elems["10.20.0.11"] = entry{Key: "10.20.0.11", Bytes: 777, Packets: 1, HasCounters: true}
	if err := k.Allow(ctx, g); err != nil {
		t.Fatal(err)
	}
	u, err := k.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := u[g.IP]; got.DownBytes != 777 {
		t.Errorf("Usage = %+v, want the 777 bytes down kept", got)
	}
	if n := f.count(AuthSet); n != "1" {
		t.Errorf("cw-auth has %s elements, want the client", n)
	}
}

func TestTeardown(t *testing.T) {
	ctx := t.Context()
	k, f := newFake(t)
	f.chains[v4]["filter/FORWARD"] = []string{"-p udp -m udp --dport 9 -j DROP"}
	f.sets["other"] = &fakeSet{create: "hash:ip", elems: map[string]entry{}}
	foreign := f.render()
	if err := k.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	// Somebody duplicated a jump.
	f.chains[v4]["filter/FORWARD"] = append(f.chains[v4]["filter/FORWARD"], "-j cw-fwd")
	if err := k.Allow(ctx, Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := k.Teardown(ctx); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
		if diff := cmp.Diff(foreign, f.render()); diff != "" {
			t.Errorf("after Teardown #%d (-want +got):\n%s", i+1, diff)
		}
	}
}

func TestErrorsNameTheCommand(t *testing.T) {
	k, f := newFake(t)
	f.fail["ip6tables-restore"] = "ip6tables-restore: line 3 failed"
	err := k.Setup(t.Context())
	if err == nil {
		t.Fatal("Setup succeeded, want the restore failure")
	}
	for _, want := range []string{"setting up the firewall", "writing IPv6 chains of table filter", `"ip6tables-restore"`, "line 3 failed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestParseSave(t *testing.T) {
	in := `create cw-acct bitmap:ip range 10.20.0.0-10.20.3.255 counters comment
add cw-acct 10.20.0.11 packets 3 bytes 4611686018427387000 comment "q=1000"
add cw-acct 10.20.0.12 packets 0 bytes 0
create cw-auth bitmap:ip,mac range 10.20.0.0-10.20.3.255 timeout 0
add cw-auth 10.20.0.11,02:00:00:00:00:0A timeout 99
create cw-garden hash:net family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0x5cf1c7f5
add cw-garden 198.51.100.10 timeout 0
add cw-garden 203.0.113.0/24 timeout 0 skbmark 0x1
create cw-dl bitmap:ip range 10.20.0.0-10.20.3.255 counters
`
	got, err := parseSave(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]entry{
		"cw-acct": {
			{Key: "10.20.0.11", Packets: 3, Bytes: 4611686018427387000, Comment: "q=1000", HasCounters: true},
			{Key: "10.20.0.12", HasCounters: true},
		},
		"cw-auth":   {{Key: "10.20.0.11", MAC: "02:00:00:00:00:0a", Timeout: 99}},
		"cw-garden": {{Key: "198.51.100.10"}, {Key: "203.0.113.0/24"}},
		"cw-dl":     nil,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseSave (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		"add cw-acct 10.20.0.11 bytes x",
		"add cw-acct 10.20.0.11 bytes",
		`add cw-acct 10.20.0.11 comment "q=1`,
		"add cw-auth 10.20.0.11,zz timeout 1",
		"flush cw-auth",
		"add cw-auth",
	} {
		if _, err := parseSave(bad); err == nil {
			t.Errorf("parseSave(%q) = nil error, want one", bad)
		}
	}
}

func TestUsageOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		acct entry
		dl   entry
		want Usage
	}{
		{"unlimited", entry{Bytes: 1234, Packets: 5}, entry{Bytes: 1000}, Usage{Bytes: 1234, Packets: 5, DownBytes: 1000}},
		{"quota, fresh", entry{Bytes: QuotaBase - 100, Comment: "q=100"}, entry{}, Usage{}},
		{"quota, used", entry{Bytes: QuotaBase - 60, Comment: "q=100"}, entry{}, Usage{Bytes: 40}},
		{"quota, at the limit", entry{Bytes: QuotaBase, Comment: "q=100"}, entry{}, Usage{Bytes: 100}},
		{"quota, over", entry{Bytes: QuotaBase + 1, Comment: "q=100"}, entry{}, Usage{Bytes: 101, OverQuota: true}},
		{"foreign comment is unlimited", entry{Bytes: 7, Comment: "hello"}, entry{}, Usage{Bytes: 7}},
		{"counter below offset", entry{Bytes: 3, Comment: "q=100"}, entry{}, Usage{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, usageOf(tc.acct, tc.dl)); diff != "" {
				t.Errorf("usageOf (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTimeoutFor(t *testing.T) {
	for _, tc := range []struct {
		exp  time.Time
		secs int64
		ok   bool
	}{
		{time.Time{}, 0, true},
		{t0.Add(90 * time.Second), 90, true},
		{t0.Add(500 * time.Millisecond), 0, false},
		{t0.Add(-time.Hour), 0, false},
		{t0.Add(100 * 24 * time.Hour), maxTimeout, true},
	} {
		secs, ok := timeoutFor(tc.exp, t0)
		if secs != tc.secs || ok != tc.ok {
			t.Errorf("timeoutFor(%v) = %d, %v; want %d, %v", tc.exp, secs, ok, tc.secs, tc.ok)
		}
	}
}

func FuzzParseSave(f *testing.F) {
	f.Add("create cw-acct bitmap:ip range 10.20.0.0-10.20.3.255 counters comment\nadd cw-acct 10.20.0.11 packets 3 bytes 99 comment \"q=1000\"\n")
	f.Add("add cw-auth 10.20.0.11,02:00:00:00:00:01 timeout 99\n")
	f.Add("add cw-garden 203.0.113.0/24 timeout 0\n")
	f.Add("add x \"unterminated")
	f.Fuzz(func(t *testing.T, in string) {
		sets, err := parseSave(in)
		if err != nil {
			return
		}
		for _, es := range sets {
			for _, e := range es {
				// Whatever parsed must give a sane usage.
				u := usageOf(e, e)
				if u.OverQuota && parseQuotaComment(e.Comment) == 0 {
					t.Errorf("over quota without a quota: %+v", e)
				}
			}
		}
	})
}

// clientSetsOf makes the readings of the client sets of these entries.
func clientSetsOf(subnet netip.Prefix, sets map[string][]entry) *clientSets {
	cs := &clientSets{}
	for name, s := range map[string]*clientSet{AuthSet: &cs.auth, AcctSet: &cs.acct, DownSet: &cs.dl} {
		s.start(subnet)
		s.elems = appendEntries(s.elems, sets[name])
		s.index()
	}
	return cs
}
