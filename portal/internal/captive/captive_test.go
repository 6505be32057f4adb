package captive

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

type fakeGate struct {
	granted []netip.Addr
}

func (g *fakeGate) Authorised(ip netip.Addr) bool {
	for _, a := range g.granted {
		if a == ip {
			return true
		}
	}
	return false
}
func (g *fakeGate) ClickThrough(_ context.Context, ip netip.Addr) error {
	g.granted = append(g.granted, ip)
	return nil
}

func newTest(click bool) (*Server, *fakeGate) {
	g := &fakeGate{}
	return New(Config{Listen: netip.MustParseAddrPort("10.20.0.1:2050"), SiteName: "Parco Pertini", ClickThrough: click}, g,
		slog.New(slog.NewTextHandler(io.Discard, nil))), g
}

func do(s *Server, method, target, host string, form url.Values) *httptest.ResponseRecorder {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, target, body)
	r.Host = host
	r.RemoteAddr = "10.20.0.11:40000"
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	return w
}

func TestRedirectCarriesOriginalURL(t *testing.T) {
	s, _ := newTest(true)
	for _, tc := range []struct {
		name, target, host, wantLoc string
	}{
		{"plain", "/news?id=1", "www.example.it", "http://10.20.0.1:2050/portal/?url=http%3A%2F%2Fwww.example.it%2Fnews%3Fid%3D1"},
		{"probe", "/generate_204", "connectivitycheck.gstatic.com", "http://10.20.0.1:2050/portal/?url=http%3A%2F%2Fconnectivitycheck.gstatic.com%2Fgenerate_204"},
		{"bad host header", "/", "evil.example/<script>", "http://10.20.0.1:2050/portal/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(s, "GET", tc.target, tc.host, nil)
			if w.Code != http.StatusFound {
				t.Fatalf("status = %d, want 302", w.Code)
			}
			if got := w.Header().Get("Location"); got != tc.wantLoc {
				t.Errorf("Location = %q, want %q", got, tc.wantLoc)
			}
			if w.Header().Get("Connection") != "close" {
				t.Error("redirect does not close the connection")
			}
		})
	}
}

func TestGrant(t *testing.T) {
	s, g := newTest(true)
	w := do(s, "POST", "/portal/grant", "10.20.0.1:2050", url.Values{"url": {"http://www.example.it/x"}})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "http://www.example.it/x" {
		t.Fatalf("grant = %d %q", w.Code, w.Header().Get("Location"))
	}
	if len(g.granted) != 1 || g.granted[0] != netip.MustParseAddr("10.20.0.11") {
		t.Fatalf("granted = %v", g.granted)
	}
	// No open redirect to other schemes.
	for _, target := range []string{"javascript:alert(1)", "data:text/html,x", "//evil.example/", "file:///etc/passwd"} {
		w := do(s, "POST", "/portal/grant", "10.20.0.1:2050", url.Values{"url": {target}})
		if loc := w.Header().Get("Location"); loc != "" {
			t.Errorf("url=%q redirected to %q", target, loc)
		}
	}
}

func TestGrantDisabled(t *testing.T) {
	s, g := newTest(false)
	w := do(s, "POST", "/portal/grant", "10.20.0.1:2050", url.Values{})
	if w.Code != http.StatusForbidden || len(g.granted) != 0 {
		t.Fatalf("grant on a site without click-through = %d, granted %v", w.Code, g.granted)
	}
	w = do(s, "GET", "/portal/", "10.20.0.1:2050", nil)
	if strings.Contains(w.Body.String(), "<form") {
		t.Error("landing page offers click-through on a site without it")
	}
}
