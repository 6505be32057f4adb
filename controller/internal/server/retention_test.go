package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// Connection records older than the town's retention_days are deleted;
// newer ones, and sessions still open, stay.
func TestRetentionPurge(t *testing.T) {
	f := newFixture(t, strings.Replace(sitesYAML, "  terms:", "  retention_days: 30\n  terms:", 1))
	if d := f.srv.Config().Town.RetentionDays; d != 30 {
		t.Fatalf("retention_days = %d, want 30", d)
	}
	ctx := context.Background()
	sk := sink{f.st}
	a := gwapi.Origin{Site: "parco", Gateway: "parco-gw1"}
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, s := range []struct {
		id   string
		age  time.Duration
		stop bool
	}{{"old", 40 * 24 * time.Hour, true}, {"recent", 10 * 24 * time.Hour, true}, {"old-open", 40 * 24 * time.Hour, false}} {
		start := now.Add(-s.age)
		evs := []apiclient.SessionEvent{{ID: s.id + "-start", Kind: apiclient.EventStart, SessionID: s.id, Start: start, At: start, ClientMAC: "aa:bb:cc:00:00:01", User: "u1"}}
		if s.stop {
			evs = append(evs, apiclient.SessionEvent{ID: s.id + "-stop", Kind: apiclient.EventStop, SessionID: s.id, Start: start, At: start.Add(time.Hour),
				ClientMAC: "aa:bb:cc:00:00:01", User: "u1", Reason: "idle"})
		}
		for _, ev := range evs {
			if _, err := sk.SessionEvent(ctx, a, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := f.srv.purgeExpired(ctx, now)
	if err != nil || n != 1 {
		t.Fatalf("purgeExpired = %d, %v; want the one old closed session", n, err)
	}
	for id, want := range map[string]bool{"old": false, "recent": true, "old-open": true} {
		_, err := f.st.Session(ctx, "parco-gw1."+id)
		if got := err == nil; got != want {
			t.Errorf("session %s kept = %v (%v), want %v", id, got, err, want)
		} else if !want && !errors.Is(err, store.ErrNotFound) {
			t.Errorf("session %s: %v, want not found", id, err)
		}
	}
	audit, err := f.st.ListAudit(ctx, now.Add(-time.Minute), now.Add(time.Minute), 10)
	if err != nil || len(audit) == 0 || audit[len(audit)-1].Action != "sessions.purge" {
		t.Errorf("audit after the purge: %+v %v", audit, err)
	}
}
