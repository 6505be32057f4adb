package gwapi_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/apiclient/outbox"
)

// sessions makes n sessions' worth of events (start, three interims, stop), with cumulative byte counters, and
// returns them with the totals an operator should see once all are delivered.
func sessions(prefix string, n int, r *rand.Rand) (evs []apiclient.SessionEvent, down, up uint64) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := range n {
		sid := fmt.Sprintf("%s-%d", prefix, i)
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256)
		var d, u uint64
		evs = append(evs, apiclient.SessionEvent{Kind: apiclient.EventStart, SessionID: sid, Start: at, At: at, ClientMAC: mac, User: "u-" + sid, Method: "sms"})
		for range 3 {
			d += r.Uint64N(50 << 20)
			u += r.Uint64N(5 << 20)
			evs = append(evs, apiclient.SessionEvent{Kind: apiclient.EventInterim, SessionID: sid, At: at, ClientMAC: mac, BytesDown: d, BytesUp: u})
		}
		d += r.Uint64N(1 << 20)
		evs = append(evs, apiclient.SessionEvent{Kind: apiclient.EventStop, SessionID: sid, At: at, ClientMAC: mac, BytesDown: d, BytesUp: u, Reason: "idle"})
		down += d
		up += u
	}
	return evs, down, up
}

// TestOutboxExactlyOnce: a gateway queues sessions while the controller is down, restarts (the outbox file is
// closed and opened again), the controller comes up, goes down again and comes back, and some of its answers
// are lost after it recorded the events. In the end the controller holds every event once: the session count
// and the byte totals equal the gateway's, and the lost answers show up as duplicates, not double counts.
func TestOutboxExactlyOnce(t *testing.T) {
	h := newHarnessNoListen(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the controller is down at first

	var drop atomic.Int32
	drop.Store(3) // the first three event answers are lost after the controller recorded the batch
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/events") && drop.Add(-1) >= 0 {
			h.srv.Handler().ServeHTTP(httptest.NewRecorder(), r)
			panic(http.ErrAbortHandler) // connection cut before the answer
		}
		h.srv.Handler().ServeHTTP(w, r)
	})
	var srv *http.Server
	up := func() {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("controller back on %s: %v", addr, err)
		}
		srv = &http.Server{Handler: handler}
		go srv.Serve(ln)
	}
	down := func() { srv.Close() }
	t.Cleanup(func() {
		if srv != nil {
			srv.Close()
		}
	})

	c, err := apiclient.New(apiclient.Config{
		BaseURL: "http://" + addr, Site: "site-a", GatewayID: "gw-a", Key: h.priv["gw-a"], ControllerKey: h.ctrlPub,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "outbox.db")
	start := func() (*outbox.Outbox, func()) {
		ob, err := outbox.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		s := &outbox.Sender{Outbox: ob, To: c, Batch: 7, Spread: -1,
			Backoff: apiclient.Backoff{Base: 5 * time.Millisecond, Max: 50 * time.Millisecond}}
		go func() { done <- s.Run(ctx) }()
		return ob, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sender: %v", err)
			}
			if err := ob.Close(); err != nil {
				t.Error(err)
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	var wantDown, wantUp uint64
	var wantEvents, wantSessions int
	queue := func(ob *outbox.Outbox, prefix string, n int) {
		evs, d, u := sessions(prefix, n, r)
		for len(evs) > 0 { // in small groups, as a gateway would
			k := min(len(evs), 3)
			if err := ob.Add(evs[:k]...); err != nil {
				t.Fatal(err)
			}
			evs = evs[k:]
		}
		wantDown += d
		wantUp += u
		wantEvents += n * 5
		wantSessions += n
	}

	// 1. Controller down: 20 sessions queue up while the sender retries.
	ob, stop := start()
	queue(ob, "a", 20)
	time.Sleep(200 * time.Millisecond)
	stop() // 2. the gateway daemon restarts
	ob, stop = start()
	defer func() { stop() }()
	if n, _ := ob.Len(); n != 100 {
		t.Fatalf("after restart the outbox holds %d events, want 100", n)
	}
	// 3. The controller comes up; more sessions arrive meanwhile.
	up()
	queue(ob, "b", 20)
	waitFor(t, 10*time.Second, func() bool { n, _ := ob.Len(); return n == 0 })
	// 4. Down again for a while, back again.
	down()
	queue(ob, "c", 10)
	time.Sleep(300 * time.Millisecond)
	if n, _ := ob.Len(); n != 50 {
		t.Errorf("with the controller down the outbox holds %d events, want 50", n)
	}
	up()
	waitFor(t, 10*time.Second, func() bool { n, _ := ob.Len(); return n == 0 })

	events, sessions, gotDown, gotUp := h.sink.totals()
	if events != wantEvents || sessions != wantSessions || gotDown != wantDown || gotUp != wantUp {
		t.Errorf("controller holds %d events, %d sessions, %d bytes down, %d up; gateway sent %d, %d, %d, %d",
			events, sessions, gotDown, gotUp, wantEvents, wantSessions, wantDown, wantUp)
	}
	h.sink.mu.Lock()
	dups := h.sink.duplicates
	h.sink.mu.Unlock()
	if dups < 3 {
		t.Errorf("%d duplicates seen by the controller, want at least 3 (the batches whose answer was lost)", dups)
	}
}

func waitFor(t testing.TB, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not done after %v", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBadEventsChangeNothing: a batch with one bad event is refused whole with a 400 naming the event and the
// field; the controller records none of it.
func TestBadEventsChangeNothing(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client(t, "gw-a", nil)
	evs, _, _ := sessions("x", 2, rand.New(rand.NewPCG(3, 4)))
	for i := range evs {
		evs[i].ID = apiclient.NewEventID()
	}
	evs[6].ClientMAC = "not-a-mac"
	evs[9].Reason = ""
	_, err := c.SendEvents(t.Context(), evs)
	var se *apiclient.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest ||
		!strings.Contains(se.Body, `events[6]`) || !strings.Contains(se.Body, `client_mac "not-a-mac"`) ||
		!strings.Contains(se.Body, `events[9]`) || !strings.Contains(se.Body, "reason: a stop event needs one") {
		t.Errorf("got %v, want a 400 naming events[6]'s client_mac and events[9]'s reason", err)
	}
	if n, _, _, _ := h.sink.totals(); n != 0 {
		t.Errorf("controller recorded %d events of a bad batch, want 0", n)
	}
	// The same batch fixed goes through, each event once even if sent twice.
	evs[6].ClientMAC, evs[9].Reason = "02:00:00:00:00:01", "kick"
	for range 2 {
		if _, err := c.SendEvents(t.Context(), evs); err != nil {
			t.Fatal(err)
		}
	}
	if n, s, _, _ := h.sink.totals(); n != 10 || s != 2 {
		t.Errorf("controller holds %d events of %d sessions, want 10 of 2", n, s)
	}
}

// TestHeartbeat: the heartbeat reaches the sink with the site and gateway of the key that signed it.
func TestHeartbeat(t *testing.T) {
	h := newHarness(t, nil)
	hb := apiclient.Heartbeat{Version: "0.3.0", UptimeSeconds: 3600, ClientsOnline: 42, ReconcileRepairs: 2,
		SentAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	if err := h.client(t, "gw-b", nil).Heartbeat(t.Context(), hb); err != nil {
		t.Fatal(err)
	}
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	if len(h.sink.heartbeats) != 1 {
		t.Fatalf("%d heartbeats, want 1", len(h.sink.heartbeats))
	}
	got := h.sink.heartbeats[0]
	if got.HB != hb || got.From.Site != "site-b" || got.From.Gateway != "gw-b" || !strings.HasPrefix(got.From.Remote, "127.0.0.1:") {
		t.Errorf("got %+v, want %+v from gw-b of site-b", got, hb)
	}
}

// TestRunHeartbeats: a gateway beating every 100 ms for 1.05 s sends about ten heartbeats, each with fresh health.
func TestRunHeartbeats(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client(t, "gw-a", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 1050*time.Millisecond)
	defer cancel()
	var n atomic.Int32
	if err := c.RunHeartbeats(ctx, 100*time.Millisecond, func() apiclient.Heartbeat {
		return apiclient.Heartbeat{Version: "0.3.0", ClientsOnline: int(n.Add(1))}
	}); err != nil {
		t.Fatal(err)
	}
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	// At most 11 fit (first within 100 ms, then at least 90 ms apart); a loaded machine may send fewer.
	got := len(h.sink.heartbeats)
	if got < 3 || got > 11 {
		t.Errorf("%d heartbeats in 1.05 s at 100 ms +-10%%, want 9 to 11 (3 on a loaded machine)", got)
	}
	for i, hb := range h.sink.heartbeats {
		if hb.HB.ClientsOnline != i+1 || hb.HB.SentAt.IsZero() {
			t.Errorf("heartbeat %d: %+v, want clients %d and a time", i, hb.HB, i+1)
		}
		if i > 0 {
			if gap := hb.HB.SentAt.Sub(h.sink.heartbeats[i-1].HB.SentAt); gap < 90*time.Millisecond {
				t.Errorf("heartbeat %d came %v after the previous one, want at least 90 ms", i, gap)
			}
		}
	}
}
