package dashboard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/sms"
	"github.com/prometheus/client_golang/prometheus"
)

// The failures page reads the controller's real metrics: a real SMS
// service whose provider (a webhook answering 503) fails every attempt,
// and before that the honest "none" with no source at all.
func TestHealthPage(t *testing.T) {
	// No metrics, no counters: "none", said as such.
	h := newHarness(t)
	c, _ := h.login("oscar")
	if r := h.do(c, "GET", "/admin/health", nil); r.code != http.StatusOK || !strings.Contains(r.body, `id="sms-none">None: nothing reports SMS deliveries`) {
		t.Errorf("no source: %d %.300s", r.code, r.body)
	}

	reg := prometheus.NewRegistry()
	h = newHarness(t, func(_ *harness, o *Options, _ *auth.Options) { o.Gatherer = reg })
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }))
	defer provider.Close()
	pep, _ := pepper.New([]byte("a test pepper of at least 32 bytes, not secret"))
	svc, err := sms.New(sms.Config{Store: h.st, Pepper: pep, Registerer: reg, Now: h.clk.Now,
		Sender: &sms.Sender{Provider: &sms.Webhook{URL: provider.URL, HTTP: provider.Client()}, Attempts: 2, Backoff: []time.Duration{time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, mac := range []string{"02:00:00:00:00:01", "02:00:00:00:00:02"} {
		if _, err := svc.Start(context.Background(), sms.StartRequest{Site: "parco-pertini", Gateway: "pertini-gw1", ClientMAC: mac, Phone: "+39 347 123 4567", Countries: []string{"IT"}, Lang: "it"}); err == nil {
			t.Fatal("the failing provider delivered")
		}
	}
	h.loginAttempt(h.client(), "ida", "wrong") // a failed dashboard sign-in
	c, _ = h.login("oscar")
	r := h.do(c, "GET", "/admin/health", nil)
	if r.code != http.StatusOK {
		t.Fatalf("health: %d", r.code)
	}
	failed := regexp.MustCompile(`id="sms-failures"><span class="state down">(\d+)</span>`).FindStringSubmatch(r.body)
	// Each request fails twice at the provider (attempts) and once as a request: 2 x (2 + 1).
	if failed == nil || failed[1] != "6" {
		t.Errorf("SMS failures shown %v; page:\n%s", failed, r.body)
	}
	for _, w := range []string{"<b>civicwifi_controller_sms_provider_attempts_total provider=webhook result=error</b>", "<td>ida</td><td>login.fail</td>"} {
		if !strings.Contains(r.body, w) {
			t.Errorf("health page lacks %q", w)
		}
	}
}
