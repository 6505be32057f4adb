package captive

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// discardWriter is a ResponseWriter that keeps its header map between
// requests, as net/http's does not: what is left is the handler's own cost.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

func benchRequest(host, target, from string) *http.Request {
	r := httptest.NewRequest("GET", target, nil)
	r.Host, r.RemoteAddr = host, from+":40000"
	return r
}

// A redirect allocates only its Location (and the slice holding it); a
// probe answered after login allocates nothing. The portal must stay
// cheap in a crowded park's probe storm.
func TestHotPathAllocations(t *testing.T) {
	tp := newTestPortal(t, func(c *Config) { c.Rate = 1 << 20 })
	w := &discardWriter{h: http.Header{}}
	for _, tc := range []struct {
		name string
		r    *http.Request
		code int
		max  float64
	}{
		{"redirect", benchRequest("www.example.it", "/news?id=1", phone), 302, 2},
		{"probe before login", benchRequest("connectivitycheck.gstatic.com", "/generate_204", phone), 302, 2},
		{"probe after login", benchRequest("captive.apple.com", "/hotspot-detect.html", "10.20.0.12"), 200, 0},
		{"authorised, on a pre-login connection", benchRequest("www.example.it", "/", "10.20.0.12"), 302, 2},
	} {
		tp.login("10.20.0.12")
		got := testing.AllocsPerRun(200, func() { tp.s.ServeHTTP(w, tc.r) })
		if w.code != tc.code {
			t.Errorf("%s: status %d, want %d", tc.name, w.code, tc.code)
		}
		if got > tc.max {
			t.Errorf("%s: %.0f allocations per request, want at most %.0f", tc.name, got, tc.max)
		}
	}
}

func BenchmarkRedirect(b *testing.B) {
	tp := newTestPortal(b)
	r := benchRequest("www.example.it", "/news?id=1", phone)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		tp.s.ServeHTTP(w, r)
	}
}

func BenchmarkProbeAfterLogin(b *testing.B) {
	tp := newTestPortal(b)
	tp.login(phone)
	r := benchRequest("connectivitycheck.gstatic.com", "/generate_204", phone)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		tp.s.ServeHTTP(w, r)
	}
}

func BenchmarkLanding(b *testing.B) {
	tp := newTestPortal(b)
	r := benchRequest(portal, "/portal/", phone)
	b.ReportAllocs()
	for b.Loop() {
		tp.s.ServeHTTP(httptest.NewRecorder(), r)
	}
}
