package gateway

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/config"
)

// A burst of logins shares the journal's writes: while one write is held
// up, every open that arrives meanwhile goes out in the next one; each
// caller returns only once its session is in the store.
func TestOpensShareJournalWrites(t *testing.T) {
	ctx := context.Background()
	var (
		mu      sync.Mutex
		calls   [][]Event
		release = make(chan struct{})
		held    = make(chan struct{}, 1)
	)
	r := newRig(t, "", nil, func(o *Options) {
		o.Events = func(evs []Event) error {
			mu.Lock()
			first := len(calls) == 0
			calls = append(calls, evs)
			mu.Unlock()
			if first {
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
	first := make(chan error, 1)
	go func() { first <- open(1) }()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the first open never reached the outbox")
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
		if k == n+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d opens reached the kernel while the journal was held", k, n+1)
		}
		time.Sleep(time.Millisecond)
	}
	active, err := r.store.Active()
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 {
		t.Fatalf("%d sessions in the store while only the first write ran, want 1", len(active))
	}
	close(release)
	if err := <-first; err != nil {
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
	if len(active) != n+1 {
		t.Fatalf("%d sessions in the store, want %d", len(active), n+1)
	}
	mu.Lock()
	defer mu.Unlock()
	starts := 0
	for _, c := range calls {
		for _, e := range c {
			if e.Kind == EventStart {
				starts++
			}
		}
	}
	if starts != n+1 {
		t.Errorf("%d start events, want %d", starts, n+1)
	}
	if len(calls) > 3 {
		t.Errorf("%d outbox writes for %d opens queued behind one, want at most 3 (grouped)", len(calls), n+1)
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
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events[before:] {
		if e.Kind == EventStart {
			t.Errorf("start event for a refused open: %+v", e)
		}
	}
}
