package spid

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// TestChromiumSPID: a real headless Chromium (the lab's cwbrowse) walks the browser leg of a SPID login as a phone
// would: the controller's login page (whose auto-posting script must run under its nonce CSP, and whose form may
// only go to the IdP), the IdP's answer posted cross-site to the ACS (no cookie needed), and the 303 back to the
// gateway's page; then the gateway's spid/grant gets the grant.
func TestChromiumSPID(t *testing.T) {
	bin := lab.BrowserBinary(t)
	h := newHarness(t)
	redirect := h.start("parco-gw1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-timeout", "90s", "navigate="+redirect,
		"wait_url=/portal/spid/done", "wait_text=done", "snapshot").Output()
	var res lab.BrowseResult
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		t.Fatalf("cwbrowse: %v / %v: %s", err, jerr, out)
	}
	if err != nil || res.Error != "" {
		t.Fatalf("cwbrowse: %v %s (at %s)\n%s", err, res.Error, res.URL, res.Text)
	}
	var docs []string
	for _, d := range res.Documents {
		docs = append(docs, fmt.Sprintf("%d %s", d.Status, strings.SplitN(d.URL, "?", 2)[0]))
	}
	// Main documents: the login page, the IdP's answer to the posted AuthnRequest, then the gateway's page after
	// the ACS's 303.
	want := []string{"200 " + h.ctrl.URL + PathLogin, "200 " + h.idp.URL + "/sso", "200 " + h.gateway.URL + "/portal/spid/done"}
	if strings.Join(docs, "\n") != strings.Join(want, "\n") {
		t.Errorf("documents:\n%s\nwant:\n%s", strings.Join(docs, "\n"), strings.Join(want, "\n"))
	}
	state := mustParse(res.URL).Query().Get("state")
	if _, err := h.grant("parco-gw1", state); err != nil {
		t.Fatalf("grant after Chromium's login: %v", err)
	}
}
