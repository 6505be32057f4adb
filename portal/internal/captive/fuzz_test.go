package captive

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// The redirect never sends a resident anywhere but the portal, and the URL
// it carries is always a signed http URL on the request's own host.
func FuzzRedirect(f *testing.F) {
	for _, s := range [][2]string{
		{"www.example.it", "/news?id=1"}, {"captive.apple.com", "/hotspot-detect.html"}, {"EVIL.example:80", "/%2e%2e/"},
		{"a@b", "/"}, {"x", "//evil.example/"}, {"[::1]:80", "/?a=b&c=d#frag"}, {"10.20.0.1:2050", "/portal/"},
	} {
		f.Add(s[0], s[1])
	}
	tp := newTestPortal(f)
	f.Fuzz(func(t *testing.T, host, uri string) {
		r := httptest.NewRequest("GET", "http://x/", nil)
		r.Host, r.RequestURI, r.RemoteAddr = host, uri, phone+":1"
		if u, err := url.ParseRequestURI(uri); err == nil {
			r.URL = u
		} else {
			r.URL = &url.URL{Path: "/"}
		}
		w := httptest.NewRecorder()
		tp.s.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("status %d", w.Code)
		}
		if tp.s.own(hostOnly(host)) {
			return // the pages; their own tests
		}
		loc := w.Header().Get("Location")
		if w.Code != http.StatusFound || !strings.HasPrefix(loc, "http://10.20.0.1:2050/portal/") {
			t.Fatalf("%d to %q", w.Code, loc)
		}
		lu, err := url.Parse(loc)
		if err != nil {
			t.Fatalf("Location %q: %v", loc, err)
		}
		target := lu.Query().Get("url")
		if target == "" {
			return
		}
		if !tp.s.sign.validURL(target, lu.Query().Get("sig")) {
			t.Fatalf("unsigned target %q", target)
		}
		tu, err := url.Parse(target)
		if err != nil || tu.Scheme != "http" || tu.User != nil || !strings.EqualFold(tu.Host, host) || safeTarget(target) == "" {
			t.Fatalf("target %q for Host %q", target, host)
		}
	})
}

func FuzzSafeTarget(f *testing.F) {
	for _, s := range []string{"http://a/", "javascript:alert(1)", "//evil", "http://a@b/", "https://x:1/p?q#f", "HTTP://X/", "http:/x", "http://[::1]/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := safeTarget(raw)
		if got == "" {
			return
		}
		u, err := url.Parse(got)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || !validHost(u.Host) {
			t.Fatalf("safeTarget(%q) = %q", raw, got)
		}
	})
}
