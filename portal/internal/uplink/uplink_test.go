package uplink

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/apiclient/outbox"
	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"github.com/civicwifi/civicwifi/portal/internal/gateway"
	"github.com/google/go-cmp/cmp"
)

func TestParseSchedule(t *testing.T) {
	s, err := ParseSchedule(map[string][]string{"mon": {"08:00-12:30", "15:00-24:00"}, "sat": {"09:00-12:00"}}, "Europe/Rome")
	if err != nil {
		t.Fatal(err)
	}
	if s.Always || s.Loc.String() != "Europe/Rome" {
		t.Errorf("schedule %+v", s)
	}
	if diff := cmp.Diff([]gateway.Span{{From: 480, To: 750}, {From: 900, To: 1440}}, s.Days[time.Monday]); diff != "" {
		t.Errorf("monday (-want +got):\n%s", diff)
	}
	if s, err := ParseSchedule(nil, ""); err != nil || !s.Always || s.Loc.String() != "Europe/Rome" {
		t.Errorf("no hours: %+v, %v; want always open in Europe/Rome", s, err)
	}
	for _, bad := range []struct {
		hours map[string][]string
		tz    string
		want  string
	}{
		{map[string][]string{"monday": {"08:00-12:00"}}, "", `"monday" is not a day`},
		{map[string][]string{"mon": {"12:00-08:00"}}, "", `"12:00-08:00" is not a span`},
		{map[string][]string{"mon": {"8:00-12:00"}}, "", `is not a span`},
		{map[string][]string{"mon": {"08:00-24:30"}}, "", `is not a span`},
		{map[string][]string{"mon": {"08:00"}}, "", `is not a span`},
		{nil, "Mars/Olympus", `time zone "Mars/Olympus"`},
	} {
		if _, err := ParseSchedule(bad.hours, bad.tz); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseSchedule(%v, %q) = %v, want %q", bad.hours, bad.tz, err, bad.want)
		}
	}
}

func TestLimits(t *testing.T) {
	got := Limits(apiclient.SitePolicy{DownBitsPerSecond: 5_000_000, UpBitsPerSecond: 2_000_000,
		Session: apiclient.Duration(2 * time.Hour), Idle: apiclient.Duration(15 * time.Minute), DailyQuotaBytes: 500_000_000, MaxClients: 80})
	want := config.Limits{Down: 5 * quantity.Mbit, Up: 2 * quantity.Mbit, Session: 2 * time.Hour, Idle: 15 * time.Minute,
		Quota: 500 * quantity.MB, MaxClients: 80, DailyQuota: true}
	if got != want {
		t.Errorf("Limits = %+v, want %+v", got, want)
	}
}

// Session events reach the outbox as the controller's wire events: start
// and stop ids derive from the session (a repeat is recognised), interim
// ids are fresh, a stop always carries a reason.
func TestEvents(t *testing.T) {
	box, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	l := &Link{box: box}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s := gateway.Session{ID: "abc123", MAC: mac, Method: "sms", User: "u1", Started: start, BytesDown: 10, BytesUp: 5}
	ended := s
	ended.Ended, ended.EndReason, ended.BytesDown = start.Add(time.Hour), "idle", 900
	evs := []gateway.Event{
		{Kind: gateway.EventStart, At: start, Session: s},
		{Kind: gateway.EventInterim, At: start.Add(time.Minute), Session: s},
		{Kind: gateway.EventStop, At: ended.Ended, Session: ended},
	}
	if err := l.Events(evs); err != nil {
		t.Fatal(err)
	}
	if err := l.Events(evs[:1]); err != nil { // the start again: recognised
		t.Fatal(err)
	}
	got, err := box.Peek(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d events queued, want 3 (the repeated start is the same event): %+v", len(got), got)
	}
	if got[0].ID != "abc123-start" || got[2].ID != "abc123-stop" || got[1].ID == "abc123-interim" {
		t.Errorf("ids %q %q %q", got[0].ID, got[1].ID, got[2].ID)
	}
	if got[2].Reason != "idle" || got[2].BytesDown != 900 || got[2].User != "u1" || got[2].Method != "sms" || !got[2].Start.Equal(start) {
		t.Errorf("stop event %+v", got[2])
	}
}

// A gateway whose clock NTP sets back during a session (a box without a
// real-time clock booted ahead) has events "before" the session's start.
// They are still queued, at the start, rather than refused and lost: a lost
// stop leaves the session open on the controller for good.
func TestEventsClockSetBack(t *testing.T) {
	box, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	l := &Link{box: box}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s := gateway.Session{ID: "abc123", MAC: mac, Method: "click-through", Started: start,
		Ended: start.Add(-3 * time.Minute), EndReason: "idle", BytesDown: 700, BytesUp: 70}
	evs := []gateway.Event{
		{Kind: gateway.EventInterim, At: start.Add(-4 * time.Minute), Session: s},
		{Kind: gateway.EventStop, At: s.Ended, Session: s},
	}
	if err := l.Events(evs); err != nil {
		t.Fatalf("Events after the clock went back: %v", err)
	}
	got, err := box.Peek(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].Kind != apiclient.EventStop || !got[1].At.Equal(start) || got[1].BytesDown != 700 {
		t.Errorf("queued %+v, want the interim and the stop at the session's start with its bytes", got)
	}
}

// recordingGateway records the remote operations the link runs; they
// fail with err.
type recordingGateway struct {
	ops []string
	err error
}

func (g *recordingGateway) SetPolicy(context.Context, config.Limits) error { return nil }
func (g *recordingGateway) SetSchedule(*gateway.Schedule)                  {}
func (g *recordingGateway) Close(_ context.Context, mac net.HardwareAddr, _ netip.Addr, reason string) (*gateway.Session, error) {
	g.ops = append(g.ops, "close "+mac.String()+" "+reason)
	return &gateway.Session{}, g.err
}
func (g *recordingGateway) Extend(_ context.Context, mac net.HardwareAddr, d time.Duration) (*gateway.Session, error) {
	g.ops = append(g.ops, "extend "+mac.String()+" "+d.String())
	return &gateway.Session{}, g.err
}
func (g *recordingGateway) Status(context.Context) (control.Status, error) {
	return control.Status{}, nil
}

// A kick or extension queued while the gateway was unreachable (a power
// cut, a broken uplink) is not run hours later against whatever session the
// device has by then: it is acked as failed, expired.
func TestCommandsExpire(t *testing.T) {
	gw := &recordingGateway{}
	l := &Link{gw: gw, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	now := time.Now()
	fresh := l.command(ctx, apiclient.Command{ID: "c1", Kind: apiclient.CommandKick, ClientMAC: "02:00:00:00:00:01", IssuedAt: now.Add(-time.Minute)})
	stale := l.command(ctx, apiclient.Command{ID: "c2", Kind: apiclient.CommandKick, ClientMAC: "02:00:00:00:00:02", IssuedAt: now.Add(-3 * time.Hour)})
	if !fresh.OK || stale.OK || !strings.Contains(stale.Error, "expired") {
		t.Errorf("acks %+v %+v, want the fresh one done and the stale one failed as expired", fresh, stale)
	}
	if diff := cmp.Diff([]string{"close 02:00:00:00:00:01 kicked"}, gw.ops); diff != "" {
		t.Errorf("operations (-want +got):\n%s", diff)
	}
}

// The controller's remote operations run on the gateway: kick closes the
// device's session, extend lengthens it; a device without a session is
// done, not failed; an unknown or expired command fails without running.
func TestCommands(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	for _, tc := range []struct {
		name  string
		cmd   apiclient.Command
		err   error
		calls []string
		ok    bool
	}{
		{"kick", apiclient.Command{ID: "c1", Kind: apiclient.CommandKick, ClientMAC: "02:00:00:00:00:01", IssuedAt: now}, nil,
			[]string{"close 02:00:00:00:00:01 kicked"}, true},
		{"extend", apiclient.Command{ID: "c2", Kind: apiclient.CommandExtend, ClientMAC: "02:00:00:00:00:01", Extend: apiclient.Duration(30 * time.Minute), IssuedAt: now}, nil,
			[]string{"extend 02:00:00:00:00:01 30m0s"}, true},
		{"no session", apiclient.Command{ID: "c3", Kind: apiclient.CommandKick, ClientMAC: "02:00:00:00:00:02", IssuedAt: now}, control.ErrNotFound,
			[]string{"close 02:00:00:00:00:02 kicked"}, true},
		{"refused", apiclient.Command{ID: "c4", Kind: apiclient.CommandExtend, ClientMAC: "02:00:00:00:00:01", Extend: apiclient.Duration(time.Hour), IssuedAt: now},
			errors.New("kernel says no"), []string{"extend 02:00:00:00:00:01 1h0m0s"}, false},
		{"unknown kind", apiclient.Command{ID: "c5", Kind: "reboot", ClientMAC: "02:00:00:00:00:01", IssuedAt: now}, nil, nil, false},
		{"expired", apiclient.Command{ID: "c6", Kind: apiclient.CommandKick, ClientMAC: "02:00:00:00:00:01", IssuedAt: now.Add(-CommandMaxAge - time.Minute)}, nil, nil, false},
		{"bad MAC", apiclient.Command{ID: "c7", Kind: apiclient.CommandKick, ClientMAC: "nope", IssuedAt: now}, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := &recordingGateway{err: tc.err}
			l := &Link{gw: gw, log: slog.New(slog.DiscardHandler)}
			ack := l.command(ctx, tc.cmd)
			if ack.ID != tc.cmd.ID || ack.OK != tc.ok || (!tc.ok && ack.Error == "") {
				t.Errorf("ack %+v, want ok=%v", ack, tc.ok)
			}
			if diff := cmp.Diff(tc.calls, gw.ops); diff != "" {
				t.Errorf("gateway calls (-want +got):\n%s", diff)
			}
		})
	}
}
