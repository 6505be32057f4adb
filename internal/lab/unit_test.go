package lab

import (
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestClientAddressing(t *testing.T) {
	tests := []struct {
		i            int
		mac, ip, ip6 string
	}{
		{1, "02:00:00:00:00:01", "10.20.0.11", "2001:db8:20::b"},
		{2, "02:00:00:00:00:02", "10.20.0.12", "2001:db8:20::c"},
		{200, "02:00:00:00:00:c8", "10.20.0.210", "2001:db8:20::d2"},
	}
	for _, tt := range tests {
		got := []string{ClientMAC(tt.i).String(), ClientIP(tt.i).String(), ClientIP6(tt.i).String()}
		if diff := cmp.Diff([]string{tt.mac, tt.ip, tt.ip6}, got); diff != "" {
			t.Errorf("client %d (-want +got):\n%s", tt.i, diff)
		}
		if !clientPrefix.Contains(ClientIP(tt.i)) || !clientPrefix6.Contains(ClientIP6(tt.i)) {
			t.Errorf("client %d outside the client prefixes", tt.i)
		}
	}
}

func TestNSNamePattern(t *testing.T) {
	tests := map[string]string{
		"cwu-0a1b2":   "0a1b2",
		"cwg-0a1b2":   "0a1b2",
		"cwc1-0a1b2":  "0a1b2",
		"cwc12-0a1b2": "0a1b2",
		"cwx-0a1b2":   "",
		"cwc-0a1b2":   "",
		"cwu-0A1B2":   "",
		"cwu-0a1b2x":  "",
		"fwexp783":    "",
		"gwx18536":    "",
	}
	for name, want := range tests {
		got := ""
		if m := nsName.FindStringSubmatch(name); m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("%s: id %q, want %q", name, got, want)
		}
	}
}

func TestICMPChecksum(t *testing.T) {
	// An echo request, id 0x1234 seq 1, no payload: sum 0x0800+0x1234+0x0001.
	msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
	if got, want := icmpChecksum(msg), uint16(0xe5ca); got != want {
		t.Errorf("checksum = %#04x, want %#04x", got, want)
	}
	msg[2], msg[3] = 0xe5, 0xca
	if got := icmpChecksum(msg); got != 0 {
		t.Errorf("checksum over a checksummed message = %#04x, want 0", got)
	}
}

// The stat line's times are counted after the last ")": a command name may
// hold spaces and parentheses.
func TestParseStat(t *testing.T) {
	line := "4242 (tc (x) y) S 1 4242 4242 0 -1 4194304 120 0 0 0 250 30 7 3 20 0 1 0 100 1000 10 18446744073709551615"
	c, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := (CPUTime{Self: 2800 * time.Millisecond, Children: 100 * time.Millisecond}); c != want {
		t.Errorf("parseStat = %+v, want %+v", c, want)
	}
	for _, bad := range []string{"4242 no name", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194304 120 0 0 0 2x5 30 7 3 20"} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
	if _, err := ProcessCPU(os.Getpid()); err != nil {
		t.Errorf("this process: %v", err)
	}
}
