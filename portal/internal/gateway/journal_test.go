package gateway

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"github.com/civicwifi/civicwifi/portal/internal/firewall"
)

// A burst of logins shares the journal's writes: while one write is held
// up (here: a kick's stop event, which must reach the outbox before the
// store), every open that arrives meanwhile is in the kernel and waits;
// they are then written together, and each caller returns only once its
// session is in the store. Start events follow, in order, after the stop.
func TestOpensShareJournalWrites(t *testing.T) {
	ctx := context.Background()
	var (
		mu      sync.Mutex
		calls   [][]Event
		block   bool
		release = make(chan struct{})
		held    = make(chan struct{}, 1)
	)
	r := newRig(t, "", nil, func(o *Options) {
		o.Events = func(evs []Event) error {
			mu.Lock()
			calls = append(calls, evs)
			hold := block && evs[0].Kind == EventStop
			mu.Unlock()
			if hold {
				held <- struct{}{}
				<-release
			}
			return nil
		}
	})
	l := config.Limits{Down: 2 * quantity.Mbit, Session: time.Hour}
	open := func(i int) error {
		mac := net.HardwareAddr{2, 9, 0, 0, 0, byte(i)}
		ip := netip.AddrFrom4([4]byte{10, 20, 1, byte(i)})
		_, err := r.gw.Open(ctx, Grant{MAC: mac, IP: ip, Method: "ctl", Limits: l})
		return err
	}
	if err := open(1); err != nil {
		t.Fatal(err)
	}
	r.gw.events.syncAll()
	mu.Lock()
	block, calls = true, nil
	mu.Unlock()
	kicked := make(chan error, 1)
	go func() {
		_, err := r.gw.Close(ctx, nil, netip.AddrFrom4([4]byte{10, 20, 1, 1}), "kicked")
		kicked <- err
	}()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the kick's stop never reached the outbox")
	}
	const n = 30
	errs := make(chan error, n)
	for i := 2; i < 2+n; i++ {
		go func() { errs <- open(i) }()
	}
	// Every one of them is in the kernel (and waits for the journal)
	// before the held write is released.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.fw.mu.Lock()
		k := len(r.fw.allowed)
		r.fw.mu.Unlock()
		if k == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d opens reached the kernel while the journal was held", k, n)
		}
		time.Sleep(time.Millisecond)
	}
	active, err := r.store.Active()
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 {
		t.Fatalf("%d sessions active in the store while the kick's write was held, want 1 (the kicked one)", len(active))
	}
	close(release)
	if err := <-kicked; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	active, err = r.store.Active()
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != n {
		t.Fatalf("%d sessions in the store, want %d", len(active), n)
	}
	r.gw.events.syncAll()
	mu.Lock()
	defer mu.Unlock()
	var kinds []EventKind
	for _, c := range calls {
		for _, e := range c {
			kinds = append(kinds, e.Kind)
		}
	}
	if len(kinds) != n+1 || kinds[0] != EventStop {
		t.Fatalf("events %v, want the stop then %d starts", kinds, n)
	}
	for _, k := range kinds[1:] {
		if k != EventStart {
			t.Fatalf("events %v, want the stop then %d starts", kinds, n)
		}
	}
	if len(calls) > 3 {
		t.Errorf("%d outbox writes for a stop and %d opens queued behind it, want at most 3 (grouped)", len(calls), n)
	}
}

// When the store cannot record an open, the open is taken back: a new
// client is captive again, an updated one keeps its previous limits, and
// no start event goes out.
func TestStoreFailureUndoesOpen(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var events []Event
	r := newRig(t, "", nil, func(o *Options) {
		o.Events = func(evs []Event) error {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, evs...)
			return nil
		}
	})
	l := config.Limits{Down: 2 * quantity.Mbit, Session: time.Hour}
	if _, err := r.gw.Open(ctx, Grant{MAC: mac1, IP: ip1, Method: "ctl", Limits: l}); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Close(); err != nil { // every write fails from here
		t.Fatal(err)
	}
	r.gw.events.syncAll()
	mu.Lock()
	before := len(events)
	mu.Unlock()

	if _, err := r.gw.Open(ctx, Grant{MAC: mac2, IP: ip2, Method: "ctl", Limits: l}); err == nil {
		t.Fatal("open succeeded although the store refused it")
	}
	r.fw.mu.Lock()
	_, in := r.fw.allowed[ip2]
	r.fw.mu.Unlock()
	if in {
		t.Error("the kernel still lets in a client whose session the store refused")
	}
	if _, ok := r.gw.SessionFor(ip2); ok {
		t.Error("the gateway keeps a session the store refused")
	}

	up := l
	up.Down = 20 * quantity.Mbit
	if _, err := r.gw.Open(ctx, Grant{MAC: mac1, IP: ip1, Method: "ctl", Limits: up}); err == nil {
		t.Fatal("update succeeded although the store refused it")
	}
	s, ok := r.gw.SessionFor(ip1)
	if !ok || s.DownRate != uint64(2*quantity.Mbit) {
		t.Fatalf("after a refused update: %+v (present %v), want the 2mbit session", s, ok)
	}
	if got := r.sh.limits[ip1].Down; got != 2*quantity.Mbit {
		t.Errorf("shaper has %s for the refused update, want 2mbit back", got)
	}
	r.gw.events.syncAll()
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events[before:] {
		if e.Kind == EventStart {
			t.Errorf("start event for a refused open: %+v", e)
		}
	}
}

// A reconcile that takes its list while an open is in the kernel (mu is
// free then) leaves that client alone: it would otherwise "repair" a
// client it read before the open's allow, with the counters of that read.
func TestReconcileDuringOpenLeavesItAlone(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	inSet, proceed := make(chan struct{}), make(chan struct{})
	r.sh.mu.Lock()
	r.sh.onSet = func() {
		r.sh.mu.Lock()
		r.sh.onSet = nil
		r.sh.mu.Unlock()
		close(inSet)
		<-proceed
	}
	r.sh.mu.Unlock()
	read := make(chan struct{})
	r.fw.mu.Lock()
	r.fw.onReconcileRead = func() {
		r.fw.mu.Lock()
		r.fw.onReconcileRead = nil
		r.fw.mu.Unlock()
		close(read)
	}
	r.fw.mu.Unlock()

	opened := make(chan error, 1)
	go func() {
		_, err := r.gw.Open(ctx, Grant{MAC: mac1, IP: ip1, Method: "ctl", Limits: testConfig().Limits})
		opened <- err
	}()
	<-inSet // the open holds kmu, mu is free, the firewall has no ip1 yet
	// The firewall's half of reconcile (its poll takes kmu first; an open
	// can start right after it, before the list is taken).
	repairs := make(chan int, 1)
	go func() {
		grants, _, gen := r.gw.grants()
		rep, err := r.fw.Reconcile(ctx, grants, &guard{g: r.gw, gen: gen})
		if err != nil {
			t.Error(err)
		}
		repairs <- rep.Total()
	}()
	<-read // the reconcile has its list and read the kernel without ip1
	close(proceed)
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if n := <-repairs; n != 0 {
		t.Errorf("reconcile repaired %d things of an open in flight, want 0", n)
	}
}

// An ended session's shaping class is parked for its address: the next
// session of the address takes it over (set to its rates, or removed when
// it has none), and the reconcile keeps it meanwhile.
func TestParkedShaping(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	l := testConfig().Limits
	if _, err := r.gw.Open(ctx, Grant{MAC: mac1, IP: ip1, Method: "ctl", Limits: l}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.gw.Close(ctx, nil, ip1, "kicked"); err != nil {
		t.Fatal(err)
	}
	if n, err := r.gw.reconcile(ctx, true); err != nil || n != 0 {
		t.Fatalf("reconcile with a parked class: %d repairs, %v; want 0", n, err)
	}
	if got := r.sh.limits[ip1]; got.Down != l.Down {
		t.Fatalf("parked class: %+v, want the session's %s", got, l.Down)
	}
	// The next session of the address has no rates: the class goes.
	unshaped := l
	unshaped.Down, unshaped.Up = 0, 0
	if _, err := r.gw.Open(ctx, Grant{MAC: mac2, IP: ip1, Method: "ctl", Limits: unshaped}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.sh.limits[ip1]; ok {
		t.Error("an unshaped session on the address is shaped by the parked class")
	}
	if _, ok := r.gw.parked[ip1]; ok {
		t.Error("the address's class is still parked while a session has it")
	}
}

// Opens of different addresses run side by side: one held inside the
// kernel (the firewall's Allow) keeps another address's open from waiting,
// but a second open of its own address, and a reconcile's repairs, wait
// for it.
func TestOpensOfDifferentAddressesSideBySide(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	l := config.Limits{Down: 2 * quantity.Mbit, Session: time.Hour}
	addr := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 20, 1, i}) }
	open := func(i, m byte) error {
		_, err := r.gw.Open(ctx, Grant{MAC: net.HardwareAddr{2, 9, 0, 0, 0, m}, IP: addr(i), Method: "ctl", Limits: l})
		return err
	}
	if err := open(3, 3); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	free := func() { released.Do(func() { close(release) }) }
	defer free() // a failing test lets the held open go
	r.fw.onAllow = func(g firewall.Grant) {
		if g.IP == addr(1) {
			once.Do(func() {
				close(held)
				<-release
			})
		}
	}
	first := make(chan error, 1)
	go func() { first <- open(1, 1) }()
	<-held
	// Another address: through at once, while the first is held.
	other := make(chan error, 1)
	go func() { other <- open(2, 2) }()
	if ok, err := within(other, 5*time.Second); !ok {
		t.Fatal("an open of another address waited for the held one")
	} else if err != nil {
		t.Fatal(err)
	}
	// The same address (another device taking it over) waits for it.
	same := make(chan error, 1)
	go func() { same <- open(1, 11) }()
	// So do a reconcile's repairs: its guard takes the kernel lock
	// exclusive.
	rec := make(chan error, 1)
	go func() {
		gd := &guard{g: r.gw}
		gd.Lock()
		stale := gd.Stale(addr(1)) // the held open touched it after gen 0
		gd.Unlock()
		if !stale {
			rec <- fmt.Errorf("%s not stale for a guard taken after its open", addr(1))
			return
		}
		rec <- nil
	}()
	select {
	case err := <-same:
		t.Fatalf("a second open of the held address finished (%v) before the first", err)
	case err := <-rec:
		t.Fatalf("a reconcile's guard was taken (%v) while an open was in the kernel", err)
	case <-time.After(200 * time.Millisecond):
	}
	free()
	for _, c := range []chan error{first, same, rec} {
		if ok, err := within(c, 5*time.Second); !ok {
			t.Fatal("blocked after the release")
		} else if err != nil {
			t.Fatal(err)
		}
	}
	r.fw.mu.Lock()
	defer r.fw.mu.Unlock()
	if g := r.fw.allowed[addr(1)]; !bytes.Equal(g.MAC, net.HardwareAddr{2, 9, 0, 0, 0, 11}) {
		t.Errorf("%s allowed for %v, want the second device (its open came last)", addr(1), g.MAC)
	}
	if _, ok := r.fw.allowed[addr(2)]; !ok {
		t.Errorf("%s not allowed", addr(2))
	}
	sess := r.gw.Sessions()
	if len(sess) != 3 {
		t.Errorf("%d sessions, want 3", len(sess))
	}
}

// Opens and kicks of eight addresses (two of them sharing an address
// lock) from 16 goroutines, beside reconciles, polls and flushes: after
// it, the firewall, the shaper and the store hold exactly the sessions in
// memory. (Without the per-address lock the store kept dozens of sessions
// that memory had replaced.)
func TestOpensAndKicksUnderLoadStayConsistent(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	var addrs []netip.Addr
	for _, s := range []string{"10.20.0.11", "10.20.0.75", "10.20.1.11", "10.20.0.12", "10.20.0.13", "10.20.0.14", "10.20.2.200", "10.20.3.7"} {
		addrs = append(addrs, netip.MustParseAddr(s))
	}
	if r.gw.addrLock(addrs[0]) != r.gw.addrLock(addrs[1]) {
		t.Fatal("10.20.0.11 and 10.20.0.75 should share an address lock")
	}
	var wg sync.WaitGroup
	stop := time.Now().Add(2 * time.Second)
	for w := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; time.Now().Before(stop) && i < 5000; i++ {
				ip := addrs[rng.IntN(len(addrs))]
				mac := net.HardwareAddr{2, 9, 0, 0, 0, byte(rng.IntN(6))}
				if rng.IntN(10) == 0 {
					r.gw.Close(ctx, nil, ip, "kicked")
					continue
				}
				l := config.Limits{Down: quantity.Rate(1+rng.IntN(4)) * quantity.Mbit, Session: time.Hour}
				r.gw.Open(ctx, Grant{MAC: mac, IP: ip, Method: "ctl", Limits: l}) // refusals are fine
			}
		})
	}
	wg.Go(func() {
		for time.Now().Before(stop) {
			r.gw.reconcile(ctx, true)
			r.gw.poll(ctx)
			r.gw.flush()
		}
	})
	wg.Wait()
	// No reconcile after the load: the kernel must match as it is.
	sess := r.gw.Sessions()
	r.fw.mu.Lock()
	defer r.fw.mu.Unlock()
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	byIP := map[netip.Addr]Session{}
	for _, s := range sess {
		if _, dup := byIP[s.IP]; dup {
			t.Errorf("two sessions at %s", s.IP)
		}
		byIP[s.IP] = s
		if g, ok := r.fw.allowed[s.IP]; !ok || g.MAC.String() != s.MAC.String() {
			t.Errorf("%s: session of %s, firewall allows %v", s.IP, s.MAC, g.MAC)
		}
		if l := r.sh.limits[s.IP]; uint64(l.Down) != s.DownRate {
			t.Errorf("%s: shaper %v, session %d bit/s", s.IP, l.Down, s.DownRate)
		}
	}
	for ip := range r.fw.allowed {
		if _, ok := byIP[ip]; !ok {
			t.Errorf("%s allowed with no session", ip)
		}
	}
	active, err := r.store.Active()
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != len(sess) {
		t.Errorf("the store has %d active sessions, memory %d", len(active), len(sess))
	}
	for _, a := range active {
		if s, ok := byIP[a.IP]; !ok || s.ID != a.ID || a.DownRate != s.DownRate {
			t.Errorf("store: %s %s %d bit/s; memory: %s %d bit/s", a.IP, a.ID, a.DownRate, s.ID, s.DownRate)
		}
	}
	if len(sess) == 0 {
		t.Error("no session left open: the load did not exercise anything")
	}
}

// Events nobody waits for linger and go out together; a sync sends them at
// once; without a sync they go out when the linger ends.
func TestEventQueueLingers(t *testing.T) {
	var (
		mu    sync.Mutex
		calls [][]Event
	)
	record := func(evs []Event) {
		mu.Lock()
		calls = append(calls, evs)
		mu.Unlock()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(calls)
	}
	ev := func(id string) []Event { return []Event{{Kind: EventStart, Session: Session{ID: id}}} }

	q := newEventQueue(record, time.Hour)
	for _, id := range []string{"a", "b", "c"} {
		q.push(ev(id))
	}
	if n := count(); n != 0 {
		t.Fatalf("%d sends before the linger ended or a sync, want 0", n)
	}
	done := make(chan struct{})
	go func() { q.syncAll(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("sync waited for the linger")
	}
	if n := count(); n != 1 || len(calls[0]) != 3 {
		t.Fatalf("after the sync: %d sends (%v), want one of 3 events", n, calls)
	}

	q = newEventQueue(record, 20*time.Millisecond)
	q.push(ev("d"))
	deadline := time.Now().Add(5 * time.Second)
	for count() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("a lingering event was never sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A stop does not wait for lingering start events: it takes them along,
// in order, and the kick returns at once even with an hour's linger.
func TestStopDoesNotWaitForLinger(t *testing.T) {
	ctx := context.Background()
	var (
		mu    sync.Mutex
		kinds []EventKind
	)
	r := newRig(t, "", nil, func(o *Options) {
		o.Events = func(evs []Event) error {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range evs {
				kinds = append(kinds, e.Kind)
			}
			return nil
		}
	})
	r.gw.events.linger = time.Hour // before any event: nothing runs yet
	if _, err := r.gw.Open(ctx, Grant{MAC: mac1, IP: ip1, Method: "ctl", Limits: testConfig().Limits}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.gw.Kick(ctx, control.KickRequest{IP: ip1.String()})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the kick waited for the start event's linger")
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]EventKind{EventStart, EventStop}, kinds); diff != "" {
		t.Errorf("events (-want +got)\n%s", diff)
	}
}
