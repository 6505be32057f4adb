package boltstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/civicwifi/civicwifi/controller/internal/store/storetest"
)

func open(t *testing.T, path string, opts boltstore.Options) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "store.db"), boltstore.Options{})
	}, storetest.Reopen(func(t *testing.T, old store.Store) store.Store {
		path := old.(*boltstore.Store).Path()
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		return open(t, path, boltstore.Options{})
	}))
}

func TestDays(t *testing.T) {
	rome, err := time.LoadLocation("Europe/Rome")
	if err != nil {
		t.Fatal(err)
	}
	storetest.RunDays(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "store.db"), boltstore.Options{Location: rome})
	})
}

// TestSweep checks that expired keys and old event ids leave the file, not
// only that reads stop seeing them.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := open(t, filepath.Join(t.TempDir(), "store.db"), boltstore.Options{Now: func() time.Time { return clock() }, EventTTL: time.Hour, SweepEvery: time.Hour})
	if err := s.Put(ctx, "short", []byte("x"), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "long", []byte("x"), 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	ev := store.SessionEvent{ID: "e1", Kind: store.EventStart, SessionID: "s1", GatewayID: "gw", SiteID: "park", ClientMAC: "02:00:00:00:00:01", At: now}
	if _, err := s.RecordEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(); err != nil || n != 0 {
		t.Fatalf("Sweep now = %d, %v; want 0 deleted", n, err)
	}
	now = now.Add(90 * time.Minute)
	if n, err := s.Sweep(); err != nil || n != 2 {
		t.Fatalf("Sweep after 90m = %d, %v; want 2 deleted (short key, event id)", n, err)
	}
	if _, err := s.Get(ctx, "long"); err != nil {
		t.Errorf("long-lived key swept: %v", err)
	}
	if _, err := s.Get(ctx, "short"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(short) = %v, want ErrNotFound", err)
	}
}

// TestSecondOpenWaits checks that a second process cannot open the same
// file while the first has it (bbolt's flock), rather than corrupting it.
func TestSecondOpenWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	open(t, path, boltstore.Options{})
	start := time.Now()
	// Same process, same file: bbolt's flock is per open file description.
	if s, err := boltstore.Open(path, boltstore.Options{LockTimeout: 300 * time.Millisecond}); err == nil {
		s.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if time.Since(start) < 200*time.Millisecond { // bbolt retries the flock every 50ms
		t.Errorf("second Open gave up after %v, before its 300ms lock timeout", time.Since(start))
	}
}

// BenchmarkStore writes to a file on the test's temporary directory (on
// this machine, ext4: every commit is an fsync).
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		s, err := boltstore.Open(filepath.Join(b.TempDir(), "store.db"), boltstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}
