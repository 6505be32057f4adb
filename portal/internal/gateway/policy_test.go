package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"github.com/civicwifi/civicwifi/portal/internal/firewall"
)

// eventLog collects events as "kind mac bytes reason".
type eventLog struct {
	mu  sync.Mutex
	got []string
}

func (l *eventLog) record(evs []Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range evs {
		s := e.Session
		l.got = append(l.got, strings.TrimSpace(fmt.Sprintf("%s %s %d/%d %s", e.Kind, s.MAC, s.BytesDown, s.BytesUp, s.EndReason)))
	}
	return nil
}

func (l *eventLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.got
	l.got = nil
	return g
}

func TestSessionEvents(t *testing.T) {
	ctx := context.Background()
	var log eventLog
	r := newRig(t, "", nil, func(o *Options) { o.Events = log.record; o.InterimInterval = time.Minute })
	// Start events leave on their own goroutine: wait for them.
	take := func() []string { r.gw.events.syncAll(); return log.take() }
	l := testConfig().Limits
	l.Quota = 10_000
	if _, err := r.gw.Open(ctx, Grant{MAC: mac1, Method: "ctl", Limits: l}); err != nil {
		t.Fatal(err)
	}
	// Updating the same device's session is not a new session.
	if _, err := r.gw.Open(ctx, Grant{MAC: mac1, Method: "ctl", Limits: l}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"start 02:00:00:00:00:01 0/0"}, take()); diff != "" {
		t.Errorf("after open (-want +got):\n%s", diff)
	}
	// Traffic: no interim before the interval, one after, none if the
	// counters did not move.
	r.fw.set(ip1, firewall.Usage{Bytes: 3000, DownBytes: 2000, Packets: 5})
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	r.gw.flush()
	if got := take(); len(got) != 0 {
		t.Errorf("interim before the interval: %q", got)
	}
	r.clk.add(61 * time.Second)
	r.gw.flush()
	r.clk.add(61 * time.Second)
	r.gw.flush()
	if diff := cmp.Diff([]string{"interim 02:00:00:00:00:01 2000/1000"}, take()); diff != "" {
		t.Errorf("interim (-want +got):\n%s", diff)
	}
	// Another device takes the address: a stop for the first, a start.
	if _, err := r.gw.Open(ctx, Grant{MAC: mac2, IP: ip1, Method: "ctl", Limits: l}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"stop 02:00:00:00:00:01 2000/1000 replaced", "start 02:00:00:00:00:02 0/0"}, take()); diff != "" {
		t.Errorf("displaced (-want +got):\n%s", diff)
	}
	// Quota: the stop carries the final totals and the reason.
	r.fw.set(ip1, firewall.Usage{Bytes: 10_001, DownBytes: 9000, Packets: 9})
	if err := r.gw.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"stop 02:00:00:00:00:02 9000/1001 quota"}, take()); diff != "" {
		t.Errorf("quota (-want +got):\n%s", diff)
	}
	// A refused open reports nothing.
	r.fw.mu.Lock()
	r.fw.fail = fmt.Errorf("kernel says no")
	r.fw.mu.Unlock()
	if _, err := r.gw.Open(ctx, Grant{MAC: mac2, IP: ip2, Method: "ctl", Limits: l}); err == nil {
		t.Fatal("open succeeded with a failing firewall")
	}
	if got := take(); len(got) != 0 {
		t.Errorf("events of a refused open: %q", got)
	}
}

func TestSetPolicy(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	def := r.gw.Limits()
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String()}); err != nil { // follows the site
		t.Fatal(err)
	}
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip2.String(), Down: "20mbit"}); err != nil { // its own rate
		t.Fatal(err)
	}
	next := def
	next.Down, next.Up, next.Session = 5*quantity.Mbit, 3*quantity.Mbit, 30*time.Minute
	if err := r.gw.SetPolicy(ctx, next); err != nil {
		t.Fatal(err)
	}
	r.sh.mu.Lock()
	got1, got2 := r.sh.limits[ip1], r.sh.limits[ip2]
	r.sh.mu.Unlock()
	if got1.Down != 5*quantity.Mbit || got1.Up != 3*quantity.Mbit {
		t.Errorf("session following the site shaped at %v/%v, want 5mbit/3mbit", got1.Down, got1.Up)
	}
	if got2.Down != 20*quantity.Mbit {
		t.Errorf("session with its own rate shaped at %v, want its 20mbit kept", got2.Down)
	}
	s1, _ := r.gw.SessionFor(ip1)
	if s1.Expires.Sub(s1.Started) != def.Session {
		t.Errorf("granted duration changed to %v", s1.Expires.Sub(s1.Started))
	}
	stored, err := r.store.Active()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stored {
		if s.IP == ip1 && s.DownRate != uint64(5*quantity.Mbit) {
			t.Errorf("store has down %d for the moved session", s.DownRate)
		}
	}
	// A reconcile from the store keeps the new rates (nothing to repair).
	if n, err := r.gw.reconcile(ctx, true); err != nil || n != 0 {
		t.Errorf("reconcile after SetPolicy = %d, %v", n, err)
	}
	// New sessions get the new defaults.
	r.gw.Close(ctx, nil, ip1, "kicked")
	s, err := r.gw.ClickThrough(ctx, ip1)
	if err == nil {
		t.Fatalf("click-through after a kick: %+v", s)
	}
	if _, err := r.gw.Allow(ctx, control.AllowRequest{MAC: mac1.String()}); err != nil {
		t.Fatal(err)
	}
	s1, _ = r.gw.SessionFor(ip1)
	if s1.DownRate != uint64(5*quantity.Mbit) || s1.Expires.Sub(s1.Started) != 30*time.Minute {
		t.Errorf("new session: down %d, duration %v; want the new policy's", s1.DownRate, s1.Expires.Sub(s1.Started))
	}
	// Bad limits change nothing.
	bad := next
	bad.Down = 1
	if err := r.gw.SetPolicy(ctx, bad); err == nil {
		t.Error("SetPolicy accepted a rate below the minimum")
	}
	if r.gw.Limits() != next {
		t.Errorf("limits after a refused policy: %+v", r.gw.Limits())
	}
}

func TestExtend(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	s, err := r.gw.Open(ctx, Grant{MAC: mac1, Method: "ctl", Limits: r.gw.Limits()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.gw.Extend(ctx, mac1, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if want := s.Expires.Add(30 * time.Minute); !got.Expires.Equal(want) {
		t.Errorf("expires %v, want %v", got.Expires, want)
	}
	r.fw.mu.Lock()
	g := r.fw.allowed[ip1]
	r.fw.mu.Unlock()
	if !g.Expires.Equal(got.Expires) {
		t.Errorf("firewall grant expires %v, want %v", g.Expires, got.Expires)
	}
	// Survives a restart: the store has it.
	stored, _ := r.store.Active()
	if len(stored) != 1 || !stored[0].Expires.Equal(got.Expires) {
		t.Errorf("store: %+v", stored)
	}
	for _, bad := range []time.Duration{0, -time.Minute, 32 * 24 * time.Hour} {
		if _, err := r.gw.Extend(ctx, mac1, bad); err == nil {
			t.Errorf("Extend by %v accepted", bad)
		}
	}
	if _, err := r.gw.Extend(ctx, mac2, time.Minute); err == nil {
		t.Error("Extend of a device without a session accepted")
	}
}

// A kernel error while moving sessions to the new rates does not make the
// policy fail: its limits are in force (the controller link then goes on to
// apply the hours, login methods and walled garden, and never retries a
// version it was told failed), and the next reconcile shapes the sessions.
func TestSetPolicyKernelErrorStillApplies(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	if _, err := r.gw.Allow(ctx, control.AllowRequest{IP: ip1.String()}); err != nil {
		t.Fatal(err)
	}
	next := r.gw.Limits()
	next.Down = 5 * quantity.Mbit
	r.sh.mu.Lock()
	r.sh.setErr = fmt.Errorf("running tc: no such device")
	r.sh.mu.Unlock()
	if err := r.gw.SetPolicy(ctx, next); err != nil {
		t.Errorf("SetPolicy with a failing tc = %v, want nil (the limits are applied)", err)
	}
	if got := r.gw.Limits(); got != next {
		t.Errorf("limits %+v, want %+v", got, next)
	}
	r.sh.mu.Lock()
	r.sh.setErr = nil
	r.sh.mu.Unlock()
	if _, err := r.gw.reconcile(ctx, true); err != nil {
		t.Fatal(err)
	}
	r.sh.mu.Lock()
	got := r.sh.limits[ip1].Down
	r.sh.mu.Unlock()
	if got != 5*quantity.Mbit {
		t.Errorf("after reconcile shaped at %v, want 5mbit", got)
	}
	// Limits the gateway cannot use still fail and change nothing.
	bad := next
	bad.Down = quantity.Kbit
	if err := r.gw.SetPolicy(ctx, bad); err == nil || r.gw.Limits() != next {
		t.Errorf("SetPolicy(1kbit) = %v, limits %+v; want an error and no change", err, r.gw.Limits())
	}
}

// Whenever the store of record has a session as ended, its stop event is
// already in the controller link's durable outbox: a crash (a power cut at
// closing time, when every session ends at once) between the two must not
// lose the stop, or the controller keeps the session open for good. Sent
// first, a stop repeated after a crash carries the same id and is
// recognised.
func TestStopEventBeforeEndIsRecorded(t *testing.T) {
	ctx := context.Background()
	var st *Store // the running gateway's
	var bad []string
	events := func(evs []Event) error {
		for _, e := range evs {
			if e.Kind != EventStop {
				continue
			}
			ended, err := st.Ended()
			if err != nil {
				return err
			}
			for _, s := range ended {
				if s.ID == e.Session.ID {
					bad = append(bad, e.Session.EndReason)
				}
			}
		}
		return nil
	}
	r := newRig(t, "", nil, func(o *Options) { o.Events, st = events, o.Store })
	if _, err := r.gw.Open(ctx, Grant{MAC: mac1, Method: "ctl", Limits: testConfig().Limits}); err != nil {
		t.Fatal(err)
	}
	if err := r.gw.Logout(ctx, ip1); err != nil {
		t.Fatal(err)
	}
	// Expired while the gateway was down: ended at start.
	dir := r.dir
	if _, err := r.gw.Open(ctx, Grant{MAC: mac2, Method: "ctl", Limits: testConfig().Limits}); err != nil {
		t.Fatal(err)
	}
	r.store.Close()
	later := &clock{t: r.clk.now().Add(2 * time.Hour)}
	newRig(t, dir, nil, func(o *Options) { o.Events, o.Now, st = events, later.now, o.Store })
	if len(bad) != 0 {
		t.Errorf("stop events sent after the store recorded the end (reasons %q)", bad)
	}
}
