// Package storetest is the contract suite every store.Store implementation
// passes: the same table-driven cases, concurrency races and durability
// checks run against boltstore and redisstore.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Option configures Run.
type Option func(*config)

type config struct {
	reopen func(t *testing.T, s store.Store) store.Store
}

// Reopen gives Run a way to close s and open a new Store on the same data
// (for Redis: restarting redis-server too). Without it the durability
// cases fail: every implementation must be durable.
func Reopen(f func(t *testing.T, s store.Store) store.Store) Option {
	return func(c *config) { c.reopen = f }
}

// Run runs the contract suite; newStore returns an empty store, closed by
// the caller's own t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Option) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"Gateways", testGateways},
		{"AccessPoints", testAccessPoints},
		{"SessionEvents", testSessionEvents},
		{"SessionsStarted", testSessionsStarted},
		{"Rollups", testRollups},
		{"DistinctUsers", testDistinctUsers},
		{"Privacy", testPrivacy},
		{"Commands", testCommands},
		{"Ephemeral", testEphemeral},
		{"EphemeralExpiry", testEphemeralExpiry},
		{"Audit", testAudit},
		{"InvalidInput", testInvalidInput},
		{"ConcurrentEvents", testConcurrentEvents},
		{"ConcurrentEphemeral", testConcurrentEphemeral},
		{"ConcurrentCommands", testConcurrentCommands},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newStore(t)) })
	}
	t.Run("Durability", func(t *testing.T) {
		if c.reopen == nil {
			t.Fatal("storetest.Run needs storetest.Reopen: every store must survive a restart")
		}
		testDurability(t, newStore(t), c.reopen)
	})
}

var (
	ctx = context.Background()
	// t0 is a fixed hour so that rollups are predictable.
	t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
)

func at(d time.Duration) time.Time { return t0.Add(d) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func diff(t *testing.T, what string, want, got any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, append(opts, cmpopts.EquateEmpty())...); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

func testGateways(t *testing.T, s store.Store) {
	if _, err := s.Gateway(ctx, "gw-a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Gateway(unknown) = %v, want ErrNotFound", err)
	}
	hA := store.GatewayHealth{Version: "1.2.3", Uptime: 90 * time.Second, ClientsOnline: 7, ReconcileRepairs: 2, Extra: map[string]string{"load": "0.3"}}
	hOld := store.GatewayHealth{Version: "1.2.2", ClientsOnline: 1}
	hB := store.GatewayHealth{Version: "1.2.3", ClientsOnline: 0}
	must(t, s.Heartbeat(ctx, "gw-a", at(30*time.Second), hA))
	// An older heartbeat arriving late does not replace the newer one.
	must(t, s.Heartbeat(ctx, "gw-a", at(time.Second), hOld))
	must(t, s.Heartbeat(ctx, "gw-b", at(0), hB))
	got, err := s.Gateway(ctx, "gw-a")
	must(t, err)
	wantA := store.GatewayStatus{ID: "gw-a", LastHeartbeat: at(30 * time.Second), Health: hA}
	diff(t, "Gateway(gw-a)", wantA, got)
	list, err := s.ListGateways(ctx)
	must(t, err)
	diff(t, "ListGateways", []store.GatewayStatus{wantA, {ID: "gw-b", LastHeartbeat: at(0), Health: hB}}, list)

	for _, tc := range []struct {
		now  time.Duration
		want bool
	}{{30 * time.Second, true}, {120 * time.Second, true}, {121 * time.Second, false}} {
		if up := got.Up(at(tc.now), 90*time.Second); up != tc.want {
			t.Errorf("Up at +%v within 90s = %v, want %v", tc.now, up, tc.want)
		}
	}
}

func testAccessPoints(t *testing.T, s store.Store) {
	st := store.APState{Firmware: "OpenWrt 23.05.5", Uptime: time.Hour, Clients: 12, Radios: []store.Radio{
		{Name: "radio0", Up: true, Channel: 6, TxPower: 20, SSID: "Voghera-WiFi"},
		{Name: "radio1", Up: false, Channel: 36},
	}}
	must(t, s.CheckIn(ctx, "AA-BB-CC-00-11-22", at(0), st, "v7"))
	must(t, s.CheckIn(ctx, "aa:bb:cc:00:11:33", at(time.Second), store.APState{Clients: 1}, ""))
	got, err := s.AccessPoint(ctx, "aa:bb:cc:00:11:22")
	must(t, err)
	want := store.APStatus{MAC: "aa:bb:cc:00:11:22", LastCheckIn: at(0), State: st, ConfigVersion: "v7"}
	diff(t, "AccessPoint", want, got)
	list, err := s.ListAccessPoints(ctx)
	must(t, err)
	diff(t, "ListAccessPoints", []store.APStatus{want, {MAC: "aa:bb:cc:00:11:33", LastCheckIn: at(time.Second), State: store.APState{Clients: 1}}}, list)
	if _, err := s.AccessPoint(ctx, "aa:bb:cc:00:11:44"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AccessPoint(unknown) = %v, want ErrNotFound", err)
	}
	if !got.Up(at(time.Minute), time.Minute) || got.Up(at(time.Minute+time.Millisecond), time.Minute) {
		t.Errorf("Up: wrong answer around the limit")
	}
}

// ev builds an event of session sid at site "park" on gateway "gw-park".
func ev(id string, kind store.EventKind, sid string, when time.Duration, down, up uint64) store.SessionEvent {
	return store.SessionEvent{
		ID: id, Kind: kind, SessionID: sid, GatewayID: "gw-park", SiteID: "park",
		ClientMAC: "02:00:00:00:00:01", UserID: "u-" + sid, Method: "sms",
		Start: at(0), At: at(when), BytesDown: down, BytesUp: up,
	}
}

func testSessionEvents(t *testing.T, s store.Store) {
	stop := func(id, sid string, when time.Duration, down, up uint64, reason string) store.SessionEvent {
		e := ev(id, store.EventStop, sid, when, down, up)
		e.Reason = reason
		return e
	}
	steps := []struct {
		ev      store.SessionEvent
		wantDup bool
	}{
		{ev("e1", store.EventStart, "s1", 0, 0, 0), false},
		{ev("e2", store.EventInterim, "s1", time.Minute, 1000, 100), false},
		{ev("e2", store.EventInterim, "s1", time.Minute, 1000, 100), true}, // replay
		{ev("e1", store.EventStart, "s1", 0, 0, 0), true},                  // replay
		// s2's start was lost: its first interim creates it.
		{ev("e3", store.EventInterim, "s2", 2*time.Minute, 500, 50), false},
		{stop("e4", "s1", 3*time.Minute, 3000, 300, "logout"), false},
		// A late interim of s1 (new id, older counters) lowers nothing and
		// does not reopen it.
		{ev("e5", store.EventInterim, "s1", 2*time.Minute, 2000, 200), false},
		{stop("e4", "s1", 3*time.Minute, 3000, 300, "logout"), true},
		// An interim stamped after s1's stop (a gateway's clock) neither
		// reopens it nor extends its time.
		{ev("e9", store.EventInterim, "s1", 5*time.Minute, 3000, 300), false},
		{ev("e6", store.EventStart, "s3", 0, 0, 0), false},
		{ev("e7", store.EventInterim, "s3", 30*time.Second, 10, 1), false},
	}
	for i, st := range steps {
		dup, err := s.RecordEvent(ctx, st.ev)
		if err != nil {
			t.Fatalf("step %d: RecordEvent(%s): %v", i, st.ev.ID, err)
		}
		if dup != st.wantDup {
			t.Errorf("step %d: RecordEvent(%s) duplicate = %v, want %v", i, st.ev.ID, dup, st.wantDup)
		}
	}
	s1 := store.Session{ID: "s1", GatewayID: "gw-park", SiteID: "park", ClientMAC: "02:00:00:00:00:01", UserID: "u-s1", Method: "sms",
		Start: at(0), LastSeen: at(3 * time.Minute), End: at(3 * time.Minute), BytesDown: 3000, BytesUp: 300, StopReason: "logout"}
	s2 := store.Session{ID: "s2", GatewayID: "gw-park", SiteID: "park", ClientMAC: "02:00:00:00:00:01", UserID: "u-s2", Method: "sms",
		Start: at(0), LastSeen: at(2 * time.Minute), BytesDown: 500, BytesUp: 50}
	s3 := store.Session{ID: "s3", GatewayID: "gw-park", SiteID: "park", ClientMAC: "02:00:00:00:00:01", UserID: "u-s3", Method: "sms",
		Start: at(0), LastSeen: at(30 * time.Second), BytesDown: 10, BytesUp: 1}
	got, err := s.Session(ctx, "s1")
	must(t, err)
	diff(t, "Session(s1)", s1, got)
	if _, err := s.Session(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Session(unknown) = %v, want ErrNotFound", err)
	}
	open, err := s.OpenSessions(ctx, "park")
	must(t, err)
	byID := cmpopts.SortSlices(func(a, b store.Session) bool { return a.ID < b.ID })
	diff(t, "OpenSessions(park)", []store.Session{s2, s3}, open, byID)
	tot, err := s.SiteTotals(ctx, "park")
	must(t, err)
	diff(t, "SiteTotals(park)", store.Totals{Sessions: 3, BytesDown: 3510, BytesUp: 351}, tot)
	tot, err = s.SiteTotals(ctx, "library")
	must(t, err)
	diff(t, "SiteTotals(library)", store.Totals{}, tot)
	open, err = s.OpenSessions(ctx, "library")
	must(t, err)
	diff(t, "OpenSessions(library)", []store.Session(nil), open)

	// An event that moves a session to another site is refused and
	// consumes nothing (its id is still new afterwards).
	moved := ev("e8", store.EventInterim, "s2", 4*time.Minute, 600, 60)
	moved.SiteID = "library"
	if _, err := s.RecordEvent(ctx, moved); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("event moving s2 to another site: err = %v, want ErrInvalid", err)
	}
	moved.SiteID = "park"
	if dup, err := s.RecordEvent(ctx, moved); err != nil || dup {
		t.Errorf("event e8 after the refused one: duplicate %v, err %v; want applied", dup, err)
	}
	// Event ids are unique per gateway: another gateway's "e1" (with ids
	// as gateways send them, ':' included) is a new event.
	other := ev("e1", store.EventStart, "gw-2:s:1", 0, 0, 0)
	other.GatewayID, other.SiteID = "gw-library", "library"
	if dup, err := s.RecordEvent(ctx, other); err != nil || dup {
		t.Errorf("e1 of another gateway: duplicate %v, err %v; want applied", dup, err)
	}
	if dup, err := s.RecordEvent(ctx, other); err != nil || !dup {
		t.Errorf("e1 of another gateway, replayed: duplicate %v, err %v; want a duplicate", dup, err)
	}
}

func testSessionsStarted(t *testing.T, s store.Store) {
	for i := range 5 {
		e := ev(fmt.Sprintf("e%d", i), store.EventStart, fmt.Sprintf("s%d", i), time.Duration(i)*time.Hour, 0, 0)
		e.Start = e.At
		if i == 4 {
			e.SiteID = "library"
		}
		_, err := s.RecordEvent(ctx, e)
		must(t, err)
	}
	for _, tc := range []struct {
		name     string
		site     string
		from, to time.Time
		want     []string
	}{
		{"all", "park", at(0), at(24 * time.Hour), []string{"s0", "s1", "s2", "s3"}},
		{"half-open", "park", at(time.Hour), at(3 * time.Hour), []string{"s1", "s2"}},
		{"empty", "park", at(10 * time.Hour), at(11 * time.Hour), nil},
		{"other site", "library", at(0), at(24 * time.Hour), []string{"s4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.SessionsStarted(ctx, tc.site, tc.from, tc.to)
			must(t, err)
			var ids []string
			for _, x := range got {
				ids = append(ids, x.ID)
			}
			diff(t, "session ids", tc.want, ids)
		})
	}
}

func testRollups(t *testing.T, s store.Store) {
	evs := []store.SessionEvent{
		ev("a1", store.EventStart, "sa", 10*time.Minute, 0, 0),
		ev("a2", store.EventInterim, "sa", 70*time.Minute, 1000, 10), // next hour
		ev("a2", store.EventInterim, "sa", 70*time.Minute, 1000, 10), // replay: counted once
		ev("b1", store.EventStart, "sb", 20*time.Minute, 0, 0),
	}
	evs[0].Start, evs[1].Start, evs[2].Start = at(10*time.Minute), at(10*time.Minute), at(10*time.Minute)
	evs[3].Start, evs[3].Method = at(20*time.Minute), "voucher"
	for _, e := range evs {
		_, err := s.RecordEvent(ctx, e)
		must(t, err)
	}
	must(t, s.IncrHourly(ctx, "park", at(30*time.Minute), map[string]int64{"sms_sent": 2}))
	must(t, s.IncrHourly(ctx, "park", at(59*time.Minute), map[string]int64{"sms_sent": 1, "sms_failed": 1}))
	must(t, s.IncrHourly(ctx, "park", at(5*time.Hour), map[string]int64{"sms_sent": 1}))
	got, err := s.Hourly(ctx, "park", at(0), at(5*time.Hour))
	must(t, err)
	want := []store.Rollup{
		{Start: at(0), Counters: map[string]int64{
			store.CounterSessions: 2, store.MethodCounter("sms"): 1, store.MethodCounter("voucher"): 1,
			"sms_sent": 3, "sms_failed": 1,
		}},
		{Start: at(time.Hour), Counters: map[string]int64{
			store.CounterBytesDown: 1000, store.CounterBytesUp: 10, store.CounterOnlineMS: int64(time.Hour / time.Millisecond),
		}},
	}
	diff(t, "Hourly(park, [0h,5h))", want, got)
	got, err = s.Hourly(ctx, "park", at(time.Hour), at(6*time.Hour))
	must(t, err)
	diff(t, "Hourly(park, [1h,6h))", append(want[1:], store.Rollup{Start: at(5 * time.Hour), Counters: map[string]int64{"sms_sent": 1}}), got)
	got, err = s.Hourly(ctx, "library", at(0), at(6*time.Hour))
	must(t, err)
	diff(t, "Hourly(library)", []store.Rollup(nil), got)

	// Daily (UTC days here): the same counters summed over the day.
	day := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	got, err = s.Daily(ctx, "park", day, day.Add(48*time.Hour))
	must(t, err)
	diff(t, "Daily(park)", []store.Rollup{{Start: day, Counters: map[string]int64{
		store.CounterSessions: 2, store.MethodCounter("sms"): 1, store.MethodCounter("voucher"): 1,
		"sms_sent": 4, "sms_failed": 1, store.CounterUsers: 2,
		store.CounterBytesDown: 1000, store.CounterBytesUp: 10, store.CounterOnlineMS: int64(time.Hour / time.Millisecond),
	}}}, got)
	got, err = s.Daily(ctx, "park", day.Add(time.Second), day.Add(48*time.Hour))
	must(t, err)
	diff(t, "Daily(park) from after the day's start", []store.Rollup(nil), got)
}

// RunDays checks that days begin at midnight in loc (the store's
// Location option) for daily rollups and distinct users; newStore must
// return a store configured with loc = Europe/Rome.
func RunDays(t *testing.T, newStore func(t *testing.T) store.Store) {
	rome, err := time.LoadLocation("Europe/Rome")
	must(t, err)
	s := newStore(t)
	// 23:30 UTC on 25 November is 00:30 on the 26th in Rome (UTC+1).
	late := time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC)
	e := ev("e1", store.EventStart, "s1", 0, 0, 0)
	e.Start, e.At = late, late
	_, err = s.RecordEvent(ctx, e)
	must(t, err)
	must(t, s.IncrHourly(ctx, "park", late, map[string]int64{"sms_sent": 1}))
	d26 := time.Date(2026, 11, 26, 0, 0, 0, 0, rome)
	got, err := s.Daily(ctx, "park", d26.AddDate(0, 0, -1), d26.AddDate(0, 0, 1))
	must(t, err)
	diff(t, "Daily in Rome", []store.Rollup{{Start: d26, Counters: map[string]int64{
		store.CounterSessions: 1, store.MethodCounter("sms"): 1, "sms_sent": 1, store.CounterUsers: 1,
	}}}, got)
	for _, tc := range []struct {
		day  time.Time
		want int
	}{{d26.AddDate(0, 0, -1), 0}, {d26, 1}, {d26.Add(23 * time.Hour), 1}} {
		n, err := s.DistinctUsers(ctx, tc.day, tc.day, "park")
		must(t, err)
		if n != tc.want {
			t.Errorf("DistinctUsers on %v = %d, want %d", tc.day, n, tc.want)
		}
	}
}

func testDistinctUsers(t *testing.T, s store.Store) {
	day := 24 * time.Hour
	starts := []struct {
		site, user string
		when       time.Duration
	}{
		{"park", "alice", 0}, {"park", "alice", time.Hour}, {"park", "bob", 0},
		{"park", "carol", day}, {"library", "alice", day}, {"library", "dave", 2 * day},
		{"park", "", 0}, // click-through without a user id: not counted
	}
	for i, st := range starts {
		e := ev(fmt.Sprintf("e%d", i), store.EventStart, fmt.Sprintf("s%d", i), st.when, 0, 0)
		e.SiteID, e.UserID, e.Start = st.site, st.user, at(st.when)
		_, err := s.RecordEvent(ctx, e)
		must(t, err)
	}
	for _, tc := range []struct {
		name     string
		from, to time.Time
		sites    []string
		want     int
	}{
		{"park day 1", at(0), at(0), []string{"park"}, 2},
		{"park days 1-2", at(0), at(day), []string{"park"}, 3},
		{"both days 1-3", at(0), at(2 * day), []string{"park", "library"}, 4},
		{"library day 2", at(day), at(day + time.Hour), []string{"library"}, 1},
		{"no site", at(0), at(2 * day), nil, 0},
		{"before", at(-2 * day), at(-day), []string{"park"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.DistinctUsers(ctx, tc.from, tc.to, tc.sites...)
			must(t, err)
			if got != tc.want {
				t.Errorf("DistinctUsers = %d, want %d", got, tc.want)
			}
		})
	}
}

func testPrivacy(t *testing.T, s store.Store) {
	day := 24 * time.Hour
	for i, x := range []struct {
		sid, site, user string
		start           time.Duration
		closed          bool
	}{
		{"s1", "park", "alice", 0, true},
		{"s2", "library", "alice", day, false},
		{"s3", "park", "bob", 0, true},
		{"s4", "park", "carol", 2 * day, true},
		{"s5", "park", "dave", 0, false},
	} {
		e := ev(fmt.Sprintf("e%d", i), store.EventStart, x.sid, x.start, 0, 0)
		e.SiteID, e.UserID, e.Start = x.site, x.user, at(x.start)
		_, err := s.RecordEvent(ctx, e)
		must(t, err)
		if x.closed {
			e.ID, e.Kind, e.At, e.BytesDown = e.ID+"-stop", store.EventStop, e.At.Add(time.Hour), 1000
			_, err := s.RecordEvent(ctx, e)
			must(t, err)
		}
	}
	ids := func(ss []store.Session, err error) []string {
		t.Helper()
		must(t, err)
		var out []string
		for _, x := range ss {
			out = append(out, x.ID)
		}
		return out
	}
	users := func(from, to time.Duration, sites ...string) int {
		t.Helper()
		n, err := s.DistinctUsers(ctx, at(from), at(to), sites...)
		must(t, err)
		return n
	}
	dailyUsers := func(site string) int64 {
		t.Helper()
		d, err := s.Daily(ctx, site, at(-10*time.Hour), at(14*time.Hour))
		must(t, err)
		if len(d) != 1 {
			t.Fatalf("Daily(%s) = %v, want one day", site, d)
		}
		return d[0].Counters[store.CounterUsers]
	}
	diff(t, "UserSessions(alice)", []string{"s1", "s2"}, ids(s.UserSessions(ctx, "alice")))

	n, err := s.ForgetUser(ctx, "alice")
	must(t, err)
	if n != 2 {
		t.Errorf("ForgetUser(alice) = %d, want 2", n)
	}
	for _, id := range []string{"s1", "s2"} {
		if _, err := s.Session(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Session(%s) after ForgetUser = %v, want ErrNotFound", id, err)
		}
	}
	diff(t, "UserSessions(alice) after", []string(nil), ids(s.UserSessions(ctx, "alice")))
	diff(t, "OpenSessions(library) after", []string(nil), ids(s.OpenSessions(ctx, "library")))
	diff(t, "SessionsStarted(park) after", []string{"s3", "s5", "s4"}, ids(s.SessionsStarted(ctx, "park", at(-day), at(3*day))))
	if got := users(0, 2*day, "park", "library"); got != 3 {
		t.Errorf("DistinctUsers after forgetting alice = %d, want 3 (bob, carol, dave)", got)
	}
	// Aggregates are anonymous and stay.
	tot, err := s.SiteTotals(ctx, "park")
	must(t, err)
	diff(t, "SiteTotals(park) after", store.Totals{Sessions: 4, BytesDown: 3000}, tot)
	if got := dailyUsers("park"); got != 3 {
		t.Errorf("daily users counter of day 0 = %d, want 3 (alice, bob, dave)", got)
	}
	if n, err := s.ForgetUser(ctx, "alice"); err != nil || n != 0 {
		t.Errorf("ForgetUser(alice) again = %d, %v; want 0, nil", n, err)
	}

	// Retention: closed sessions that started before day 2 go (s3), the
	// open s5 stays, as does s4 (day 2); so do day 2's user sets.
	n, err = s.PurgeSessions(ctx, at(2*day-10*time.Hour))
	must(t, err)
	if n != 1 {
		t.Errorf("PurgeSessions = %d, want 1", n)
	}
	diff(t, "SessionsStarted(park) after purge", []string{"s5", "s4"}, ids(s.SessionsStarted(ctx, "park", at(-day), at(3*day))))
	if got := users(0, day, "park"); got != 0 {
		t.Errorf("DistinctUsers of purged days = %d, want 0", got)
	}
	if got := users(2*day, 2*day, "park"); got != 1 {
		t.Errorf("DistinctUsers of day 2 after purge = %d, want 1", got)
	}
	if got := dailyUsers("park"); got != 3 {
		t.Errorf("daily users counter of day 0 after purge = %d, want 3", got)
	}
	// A replayed event of a purged session is still a duplicate.
	dup, err := s.RecordEvent(ctx, func() store.SessionEvent {
		e := ev("e2", store.EventStart, "s3", 0, 0, 0)
		e.UserID = "bob"
		return e
	}())
	must(t, err)
	if !dup {
		t.Errorf("replay of a purged session's event recreated it")
	}
}

func testCommands(t *testing.T, s store.Store) {
	c1, err := s.Enqueue(ctx, store.Command{GatewayID: "gw-a", Kind: store.CommandKick, ClientMAC: "02:00:00:00:00:01", Created: at(0)})
	must(t, err)
	if c1.ID == "" {
		t.Fatal("Enqueue assigned no ID")
	}
	c2, err := s.Enqueue(ctx, store.Command{ID: "c2", GatewayID: "gw-a", Kind: store.CommandExtend, ClientMAC: "02:00:00:00:00:02", Extend: time.Hour, Created: at(time.Second)})
	must(t, err)
	c3, err := s.Enqueue(ctx, store.Command{ID: "c3", GatewayID: "gw-b", Kind: store.CommandKick, ClientMAC: "02:00:00:00:00:03", Created: at(0)})
	must(t, err)
	// Enqueueing c2 again (a retried admin request) queues it once.
	_, err = s.Enqueue(ctx, c2)
	must(t, err)
	got, err := s.Pending(ctx, "gw-a")
	must(t, err)
	diff(t, "Pending(gw-a)", []store.Command{c1, c2}, got)
	for _, a := range []struct {
		gw, id string
		want   bool
	}{
		{"gw-a", c1.ID, true},
		{"gw-a", c1.ID, false}, // twice: fine, but not pending any more
		{"gw-a", "c3", false},  // another gateway's command: no effect
		{"gw-a", "nope", false},
	} {
		acked, err := s.Ack(ctx, a.gw, a.id)
		must(t, err)
		if acked != a.want {
			t.Errorf("Ack(%s, %s) = %v, want %v", a.gw, a.id, acked, a.want)
		}
	}
	got, err = s.Pending(ctx, "gw-a")
	must(t, err)
	diff(t, "Pending(gw-a) after ack", []store.Command{c2}, got)
	got, err = s.Pending(ctx, "gw-b")
	must(t, err)
	diff(t, "Pending(gw-b)", []store.Command{c3}, got)
	got, err = s.Pending(ctx, "gw-c")
	must(t, err)
	diff(t, "Pending(gw-c)", []store.Command(nil), got)
}

func testEphemeral(t *testing.T, s store.Store) {
	const ttl = time.Hour
	ok, err := s.PutIfAbsent(ctx, "nonce:n1", []byte("x"), ttl)
	must(t, err)
	if !ok {
		t.Fatal("PutIfAbsent(new nonce) = false")
	}
	ok, err = s.PutIfAbsent(ctx, "nonce:n1", []byte("y"), ttl)
	must(t, err)
	if ok {
		t.Fatal("PutIfAbsent(seen nonce) = true")
	}
	v, err := s.Get(ctx, "nonce:n1")
	must(t, err)
	diff(t, "Get(nonce:n1)", "x", string(v))

	must(t, s.Put(ctx, "code:c", []byte("hash-1"), ttl))
	must(t, s.Put(ctx, "code:c", []byte("hash-2"), ttl))
	v, err = s.Take(ctx, "code:c")
	must(t, err)
	diff(t, "Take(code:c)", "hash-2", string(v))
	if _, err := s.Take(ctx, "code:c"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second Take = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "code:c"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Take = %v, want ErrNotFound", err)
	}
	must(t, s.Put(ctx, "grant:g", []byte{0, 1, 2, 255}, ttl))
	must(t, s.Delete(ctx, "grant:g"))
	must(t, s.Delete(ctx, "grant:g"))
	if _, err := s.Get(ctx, "grant:g"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	for i, want := range []int64{1, 2, 7} {
		by := int64(1)
		if i == 2 {
			by = 5
		}
		n, err := s.Incr(ctx, "rate:num:+39333", by, ttl)
		must(t, err)
		if n != want {
			t.Errorf("Incr #%d = %d, want %d", i, n, want)
		}
	}
}

// eventually polls f every 20ms for at most 5s.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testEphemeralExpiry(t *testing.T, s store.Store) {
	const ttl = 300 * time.Millisecond
	start := time.Now()
	ok, err := s.PutIfAbsent(ctx, "nonce:short", []byte("1"), ttl)
	must(t, err)
	must(t, s.Put(ctx, "code:short", []byte("1"), ttl))
	must(t, s.Put(ctx, "code:long", []byte("1"), time.Hour))
	n, err := s.Incr(ctx, "rate:short", 1, ttl)
	must(t, err)
	if !ok || n != 1 {
		t.Fatalf("PutIfAbsent = %v, Incr = %d; want true, 1", ok, n)
	}
	// Still there before the TTL (only checked if this machine was quick).
	if _, err := s.Get(ctx, "code:short"); time.Since(start) < ttl/2 && err != nil {
		t.Fatalf("Get before ttl: %v", err)
	}
	eventually(t, "code expires", func() bool {
		_, err := s.Get(ctx, "code:short")
		return errors.Is(err, store.ErrNotFound)
	})
	if time.Since(start) < ttl {
		t.Fatalf("expired after %v, before its ttl %v", time.Since(start), ttl)
	}
	if _, err := s.Take(ctx, "code:short"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Take(expired) = %v, want ErrNotFound", err)
	}
	ok, err = s.PutIfAbsent(ctx, "nonce:short", []byte("2"), ttl)
	must(t, err)
	if !ok {
		t.Errorf("PutIfAbsent(expired nonce) = false, want true")
	}
	n, err = s.Incr(ctx, "rate:short", 1, ttl)
	must(t, err)
	if n != 1 {
		t.Errorf("Incr after the window = %d, want 1 (a new window)", n)
	}
	if _, err := s.Get(ctx, "code:long"); err != nil {
		t.Errorf("Get(code:long) = %v, want it still there", err)
	}
}

func testAudit(t *testing.T, s store.Store) {
	var all []store.AuditEntry
	for i := range 5 {
		e := store.AuditEntry{At: at(time.Duration(i) * time.Minute), Actor: "it-staff@comune", Action: "kick", Target: fmt.Sprintf("02:00:00:00:00:%02x", i)}
		must(t, s.AppendAudit(ctx, e))
		all = append(all, e)
	}
	// Two identical entries are both kept.
	must(t, s.AppendAudit(ctx, all[4]))
	all = append(all, all[4])
	rev := func(es []store.AuditEntry) []store.AuditEntry {
		out := append([]store.AuditEntry(nil), es...)
		sort.SliceStable(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
		return out
	}
	got, err := s.ListAudit(ctx, at(0), at(time.Hour), 0)
	must(t, err)
	diff(t, "ListAudit(all)", rev(all), got)
	got, err = s.ListAudit(ctx, at(time.Minute), at(3*time.Minute), 0)
	must(t, err)
	diff(t, "ListAudit([1m,3m))", rev(all[1:3]), got)
	got, err = s.ListAudit(ctx, at(0), at(time.Hour), 2)
	must(t, err)
	diff(t, "ListAudit(limit 2)", rev(all)[:2], got)
}

func testInvalidInput(t *testing.T, s store.Store) {
	good := ev("ok", store.EventStart, "s1", 0, 0, 0)
	mod := func(f func(e *store.SessionEvent)) store.SessionEvent { e := good; f(&e); return e }
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"event no id", func() error {
			_, err := s.RecordEvent(ctx, mod(func(e *store.SessionEvent) { e.ID = "" }))
			return err
		}},
		{"event bad kind", func() error {
			_, err := s.RecordEvent(ctx, mod(func(e *store.SessionEvent) { e.Kind = "begin" }))
			return err
		}},
		{"event bad mac", func() error {
			_, err := s.RecordEvent(ctx, mod(func(e *store.SessionEvent) { e.ClientMAC = "02:00:00" }))
			return err
		}},
		{"event id with a newline", func() error {
			_, err := s.RecordEvent(ctx, mod(func(e *store.SessionEvent) { e.ID = "e\n1" }))
			return err
		}},
		{"event site with colon", func() error {
			_, err := s.RecordEvent(ctx, mod(func(e *store.SessionEvent) { e.SiteID = "park:x" }))
			return err
		}},
		{"event no time", func() error {
			_, err := s.RecordEvent(ctx, mod(func(e *store.SessionEvent) { e.At = time.Time{} }))
			return err
		}},
		{"event start after at", func() error {
			_, err := s.RecordEvent(ctx, mod(func(e *store.SessionEvent) { e.Start = e.At.Add(time.Second) }))
			return err
		}},
		{"heartbeat bad id", func() error { return s.Heartbeat(ctx, "gw a", at(0), store.GatewayHealth{}) }},
		{"check-in bad mac", func() error { return s.CheckIn(ctx, "not-a-mac", at(0), store.APState{}, "") }},
		{"heartbeat huge extra", func() error {
			extra := map[string]string{}
			for i := range store.MaxExtra + 1 {
				extra[fmt.Sprint(i)] = "x"
			}
			return s.Heartbeat(ctx, "gw", at(0), store.GatewayHealth{Extra: extra})
		}},
		{"heartbeat no time", func() error { return s.Heartbeat(ctx, "gw", time.Time{}, store.GatewayHealth{}) }},
		{"check-in too many radios", func() error {
			return s.CheckIn(ctx, "02:00:00:00:00:01", at(0), store.APState{Radios: make([]store.Radio, store.MaxRadios+1)}, "")
		}},
		{"command bad kind", func() error {
			_, err := s.Enqueue(ctx, store.Command{GatewayID: "gw", Kind: "reboot", ClientMAC: "02:00:00:00:00:01"})
			return err
		}},
		{"command extend without duration", func() error {
			_, err := s.Enqueue(ctx, store.Command{GatewayID: "gw", Kind: store.CommandExtend, ClientMAC: "02:00:00:00:00:01"})
			return err
		}},
		{"put zero ttl", func() error { return s.Put(ctx, "k", []byte("v"), 0) }},
		{"incr empty key", func() error { _, err := s.Incr(ctx, "", 1, time.Second); return err }},
		{"hourly bad site", func() error { return s.IncrHourly(ctx, "", at(0), map[string]int64{"x": 1}) }},
		{"audit no actor", func() error { return s.AppendAudit(ctx, store.AuditEntry{At: at(0), Action: "kick"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("got %v, want an ErrInvalid", err)
			}
			t.Logf("error: %v", err)
		})
	}
	// Nothing was written.
	if aps, err := s.ListAccessPoints(ctx); err != nil || len(aps) != 0 {
		t.Errorf("ListAccessPoints after bad check-ins = %v, %v; want none", aps, err)
	}
	if _, err := s.Session(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Session(s1) after bad events = %v, want ErrNotFound", err)
	}
	gws, err := s.ListGateways(ctx)
	must(t, err)
	cmds, err := s.Pending(ctx, "gw")
	must(t, err)
	if len(gws) != 0 || len(cmds) != 0 {
		t.Errorf("after bad input: %d gateways, %d commands; want none", len(gws), len(cmds))
	}
	// The good event still works, once.
	dup, err := s.RecordEvent(ctx, good)
	must(t, err)
	if dup {
		t.Errorf("good event after bad ones counted as a duplicate")
	}
}

const workers = 8

// race runs f(i) for i in [0, workers) concurrently and waits (bounded by
// the test's own timeout).
func race(f func(i int)) {
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

func testConcurrentEvents(t *testing.T, s store.Store) {
	// Every worker sends the same 3 sessions' events (as a gateway
	// replaying its buffer while its first attempt is still in flight):
	// each event is applied once.
	const sessions, perSession = 3, 20
	var evs []store.SessionEvent
	for sn := range sessions {
		sid := fmt.Sprintf("s%d", sn)
		for k := range perSession {
			kind := store.EventInterim
			switch k {
			case 0:
				kind = store.EventStart
			case perSession - 1:
				kind = store.EventStop
			}
			evs = append(evs, ev(fmt.Sprintf("%s-e%d", sid, k), kind, sid, time.Duration(k)*time.Minute, uint64(k)*1000, uint64(k)*10))
		}
	}
	var mu sync.Mutex
	applied := map[string]int{}
	var errs []error
	race(func(i int) {
		for j := range evs {
			e := evs[(j+i*7)%len(evs)] // each worker in another order
			dup, err := s.RecordEvent(ctx, e)
			mu.Lock()
			if err != nil {
				errs = append(errs, err)
			} else if !dup {
				applied[e.ID]++
			}
			mu.Unlock()
		}
	})
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	for _, e := range evs {
		if applied[e.ID] != 1 {
			t.Errorf("event %s applied %d times, want exactly once", e.ID, applied[e.ID])
		}
	}
	tot, err := s.SiteTotals(ctx, "park")
	must(t, err)
	diff(t, "SiteTotals", store.Totals{Sessions: sessions, BytesDown: sessions * (perSession - 1) * 1000, BytesUp: sessions * (perSession - 1) * 10}, tot)
	open, err := s.OpenSessions(ctx, "park")
	must(t, err)
	if len(open) != 0 {
		t.Errorf("%d sessions open, want 0", len(open))
	}
	h, err := s.Hourly(ctx, "park", at(0), at(time.Hour))
	must(t, err)
	want := []store.Rollup{{Start: at(0), Counters: map[string]int64{
		store.CounterSessions: sessions, store.MethodCounter("sms"): sessions,
		store.CounterBytesDown: sessions * (perSession - 1) * 1000, store.CounterBytesUp: sessions * (perSession - 1) * 10,
		store.CounterOnlineMS: sessions * (perSession - 1) * int64(time.Minute/time.Millisecond),
	}}}
	diff(t, "Hourly", want, h)
}

func testConcurrentEphemeral(t *testing.T, s store.Store) {
	var mu sync.Mutex
	wins, takes := 0, 0
	var counts []int64
	var errs []error
	must(t, s.Put(ctx, "grant:once", []byte("g"), time.Minute))
	race(func(i int) {
		ok, err1 := s.PutIfAbsent(ctx, "nonce:race", []byte{byte(i)}, time.Minute)
		_, err2 := s.Take(ctx, "grant:once")
		var n int64
		var err3 error
		for range 10 {
			if n, err3 = s.Incr(ctx, "rate:race", 1, time.Minute); err3 != nil {
				break
			}
			mu.Lock()
			counts = append(counts, n)
			mu.Unlock()
		}
		mu.Lock()
		defer mu.Unlock()
		if ok {
			wins++
		}
		switch {
		case err2 == nil:
			takes++
		case !errors.Is(err2, store.ErrNotFound):
			errs = append(errs, err2)
		}
		for _, err := range []error{err1, err3} {
			if err != nil {
				errs = append(errs, err)
			}
		}
	})
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	if wins != 1 || takes != 1 {
		t.Errorf("%d PutIfAbsent won and %d Take got the grant; want exactly 1 and 1", wins, takes)
	}
	sort.Slice(counts, func(i, j int) bool { return counts[i] < counts[j] })
	var want []int64
	for i := range int64(workers * 10) {
		want = append(want, i+1)
	}
	diff(t, "values returned by Incr", want, counts)
}

func testConcurrentCommands(t *testing.T, s store.Store) {
	var errs []error
	var mu sync.Mutex
	race(func(i int) {
		for k := range 5 {
			// Two workers share each ID: queued once.
			c := store.Command{ID: fmt.Sprintf("c%d-%d", i/2, k), GatewayID: "gw", Kind: store.CommandKick, ClientMAC: "02:00:00:00:00:01", Created: at(0)}
			if _, err := s.Enqueue(ctx, c); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}
	})
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	got, err := s.Pending(ctx, "gw")
	must(t, err)
	ids := map[string]bool{}
	for _, c := range got {
		ids[c.ID] = true
	}
	if len(got) != workers/2*5 || len(ids) != len(got) {
		t.Errorf("Pending: %d commands, %d distinct; want %d, all distinct", len(got), len(ids), workers/2*5)
	}
}

func testDurability(t *testing.T, s store.Store, reopen func(*testing.T, store.Store) store.Store) {
	h := store.GatewayHealth{Version: "1.0.0", ClientsOnline: 3}
	must(t, s.Heartbeat(ctx, "gw-park", at(0), h))
	must(t, s.CheckIn(ctx, "02:aa:00:00:00:01", at(0), store.APState{Clients: 4}, "v1"))
	for _, e := range []store.SessionEvent{
		ev("e1", store.EventStart, "s1", 0, 0, 0),
		ev("e2", store.EventInterim, "s1", time.Minute, 100, 10),
		ev("e3", store.EventStart, "s2", 0, 0, 0),
	} {
		_, err := s.RecordEvent(ctx, e)
		must(t, err)
	}
	c, err := s.Enqueue(ctx, store.Command{GatewayID: "gw-park", Kind: store.CommandKick, ClientMAC: "02:00:00:00:00:09", Created: at(0)})
	must(t, err)
	must(t, s.Put(ctx, "grant:g1", []byte("grant"), time.Hour))
	_, err = s.PutIfAbsent(ctx, "nonce:n1", []byte("1"), time.Hour)
	must(t, err)
	_, err = s.Incr(ctx, "budget:20261125", 42, time.Hour)
	must(t, err)
	must(t, s.AppendAudit(ctx, store.AuditEntry{At: at(0), Actor: "admin", Action: "kick"}))

	s = reopen(t, s)

	gw, err := s.Gateway(ctx, "gw-park")
	must(t, err)
	diff(t, "Gateway after reopen", store.GatewayStatus{ID: "gw-park", LastHeartbeat: at(0), Health: h}, gw)
	ap, err := s.AccessPoint(ctx, "02:aa:00:00:00:01")
	must(t, err)
	diff(t, "AP after reopen", store.APStatus{MAC: "02:aa:00:00:00:01", LastCheckIn: at(0), State: store.APState{Clients: 4}, ConfigVersion: "v1"}, ap)
	dup, err := s.RecordEvent(ctx, ev("e2", store.EventInterim, "s1", time.Minute, 100, 10))
	must(t, err)
	if !dup {
		t.Errorf("replayed event after reopen not seen as a duplicate")
	}
	tot, err := s.SiteTotals(ctx, "park")
	must(t, err)
	diff(t, "SiteTotals after reopen", store.Totals{Sessions: 2, BytesDown: 100, BytesUp: 10}, tot)
	open, err := s.OpenSessions(ctx, "park")
	must(t, err)
	if len(open) != 2 {
		t.Errorf("%d open sessions after reopen, want 2", len(open))
	}
	cmds, err := s.Pending(ctx, "gw-park")
	must(t, err)
	diff(t, "Pending after reopen", []store.Command{c}, cmds)
	v, err := s.Take(ctx, "grant:g1")
	must(t, err)
	diff(t, "grant after reopen", "grant", string(v))
	ok, err := s.PutIfAbsent(ctx, "nonce:n1", []byte("1"), time.Hour)
	must(t, err)
	if ok {
		t.Errorf("nonce forgotten across the restart: a replay would pass")
	}
	n, err := s.Incr(ctx, "budget:20261125", 1, time.Hour)
	must(t, err)
	if n != 43 {
		t.Errorf("budget after reopen = %d, want 43", n)
	}
	hr, err := s.Hourly(ctx, "park", at(0), at(time.Hour))
	must(t, err)
	if len(hr) != 1 || hr[0].Counters[store.CounterSessions] != 2 {
		t.Errorf("Hourly after reopen = %v, want 2 sessions", hr)
	}
	users, err := s.DistinctUsers(ctx, at(0), at(0), "park")
	must(t, err)
	if users != 2 {
		t.Errorf("DistinctUsers after reopen = %d, want 2", users)
	}
	au, err := s.ListAudit(ctx, at(0), at(time.Hour), 0)
	must(t, err)
	diff(t, "audit after reopen", []store.AuditEntry{{At: at(0), Actor: "admin", Action: "kick"}}, au)
}
