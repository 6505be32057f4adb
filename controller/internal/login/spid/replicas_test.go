package spid

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/civicwifi/civicwifi/controller/internal/store/redisstore"
	"github.com/civicwifi/civicwifi/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestReplicasOnRedis: two controllers on one real redis-server behind one public URL that alternates between
// them, so the start, the login page, the ACS and the grant land on different replicas: all login state is in the
// Store. A replay reaching the other replica is refused as well, and Redis holds no fiscal code.
func TestReplicasOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	st, err := redisstore.Open(ctx, srv.URL(), redisstore.Options{Prefix: "spidtest:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	h := newHarnessOn(t, st, func() []byte { return dumpRedis(t, rdb) }, 2)

	b := newBrowser(t)
	end := b.walk(h.start("parco-gw1"))
	if end.url.Path != "/portal/spid/done" || len(b.acsForms) != 1 {
		t.Fatalf("walk ended at %d %s (%s)", end.status, end.url, end.reason)
	}
	// Each replay goes to the next replica: both refuse it.
	for i := range 2 {
		again := b.post(h.ctrl.URL+PathACS, b.acsForms[0])
		if again.status != 409 || again.reason != "replayed" {
			t.Errorf("replay %d: %d %q", i, again.status, again.reason)
		}
	}
	if _, err := h.grant("parco-gw1", stateOf(end)); err != nil {
		t.Fatalf("grant: %v", err)
	}
	if _, err := h.grant("parco-gw1", stateOf(end)); err == nil {
		t.Error("second grant on the other replica")
	}
	keys, _ := rdb.Keys(ctx, "spidtest:*").Result()
	if len(keys) == 0 {
		t.Fatal("nothing in Redis: the test did not use it")
	}
	assertNoFiscalCode(t, h)
}

// dumpRedis returns every key and value in rdb as text (values by type, never DUMP's compressed form).
func dumpRedis(t *testing.T, rdb *redis.Client) []byte {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, k := range keys {
		typ, _ := rdb.Type(ctx, k).Result()
		var v any
		switch typ {
		case "string":
			v, err = rdb.Get(ctx, k).Result()
		case "hash":
			v, err = rdb.HGetAll(ctx, k).Result()
		case "list":
			v, err = rdb.LRange(ctx, k, 0, -1).Result()
		case "set":
			v, err = rdb.SMembers(ctx, k).Result()
		case "zset":
			v, err = rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "stream":
			v, err = rdb.XRange(ctx, k, "-", "+").Result()
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s %v\n", k, typ, v)
	}
	return b.Bytes()
}
