package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
)

// controller run serves the operators' dashboard under /admin/ on the API's
// listener when controller.yaml has an admin block, and its metrics carry
// the statistics read from the store (residents online per site).
func TestRunMountsDashboardAndStatistics(t *testing.T) {
	dir := t.TempDir()
	accounts := filepath.Join(dir, "admin-accounts")
	hash, err := auth.HashPasswordWith("correct horse battery staple", auth.Params{Memory: 8 * 1024, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.SetAccount(accounts, auth.Account{Name: "anna", Role: auth.IT, Hash: hash}); err != nil {
		t.Fatal(err)
	}
	l := newLab(t, "bolt:state/controller.db", "admin: {accounts: "+accounts+"}\n")
	c := startController(t, l.configPath)

	// Unauthenticated: the dashboard sends to its sign-in page; the gateway
	// API is still there.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := hc.Get(c.base + "/admin/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "/admin/login") {
		t.Errorf("GET /admin/ = %d Location %q, want 303 to the sign-in page", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = hc.Get(c.base + "/admin/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "password") {
		t.Errorf("GET /admin/login = %d, body without a password field", resp.StatusCode)
	}

	// A session opened at parco: the metrics show one resident online there.
	ctx := context.Background()
	gw := l.client(t, c.base, "parco", "parco-gw1")
	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	if _, err := gw.SendEvents(ctx, []apiclient.SessionEvent{{ID: "e1", Kind: apiclient.EventStart, SessionID: "s1", Start: at, At: at,
		ClientMAC: "02:00:00:00:00:01", User: "u1", Method: "sms"}}); err != nil {
		t.Fatal(err)
	}
	resp, err = hc.Get(c.metrics)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `civicwifi_controller_residents_online{site="parco"} 1`) {
		t.Errorf("metrics lack one resident online at parco:\n%s", grepLines(string(body), "civicwifi_controller_residents"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
