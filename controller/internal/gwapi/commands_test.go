package gwapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/google/go-cmp/cmp"
)

// TestCommands: another site's gateway neither sees nor can ack a site's command; the site's gateway runs it,
// gets a new one within a second of the notify, and its acks reach the controller.
func TestCommands(t *testing.T) {
	h := newHarness(t, nil)
	kick := apiclient.Command{ID: "cmd-1", Kind: apiclient.CommandKick, ClientMAC: "02:00:00:00:00:01",
		IssuedAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	h.commands.queue("site-a", kick)

	cb := h.client(t, "gw-b", nil)
	if got, err := cb.Commands(t.Context(), 0); err != nil || len(got) != 0 {
		t.Errorf("gw-b polled %v, %v; want none of site-a's", got, err)
	}
	if err := cb.AckCommands(t.Context(), []apiclient.CommandAck{{ID: "cmd-1", OK: true}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.commands.Pending(t.Context(), "site-a", "gw-a"); len(got) != 1 {
		t.Fatalf("gw-b's ack of site-a's command removed it: pending %v", got)
	}
	if l := h.logs.records("ack of an unknown command"); len(l) != 1 || l[0]["gateway"] != "gw-b" {
		t.Errorf("log lines %v, want one for gw-b", l)
	}

	ca := h.client(t, "gw-a", func(c *apiclient.Config) { c.Wait = 10 * time.Second })
	type ran struct {
		cmd apiclient.Command
		at  time.Time
	}
	got := make(chan ran, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		done <- ca.WatchCommands(ctx, func(_ context.Context, c apiclient.Command) apiclient.CommandAck {
			got <- ran{c, time.Now()}
			return apiclient.CommandAck{OK: true}
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	first := <-got
	if diff := cmp.Diff(kick, first.cmd); diff != "" {
		t.Errorf("first command (-want +got):\n%s", diff)
	}
	waitFor(t, 2*time.Second, func() bool {
		got, _ := h.commands.Pending(t.Context(), "site-a", "gw-a")
		return len(got) == 0
	})

	time.Sleep(300 * time.Millisecond) // the next poll is held
	extend := apiclient.Command{ID: "cmd-2", Kind: apiclient.CommandExtend, ClientMAC: "02:00:00:00:00:02",
		Extend: apiclient.Duration(30 * time.Minute), IssuedAt: time.Date(2026, 11, 25, 10, 5, 0, 0, time.UTC)}
	h.commands.queue("site-a", extend)
	queued := time.Now()
	h.srv.NotifyCommands("site-a")
	second := <-got
	if diff := cmp.Diff(extend, second.cmd); diff != "" {
		t.Errorf("second command (-want +got):\n%s", diff)
	}
	if lag := second.at.Sub(queued); lag > time.Second {
		t.Errorf("command reached the gateway after %v, want within 1 s", lag)
	}
	waitFor(t, 2*time.Second, func() bool {
		h.commands.mu.Lock()
		defer h.commands.mu.Unlock()
		return len(h.commands.acked) == 2
	})
	h.commands.mu.Lock()
	defer h.commands.mu.Unlock()
	want := map[string]apiclient.CommandAck{"cmd-1": {ID: "cmd-1", OK: true}, "cmd-2": {ID: "cmd-2", OK: true}}
	if diff := cmp.Diff(want, h.commands.acked); diff != "" {
		t.Errorf("acks (-want +got):\n%s", diff)
	}
}

// TestCommandRunOnceWhenAckLost: the first ack never reaches the controller (cut on the way), so the command is
// offered again; the gateway acks it with the remembered result instead of running it twice.
func TestCommandRunOnceWhenAckLost(t *testing.T) {
	h := newHarness(t, nil)
	var drop atomic.Int32
	drop.Store(1)
	fwd := httputil.NewSingleHostReverseProxy(mustURL(t, h.http.URL))
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/commands/ack") && drop.Add(-1) >= 0 {
			panic(http.ErrAbortHandler)
		}
		fwd.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	h.commands.queue("site-a", apiclient.Command{ID: "cmd-x", Kind: apiclient.CommandExtend, ClientMAC: "02:00:00:00:00:03",
		Extend: apiclient.Duration(time.Hour)})
	c := h.client(t, "gw-a", func(c *apiclient.Config) { c.BaseURL = proxy.URL; c.Wait = time.Second })
	var runs atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		done <- c.WatchCommands(ctx, func(context.Context, apiclient.Command) apiclient.CommandAck {
			runs.Add(1)
			return apiclient.CommandAck{OK: false, Error: "no such client"}
		})
	}()
	waitFor(t, 5*time.Second, func() bool {
		h.commands.mu.Lock()
		defer h.commands.mu.Unlock()
		return len(h.commands.acked) == 1
	})
	cancel()
	<-done
	if drop.Load() >= 0 {
		t.Fatal("the first ack was not cut: the test proves nothing")
	}
	if runs.Load() != 1 {
		t.Errorf("command ran %d times, want once", runs.Load())
	}
	h.commands.mu.Lock()
	defer h.commands.mu.Unlock()
	if got := h.commands.acked["cmd-x"]; got != (apiclient.CommandAck{ID: "cmd-x", OK: false, Error: "no such client"}) {
		t.Errorf("ack %+v, want the remembered failure", got)
	}
}

func mustURL(t testing.TB, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
