package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/civicwifi/civicwifi/internal/lab"
)

func TestSummaryNamesEverything(t *testing.T) {
	l := &lab.Lab{
		ID: "abcde", Upstream: lab.NS{Name: "cwu-abcde"}, Gateway: lab.NS{Name: "cwg-abcde"},
		Clients: []*lab.Client{
			{NS: lab.NS{Name: "cwc1-abcde"}, Index: 1, MAC: lab.ClientMAC(1), IP: lab.ClientIP(1), IP6: lab.ClientIP6(1), Port: "cp1"},
			{NS: lab.NS{Name: "cwc2-abcde"}, Index: 2, MAC: lab.ClientMAC(2), IP6: lab.ClientIP6(2), Port: "cp2"},
		},
		UpstreamIP: netip.MustParseAddr("198.51.100.1"), GatewayIP: netip.MustParseAddr("10.20.0.1"),
		WANIf: "wan0", LANIf: "br-cw", UpstreamCAFile: "/tmp/x/upstream-ca.pem",
	}
	var b strings.Builder
	if err := summary.Execute(&b, l); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cwu-abcde", "cwg-abcde", "cwc1-abcde", "10.20.0.11/22", "cwc2-abcde", "(no IPv4: DHCP)",
		"02:00:00:00:00:01", "ip netns exec cwg-abcde iperf3 -c 198.51.100.1", "/tmp/x/upstream-ca.pem"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}
