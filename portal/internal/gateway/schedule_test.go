package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"github.com/civicwifi/civicwifi/portal/internal/firewall"
)

func rome(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Rome")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestScheduleOpenAt(t *testing.T) {
	loc := rome(t)
	s := &Schedule{Loc: loc}
	s.Days[time.Monday] = []Span{{8 * 60, 12 * 60}, {15 * 60, 24 * 60}}
	s.Days[time.Tuesday] = []Span{{8 * 60, 20 * 60}}
	at := func(day, hm string) time.Time {
		tt, err := time.ParseInLocation("2006-01-02 15:04", day+" "+hm, loc)
		if err != nil {
			t.Fatal(err)
		}
		return tt
	}
	// 2026-11-23 is a Monday.
	for _, tc := range []struct {
		when time.Time
		open bool
		next time.Time
	}{
		{at("2026-11-23", "07:59"), false, at("2026-11-23", "08:00")},
		{at("2026-11-23", "08:00"), true, at("2026-11-23", "08:00")},
		{at("2026-11-23", "12:00"), false, at("2026-11-23", "15:00")},
		{at("2026-11-23", "23:59"), true, at("2026-11-23", "23:59")},
		{at("2026-11-24", "20:00"), false, at("2026-11-30", "08:00")}, // closed until next Monday
		{at("2026-11-25", "10:00"), false, at("2026-11-30", "08:00")},
		{at("2026-11-23", "07:30").UTC(), false, at("2026-11-23", "08:00")}, // the clock's zone does not matter
	} {
		if got := s.OpenAt(tc.when); got != tc.open {
			t.Errorf("OpenAt(%v) = %v, want %v", tc.when, got, tc.open)
		}
		if got := s.NextOpen(tc.when); !got.Equal(tc.next) {
			t.Errorf("NextOpen(%v) = %v, want %v", tc.when, got, tc.next)
		}
	}
	var none *Schedule
	if !none.OpenAt(time.Now()) || !(&Schedule{Always: true}).OpenAt(time.Now()) {
		t.Error("no schedule or Always must be open")
	}
}

func TestOpeningHours(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	// The rig's clock: 2026-06-01 10:00 UTC, a Monday. Open 08:00-10:30 UTC.
	s := &Schedule{Loc: time.UTC}
	s.Days[time.Monday] = []Span{{8 * 60, 10*60 + 30}}
	r.gw.SetSchedule(s)
	l := r.gw.Limits()
	l.Idle = 0 // only closing time ends sessions here
	if err := r.gw.SetPolicy(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := r.gw.ClickThrough(ctx, ip1); err != nil {
		t.Fatalf("click-through while open: %v", err)
	}
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip2.String()}); err != nil {
		t.Fatal(err)
	}
	r.clk.add(31 * time.Minute) // 10:31: closed
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.gw.SessionFor(ip1); ok {
		t.Error("a resident's session outlived closing time")
	}
	if _, ok := r.gw.SessionFor(ip2); !ok {
		t.Error("the operator's session ended at closing time")
	}
	ended, _ := r.store.Ended()
	if len(ended) != 1 || ended[0].EndReason != "closed" {
		t.Errorf("ended = %+v, want one with reason closed", ended)
	}
	_, err := r.gw.ClickThrough(ctx, ip1)
	if !errors.Is(err, ErrRefused) {
		t.Errorf("click-through while closed: %v, want refused", err)
	}
	if _, err := r.gw.Open(ctx, Grant{MAC: mac1, Method: "sms", Limits: r.gw.Limits()}); !errors.Is(err, ErrRefused) {
		t.Errorf("an SMS login while closed: %v, want refused", err)
	}
	r.clk.add(7 * 24 * time.Hour) // next Monday 10:31: still closed; 22 h more...
	r.clk.add(-2 * time.Hour)     // ... 08:31: open
	if _, err := r.gw.ClickThrough(ctx, ip1); err != nil {
		t.Errorf("click-through after opening: %v", err)
	}
}

func TestDailyQuota(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	l := r.gw.Limits()
	l.Quota, l.DailyQuota, l.Down, l.Up = 1000, true, quantity.Mbit, quantity.Mbit
	if err := r.gw.SetPolicy(ctx, l); err != nil {
		t.Fatal(err)
	}
	r.gw.SetSchedule(&Schedule{Loc: time.UTC, Always: true})
	s, err := r.gw.ClickThrough(ctx, ip1)
	if err != nil || s.QuotaBytes != 1000 {
		t.Fatalf("first session: %+v, %v; want the whole 1000 B", s, err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 600, DownBytes: 500, Packets: 4})
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.gw.Logout(ctx, ip1); err != nil {
		t.Fatal(err)
	}
	s, err = r.gw.ClickThrough(ctx, ip1)
	if err != nil || s.QuotaBytes != 400 {
		t.Fatalf("second session the same day: %+v, %v; want the 400 B left", s, err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 401, DownBytes: 300, Packets: 4})
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.gw.SessionFor(ip1); ok {
		t.Fatal("session went on past the daily allowance")
	}
	if _, err := r.gw.ClickThrough(ctx, ip1); !errors.Is(err, ErrRefused) {
		t.Errorf("click-through with the day used up: %v, want refused", err)
	}
	// Tomorrow: the whole allowance again.
	r.clk.add(14 * time.Hour) // 2026-06-02 00:00 UTC
	s, err = r.gw.ClickThrough(ctx, ip1)
	if err != nil || s.QuotaBytes != 1000 {
		t.Errorf("next day: %+v, %v; want 1000 B", s, err)
	}
}

// A restart keeps each device's day: it is counted again from the ended
// sessions in the store.
func TestDailyQuotaSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	policy := func(r *rig) {
		l := r.gw.Limits()
		l.Quota, l.DailyQuota = 1000, true
		if err := r.gw.SetPolicy(ctx, l); err != nil {
			t.Fatal(err)
		}
		r.gw.SetSchedule(&Schedule{Loc: time.UTC, Always: true})
	}
	r := newRig(t, dir, nil)
	policy(r)
	if _, err := r.gw.ClickThrough(ctx, ip1); err != nil {
		t.Fatal(err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 700, DownBytes: 600, Packets: 4})
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.gw.Logout(ctx, ip1); err != nil {
		t.Fatal(err)
	}
	r.store.Close()
	r2 := newRig(t, dir, nil)
	policy(r2)
	s, err := r2.gw.ClickThrough(ctx, ip1)
	if err != nil || s.QuotaBytes != 300 {
		t.Errorf("after a restart: %+v, %v; want the 300 B left of the day", s, err)
	}
}

// On the days the clocks change a local time is not midnight plus its
// minutes: the opening time must be the wall-clock one.
func TestScheduleNextOpenDST(t *testing.T) {
	loc := rome(t)
	s := &Schedule{Loc: loc}
	s.Days[time.Sunday] = []Span{{8 * 60, 12 * 60}}
	for _, day := range []string{"2026-03-29", "2026-10-25"} { // Sundays: summer time starts, ends
		from, err := time.ParseInLocation("2006-01-02 15:04", day+" 04:00", loc)
		if err != nil {
			t.Fatal(err)
		}
		want := time.Date(from.Year(), from.Month(), from.Day(), 8, 0, 0, 0, loc)
		if got := s.NextOpen(from); !got.Equal(want) {
			t.Errorf("NextOpen(%v) = %v, want %v", from, got.In(loc), want)
		}
	}
}

// A device that used up yesterday's allowance may log in today, also when
// the gateway restarted in between with daily quotas in its config: the
// lockout ends at the end of the day the session ended, not of the day
// the gateway starts.
func TestDailyQuotaLockoutAfterRestartIsYesterdays(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	daily := func(o *Options) {
		c := testConfig()
		c.Limits.Quota, c.Limits.DailyQuota, c.Limits.Session = 1000, true, 0
		o.Config = c
	}
	r := newRig(t, dir, nil, daily)
	if _, err := r.gw.ClickThrough(ctx, ip1); err != nil {
		t.Fatal(err)
	}
	r.fw.set(ip1, firewall.Usage{Bytes: 1200, DownBytes: 1000, Packets: 4})
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.gw.ClickThrough(ctx, ip1); !errors.Is(err, ErrRefused) {
		t.Fatalf("same day after the quota: %v, want ErrRefused", err)
	}
	r.store.Close()
	tomorrow := &clock{t: r.clk.now().Add(24 * time.Hour)}
	r2 := newRig(t, dir, newFakeFW(), daily, func(o *Options) { o.Now = tomorrow.now })
	if _, err := r2.gw.ClickThrough(ctx, ip1); err != nil {
		t.Errorf("the next day, after a restart: %v, want a new session", err)
	}
}

// Ended sessions are kept only as long as daily allowances and lockouts
// need them: the store read at every start and every policy change must not
// grow with every session the site ever had.
func TestEndedSessionsPruned(t *testing.T) {
	r := newRig(t, "", nil)
	now := r.clk.now()
	old := &Session{ID: "old", MAC: mac1, IP: ip1, Started: now.AddDate(0, 0, -41), Ended: now.AddDate(0, 0, -40), EndReason: "idle"}
	recent := &Session{ID: "recent", MAC: mac2, IP: ip2, Started: now.Add(-2 * time.Hour), Ended: now.Add(-time.Hour), EndReason: "idle"}
	if err := r.store.Put(old, recent); err != nil {
		t.Fatal(err)
	}
	r.gw.pruneEnded()
	ended, err := r.store.Ended()
	if err != nil {
		t.Fatal(err)
	}
	if len(ended) != 1 || ended[0].ID != "recent" {
		t.Errorf("after pruning: %d ended sessions %+v, want only the recent one", len(ended), ended)
	}
}
