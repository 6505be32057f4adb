package captive

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// A real headless Chromium (through the lab's cwbrowse) walks the portal as
// a phone would, on loopback: a plain http URL on a foreign host lands on
// the portal, the landing page needs no JavaScript, one tap accepts the
// terms, and the browser reaches the original URL. Chromium resolves the
// foreign name to loopback (--host-resolver-rules); the test's front
// handler plays the firewall: a logged-in client's foreign request goes to
// the "internet" instead of the portal. Screenshots of the landing page in
// Italian and English are written to $CW_SCREENSHOTS (or the test's temp
// dir).
func TestChromiumClickThrough(t *testing.T) {
	bin := lab.BrowserBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	tp := newTestPortal(t, func(c *Config) {
		c.GatewayIP, c.APIURL, c.HTTPPort, c.Rate = netip.MustParseAddr("127.0.0.1"), "", uint16(port), 20
		c.Now = time.Now
	})
	tp.gate.now = time.Now
	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hostOnly(r.Host) == "www.example.it" {
			if _, ok := tp.gate.Session(clientIP(r)); ok {
				fmt.Fprintf(w, "<!doctype html><title>Notizie</title><p>Pagina di destinazione %s</p>", r.URL.RequestURI())
				return
			}
		}
		tp.s.ServeHTTP(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		srv := &http.Server{Handler: front, ReadHeaderTimeout: 5 * time.Second}
		go func() { <-ctx.Done(); srv.Close() }()
		done <- srv.Serve(ln)
	}()
	t.Cleanup(func() { cancel(); <-done })

	shots := os.Getenv("CW_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	browse := func(lang string, steps ...string) lab.BrowseResult {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
		defer ccancel()
		res, err := lab.Browse(cctx, lab.NS{}, bin, []string{"-host-rules", "MAP www.example.it 127.0.0.1", "-lang", lang, "-timeout", "90s"}, steps...)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	orig := "http://www.example.it:" + strconv.Itoa(port) + "/news?id=1"

	// English phone: the landing page in English, screenshot only.
	res := browse("en-GB,en", "navigate="+orig, "wait=button[name=accept]", "screenshot="+filepath.Join(shots, "landing-en.png"), "snapshot")
	if res.Lang != "en" || !strings.Contains(res.Text, "Accept and connect") {
		t.Errorf("English landing: lang %q, text %q", res.Lang, res.Text)
	}

	// Italian phone: the whole walk.
	res = browse("it-IT,it", "navigate="+orig, "wait=button[name=accept]", "screenshot="+filepath.Join(shots, "landing-it.png"), "snapshot",
		"click=button[name=accept]", "wait_text=Pagina di destinazione", "snapshot")
	land := res.Steps[3]
	if !strings.HasPrefix(land.URL, "http://127.0.0.1:"+strconv.Itoa(port)+"/portal/?url=") || !strings.Contains(land.Text, "Connettiti a Internet") || land.Title != "Connettiti a Internet – Parco Pertini" {
		t.Errorf("landing step: %+v", land)
	}
	if res.URL != orig || !strings.Contains(res.Text, "Pagina di destinazione /news?id=1") || res.Lang != "" {
		t.Errorf("after login: at %s, text %q", res.URL, res.Text)
	}
	if len(tp.gate.granted) != 1 || tp.gate.granted[0] != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("granted %v", tp.gate.granted)
	}
	var codes []string
	for _, d := range res.Documents {
		codes = append(codes, fmt.Sprintf("%d %s", d.Status, d.URL))
	}
	// The main documents (redirects are followed, not listed): the landing
	// page, then the original URL after the 303 from the grant.
	want := []string{"200 http://127.0.0.1:" + strconv.Itoa(port) + "/portal/?url=", "200 " + orig}
	if len(codes) != len(want) {
		t.Fatalf("documents %q, want %q", codes, want)
	}
	for i := range want {
		if !strings.HasPrefix(codes[i], want[i]) {
			t.Errorf("document %d: %q, want %q...", i, codes[i], want[i])
		}
	}
	for _, f := range []string{"landing-it.png", "landing-en.png"} {
		if fi, err := os.Stat(filepath.Join(shots, f)); err != nil || fi.Size() < 10000 {
			t.Errorf("screenshot %s: %v", f, err)
		}
	}
}
