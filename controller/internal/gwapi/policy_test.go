package gwapi_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
)

// TestPolicyLongPollWakes: a gateway waiting on its policy gets the new one within a second of the controller's
// notify, while the other site's gateway, also waiting, is not woken with anything.
func TestPolicyLongPollWakes(t *testing.T) {
	h := newHarness(t, nil) // no Recheck: only the notify can wake the poll
	ca, cb := h.client(t, "gw-a", nil), h.client(t, "gw-b", nil)
	p, changed, err := ca.FetchPolicy(t.Context(), "", 0)
	if err != nil || !changed {
		t.Fatalf("first fetch: %v changed=%v", err, changed)
	}
	pb, _, err := cb.FetchPolicy(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		p       apiclient.Policy
		changed bool
		err     error
		at      time.Time
	}
	ra, rb := make(chan result, 1), make(chan result, 1)
	go func() {
		p, ch, err := ca.FetchPolicy(t.Context(), p.Version, 10*time.Second)
		ra <- result{p, ch, err, time.Now()}
	}()
	go func() {
		p, ch, err := cb.FetchPolicy(t.Context(), pb.Version, 2*time.Second)
		rb <- result{p, ch, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // both polls are held by now
	const next = `{"rate_down":"2mbit"}`
	v := h.policies.set("site-a", next)
	changedAt := time.Now()
	h.srv.NotifyPolicy("site-a")
	h.srv.NotifyPolicy("site-b") // a spurious wake: site-b's poll must re-check and keep waiting

	got := <-ra
	if got.err != nil || !got.changed || got.p.Version != v || string(got.p.Body) != next {
		t.Fatalf("site-a poll: %+v, want version %s body %s", got, v, next)
	}
	if lag := got.at.Sub(changedAt); lag > time.Second {
		t.Errorf("site-a got the change after %v, want within 1 s", lag)
	}
	gb := <-rb
	if gb.err != nil || gb.changed {
		t.Errorf("site-b poll: %+v, want no change (304)", gb)
	}
	if held := gb.at.Sub(changedAt); held < time.Second {
		t.Errorf("site-b poll returned %v after the other site's change, want it held to its 2 s wait", held)
	}
}

// TestPolicyLongPollTimeout: with no change the controller answers 304 after the wait, over real HTTP.
func TestPolicyLongPollTimeout(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client(t, "gw-a", nil)
	p, _, err := c.FetchPolicy(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, changed, err := c.FetchPolicy(t.Context(), p.Version, time.Second)
	if err != nil || changed || got.Version != p.Version {
		t.Fatalf("got %+v changed=%v err=%v, want not modified", got, changed, err)
	}
	if d := time.Since(start); d < time.Second || d > 3*time.Second {
		t.Errorf("304 after %v, want after the 1 s wait", d)
	}
	// An ETag that is not current gets the policy at once, without waiting.
	start = time.Now()
	got, changed, err = c.FetchPolicy(t.Context(), "stale", 10*time.Second)
	if err != nil || !changed || got.Version != p.Version || time.Since(start) > time.Second {
		t.Errorf("stale ETag: %+v changed=%v err=%v after %v", got, changed, err, time.Since(start))
	}
}

// TestPolicyLongPollSynctest runs the server's handler in a synctest bubble: a 30 s poll answers 304 after
// exactly the capped wait of fake time, and a poll asking for 600 s is held only MaxWait.
func TestPolicyLongPollSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessNoListen(t, nil)
		_, v, _ := h.policies.Policy(t.Context(), "site-a")
		for _, tc := range []struct {
			query string
			want  time.Duration
		}{
			{"wait=30", 30 * time.Second},
			{"wait=600", 30 * time.Second}, // MaxWait
			{"wait=0", 0},
		} {
			m := wire{gw: "gw-a", method: "GET", target: "/v1/sites/site-a/policy?" + tc.query,
				ts: time.Now().Unix(), nonce: apiclient.NewNonce()}
			sign(t, &m, h.priv["gw-a"])
			req := httptest.NewRequest(m.method, m.target, nil)
			req.Header = m.hdr
			req.Header.Set("If-None-Match", `"`+v+`"`)
			rec := httptest.NewRecorder()
			start := time.Now()
			h.srv.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
				t.Errorf("%s: %d %q, want 304 and no body", tc.query, rec.Code, rec.Body)
			}
			if d := time.Since(start); d != tc.want {
				t.Errorf("%s: answered after %v, want %v", tc.query, d, tc.want)
			}
			if rec.Header().Get("ETag") != `"`+v+`"` || rec.Header().Get(apiclient.HeaderSignature) == "" {
				t.Errorf("%s: headers %v, want the ETag and a signature", tc.query, rec.Header())
			}
		}
	})
}

// TestBootFromCache: a gateway that fetched its policy once boots from the disk cache while the controller is
// down (a new Client, as after a restart), refuses a cache file that was edited, and says so when it has none.
func TestBootFromCache(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client(t, "gw-a", nil)
	fresh, err := c.BootPolicy(t.Context())
	if err != nil || fresh.FromCache || string(fresh.Body) != `{"rate_down":"5mbit"}` {
		t.Fatalf("boot with the controller up: %+v, %v", fresh, err)
	}
	cacheFile := filepath.Join(h.dir, "gw-a", "policy.json")
	if st, err := os.Stat(cacheFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v, %v; want mode 0600", st, err)
	}
	h.http.Close()

	// The controller is gone: connection refused at its address.
	if _, err := net.DialTimeout("tcp", h.http.Listener.Addr().String(), time.Second); err == nil {
		t.Fatal("controller still reachable")
	}
	c = h.client(t, "gw-a", nil)
	got, err := c.BootPolicy(t.Context())
	if err != nil {
		t.Fatalf("boot with the controller down: %v", err)
	}
	if !got.FromCache || got.Version != fresh.Version || string(got.Body) != string(fresh.Body) {
		t.Errorf("booted with %+v, want the cached %+v", got, fresh)
	}

	// A cache edited on disk (a 50 Mbit/s "policy") is not trusted.
	data, _ := os.ReadFile(cacheFile)
	tampered := []byte(replaceOnce(string(data), `"body":"`, `"body":"ICAg`)) // base64 of three leading spaces
	if err := os.WriteFile(cacheFile, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BootPolicy(t.Context()); !errors.Is(err, apiclient.ErrNoCache) || !errors.Is(err, apiclient.ErrBadSignature) {
		t.Errorf("boot from an edited cache: %v, want ErrNoCache and ErrBadSignature", err)
	}
	os.Remove(cacheFile)
	if _, err := c.BootPolicy(t.Context()); !errors.Is(err, apiclient.ErrNoCache) {
		t.Errorf("boot with neither: %v, want ErrNoCache", err)
	}
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	panic("not found: " + old)
}

// TestPolicyRecheck: with Config.Recheck set, a change nobody notified (another replica's reload) is served at
// the next recheck: changed at 12 s, recheck every 5 s, answered at 15 s of fake time.
func TestPolicyRecheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessNoListen(t, func(c *gwapi.Config) { c.Recheck = 5 * time.Second })
		_, v, _ := h.policies.Policy(t.Context(), "site-a")
		m := wire{gw: "gw-a", method: "GET", target: "/v1/sites/site-a/policy?wait=30", ts: time.Now().Unix(), nonce: apiclient.NewNonce()}
		sign(t, &m, h.priv["gw-a"])
		req := httptest.NewRequest(m.method, m.target, nil)
		req.Header = m.hdr
		req.Header.Set("If-None-Match", `"`+v+`"`)
		go func() {
			time.Sleep(12 * time.Second)
			h.policies.set("site-a", `{"rate_down":"2mbit"}`)
		}()
		rec := httptest.NewRecorder()
		start := time.Now()
		h.srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Body.String() != `{"rate_down":"2mbit"}` || time.Since(start) != 15*time.Second {
			t.Errorf("got %d %q after %v, want 200 with the new policy after 15 s", rec.Code, rec.Body, time.Since(start))
		}
	})
}

// TestWatchPolicyAcrossOutage: a gateway watching its policy while the controller is down retries with back-off,
// gets the policy once the controller is up, then each change in order, and nothing twice.
func TestWatchPolicyAcrossOutage(t *testing.T) {
	h := newHarnessNoListen(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := apiclient.New(apiclient.Config{BaseURL: "http://" + addr, Site: "site-a", GatewayID: "gw-a",
		Key: h.priv["gw-a"], ControllerKey: h.ctrlPub, Wait: 5 * time.Second,
		Backoff: apiclient.Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan apiclient.Policy, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.WatchPolicy(ctx, "", func(p apiclient.Policy) { got <- p }) }()
	time.Sleep(500 * time.Millisecond) // several refused connections
	select {
	case p := <-got:
		t.Fatalf("applied %+v with the controller down", p)
	default:
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h.srv.Handler()}
	go srv.Serve(ln)
	defer srv.Close()

	first := <-got
	if string(first.Body) != `{"rate_down":"5mbit"}` {
		t.Errorf("first policy %s", first.Body)
	}
	for _, rate := range []string{"2mbit", "3mbit", "4mbit"} {
		body := `{"rate_down":"` + rate + `"}`
		h.policies.set("site-a", body)
		h.srv.NotifyPolicy("site-a")
		select {
		case p := <-got:
			if string(p.Body) != body {
				t.Errorf("applied %s, want %s", p.Body, body)
			}
		case <-time.After(time.Second):
			t.Fatalf("change to %s not applied within 1 s", rate)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	if len(got) != 0 {
		t.Errorf("%d extra applies", len(got))
	}
}
