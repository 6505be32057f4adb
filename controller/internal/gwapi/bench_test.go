package gwapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
)

type discardSink struct{}

func (discardSink) Heartbeat(_ context.Context, _ gwapi.Origin, _ apiclient.Heartbeat) error {
	return nil
}
func (discardSink) SessionEvent(context.Context, gwapi.Origin, apiclient.SessionEvent) (bool, error) {
	return false, nil
}

// BenchmarkHeartbeatRoundTrip: one gateway's signed heartbeat over loopback HTTP, answer verified (client and
// server in this process, so both sides' CPU is in the figure).
func BenchmarkHeartbeatRoundTrip(b *testing.B) {
	h := newHarness(b, func(c *gwapi.Config) { c.Sink = discardSink{}; c.Log = nil })
	c := h.client(b, "gw-a", nil)
	hb := apiclient.Heartbeat{Version: "0.3.0", UptimeSeconds: 3600, ClientsOnline: 42, SentAt: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Heartbeat(b.Context(), hb); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerVerify: the controller's cost per heartbeat without the network: parse headers, look up the
// key, hash the body, verify the Ed25519 signature, store the nonce, decode, answer signed.
func BenchmarkServerVerify(b *testing.B) {
	h := newHarnessNoListen(b, func(c *gwapi.Config) { c.Sink = discardSink{}; c.Log = nil })
	body, _ := json.Marshal(apiclient.Heartbeat{Version: "0.3.0", UptimeSeconds: 3600, ClientsOnline: 42, SentAt: time.Now()})
	reqs := make([]*http.Request, 0, 1<<16)
	mk := func() *http.Request {
		m := wire{gw: "gw-a", method: "POST", target: "/v1/sites/site-a/heartbeat", body: body,
			ts: time.Now().Unix(), nonce: apiclient.NewNonce()}
		sign(b, &m, h.priv["gw-a"])
		r := httptest.NewRequest(m.method, m.target, nil)
		r.Header = m.hdr
		return r
	}
	for range cap(reqs) {
		reqs = append(reqs, mk())
	}
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := reqs[i%len(reqs)]
		if i >= len(reqs) { // a nonce is single use: sign a fresh one (rare: only past 65536 iterations)
			b.StopTimer()
			r = mk()
			b.StartTimer()
		}
		i++
		r.Body = io.NopCloser(&bodyReader{b: body})
		w.code = 0
		clear(w.h)
		h.srv.Handler().ServeHTTP(w, r)
		if w.code != http.StatusNoContent {
			b.Fatalf("status %d", w.code)
		}
	}
}

type nullWriter struct {
	h    http.Header
	code int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nullWriter) WriteHeader(code int)        { w.code = code }

type bodyReader struct {
	b   []byte
	off int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}
