package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func client(t *testing.T, s *redistest.Server) *redis.Client {
	o, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRestartKeepsData checks the helper's promise: a clean restart keeps
// what was written (append-only file), on the same address.
func TestRestartKeepsData(t *testing.T) {
	ctx := context.Background()
	s := redistest.Start(t)
	c := client(t, s)
	if err := c.Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr
	s.Restart(t)
	if s.Addr != addr {
		t.Errorf("address after restart %s, want %s", s.Addr, addr)
	}
	got, err := client(t, s).Get(ctx, "k").Result()
	if err != nil || got != "v1" {
		t.Fatalf("Get after restart = %q, %v; want v1", got, err)
	}
}

// TestKillAfterFsync checks that a crash (SIGKILL) loses nothing written
// more than a second before it (appendfsync everysec).
func TestKillAfterFsync(t *testing.T) {
	ctx := context.Background()
	s := redistest.Start(t)
	if err := client(t, s).Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	s.Kill(t)
	s.Restart(t)
	got, err := client(t, s).Get(ctx, "k").Result()
	if err != nil || got != "v1" {
		t.Fatalf("Get after kill and restart = %q, %v; want v1", got, err)
	}
}

// TestPasswordRequired checks that the server refuses a client without
// the password.
func TestPasswordRequired(t *testing.T) {
	s := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("PING without password succeeded")
	}
}
