package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/redisstore"
	"github.com/civicwifi/civicwifi/controller/internal/store/storetest"
	"github.com/civicwifi/civicwifi/internal/redistest"
)

func open(t *testing.T, srv *redistest.Server, prefix string) *redisstore.Store {
	t.Helper()
	s, err := redisstore.Open(context.Background(), srv.URL(), redisstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	srv := redistest.Start(t)
	var mu sync.Mutex
	prefixes := map[store.Store]string{}
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		defer mu.Unlock()
		n++
		p := fmt.Sprintf("t%d:", n) // each case its own key space on one server
		s := open(t, srv, p)
		prefixes[s] = p
		return s
	}, storetest.Reopen(func(t *testing.T, old store.Store) store.Store {
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		srv.Restart(t) // redis-server itself restarts, on its append-only file
		return open(t, srv, prefixes[old])
	}))
}

func TestDays(t *testing.T) {
	rome, err := time.LoadLocation("Europe/Rome")
	if err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t)
	storetest.RunDays(t, func(t *testing.T) store.Store {
		s, err := redisstore.Open(context.Background(), srv.URL(), redisstore.Options{Location: rome})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestTwoControllers runs two Stores (two connections, as two controller
// processes) on one redis-server, racing on the same event ids, nonces,
// grants and counters: each is won exactly once.
func TestTwoControllers(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := open(t, srv, "cw:"), open(t, srv, "cw:")
	stores := []store.Store{a, b}
	const events, nonces, workers = 200, 200, 8
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	applied := map[string]int{}
	won := map[string]int{}
	taken := 0
	var errs []error
	for i := range nonces {
		if err := a.Put(ctx, fmt.Sprintf("grant:%d", i), []byte("g"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		s := stores[w%2]
		wg.Go(func() {
			for i := range events {
				k := (i + w*17) % events
				ev := store.SessionEvent{
					ID: fmt.Sprintf("e%d", k), Kind: store.EventInterim, SessionID: fmt.Sprintf("s%d", k%10),
					GatewayID: "gw", SiteID: "park", ClientMAC: "02:00:00:00:00:01", UserID: "u", Method: "sms",
					Start: base, At: base.Add(time.Duration(k) * time.Second), BytesDown: uint64(k) * 100, BytesUp: uint64(k),
				}
				dup, err := s.RecordEvent(ctx, ev)
				nonce := fmt.Sprintf("nonce:%d", k)
				ok, err2 := s.PutIfAbsent(ctx, nonce, []byte{byte(w)}, time.Minute)
				_, err3 := s.Take(ctx, fmt.Sprintf("grant:%d", k))
				_, err4 := s.Incr(ctx, "rate:shared", 1, time.Minute)
				mu.Lock()
				if !dup && err == nil {
					applied[ev.ID]++
				}
				if ok {
					won[nonce]++
				}
				if err3 == nil {
					taken++
				}
				for _, e := range []error{err, err2, err4} {
					if e != nil {
						errs = append(errs, e)
					}
				}
				if err3 != nil && !errors.Is(err3, store.ErrNotFound) {
					errs = append(errs, err3)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	for k := range events {
		if n := applied[fmt.Sprintf("e%d", k)]; n != 1 {
			t.Errorf("event e%d applied %d times, want 1", k, n)
		}
		if n := won[fmt.Sprintf("nonce:%d", k)]; n != 1 {
			t.Errorf("nonce %d accepted %d times, want 1", k, n)
		}
	}
	if taken != nonces {
		t.Errorf("%d grants taken, want %d (each once)", taken, nonces)
	}
	n, err := b.Incr(ctx, "rate:shared", 0, time.Minute)
	if err != nil || n != workers*events {
		t.Errorf("shared counter = %d, %v; want %d", n, err, workers*events)
	}
	// Session k%10's bytes are its highest event's: 190+k.
	var want store.Totals
	want.Sessions = 10
	for k := 190; k < 200; k++ {
		want.BytesDown += uint64(k) * 100
		want.BytesUp += uint64(k)
	}
	for _, s := range stores {
		got, err := s.SiteTotals(ctx, "park")
		if err != nil || got != want {
			t.Errorf("SiteTotals = %+v, %v; want %+v", got, err, want)
		}
	}
}

// TestExpiryIsRedis checks that ephemeral keys carry a Redis TTL, so they
// leave the server, not just our reads.
func TestExpiryIsRedis(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := open(t, srv, "cw:")
	if err := s.Put(ctx, "code:x", []byte("1"), 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Incr(ctx, "rate:x", 1, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := redisDBSize(t, srv)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still in redis 5s after their 200ms TTL", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkStore measures the controller's side (client CPU and round
// trips) against a real redis-server on loopback.
func BenchmarkStore(b *testing.B) {
	srv := redistest.Start(b)
	n := 0
	storetest.Bench(b, func(b *testing.B) store.Store {
		n++
		s, err := redisstore.Open(context.Background(), srv.URL(), redisstore.Options{Prefix: fmt.Sprintf("b%d:", n)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}

// TestOpenErrors checks that a bad URL or an unreachable Redis gives a
// clear error that never shows the password.
func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct{ name, url, want string }{
		{"bad port", "redis://:s3cret-pw@127.0.0.1:notaport/0", "parsing redis url"},
		{"bad scheme", "http://:s3cret-pw@127.0.0.1:6379/0", "parsing redis url"},
		{"nobody listening", "redis://:s3cret-pw@127.0.0.1:1/0", "connecting to redis at 127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := redisstore.Open(ctx, tc.url, redisstore.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q: want it to contain %q and not the password", err, tc.want)
			}
		})
	}
}
