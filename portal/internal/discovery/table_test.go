package discovery

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestTable(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	macA := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}
	macB := net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	ip1, ip2 := netip.MustParseAddr("10.20.0.11"), netip.MustParseAddr("10.20.0.12")
	at := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Second) }

	var tab Table
	tab.Observe(Host{MAC: macA, Hostname: "anna-phone", LastSeen: at(0), Source: SourceDHCPRequest})
	tab.Observe(Host{MAC: macA, IP: ip1, LastSeen: at(1), Source: SourceDHCPAck})
	tab.Observe(Host{MAC: macA, IP: ip1, LastSeen: at(5), Source: SourceIPv4})
	tab.Observe(Host{MAC: macA, IP: ip1, LastSeen: at(3), Source: SourceARP}) // late, out of order
	tab.Observe(Host{IP: ip2, LastSeen: at(1)})                               // no MAC: ignored

	want := Host{MAC: macA, IP: ip1, Hostname: "anna-phone", FirstSeen: at(0), LastSeen: at(5), Source: SourceIPv4}
	if got, ok := tab.Lookup(ip1); !ok || !cmp.Equal(got, want, addrCmp) {
		t.Errorf("Lookup(%s) = %+v, %v; want %+v", ip1, got, ok, want)
	}
	if got, ok := tab.LookupMAC(macA); !ok || !cmp.Equal(got, want, addrCmp) {
		t.Errorf("LookupMAC = %+v, %v", got, ok)
	}
	if _, ok := tab.Lookup(ip2); ok {
		t.Errorf("Lookup(%s) found a host", ip2)
	}

	// The address moves to another device; the old one loses it.
	tab.Observe(Host{MAC: macB, IP: ip1, LastSeen: at(10), Source: SourceDHCPAck})
	if got, _ := tab.Lookup(ip1); got.MAC.String() != macB.String() {
		t.Errorf("after the move, Lookup(%s) = %v, want %v", ip1, got.MAC, macB)
	}
	if got, _ := tab.LookupMAC(macA); got.IP.IsValid() {
		t.Errorf("old holder keeps %s", got.IP)
	}
	// The first device takes another address.
	tab.Observe(Host{MAC: macA, IP: ip2, LastSeen: at(11), Source: SourceARP})
	gotAll := tab.All()
	wantAll := []Host{
		{MAC: macB, IP: ip1, FirstSeen: at(10), LastSeen: at(10), Source: SourceDHCPAck},
		{MAC: macA, IP: ip2, Hostname: "anna-phone", FirstSeen: at(0), LastSeen: at(11), Source: SourceARP},
	}
	if diff := cmp.Diff(wantAll, gotAll, addrCmp); diff != "" {
		t.Errorf("All (-want +got):\n%s", diff)
	}
	// Returned hosts are copies.
	gotAll[0].MAC[5] = 0xff
	if _, ok := tab.LookupMAC(macB); !ok {
		t.Error("caller's change reached the table")
	}

	if n := tab.Forget(at(11)); n != 1 || tab.Len() != 1 {
		t.Errorf("Forget = %d, Len = %d; want 1, 1", n, tab.Len())
	}
	if _, ok := tab.Lookup(ip1); ok {
		t.Error("forgotten host still found by IP")
	}
	if _, ok := tab.Lookup(ip2); !ok {
		t.Error("recent host forgotten")
	}
}

func TestTableConcurrent(t *testing.T) {
	tab := NewTable()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				mac := net.HardwareAddr{2, 0, 0, 0, byte(g), byte(i % 50)}
				ip := netip.AddrFrom4([4]byte{10, 20, byte(g), byte(i % 50)})
				tab.Observe(Host{MAC: mac, IP: ip})
				tab.Lookup(ip)
				tab.LookupMAC(mac)
				if i%100 == 0 {
					tab.All()
					tab.Forget(time.Now().Add(-time.Hour))
				}
			}
		}()
	}
	wg.Wait()
	if tab.Len() != 8*50 {
		t.Errorf("Len = %d, want %d", tab.Len(), 8*50)
	}
}
