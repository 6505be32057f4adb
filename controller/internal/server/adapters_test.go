package server

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/apapi"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
)

// IT staff move a gateway to another site in sites.yaml while residents are connected (or while its outbox
// holds events of the old site). The rest of those sessions' events must still be recorded, at the site where
// each session started: refusing them blocked the head of the gateway's outbox, so no event of the new site got
// through either.
func TestSinkGatewayMovedToAnotherSite(t *testing.T) {
	ctx := context.Background()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "c.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sk := sink{st}
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	ev := func(id string, kind apiclient.EventKind, session string, at time.Duration, down uint64, reason string) apiclient.SessionEvent {
		return apiclient.SessionEvent{ID: id, Kind: kind, SessionID: session, Start: start, At: start.Add(at),
			ClientMAC: "02:00:00:00:00:01", BytesDown: down, Reason: reason}
	}
	before := gwapi.Origin{Site: "parco", Gateway: "gw1"}
	after := gwapi.Origin{Site: "piazza", Gateway: "gw1"}
	if _, err := sk.SessionEvent(ctx, before, ev("s1-start", apiclient.EventStart, "s1", 0, 0, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := sk.SessionEvent(ctx, after, ev("s1-i", apiclient.EventInterim, "s1", time.Minute, 400, "")); err != nil {
		t.Fatalf("interim of an old-site session after the move: %v", err)
	}
	if _, err := sk.SessionEvent(ctx, after, ev("s1-stop", apiclient.EventStop, "s1", 2*time.Minute, 500, "idle")); err != nil {
		t.Fatalf("stop of an old-site session after the move: %v", err)
	}
	if _, err := sk.SessionEvent(ctx, after, ev("s2-start", apiclient.EventStart, "s2", 3*time.Minute, 0, "")); err != nil {
		t.Fatal(err)
	}
	for site, want := range map[string]store.Totals{"parco": {Sessions: 1, BytesDown: 500}, "piazza": {Sessions: 1}} {
		got, err := st.SiteTotals(ctx, site)
		if err != nil || got != want {
			t.Errorf("totals of %s = %+v, %v; want %+v", site, got, err, want)
		}
	}
	s, err := st.Session(ctx, scopedID("gw1", "s1"))
	if err != nil || s.SiteID != "parco" || s.Open() || s.StopReason != "idle" {
		t.Errorf("session s1 = %+v, %v; want closed at parco", s, err)
	}
	// Another gateway still cannot touch it (ids are scoped by gateway).
	other := gwapi.Origin{Site: "piazza", Gateway: "gw2"}
	if _, err := sk.SessionEvent(ctx, other, ev("x", apiclient.EventInterim, "s1", 4*time.Minute, 9000, "")); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.SiteTotals(ctx, "parco"); got.BytesDown != 500 {
		t.Errorf("another gateway's event changed parco's bytes to %d", got.BytesDown)
	}
}

// An enrolled AP that was factory-reset (or replaced by one with the same MAC) enrolls again only after
// ForgetAP; before, its enrollment is refused (the old record's secret would otherwise be taken over).
func TestForgetAP(t *testing.T) {
	ctx := context.Background()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "c.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := registry{&Server{st: st}}
	rec := apapi.Record{MAC: "02:00:00:00:00:01", SecretHash: []byte("old"), EnrolledAt: time.Now()}
	if err := reg.CreateAP(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := reg.CreateAP(ctx, rec); !errors.Is(err, apapi.ErrExists) {
		t.Fatalf("second enrollment before forgetting: %v, want ErrExists", err)
	}
	if err := ForgetAP(ctx, st, "02-00-00-00-00-01"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.GetAP(ctx, rec.MAC); !errors.Is(err, apapi.ErrUnknownAP) {
		t.Errorf("record after ForgetAP: %v, want ErrUnknownAP", err)
	}
	if err := reg.CreateAP(ctx, rec); err != nil {
		t.Errorf("enrollment after ForgetAP: %v", err)
	}
	if err := ForgetAP(ctx, st, "02:00:00:00:00:09"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ForgetAP of an AP never enrolled: %v, want ErrNotFound", err)
	}
	if err := ForgetAP(ctx, st, "nonsense"); err == nil {
		t.Error("ForgetAP of a bad MAC: no error")
	}
}
