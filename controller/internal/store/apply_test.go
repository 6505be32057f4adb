package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// FuzzApply feeds Apply arbitrary sequences of events of one session and
// checks the invariants the totals rely on: bytes never go down and the
// deltas add up to the final counters, time never goes back, a stopped
// session stays stopped.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 10, 5, 1, 20, 7, 2, 30, 9, 1, 25, 40})
	f.Add([]byte{2, 1, 1, 0, 0, 0, 1, 255, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
		var s *store.Session
		var sumDown, sumUp uint64
		var online int64
		var sessions int
		for i := 0; i+2 < len(data); i += 3 {
			kind := []store.EventKind{store.EventStart, store.EventInterim, store.EventStop}[data[i]%3]
			ev, err := store.CheckEvent(store.SessionEvent{
				ID: "e", Kind: kind, SessionID: "s", GatewayID: "g", SiteID: "p", ClientMAC: "02:00:00:00:00:01",
				Start: t0, At: t0.Add(time.Duration(data[i+1]) * time.Second),
				BytesDown: uint64(data[i+2]) * 1000, BytesUp: uint64(data[i+2]),
			})
			if err != nil {
				t.Fatal(err)
			}
			n, d := store.Apply(s, ev)
			if d.NewSession {
				sessions++
			}
			sumDown += d.BytesDown
			sumUp += d.BytesUp
			online += d.OnlineMS
			if s != nil {
				if n.BytesDown < s.BytesDown || n.BytesUp < s.BytesUp {
					t.Fatalf("bytes went down: %+v -> %+v", s, n)
				}
				if n.LastSeen.Before(s.LastSeen) {
					t.Fatalf("last seen went back: %v -> %v", s.LastSeen, n.LastSeen)
				}
				if !s.Open() && (n.Open() || !n.End.Equal(s.End)) {
					t.Fatalf("stopped session changed its end: %v -> %v", s.End, n.End)
				}
			}
			if !n.Open() && n.End.Before(n.LastSeen) {
				t.Fatalf("end %v before last seen %v", n.End, n.LastSeen)
			}
			s = &n
		}
		if s == nil {
			return
		}
		if sessions != 1 || sumDown != s.BytesDown || sumUp != s.BytesUp {
			t.Fatalf("deltas: %d sessions, %d/%d bytes; session has %d/%d", sessions, sumDown, sumUp, s.BytesDown, s.BytesUp)
		}
		if online != s.LastSeen.Sub(s.Start).Milliseconds() {
			t.Fatalf("online %d ms, want last seen - start = %v", online, s.LastSeen.Sub(s.Start))
		}
	})
}

func TestCheckID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"parco-pertini", true}, {"gw_1.voghera@comune+x=y", true}, {"", false}, {"a:b", false},
		{"a b", false}, {"caffè", false}, {string(make([]byte, store.MaxIDLen+1)), false},
	} {
		err := store.CheckID("id", tc.id)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, store.ErrInvalid)) {
			t.Errorf("CheckID(%q) = %v, want ok %v", tc.id, err, tc.ok)
		}
	}
}
