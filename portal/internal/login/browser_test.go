package login

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/civicwifi/civicwifi/portal/internal/captive"
)

// A real headless Chromium (the lab's cwbrowse) logs in by SMS as a phone
// would, using only standard form semantics: it types the number into the
// type="tel" input, ticks the consent box, sends the form, types the code
// the "provider" received into the autocomplete="one-time-code" input, and
// reaches the page it was opening. No JavaScript on the portal, no cookies.
// The controller is the fake client, which draws a random code per run and
// "texts" it to the test (as the SMS provider would). Screenshots of the
// phone and code pages go to $CW_SCREENSHOTS (or the test's temp dir).
func TestChromiumSMSLogin(t *testing.T) {
	bin := lab.BrowserBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	h := newHarness(t, func(c *captive.Config) {
		c.GatewayIP, c.APIURL, c.HTTPPort = netip.MustParseAddr("127.0.0.1"), "", uint16(port)
	})
	mac, _ := net.ParseMAC(phoneHW)
	h.gw.macs[netip.MustParseAddr("127.0.0.1")] = mac
	n, _ := rand.Int(rand.Reader, big.NewInt(1_000_000))
	code := fmt.Sprintf("%06d", n.Int64())
	sent := make(chan apiclient.SMSStartRequest, 4)
	h.ctl.onSMS = func(req apiclient.SMSStartRequest) string { sent <- req; return code }

	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		if host == "www.example.it" {
			if _, ok := h.gw.Session(netip.MustParseAddr("127.0.0.1")); ok {
				fmt.Fprintf(w, "<!doctype html><title>Notizie</title><p>Pagina di destinazione %s</p>", r.URL.RequestURI())
				return
			}
		}
		h.srv.ServeHTTP(w, r)
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
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	orig := "http://www.example.it:" + strconv.Itoa(port) + "/news?id=1"
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
	defer ccancel()
	steps := []string{
		"navigate=" + orig, "wait=input[type=tel]", "screenshot=" + filepath.Join(shots, "sms-phone-it.png"),
		"type=input[type=tel][autocomplete=tel]=333 123 4567",
		"click=#accept-sms",
		`click=form[action="/portal/sms"] button[type=submit]`,
		"wait=input[autocomplete=one-time-code]", "snapshot", "screenshot=" + filepath.Join(shots, "sms-code-it.png"),
		"type=input[autocomplete=one-time-code][inputmode=numeric]=" + code,
		`click=form[action="/portal/sms/verify"] button[type=submit]`,
		"wait_text=Pagina di destinazione", "snapshot",
	}
	res, err := lab.Browse(cctx, lab.NS{}, bin, []string{"-host-rules", "MAP www.example.it 127.0.0.1", "-lang", "it-IT,it", "-timeout", "90s"}, steps...)
	if err != nil {
		t.Fatalf("%v\n%s", err, res.Text)
	}
	select {
	case req := <-sent:
		if req.Phone != "333 123 4567" || !req.Consent || req.Lang != "it" || req.ClientMAC != phoneHW || req.ClientIP != "127.0.0.1" {
			t.Errorf("code request %+v", req)
		}
	default:
		t.Fatal("no code was asked for")
	}
	codePage := res.Steps[7]
	if !strings.Contains(codePage.Text, "Abbiamo inviato un codice di 6 cifre con un SMS al numero che termina con 567.") {
		t.Errorf("code page text: %q", codePage.Text)
	}
	if res.URL != orig || !strings.Contains(res.Text, "Pagina di destinazione /news?id=1") {
		t.Errorf("after login: at %s, text %q", res.URL, res.Text)
	}
	opened := h.gw.openedList()
	if len(opened) != 1 || opened[0].Method != "sms" || opened[0].User != "U7ZQK3" || opened[0].IP != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("sessions opened: %+v", opened)
	}
	var docs []string
	for _, d := range res.Documents {
		docs = append(docs, fmt.Sprintf("%d %s", d.Status, d.URL))
	}
	// Main documents: the landing page, the code page (the POST's answer),
	// then the original URL after the 303 from the code's POST.
	want := []string{"200 http://127.0.0.1:" + strconv.Itoa(port) + "/portal/?url=", "200 http://127.0.0.1:" + strconv.Itoa(port) + "/portal/sms", "200 " + orig}
	if len(docs) != len(want) {
		t.Fatalf("documents %q, want %q", docs, want)
	}
	for i := range want {
		if !strings.HasPrefix(docs[i], want[i]) {
			t.Errorf("document %d: %q, want %q...", i, docs[i], want[i])
		}
	}
	for _, f := range []string{"sms-phone-it.png", "sms-code-it.png"} {
		if fi, err := os.Stat(filepath.Join(shots, f)); err != nil || fi.Size() < 10000 {
			t.Errorf("screenshot %s: %v", f, err)
		}
	}
}
