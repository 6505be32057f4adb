package dnsmasq

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestParseLeases(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Lease
		wantErr string
	}{
		{name: "empty", in: "", want: nil},
		{
			name: "typical",
			in: "1764095000 02:00:00:00:00:01 10.20.0.150 anna-phone 01:02:00:00:00:00:01\n" +
				"0 02:00:00:00:00:02 10.20.0.151 * *\n" +
				"\n" +
				"duid 00:01:00:01:2c:aa:bb:cc:02:00:00:00:00:09\n" +
				"1764095000 1234 2001:db8::5 * 00:01\n",
			want: []Lease{
				{Expires: time.Unix(1764095000, 0).UTC(), MAC: mustMAC("02:00:00:00:00:01"), IP: netip.MustParseAddr("10.20.0.150"),
					Hostname: "anna-phone", ClientID: "01:02:00:00:00:00:01"},
				{MAC: mustMAC("02:00:00:00:00:02"), IP: netip.MustParseAddr("10.20.0.151")},
			},
		},
		{name: "four fields", in: "1764095000 02:00:00:00:00:01 10.20.0.150 host\n",
			want: []Lease{{Expires: time.Unix(1764095000, 0).UTC(), MAC: mustMAC("02:00:00:00:00:01"), IP: netip.MustParseAddr("10.20.0.150"), Hostname: "host"}}},
		{name: "bad expiry", in: "soon 02:00:00:00:00:01 10.20.0.150 * *\n", wantErr: `line 1: expiry "soon"`},
		{name: "bad mac", in: "1 02:00:00:00:00:01 10.20.0.150 * *\n1 zz 10.20.0.1 * *\n", wantErr: `line 2: mac "zz"`},
		{name: "bad ip", in: "1 02:00:00:00:00:01 10.20.0 * *\n", wantErr: `line 1: ip "10.20.0"`},
		{name: "short", in: "1 02:00:00:00:00:01\n", wantErr: "line 1: 2 fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLeases(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseLeases error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLeases: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ParseLeases (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseLeases(f *testing.F) {
	f.Add("1764095000 02:00:00:00:00:01 10.20.0.150 anna-phone 01:02:00:00:00:00:01\n0 02:00:00:00:00:02 10.20.0.151 * *\n")
	f.Add("duid 00:01\n1 2 3 4 5\n")
	f.Add("1 02:00:00:00:00:01 10.20.0.150 *\n")
	f.Fuzz(func(t *testing.T, in string) {
		ls, err := ParseLeases(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, l := range ls {
			if !l.IP.Is4() || len(l.MAC) == 0 {
				t.Fatalf("accepted lease without IPv4 or MAC: %+v", l)
			}
			if strings.ContainsAny(l.Hostname, " \n") || l.Hostname == "*" {
				t.Fatalf("hostname %q not cleaned", l.Hostname)
			}
		}
	})
}
