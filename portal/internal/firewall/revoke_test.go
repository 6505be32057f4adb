package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Tier 0 of the batch Revoke: the messages it sends (through the fake
// nlKernel) and the flows it leaves.

var flowCmp = []cmp.Option{cmp.AllowUnexported(ctFlow{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}

// allowed is a fake-netlink firewall, set up, with n clients allowed
// (10.20.0.11 on) and the flows of revokeFlows for each.
func allowed(t *testing.T, n int) (*Kernel, *fakeKernel, *fakeNL, []Client) {
	t.Helper()
	k, f, nk := newFakeNL(t)
	if err := k.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	var cs []Client
	for i := range n {
		c := Client{IP: netip.AddrFrom4([4]byte{10, 20, 0, byte(11 + i)}), MAC: mac(fmt.Sprintf("02:00:00:00:00:%02x", i+1))}
		if err := k.Allow(t.Context(), Grant{Client: c}); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	f.cmds = nil
	return k, f, nk, cs
}

// clientFlows are one client's flows: what Revoke deletes (UDP and ICMP,
// both directions) and what it keeps (TCP).
func clientFlows(ip string) (gone, kept []ctFlow) {
	return []ctFlow{
			flow(unix.IPPROTO_UDP, ip, "198.51.100.11", 5000, 53, "198.51.100.11", 53),
			flow(unix.IPPROTO_UDP, ip, "198.51.100.11", 5001, 443, "198.51.100.11", 443),
			flow(unix.IPPROTO_ICMP, ip, "198.51.100.11", 0, 0, "198.51.100.11", 0),
			flow(unix.IPPROTO_UDP, "10.20.0.1", ip, 67, 68, ip, 68), // to the client
		}, []ctFlow{
			flow(unix.IPPROTO_TCP, ip, "198.51.100.11", 40000, 443, "198.51.100.11", 443), // see flushConntrack
		}
}

func count(cmds []string, prefix string) int {
	n := 0
	for _, c := range cmds {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// A batch in a small table (protoWalks): one set message per set
// (cw-auth first), the table's size read, two walks in all (UDP, ICMP),
// one delete per flow of the batch; TCP flows and the flows of clients
// outside the batch stay.
func TestRevokeBatchMessages(t *testing.T) {
	k, f, n, cs := allowed(t, 5)
	batch, others := cs[:4], cs[4:]
	var want []ctFlow
	for _, c := range cs {
		gone, kept := clientFlows(c.IP.String())
		n.flows = append(n.flows, gone...)
		n.flows = append(n.flows, kept...)
		if c.IP == others[0].IP {
			want = append(want, gone...)
		}
		want = append(want, kept...)
	}
	n.flows = append(n.flows,
		flow(unix.IPPROTO_UDP, "10.20.0.11", "10.20.0.12", 7000, 7000, "10.20.0.12", 7000),   // between two of the batch: deleted once
		flow(unix.IPPROTO_UDP, "172.16.0.1", "198.51.100.11", 7000, 53, "198.51.100.11", 53), // not a client
	)
	want = append(want, n.flows[len(n.flows)-1])
	if err := k.Revoke(t.Context(), batch...); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, n.flows, flowCmp...); diff != "" {
		t.Errorf("flows after Revoke (-want +got):\n%s", diff)
	}
	dels := []string{
		"netlink del cw-auth 10.20.0.11 10.20.0.12 10.20.0.13 10.20.0.14",
		"netlink del cw-acct 10.20.0.11 10.20.0.12 10.20.0.13 10.20.0.14",
		"netlink del cw-dl 10.20.0.11 10.20.0.12 10.20.0.13 10.20.0.14",
	}
	lists := []string{
		"netlink conntrack list {Proto:1 OrigSrc:invalid IP OrigDst:invalid IP}",
		"netlink conntrack list {Proto:17 OrigSrc:invalid IP OrigDst:invalid IP}",
	}
	got := slices.Clone(f.cmds)
	if len(got) < 6 {
		t.Fatalf("Revoke's calls: %q", got)
	}
	slices.Sort(got[4:6]) // the two walks run side by side
	if diff := cmp.Diff(append(append(dels, "netlink conntrack count"), lists...), got[:6]); diff != "" {
		t.Errorf("Revoke's set messages and walks (-want +got):\n%s", diff)
	}
	if d := count(got, "netlink conntrack delete"); d != 4*4+1 || len(got) != 6+d {
		t.Errorf("Revoke made %d deletes (want 17) and %d calls in all: %q", d, len(got), got)
	}
	for _, set := range []string{AuthSet, AcctSet, DownSet} {
		if got := f.count(set); got != "1" {
			t.Errorf("%s has %s elements after revoking 4 of 5, want 1", set, got)
		}
		if _, ok := f.sets[set].elems[others[0].IP.String()]; !ok {
			t.Errorf("%s lost the client outside the batch", set)
		}
	}
}

// A few clients in a large table: two walks per client, filtered on its
// address by the kernel, as for one.
func TestRevokeSmallBatchFiltersOnTheAddress(t *testing.T) {
	k, f, n, cs := allowed(t, 3)
	n.count = 50_000
	for _, c := range cs {
		gone, _ := clientFlows(c.IP.String())
		n.flows = append(n.flows, gone...)
	}
	if err := k.Revoke(t.Context(), cs...); err != nil {
		t.Fatal(err)
	}
	if len(n.flows) != 0 {
		t.Errorf("flows left: %v", n.flows)
	}
	var lists []string
	for _, c := range f.cmds {
		if strings.HasPrefix(c, "netlink conntrack list") {
			lists = append(lists, c)
		}
	}
	var want []string
	for _, c := range cs {
		want = append(want,
			fmt.Sprintf("netlink conntrack list {Proto:0 OrigSrc:%s OrigDst:invalid IP}", c.IP),
			fmt.Sprintf("netlink conntrack list {Proto:0 OrigSrc:invalid IP OrigDst:%s}", c.IP))
	}
	slices.Sort(want)
	slices.Sort(lists)
	if diff := cmp.Diff(want, lists); diff != "" {
		t.Errorf("walks (-want +got):\n%s", diff)
	}
}

func TestProtoWalks(t *testing.T) {
	for _, tc := range []struct {
		clients, entries int
		want             bool
	}{
		{1, 0, false}, {2, 0, true}, {2, 5000, true}, {2, 6000, false},
		{13, 50_000, false}, {14, 50_000, true}, {200, 50_000, true}, {200, 1_000_000, false},
	} {
		if got := protoWalks(tc.clients, tc.entries); got != tc.want {
			t.Errorf("protoWalks(%d clients, %d entries) = %v, want %v", tc.clients, tc.entries, got, tc.want)
		}
	}
}

// One client's failure is named and stops nobody else: a refused element
// is retried one by one, so only its client fails, keeps its flows (as a
// single Revoke that fails to delete) and is named; a failed walk names
// every client it served; an address outside the subnet is named and the
// rest revoked.
func TestRevokeBatchFailures(t *testing.T) {
	t.Run("element", func(t *testing.T) {
		k, f, n, cs := allowed(t, 4)
		for _, c := range cs {
			gone, _ := clientFlows(c.IP.String())
			n.flows = append(n.flows, gone...)
		}
		f.fail["netlink del cw-acct 10.20.0.13"] = "set is busy"
		err := k.Revoke(t.Context(), cs...)
		if want := "revoking 10.20.0.13: deleting 10.20.0.13 from cw-acct: set is busy"; err == nil || err.Error() != want {
			t.Errorf("Revoke = %v, want %q", err, want)
		}
		if diff := cmp.Diff([]string{
			"netlink del cw-auth 10.20.0.11 10.20.0.12 10.20.0.13 10.20.0.14",
			"netlink del cw-acct 10.20.0.11 10.20.0.12 10.20.0.13 10.20.0.14", // the kernel stops at .13
			"netlink del cw-acct 10.20.0.11",
			"netlink del cw-acct 10.20.0.12",
			"netlink del cw-acct 10.20.0.13",
			"netlink del cw-acct 10.20.0.14",
			"netlink del cw-dl 10.20.0.11 10.20.0.12 10.20.0.13 10.20.0.14",
		}, f.cmds[:7]); diff != "" {
			t.Errorf("set messages (-want +got):\n%s", diff)
		}
		if got := f.render(); strings.Contains(got, "add cw-auth") || strings.Contains(got, "add cw-dl") ||
			!strings.Contains(got, "add cw-acct 10.20.0.13 ") || strings.Count(got, "add cw-acct") != 1 {
			t.Errorf("state after Revoke, want only 10.20.0.13 in cw-acct:\n%s", got)
		}
		want, _ := clientFlows("10.20.0.13")
		if diff := cmp.Diff(want, n.flows, flowCmp...); diff != "" {
			t.Errorf("flows after Revoke (-want +got):\n%s", diff)
		}
	})
	t.Run("walk", func(t *testing.T) {
		k, f, n, cs := allowed(t, 3)
		for _, c := range cs {
			gone, _ := clientFlows(c.IP.String())
			n.flows = append(n.flows, gone...)
		}
		f.fail["netlink conntrack list {Proto:17 "] = "netlink socket gone"
		err := k.Revoke(t.Context(), cs...)
		var want []string
		for _, c := range cs {
			want = append(want, "revoking "+c.IP.String()+": flushing UDP and ICMP flows: netlink socket gone")
		}
		if err == nil || err.Error() != strings.Join(want, "\n") {
			t.Errorf("Revoke = %v, want\n%s", err, strings.Join(want, "\n"))
		}
		for _, fl := range n.flows {
			if fl.Proto != unix.IPPROTO_UDP {
				t.Errorf("flow %s left, want only UDP flows (their walk failed)", fl)
			}
		}
		if f.count(AuthSet) != "0" {
			t.Errorf("cw-auth has %s elements, want none", f.count(AuthSet))
		}
	})
	t.Run("address", func(t *testing.T) {
		k, f, _, cs := allowed(t, 3)
		bad := Client{IP: netip.MustParseAddr("192.168.1.5"), MAC: mac("02:00:00:00:00:09")}
		err := k.Revoke(t.Context(), cs[0], bad, cs[1], cs[2], cs[1])
		if want := "revoking 192.168.1.5: address is not in the client subnet 10.20.0.0/22"; err == nil || err.Error() != want {
			t.Errorf("Revoke = %v, want %q", err, want)
		}
		if f.count(AuthSet) != "0" || f.count(AcctSet) != "0" || f.count(DownSet) != "0" {
			t.Errorf("elements left:\n%s", f.render())
		}
		if want := "netlink del cw-auth 10.20.0.11 10.20.0.12 10.20.0.13"; f.cmds[0] != want {
			t.Errorf("first message %q, want %q (each client once)", f.cmds[0], want)
		}
	})
}

// More clients than one message carries: ipsetBatchMax each.
func TestRevokeBatchChunks(t *testing.T) {
	k, f, n := newFakeNL(t)
	k.cfg.Subnet = netip.MustParsePrefix("10.20.0.0/21")
	if err := k.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	var cs []Client
	for i := range 1500 {
		ip := netip.AddrFrom4([4]byte{10, 20, byte(i / 250), byte(1 + i%250)})
		cs = append(cs, Client{IP: ip, MAC: mac("02:00:00:00:00:01")})
		if err := n.f.element([]string{"add", AuthSet, ip.String() + ",02:00:00:00:00:01"}, false); err != nil {
			t.Fatal(err)
		}
	}
	f.cmds = nil
	if err := k.Revoke(t.Context(), cs...); err != nil {
		t.Fatal(err)
	}
	if got := f.count(AuthSet); got != "0" {
		t.Errorf("cw-auth has %s elements after revoking them all", got)
	}
	var sizes []int
	for _, c := range f.cmds {
		if strings.HasPrefix(c, "netlink del ") {
			sizes = append(sizes, len(strings.Fields(c))-3)
		}
	}
	if diff := cmp.Diff([]int{1024, 476, 1024, 476, 1024, 476}, sizes); diff != "" {
		t.Errorf("clients per set message (-want +got):\n%s", diff)
	}
}

// The bytes of a batch IPSET_CMD_DEL: protocol, set name, then one
// IPSET_ATTR_ADT holding an IPSET_ATTR_DATA { IPSET_ATTR_IP {
// IPSET_ATTR_IPADDR_IPV4 } } per client, no NLM_F_EXCL; one client's is
// the IPSET_ATTR_DATA alone, as before. Too many or none is refused.
func TestIpsetDelRequest(t *testing.T) {
	c := &nlConn{}
	ips := []netip.Addr{netip.MustParseAddr("10.20.0.11"), netip.MustParseAddr("10.20.1.2")}
	addrs := func(datas []nlAttr) []string {
		t.Helper()
		var out []string
		for _, d := range datas {
			if d.typ != nl.IPSET_ATTR_DATA {
				t.Errorf("attribute %d in the ADT, want only IPSET_ATTR_DATA", d.typ)
			}
			e, ok, err := parseIpsetElem(d.val, netip.Addr{})
			if err != nil || !ok {
				t.Fatalf("element: %v", err)
			}
			out = append(out, e.Key)
		}
		return out
	}
	for _, tc := range []struct {
		ips  []netip.Addr
		want []string
	}{{ips, []string{"10.20.0.11", "10.20.1.2"}}, {ips[:1], []string{"10.20.0.11"}}} {
		req, err := c.ipsetDelRequest(AcctSet, tc.ips)
		if err != nil {
			t.Fatal(err)
		}
		b := req.Serialize()
		if typ := nl.NativeEndian().Uint16(b[4:6]); typ != nl.IPSET_CMD_DEL|unix.NFNL_SUBSYS_IPSET<<8 {
			t.Errorf("message type %#x", typ)
		}
		if flags := nl.NativeEndian().Uint16(b[6:8]); flags&unix.NLM_F_EXCL != 0 || flags&unix.NLM_F_ACK == 0 {
			t.Errorf("flags %#x, want an ack and no NLM_F_EXCL (a missing element is fine)", flags)
		}
		attrs, err := parseAttrs(b[unix.SizeofNlMsghdr+nl.SizeofNfgenmsg:])
		if err != nil {
			t.Fatal(err)
		}
		var types []uint16
		for _, a := range attrs {
			types = append(types, a.typ)
		}
		last := attrs[len(attrs)-1]
		var got []string
		if len(tc.ips) > 1 {
			datas, err := parseAttrs(last.val)
			if err != nil {
				t.Fatal(err)
			}
			got = addrs(datas)
			if diff := cmp.Diff([]uint16{nl.IPSET_ATTR_PROTOCOL, nl.IPSET_ATTR_SETNAME, nl.IPSET_ATTR_ADT}, types); diff != "" {
				t.Errorf("attributes of %d clients (-want +got):\n%s", len(tc.ips), diff)
			}
		} else {
			got = addrs(attrs[2:])
			if diff := cmp.Diff([]uint16{nl.IPSET_ATTR_PROTOCOL, nl.IPSET_ATTR_SETNAME, nl.IPSET_ATTR_DATA}, types); diff != "" {
				t.Errorf("attributes of one client (-want +got):\n%s", diff)
			}
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("elements (-want +got):\n%s", diff)
		}
		if name := string(attrs[1].val); name != AcctSet+"\x00" {
			t.Errorf("set name %q", name)
		}
	}
	many := make([]netip.Addr, ipsetBatchMax+1)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)})
	}
	if _, err := c.ipsetDelRequest(AcctSet, many); err == nil {
		t.Error("a message of ipsetBatchMax+1 elements was built")
	}
	if _, err := c.ipsetDelRequest(AcctSet, many[:ipsetBatchMax]); err != nil {
		t.Errorf("ipsetBatchMax elements: %v", err)
	}
	if _, err := c.ipsetDelRequest(AcctSet, nil); err == nil {
		t.Error("a message of no element was built")
	}
	if _, err := c.ipsetDelRequest(AcctSet, []netip.Addr{netip.MustParseAddr("2001:db8::1")}); err == nil {
		t.Error("an IPv6 element was built")
	}
}

// The entry count of a stats answer (nfgenmsg, CTA_STATS_GLOBAL_ENTRIES
// and CTA_STATS_GLOBAL_MAX_ENTRIES, big endian); malformed ones refused.
func TestParseCount(t *testing.T) {
	msg := (&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC}).Serialize()
	msg = append(msg, nl.NewRtAttr(ctaStatsGlobalEntries, nl.BEUint32Attr(50_001)).Serialize()...)
	msg = append(msg, nl.NewRtAttr(ctaStatsGlobalEntries+1, nl.BEUint32Attr(262_144)).Serialize()...)
	if n, err := parseCount(msg); err != nil || n != 50_001 {
		t.Errorf("parseCount = %d, %v; want 50001", n, err)
	}
	for _, bad := range [][]byte{nil, msg[:2], msg[:nl.SizeofNfgenmsg], msg[:len(msg)-3]} {
		if n, err := parseCount(bad); err == nil {
			t.Errorf("parseCount(%x) = %d, want an error", bad, n)
		}
	}
}
