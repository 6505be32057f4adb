package firewall

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Tier 0 for the netlink path: the same fake kernel state, written through
// the nlKernel fake instead of ipset commands.

func newFakeNL(t *testing.T) (*Kernel, *fakeKernel, *fakeNL) {
	t.Helper()
	k, f := newFake(t)
	n := &fakeNL{f: f}
	k.nl = n
	return k, f, n
}

// The netlink path leaves exactly the state the ipset path leaves, step by
// step through a client's life: new, counted, quota raised, extended,
// a stale half-written client, revoked.
func TestNetlinkMatchesTheCommandPath(t *testing.T) {
	ctx := t.Context()
	kx, fx := newFake(t)
	kn, fn, _ := newFakeNL(t)
	for _, k := range []*Kernel{kx, kn} {
		if err := k.Setup(ctx); err != nil {
			t.Fatal(err)
		}
	}
	g := Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")},
		Expires: t0.Add(time.Hour), QuotaBytes: 1_000_000, UsedBytes: 3000, UsedDownBytes: 2000}
	g2 := Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.12"), MAC: mac("02:00:00:00:00:02")}, Expires: t0.Add(time.Hour)}
	steps := []struct {
		name string
		do   func(k *Kernel, f *fakeKernel) error
	}{
		{"new client", func(k *Kernel, f *fakeKernel) error { return k.Allow(ctx, g) }},
		{"kernel counts", func(k *Kernel, f *fakeKernel) error {
			for _, set := range []string{AcctSet, DownSet} {
				e := f.sets[set].elems["10.20.0.11"]
				e.Bytes += 10000
				e.Packets += 10
				f.sets[set].elems["10.20.0.11"] = e
			}
			return nil
		}},
		{"same grant again", func(k *Kernel, f *fakeKernel) error { return k.Allow(ctx, g) }},
		{"quota raised", func(k *Kernel, f *fakeKernel) error {
			g := g
			g.QuotaBytes = 2_000_000
			return k.Allow(ctx, g)
		}},
		{"extended, unlimited, grant knows more", func(k *Kernel, f *fakeKernel) error {
			g := g
			g.QuotaBytes, g.Expires, g.UsedBytes, g.UsedDownBytes = 0, t0.Add(2*time.Hour), 50000, 40000
			return k.Allow(ctx, g)
		}},
		{"stale cw-dl element of another client", func(k *Kernel, f *fakeKernel) error {
			f.sets[DownSet].elems["10.20.0.12"] = entry{Key: "10.20.0.12", Bytes: 777, Packets: 1, HasCounters: true}
			return k.Allow(ctx, g2)
		}},
		{"revoked", func(k *Kernel, f *fakeKernel) error { return k.Revoke(ctx, g.Client) }},
		{"revoked again", func(k *Kernel, f *fakeKernel) error { return k.Revoke(ctx, g.Client) }},
	}
	for _, st := range steps {
		if err := st.do(kx, fx); err != nil {
			t.Fatalf("%s, ipset command: %v", st.name, err)
		}
		if err := st.do(kn, fn); err != nil {
			t.Fatalf("%s, netlink: %v", st.name, err)
		}
		if diff := cmp.Diff(fx.render(), fn.render()); diff != "" {
			t.Errorf("%s: state differs (-ipset command +netlink):\n%s", st.name, diff)
		}
		ux, err1 := kx.Usage(ctx)
		un, err2 := kn.Usage(ctx)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if diff := cmp.Diff(ux, un); diff != "" {
			t.Errorf("%s: Usage differs (-ipset command +netlink):\n%s", st.name, diff)
		}
	}
	if got := fn.render(); !strings.Contains(got, "add cw-dl 10.20.0.12 timeout 3600 packets 1 bytes 777\n") {
		t.Errorf("the stale cw-dl counters were not kept:\n%s", got)
	}
}

func TestAllowNetlinkMessages(t *testing.T) {
	ctx := t.Context()
	k, f, _ := newFakeNL(t)
	if err := k.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	g := Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")},
		Expires: t0.Add(time.Hour), QuotaBytes: 1_000_000, UsedBytes: 3000, UsedDownBytes: 2000}
	f.cmds = nil
	if err := k.Allow(ctx, g); err != nil {
		t.Fatal(err)
	}
	// A new client: three exclusive adds, counted before authorised, no
	// read, no exec, no walk of the conntrack table.
	if diff := cmp.Diff([]string{
		`netlink add cw-acct 10.20.0.11 timeout 3600 packets 0 bytes 4611686018426390904 comment "q=1000000" (excl)`,
		`netlink add cw-dl 10.20.0.11 timeout 3600 packets 0 bytes 2000 (excl)`,
		`netlink add cw-auth 10.20.0.11,02:00:00:00:00:01 timeout 3600 (excl)`,
	}, f.cmds); diff != "" {
		t.Errorf("a new client's Allow (-want +got):\n%s", diff)
	}

	// A known client: the first add is refused, the counters are read and
	// the three elements rewritten, cw-acct without counters (kept).
	f.cmds = nil
	g.Expires = t0.Add(2 * time.Hour)
	if err := k.Allow(ctx, g); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{
		`netlink add cw-acct 10.20.0.11 timeout 7200 packets 0 bytes 4611686018426390904 comment "q=1000000" (excl)`,
		"netlink list cw-acct 10.20.0.11",
		"netlink list cw-dl 10.20.0.11",
		`netlink add cw-acct 10.20.0.11 timeout 7200 comment "q=1000000"`,
		`netlink add cw-dl 10.20.0.11 timeout 7200`,
		`netlink add cw-auth 10.20.0.11,02:00:00:00:00:01 timeout 7200`,
	}, f.cmds); diff != "" {
		t.Errorf("a known client's Allow (-want +got):\n%s", diff)
	}
}

// A refused add says which element and why, and leaves a new client as it
// was: nothing for the gateway's rollback to find half-written.
func TestAllowNetlinkRefused(t *testing.T) {
	g := Grant{Client: Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")}, Expires: t0.Add(time.Hour)}
	for _, tc := range []struct {
		name, fail string
		want       []string
	}{
		{"cw-acct", "netlink add cw-acct", []string{"allowing 10.20.0.11: adding 10.20.0.11 to cw-acct: set is gone"}},
		{"cw-dl", "netlink add cw-dl", []string{"adding 10.20.0.11 to cw-dl: set is gone"}},
		{"cw-auth", "netlink add cw-auth", []string{"adding 10.20.0.11 to cw-auth: set is gone"}},
		{"cw-auth, and the undo", "netlink add cw-auth", []string{"adding 10.20.0.11 to cw-auth: set is gone", "undoing the add to cw-acct: set is gone"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			k, f, _ := newFakeNL(t)
			if err := k.Setup(ctx); err != nil {
				t.Fatal(err)
			}
			before := f.render()
			f.fail[tc.fail] = "set is gone"
			if len(tc.want) > 1 {
				f.fail["netlink del cw-acct"] = "set is gone"
			}
			err := k.Allow(ctx, g)
			if err == nil {
				t.Fatal("Allow succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if len(tc.want) > 1 {
				return // the undo failed: cw-acct keeps the element (Revoke removes it)
			}
			if diff := cmp.Diff(before, f.render()); diff != "" {
				t.Errorf("state after a refused Allow (-before +after):\n%s", diff)
			}
		})
	}
	t.Run("known client", func(t *testing.T) {
		ctx := t.Context()
		k, f, _ := newFakeNL(t)
		if err := k.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		if err := k.Allow(ctx, g); err != nil {
			t.Fatal(err)
		}
		f.fail["netlink add cw-auth 10.20.0.11,02:00:00:00:00:01 timeout 7200"] = "set is gone"
		g := g
		g.Expires = t0.Add(2 * time.Hour)
		err := k.Allow(ctx, g)
		if err == nil || !strings.Contains(err.Error(), "rewriting 10.20.0.11 in cw-auth: set is gone") {
			t.Errorf("Allow = %v, want the rewrite of cw-auth named", err)
		}
	})
}

func flow(proto uint8, src, dst string, sport, dport uint16, rsrc string, rsport uint16) ctFlow {
	fl := ctFlow{Proto: proto, OrigSrc: netip.MustParseAddr(src), OrigDst: netip.MustParseAddr(dst), OrigSport: sport, OrigDport: dport,
		ReplySrc: netip.MustParseAddr(rsrc), ReplySport: rsport, ReplyDport: sport}
	fl.ReplyDst = fl.OrigSrc
	return fl
}

// Revoke deletes the client's UDP and ICMP flows, both directions, and
// nothing else.
func TestRevokeNetlinkFlushesUDPAndICMP(t *testing.T) {
	ctx := t.Context()
	k, f, n := newFakeNL(t)
	if err := k.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	c := Client{IP: netip.MustParseAddr("10.20.0.11"), MAC: mac("02:00:00:00:00:01")}
	if err := k.Allow(ctx, Grant{Client: c}); err != nil {
		t.Fatal(err)
	}
	n.flows = []ctFlow{
		flow(unix.IPPROTO_UDP, "10.20.0.11", "198.51.100.11", 5000, 53, "198.51.100.11", 53),
		flow(unix.IPPROTO_ICMP, "10.20.0.11", "198.51.100.11", 0, 0, "198.51.100.11", 0),
		flow(unix.IPPROTO_UDP, "10.20.0.1", "10.20.0.11", 67, 68, "10.20.0.11", 68),             // to the client
		flow(unix.IPPROTO_TCP, "10.20.0.11", "198.51.100.11", 40000, 443, "198.51.100.11", 443), // kept: see flushConntrack
		flow(unix.IPPROTO_UDP, "10.20.0.12", "198.51.100.11", 5000, 53, "198.51.100.11", 53),    // another client
	}
	want := []ctFlow{n.flows[3], n.flows[4]}
	f.cmds = nil
	if err := k.Revoke(ctx, c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, n.flows, cmp.AllowUnexported(ctFlow{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("flows after Revoke (-want +got):\n%s", diff)
	}
	for _, set := range []string{AuthSet, AcctSet, DownSet} {
		if got := f.count(set); got != "0" {
			t.Errorf("%s has %s elements after Revoke", set, got)
		}
	}
	if got := strings.Join(f.cmds, "\n"); strings.Contains(got, "ipset") || strings.Contains(got, "conntrack -D") {
		t.Errorf("Revoke ran commands:\n%s", got)
	}
	f.fail["netlink conntrack list"] = "netlink socket gone"
	if err := k.Revoke(ctx, c); err == nil || !strings.Contains(err.Error(), "revoking 10.20.0.11: flushing UDP and ICMP flows: netlink socket gone") {
		t.Errorf("Revoke with a failing conntrack = %v", err)
	}
}

// flowMessage renders fl as the kernel sends it in a dump, with an id.
func flowMessage(fl ctFlow, id uint32) []byte {
	b := (&nl.Nfgenmsg{NfgenFamily: unix.AF_INET}).Serialize()
	orig, _ := ctTuple(nl.CTA_TUPLE_ORIG, fl.Proto, fl.OrigSrc, fl.OrigDst, fl.OrigSport, fl.OrigDport)
	reply, _ := ctTuple(nl.CTA_TUPLE_REPLY, fl.Proto, fl.ReplySrc, fl.ReplyDst, fl.ReplySport, fl.ReplyDport)
	b = append(b, orig.Serialize()...)
	b = append(b, reply.Serialize()...)
	b = append(b, nl.NewRtAttr(nl.CTA_STATUS, nl.BEUint32Attr(0x18e)).Serialize()...)
	idb := make([]byte, 4)
	binary.BigEndian.PutUint32(idb, id)
	return append(b, nl.NewRtAttr(nl.CTA_ID, idb).Serialize()...)
}

func TestParseFlow(t *testing.T) {
	want := flow(unix.IPPROTO_TCP, "10.20.0.11", "198.51.100.11", 40001, 80, "10.20.0.1", 8080)
	msg := flowMessage(want, 0xdeadbeef)
	got, err := parseFlow(msg)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("parseFlow = %s, want %s", got, want)
	}
	// The delete carries the original tuple and the id, nothing else.
	attrs, err := parseAttrs(got.del)
	if err != nil {
		t.Fatal(err)
	}
	var types []uint16
	for _, a := range attrs {
		types = append(types, a.typ)
	}
	if diff := cmp.Diff([]uint16{nl.CTA_TUPLE_ORIG, nl.CTA_ID}, types); diff != "" {
		t.Errorf("delete attributes (-want +got):\n%s", diff)
	}
	for _, bad := range [][]byte{nil, {2, 0, 0}, msg[:len(msg)-3], (&nl.Nfgenmsg{}).Serialize()} {
		if _, err := parseFlow(bad); err == nil {
			t.Errorf("parseFlow(%x) = nil error", bad)
		}
	}
}

func FuzzParseFlow(f *testing.F) {
	f.Add(flowMessage(flow(unix.IPPROTO_UDP, "10.20.0.11", "198.51.100.11", 5000, 53, "198.51.100.11", 53), 7))
	f.Add([]byte{2, 0, 0, 0, 8, 0, 1, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		fl, err := parseFlow(msg)
		if err == nil && !fl.OrigSrc.Is4() {
			t.Errorf("parsed a flow without an IPv4 source: %+v", fl)
		}
	})
}

func TestCtFilterMatch(t *testing.T) {
	fl := flow(unix.IPPROTO_TCP, "10.20.0.11", "198.51.100.11", 40001, 80, "10.20.0.1", 8080)
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		f    ctFilter
		want bool
	}{
		{ctFilter{OrigSrc: ip("10.20.0.11")}, true},
		{ctFilter{OrigSrc: ip("10.20.0.12")}, false},
		{ctFilter{OrigDst: ip("10.20.0.11")}, false},
		{ctFilter{Proto: unix.IPPROTO_TCP, OrigSrc: ip("10.20.0.11")}, true},
		{ctFilter{Proto: unix.IPPROTO_UDP, OrigSrc: ip("10.20.0.11")}, false},
	} {
		if got := tc.f.match(fl); got != tc.want {
			t.Errorf("%+v.match(%s) = %v, want %v", tc.f, fl, got, tc.want)
		}
	}
}

// ipsetMessage renders elements as the kernel lists them: nfgenmsg, the
// set's name, IPSET_ATTR_ADT with one IPSET_ATTR_DATA each.
func ipsetMessage(es ...setElem) []byte {
	b := (&nl.Nfgenmsg{NfgenFamily: unix.AF_INET}).Serialize()
	b = append(b, nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated("cw-acct")).Serialize()...)
	adt := nl.NewRtAttr(nl.IPSET_ATTR_ADT|unix.NLA_F_NESTED, nil)
	for _, e := range es {
		d := nl.NewRtAttr(nl.IPSET_ATTR_DATA|unix.NLA_F_NESTED, nil) // an element without an address
		if e.IP.IsValid() {
			d = ipsetData(e.IP)
		}
		if e.MAC != nil {
			d.AddRtAttr(nl.IPSET_ATTR_ETHER, e.MAC)
		}
		d.AddRtAttr(nl.IPSET_ATTR_TIMEOUT|unix.NLA_F_NET_BYTEORDER, nl.BEUint32Attr(e.Timeout))
		if e.Bytes != nil {
			d.AddRtAttr(nl.IPSET_ATTR_BYTES|unix.NLA_F_NET_BYTEORDER, nl.BEUint64Attr(*e.Bytes))
			d.AddRtAttr(nl.IPSET_ATTR_PACKETS|unix.NLA_F_NET_BYTEORDER, nl.BEUint64Attr(3))
		}
		if e.Comment != "" {
			d.AddRtAttr(nl.IPSET_ATTR_COMMENT, nl.ZeroTerminated(e.Comment))
		}
		adt.AddChild(d)
	}
	return append(b, adt.Serialize()...)
}

func TestParseIpsetList(t *testing.T) {
	bytes := uint64(QuotaBase - 1000)
	msg := ipsetMessage(
		setElem{IP: netip.MustParseAddr("10.20.0.11"), Timeout: 99, Bytes: &bytes, Comment: "q=1000"},
		setElem{IP: netip.MustParseAddr("10.20.0.12"), MAC: mac("02:00:00:00:00:0A")},
	)
	got, err := parseIpsetList(msg, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	want := []entry{
		{Key: "10.20.0.11", Timeout: 99, Packets: 3, Bytes: QuotaBase - 1000, Comment: "q=1000", HasCounters: true},
		{Key: "10.20.0.12", MAC: "02:00:00:00:00:0a"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseIpsetList (-want +got):\n%s", diff)
	}
	one, err := parseIpsetList(msg, netip.MustParseAddr("10.20.0.12"))
	if err != nil || len(one) != 1 || one[0] != want[1] {
		t.Errorf("parseIpsetList for 10.20.0.12 only = %v, %v", one, err)
	}
	for _, bad := range [][]byte{nil, msg[:len(msg)-2], ipsetMessage(setElem{})} {
		if _, err := parseIpsetList(bad, netip.Addr{}); err == nil {
			t.Errorf("parseIpsetList(%x) = nil error", bad)
		}
	}
}

func FuzzParseIpsetList(f *testing.F) {
	b := uint64(7)
	f.Add(ipsetMessage(setElem{IP: netip.MustParseAddr("10.20.0.11"), Timeout: 99, Bytes: &b, Comment: "q=1"}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		es, err := parseIpsetList(msg, netip.Addr{})
		if err != nil {
			return
		}
		for _, e := range es {
			if _, err := netip.ParsePrefix(e.Key); err != nil {
				if _, err := netip.ParseAddr(e.Key); err != nil {
					t.Errorf("element key %q is neither an address nor a prefix", e.Key)
				}
			}
		}
	})
}
