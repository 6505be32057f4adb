package outbox

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/google/go-cmp/cmp"
)

func event(session string, kind apiclient.EventKind) apiclient.SessionEvent {
	e := apiclient.SessionEvent{Kind: kind, SessionID: session, At: time.Unix(1764064800, 0).UTC(), ClientMAC: "02:00:00:00:00:01"}
	if kind == apiclient.EventStop {
		e.Reason = "idle"
	}
	return e
}

func TestAddPeekRemoveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	ob, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	evs := []apiclient.SessionEvent{event("s1", apiclient.EventStart), event("s1", apiclient.EventInterim), event("s1", apiclient.EventStop)}
	evs[0].ID = "fixed-id"
	if err := ob.Add(evs...); err != nil {
		t.Fatal(err)
	}
	if err := ob.Add(evs[0]); err != nil { // the same id again: skipped
		t.Fatal(err)
	}
	bad := event("s2", apiclient.EventStop)
	bad.Reason = ""
	if err := ob.Add(event("s2", apiclient.EventStart), bad); err == nil || !strings.Contains(err.Error(), "a stop event needs one") {
		t.Errorf("Add with a bad event: %v", err)
	}
	if _, err := Open(path); err == nil {
		t.Error("a second Open of a held outbox succeeded")
	}
	ob.Close()

	ob, err = Open(path) // as after a restart
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	got, err := ob.Peek(10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(evs, got); diff != "" {
		t.Errorf("after reopen, oldest first (-want +got):\n%s", diff)
	}
	if n, err := ob.Remove([]string{evs[1].ID, "unknown"}); n != 1 || err != nil {
		t.Errorf("Remove = %d, %v; want 1", n, err)
	}
	got, _ = ob.Peek(10)
	if diff := cmp.Diff([]apiclient.SessionEvent{evs[0], evs[2]}, got); diff != "" {
		t.Errorf("after Remove (-want +got):\n%s", diff)
	}
	if n, _ := ob.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
}

// flaky fails its first fails calls, then acks everything; it records when each call came.
type flaky struct {
	mu    sync.Mutex
	fails int
	calls []time.Time
	got   []string
}

func (f *flaky) SendEvents(_ context.Context, evs []apiclient.SessionEvent) (apiclient.EventAck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Now())
	if len(f.calls) <= f.fails {
		return apiclient.EventAck{}, errors.New("connection refused")
	}
	var ack apiclient.EventAck
	for _, e := range evs {
		ack.Recorded = append(ack.Recorded, e.ID)
		f.got = append(f.got, e.ID)
	}
	return ack, nil
}

// TestSenderBackoff runs the sender in fake time: after a random start within Spread, each retry waits within
// [c/2, c] of its ceiling, the delays grow to Max, and after the controller answers everything is delivered,
// in order, once.
func TestSenderBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ob, err := Open(filepath.Join(t.TempDir(), "outbox.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer ob.Close()
		var ids []string
		for i := range 250 {
			e := event("s", apiclient.EventInterim)
			e.ID = string(rune('a'+i/26%26)) + string(rune('a'+i%26)) + "-" + time.Duration(i).String()
			ids = append(ids, e.ID)
			if err := ob.Add(e); err != nil {
				t.Fatal(err)
			}
		}
		b := apiclient.Backoff{Base: time.Second, Max: 30 * time.Second}
		f := &flaky{fails: 8}
		ctx, cancel := context.WithCancel(t.Context())
		s := &Sender{Outbox: ob, To: f, Backoff: b, Batch: 100, Spread: 10 * time.Second}
		done := make(chan error)
		t0 := time.Now()
		go func() { done <- s.Run(ctx) }()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.calls) != 8+3 {
			t.Fatalf("%d calls, want 8 failures then 3 batches", len(f.calls))
		}
		if first := f.calls[0].Sub(t0); first >= 10*time.Second {
			t.Errorf("first attempt after %v, want within the 10 s spread", first)
		}
		for i := 1; i <= 8; i++ {
			gap, c := f.calls[i].Sub(f.calls[i-1]), b.Ceiling(i-1)
			if gap < c/2 || gap > c {
				t.Errorf("retry %d after %v, want within [%v, %v]", i, gap, c/2, c)
			}
		}
		for i := 9; i < 11; i++ {
			if gap := f.calls[i].Sub(f.calls[i-1]); gap != 0 {
				t.Errorf("batch %d waited %v after a success, want none", i, gap)
			}
		}
		if diff := cmp.Diff(ids, f.got); diff != "" {
			t.Errorf("delivered (-want +got):\n%s", diff)
		}
		if n, _ := ob.Len(); n != 0 {
			t.Errorf("%d events left", n)
		}
	})
}

// TestSenderWakesOnAdd: an idle sender sends a new event at once, not on a timer.
func TestSenderWakesOnAdd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ob, err := Open(filepath.Join(t.TempDir(), "outbox.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer ob.Close()
		f := &flaky{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- (&Sender{Outbox: ob, To: f, Spread: -1}).Run(ctx) }()
		time.Sleep(time.Hour)
		synctest.Wait()
		added := time.Now()
		if err := ob.Add(event("s", apiclient.EventStart)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		cancel()
		<-done
		if len(f.calls) != 1 || !f.calls[0].Equal(added) {
			t.Errorf("calls %v, want one at %v", f.calls, added)
		}
	})
}
