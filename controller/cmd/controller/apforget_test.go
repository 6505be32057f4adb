package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/apapi"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
)

// A factory-reset AP of the repo's sites.yaml is refused a second enrollment (409) until IT staff run
// `controller forget-ap` with the controller stopped; then it enrolls again.
func TestForgetAPCommand(t *testing.T) {
	dir := t.TempDir()
	sitesPath, err := filepath.Abs("../../../sites.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := sites.Load(sitesPath)
	if err != nil {
		t.Fatal(err)
	}
	mac := cfg.Sites[0].AccessPoints[0].MAC
	en, err := apiclient.Enroll(dir, "controller")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "controller.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("sites: %s\nsigning_key: %s\nstore: bolt:%s/c.db\nstate_dir: %s/state\n",
		sitesPath, en.KeyFile, dir, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := apiclient.LoadPrivateKey(en.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	// provision runs a controller on the store just long enough to answer one AP's first boot.
	provision := func() int {
		t.Helper()
		st, err := boltstore.Open(filepath.Join(dir, "c.db"), boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		srv, err := server.New(server.Options{SitesPath: sitesPath, Store: st, SigningKey: key, EnrollTokens: []string{"install-token"}})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		defer hs.Close()
		req, _ := http.NewRequest("POST", hs.URL+apapi.PathProvision, strings.NewReader(`{"mac":"`+mac+`","model":"x","firmware":"y"}`))
		req.Header.Set("Authorization", "Bearer install-token")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := provision(); got != http.StatusOK {
		t.Fatalf("first enrollment: %d", got)
	}
	if got := provision(); got != http.StatusConflict {
		t.Fatalf("enrollment after a factory reset, not forgotten: %d, want 409", got)
	}
	code, out, errs := runCmd("forget-ap", "-config", conf, strings.ToUpper(mac))
	if code != 0 || !strings.Contains(out, "forgot access point "+mac) {
		t.Fatalf("forget-ap: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if got := provision(); got != http.StatusOK {
		t.Errorf("enrollment after forget-ap: %d, want 200", got)
	}
	if code, _, errs := runCmd("forget-ap", "-config", conf, "02:00:00:00:00:99"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("forget-ap of an AP never enrolled: exit %d, stderr %q", code, errs)
	}
}
