package firewall

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// clientListing is a listing message with the elements the client sets
// hold (and a few they do not).
func clientListing() []byte {
	b1, b2, b3 := uint64(QuotaBase-1000), uint64(7), uint64(QuotaBase)
	msg := ipsetMessage(
		setElem{IP: netip.MustParseAddr("10.20.0.11"), Timeout: 99, Bytes: &b1, Comment: "q=1000"},
		setElem{IP: netip.MustParseAddr("10.20.0.12"), MAC: mac("02:00:00:00:00:0A"), Timeout: 3600},
		setElem{IP: netip.MustParseAddr("10.20.0.13"), Bytes: &b2},
		setElem{IP: netip.MustParseAddr("10.20.0.14"), Bytes: &b3, Comment: "q=" + strings.Repeat("9", 25)}, // above QuotaBase: none
		setElem{IP: netip.MustParseAddr("10.20.0.15"), Comment: "note"},
		setElem{IP: netip.MustParseAddr("10.20.3.255"), Comment: "q=18446744073709551615"},
	)
	// Not client elements: an IPv6 address, a network, an IPv4 address
	// in an IPv6 attribute.
	adt := nl.NewRtAttr(nl.IPSET_ATTR_ADT|unix.NLA_F_NESTED, nil)
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	d := nl.NewRtAttr(nl.IPSET_ATTR_DATA|unix.NLA_F_NESTED, nil)
	d.AddRtAttr(nl.IPSET_ATTR_IP|unix.NLA_F_NESTED, nil).AddRtAttr(nl.IPSET_ATTR_IPADDR_IPV6|unix.NLA_F_NET_BYTEORDER, v6[:])
	adt.AddChild(d)
	d = ipsetData(netip.MustParseAddr("10.20.1.0"))
	d.AddRtAttr(nl.IPSET_ATTR_CIDR, []byte{24})
	adt.AddChild(d)
	d = nl.NewRtAttr(nl.IPSET_ATTR_DATA|unix.NLA_F_NESTED, nil)
	d.AddRtAttr(nl.IPSET_ATTR_IP|unix.NLA_F_NESTED, nil).AddRtAttr(nl.IPSET_ATTR_IPADDR_IPV6|unix.NLA_F_NET_BYTEORDER, []byte{10, 20, 0, 16})
	adt.AddChild(d)
	return append(msg, adt.Serialize()...)
}

// The in-place decoder gives what the entry parser gives, turned into
// client elements.
func TestAppendClientElemsMatchesParseIpsetList(t *testing.T) {
	msg := clientListing()
	es, err := parseIpsetList(msg, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	want := appendEntries(nil, es)
	got, err := appendClientElems(nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(clientElem{})); diff != "" {
		t.Errorf("appendClientElems (-parseIpsetList +got):\n%s", diff)
	}
	if len(got) != 7 || got[6].ip != be32(netip.MustParseAddr("10.20.0.16")) || got[0].quota != 1000 || got[0].bytes != QuotaBase-1000 || !got[0].hasCounters || got[0].timeout != 99 ||
		!got[1].hasMAC || got[1].mac != [6]byte{2, 0, 0, 0, 0, 0x0a} || got[1].hasCounters || got[3].quota != 0 || got[5].ip != be32(netip.MustParseAddr("10.20.3.255")) {
		t.Errorf("appendClientElems = %+v", got)
	}
	// Appending to a reused slice allocates nothing.
	buf := make([]clientElem, 0, 16)
	if n := testing.AllocsPerRun(100, func() { buf, _ = appendClientElems(buf[:0], msg) }); n != 0 {
		t.Errorf("appendClientElems allocates %.0f times per listing, want 0", n)
	}
}

func TestAppendClientElemsRefusesBrokenMessages(t *testing.T) {
	msg := clientListing()
	for n := range len(msg) {
		got, err := appendClientElems(nil, msg[:n])
		_, perr := parseIpsetList(msg[:n], netip.Addr{})
		if (err == nil) != (perr == nil) {
			t.Errorf("%d of %d bytes: appendClientElems = %d elements, %v; parseIpsetList: %v", n, len(msg), len(got), err, perr)
		}
	}
	noAddr := ipsetMessage(setElem{Comment: "q=1"})
	if _, err := appendClientElems(nil, noAddr); err == nil || !strings.Contains(err.Error(), "element without an address") {
		t.Errorf("an element without an address: %v", err)
	}
}

func FuzzAppendClientElems(f *testing.F) {
	f.Add(clientListing())
	f.Add(ipsetMessage(setElem{Comment: "q=1"}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		got, err := appendClientElems(nil, msg)
		es, perr := parseIpsetList(msg, netip.Addr{})
		if (err == nil) != (perr == nil) {
			t.Fatalf("appendClientElems: %v; parseIpsetList: %v", err, perr)
		}
		if err != nil {
			return
		}
		if diff := cmp.Diff(appendEntries(nil, es), got, cmp.AllowUnexported(clientElem{})); diff != "" {
			t.Errorf("appendClientElems (-parseIpsetList +got):\n%s", diff)
		}
	})
}

func TestQuotaOfComment(t *testing.T) {
	for _, c := range []string{"q=0", "q=1000", "q=007", "q=", "q=-1", "q=+5", "q=1_000", "q=1 ", "x=5", "q", "",
		"q=4611686018427387904", "q=4611686018427387905", "q=18446744073709551615", "q=18446744073709551616", "q=99999999999999999999999"} {
		// The meaning, written the obvious way: a decimal number after
		// "q=", up to QuotaBase; anything else is no quota.
		var want uint64
		if v, ok := strings.CutPrefix(c, "q="); ok {
			if q, err := strconv.ParseUint(v, 10, 64); err == nil && q <= QuotaBase {
				want = q
			}
		}
		if got := parseQuotaComment(c); got != want {
			t.Errorf("parseQuotaComment(%q) = %d, want %d", c, got, want)
		}
		if got := quotaOfComment([]byte(c + "\x00junk")); got != want {
			t.Errorf("quotaOfComment(%q) = %d, want %d", c, got, want)
		}
	}
}

// A reading replaces the one before: an element gone since is not found,
// whatever the slice still holds beyond its length.
func TestClientSetReadingsReplaceEachOther(t *testing.T) {
	subnet := netip.MustParsePrefix("10.20.0.1/22")
	ip := func(s string) uint32 { return be32(netip.MustParseAddr(s)) }
	var s clientSet
	s.start(subnet)
	s.elems = append(s.elems, clientElem{ip: ip("10.20.0.11"), bytes: 1}, clientElem{ip: ip("10.20.3.254"), bytes: 2}, clientElem{ip: ip("10.99.0.1"), bytes: 3})
	s.index()
	for _, tc := range []struct {
		ip    string
		bytes uint64
		ok    bool
	}{{"10.20.0.11", 1, true}, {"10.20.3.254", 2, true}, {"10.99.0.1", 0, false}, {"10.20.0.12", 0, false}, {"10.19.255.255", 0, false}} {
		e, ok := s.get(ip(tc.ip))
		if ok != tc.ok || ok && e.bytes != tc.bytes {
			t.Errorf("first reading: get(%s) = %+v, %v; want bytes %d, %v", tc.ip, e, ok, tc.bytes, tc.ok)
		}
	}
	s.start(subnet)
	s.elems = append(s.elems, clientElem{ip: ip("10.20.3.254"), bytes: 5})
	s.index()
	if e, ok := s.get(ip("10.20.3.254")); !ok || e.bytes != 5 {
		t.Errorf("second reading: get(10.20.3.254) = %+v, %v; want bytes 5", e, ok)
	}
	if e, ok := s.get(ip("10.20.0.11")); ok {
		t.Errorf("second reading: get(10.20.0.11) = %+v, want it gone (not in this reading)", e)
	}
	s.start(subnet)
	s.index()
	if e, ok := s.get(ip("10.20.3.254")); ok {
		t.Errorf("empty reading (a flushed set): get(10.20.3.254) = %+v, want nothing", e)
	}
}

// `ipset list -t` says what the create lines of `ipset save` say
// (ipset 7.17's output).
func TestParseTerseMatchesSave(t *testing.T) {
	terse := `Name: cw-auth
Type: bitmap:ip,mac
Revision: 3
Header: range 10.20.0.0-10.20.3.255 timeout 0
Size in memory: 4216
References: 1
Number of entries: 0

Name: cw-acct
Type: bitmap:ip
Revision: 3
Header: range 10.20.0.0-10.20.3.255 timeout 0 counters comment
Size in memory: 69744
References: 2
Number of entries: 1

Name: cw-garden
Type: hash:net
Revision: 7
Header: family inet hashsize 1024 maxelem 65536 timeout 3600 bucketsize 12 initval 0x5e3fa32c
Size in memory: 552
References: 2
Number of entries: 0

Name: plain
Type: hash:ip
Revision: 6
Header: 
Size in memory: 200
References: 0
Number of entries: 0
`
	save := `create cw-auth bitmap:ip,mac range 10.20.0.0-10.20.3.255 timeout 0
create cw-acct bitmap:ip range 10.20.0.0-10.20.3.255 timeout 0 counters comment
add cw-acct 10.20.0.11 timeout 99 packets 1 bytes 2 comment "q=0"
create cw-garden hash:net family inet hashsize 1024 maxelem 65536 timeout 3600 bucketsize 12 initval 0x5e3fa32c
create plain hash:ip
`
	got, want := parseTerse(terse), parseHeaders(save)
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(header{})); diff != "" || len(got) != 4 {
		t.Errorf("parseTerse (-save +terse):\n%s", diff)
	}
	if h := got[AcctSet]; !h.equal(parseHeader([]string{"bitmap:ip", "range", "10.20.0.0/22", "timeout", "0", "counters", "comment"})) {
		t.Errorf("cw-acct's header %s differs from what Setup creates", h)
	}
}
