package gateway

import (
	"encoding/json"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sampleSession() *Session {
	t0 := time.Date(2026, 6, 1, 10, 0, 0, 123456789, time.UTC)
	return &Session{
		ID: "b52975237176413f", MAC: net.HardwareAddr{2, 1, 0, 0, 1, 2}, IP: netip.MustParseAddr("10.20.4.17"),
		Method: "sms", User: "u-5f3a9c0d1e2b4a6f", Started: t0, Expires: t0.Add(time.Hour),
		IdleTimeout: 10 * time.Minute, QuotaBytes: 1 << 30, DownRate: 10_000_000, UpRate: 2_000_000,
		BytesDown: 123_456_789, BytesUp: 1_234_567, Packets: 12_345, LastActive: t0.Add(time.Minute),
	}
}

var sessionCmp = cmp.Options{
	cmp.Comparer(func(a, b net.HardwareAddr) bool { return a.String() == b.String() }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
}

func TestRecordRoundTrip(t *testing.T) {
	ended := sampleSession()
	ended.Ended, ended.EndReason = ended.Started.Add(2*time.Hour), "idle"
	ipv6 := sampleSession()
	ipv6.IP = netip.MustParseAddr("2001:db8::1")
	for name, s := range map[string]*Session{
		"active": sampleSession(), "ended": ended, "ipv6": ipv6,
		"zero times and counters": {ID: "x", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, IP: netip.MustParseAddr("10.20.0.9")},
	} {
		b, err := encode(s)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if diff := cmp.Diff(s, got, sessionCmp, cmp.AllowUnexported(Session{})); diff != "" {
			t.Errorf("%s: (-want +got):\n%s", name, diff)
		}
	}
	b, _ := encode(sampleSession())
	j, _ := json.Marshal(sessionJSON{Session: *sampleSession(), MACText: "02:01:00:00:01:02"})
	t.Logf("record: %d bytes (JSON: %d)", len(b), len(j))
	if len(b)*2 > len(j) {
		t.Errorf("record of %d bytes, JSON %d: want under half", len(b), len(j))
	}
}

// Stores written by earlier versions (JSON records) still read.
func TestRecordReadsJSON(t *testing.T) {
	s := sampleSession()
	j, err := json.Marshal(sessionJSON{Session: *s, MACText: s.MAC.String()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := decode(j)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, got, sessionCmp, cmp.AllowUnexported(Session{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// A damaged record is an error, never a panic or a made-up session.
func TestRecordDamaged(t *testing.T) {
	b, err := encode(sampleSession())
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(b) {
		if _, err := decode(b[:n]); err == nil {
			t.Errorf("record cut to %d of %d bytes decoded", n, len(b))
		}
	}
	if _, err := decode(append(b, 0)); err == nil {
		t.Error("record with a byte too many decoded")
	}
	if _, err := decode([]byte{9, 1, 2}); err == nil {
		t.Error("unknown format decoded")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	b, _ := encode(sampleSession())
	f.Add(b)
	f.Add([]byte(`{"id":"x","mac":"02:00:00:00:00:01","ip":"10.20.0.1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := decode(data)
		if err != nil || data[0] == '{' {
			return
		}
		again, err := encode(s)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if _, err := decode(again); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
	})
}
