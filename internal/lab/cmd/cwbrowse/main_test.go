package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/internal/lab"
)

func TestParseSteps(t *testing.T) {
	tests := []struct {
		name  string
		words []string
		want  []Step
		err   string
	}{
		{"script", []string{"navigate=http://x/?a=b", "click=button[name=accept]", "snapshot"},
			[]Step{{Op: "navigate", Arg: "http://x/?a=b"}, {Op: "click", Arg: "button[name=accept]"}, {Op: "snapshot"}}, ""},
		{"none", nil, nil, "no steps"},
		{"unknown", []string{"fly=away"}, nil, `unknown op "fly"`},
		{"missing argument", []string{"click"}, nil, "click needs an argument"},
		{"empty argument", []string{"screenshot="}, nil, "screenshot needs an argument"},
		{"extra argument", []string{"snapshot=x"}, nil, "snapshot takes no argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSteps(tt.words)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestBrowseInNamespace runs the driver in a client namespace against a
// small site served in the gateway namespace: a form to click, a redirect,
// HTTPS trusted only through -cacert, the phone's user agent and language
// as the server sees them, and a phone-sized screenshot.
func TestBrowseInNamespace(t *testing.T) {
	bin := lab.BrowserBinary(t)
	l := lab.NewT(t, lab.Options{Clients: 1})
	c := l.Clients[0]
	ca, err := lab.NewCA(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.Issue("site", "10.20.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string // "UA|Accept-Language" of each GET /
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.UserAgent()+"|"+r.Header.Get("Accept-Language"))
		mu.Unlock()
		lang, _, _ := strings.Cut(r.Header.Get("Accept-Language"), "-")
		fmt.Fprintf(w, `<!doctype html><html lang="%s"><title>landing</title><body><p>hello %s</p>
<form method="post" action="/accept"><button name="accept" value="1">OK</button></form></body></html>`, lang, lang)
	})
	mux.HandleFunc("POST /accept", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/done", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<!doctype html><title>done</title><body>done ok</body>")
	})
	ln, err := l.Gateway.Listen("tcp", "10.20.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	tln, err := l.Gateway.Listen("tcp", "10.20.0.1:8443")
	if err != nil {
		t.Fatal(err)
	}
	tsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go tsrv.Serve(tls.NewListener(tln, &tls.Config{Certificates: []tls.Certificate{pair}}))
	t.Cleanup(func() { tsrv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	shot := filepath.Join(t.TempDir(), "landing.png")
	res, err := lab.Browse(ctx, c.NS, bin, []string{"-lang", "en-GB,en"},
		"navigate=http://10.20.0.1:8080/", "screenshot="+shot, "click=button[name=accept]", "wait_url=/done", "snapshot")
	if err != nil {
		t.Fatalf("%v\n%+v", err, res)
	}
	if res.URL != "http://10.20.0.1:8080/done" || !strings.Contains(res.Text, "done ok") || res.Title != "done" {
		t.Errorf("ended at %q title %q text %q, want /done", res.URL, res.Title, res.Text)
	}
	if res.Steps[0].URL != "http://10.20.0.1:8080/" || res.Steps[4].Text != "done ok" {
		t.Errorf("steps: %+v", res.Steps)
	}
	wantDocs := []lab.BrowseDocument{{URL: "http://10.20.0.1:8080/", Status: 200}, {URL: "http://10.20.0.1:8080/done", Status: 200}}
	if diff := cmp.Diff(wantDocs, res.Documents); diff != "" {
		t.Errorf("documents (-want +got):\n%s", diff)
	}
	mu.Lock()
	if len(seen) != 1 || !strings.Contains(seen[0], "Mobile") || !strings.HasSuffix(seen[0], "|en-GB,en;q=0.9") {
		t.Errorf("server saw %q, want one mobile user agent with Accept-Language en-GB,en;q=0.9", seen)
	}
	mu.Unlock()
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 780 || b.Dy() != 1688 {
		t.Errorf("screenshot %dx%d, want 780x1688 (390x844 at 2x)", b.Dx(), b.Dy())
	}

	t.Run("https trusted through -cacert", func(t *testing.T) {
		res, err := lab.Browse(ctx, c.NS, bin, []string{"-cacert", ca.CertFile, "-lang", "it-IT,it"},
			"navigate=https://10.20.0.1:8443/", "snapshot")
		if err != nil {
			t.Fatalf("%v\n%+v", err, res)
		}
		if res.Lang != "it" || !strings.Contains(res.Text, "hello it") {
			t.Errorf("lang %q text %q, want the Italian page", res.Lang, res.Text)
		}
	})
	t.Run("https refused without the CA", func(t *testing.T) {
		res, err := lab.Browse(ctx, c.NS, bin, nil, "navigate=https://10.20.0.1:8443/")
		if err == nil || !strings.Contains(res.Error, "ERR_CERT") {
			t.Errorf("err %v (%q), want a certificate error", err, res.Error)
		}
	})
}
