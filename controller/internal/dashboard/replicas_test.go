package dashboard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store/redisstore"
	"github.com/civicwifi/civicwifi/internal/redistest"
)

// Two controller replicas behind a load balancer share one real Redis:
// a session begun on one is good on the other, signing out on one ends it
// on both, the login rate limit counts attempts on both, and a kick sent
// through the second with the first's CSRF token is queued once.
func TestReplicasOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	prefix := fmt.Sprintf("cwdash%d:", rand.Uint32())
	open := func() *redisstore.Store {
		st, err := redisstore.Open(context.Background(), srv.URL(), redisstore.Options{Prefix: prefix, Location: time.UTC})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	clk := &clock{t: time.Now().UTC()}
	a := newHarnessOver(t, clk, open(), "")
	b := newHarnessOver(t, clk, open(), a.accts)
	sd := a.seed()
	mac := sd.open["parco-pertini"][0].ClientMAC

	// One browser, both replicas (cookies are per host, not per port).
	c, tok := a.login("ida")
	if r := b.do(c, "GET", "/admin/sites/parco-pertini", nil); r.code != http.StatusOK || csrfOf(r.body) != tok {
		t.Fatalf("replica b with a's session: %d", r.code)
	}
	if r := b.do(c, "POST", "/admin/sites/parco-pertini/kick", url.Values{"mac": {mac}, "csrf": {tok}}); r.code != http.StatusSeeOther {
		t.Fatalf("kick through b: %d %.300s", r.code, r.body)
	}
	if cmds := pending(t, a, "pertini-gw1"); len(cmds) != 1 || cmds[0].ClientMAC != mac {
		t.Errorf("pending after the kick: %+v", cmds)
	}
	if r := b.do(c, "POST", "/admin/logout", url.Values{"csrf": {tok}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout on b: %d", r.code)
	}
	if r := a.do(c, "GET", "/admin/overview", nil); r.code != http.StatusSeeOther {
		t.Errorf("a after signing out on b: %d, want 303", r.code)
	}

	// Rate limit across replicas: 3 wrong on a, 2 on b, then the right password on a is refused.
	for i, h := range []*harness{a, a, a, b, b} {
		if r := h.loginAttempt(h.client(), "oscar", "wrong"); r.code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i+1, r.code)
		}
	}
	if r := a.loginAttempt(a.client(), "oscar", password("oscar")); r.code != http.StatusTooManyRequests {
		t.Errorf("sixth attempt, on a: %d, want 429", r.code)
	}
}
