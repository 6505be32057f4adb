package login_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/sms"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/google/go-cmp/cmp"
)

const baseYAML = "sites: sites.yaml\nsigning_key: controller.key\n"

func TestControllerYAMLLogin(t *testing.T) {
	c, err := server.ParseConfig("/etc/civicwifi/controller.yaml", []byte(baseYAML+`login:
  pepper_file: pepper
  sms:
    provider: skebby
    account: comune.prova
    from: ComuneWiFi
    secret_file: /run/secrets/skebby
    timeout: 3s
    limits:
      per_number: 2
      daily_budget: 300
      resend_after: 90s
`))
	if err != nil {
		t.Fatal(err)
	}
	lim := sms.DefaultLimits
	lim.PerNumber, lim.DailyBudget, lim.ResendAfter = 2, 300, 90*time.Second
	want := login.FileConfig{PepperFile: "/etc/civicwifi/pepper", SMS: login.SMSConfig{Provider: "skebby", Account: "comune.prova",
		From: "ComuneWiFi", SecretFile: "/run/secrets/skebby", Timeout: 3 * time.Second, Limits: lim}}
	if d := cmp.Diff(want, c.Login); d != "" {
		t.Errorf("login block (-want +got):\n%s", d)
	}

	_, err = server.ParseConfig("controller.yaml", []byte(baseYAML+`login:
  sms:
    provider: sms-gateway
    attempts: 9
    limits:
      per_mac: -1
      window: 1 hour
      per_nmber: 3
`))
	got := strings.Split(strings.TrimSpace(errString(err)), "\n")
	wantLines := []string{
		`controller.yaml:4:3: login.pepper_file: missing`,
		`controller.yaml:5:15: login.sms.provider: "sms-gateway", want twilio, skebby, webhook or log`,
		`controller.yaml:6:15: login.sms.attempts: 9, want 1 to 5`,
		`controller.yaml:6:15: login.sms: attempts x timeout is over 20 s`,
		`controller.yaml:8:16: login.sms.limits.per_mac: -1, want 0 (no limit) or more`,
		`controller.yaml:9:15: login.sms.limits.window: "1 hour" is not a duration`,
		`controller.yaml:10:7: login.sms.limits: unknown key "per_nmber" (did you mean "per_number"?)`,
	}
	if len(got) != len(wantLines) {
		t.Fatalf("problems:\n%s\nwant %d lines", errString(err), len(wantLines))
	}
	for i, w := range wantLines {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("problem %d: %q, want it to start with %q", i, got[i], w)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestSetupReadsSecrets(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "pepper")
	os.WriteFile(pf, []byte("short"), 0o600)
	if _, err := login.Setup(login.FileConfig{PepperFile: pf}, login.Deps{}); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("short pepper: %v", err)
	}
	os.WriteFile(pf, []byte(strings.Repeat("p", 40)), 0o600)
	os.Chmod(pf, 0o644)
	if _, err := login.Setup(login.FileConfig{PepperFile: pf}, login.Deps{}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("readable pepper: %v", err)
	}
	os.Chmod(pf, 0o600)
	t.Setenv(login.EnvSMSSecret, "")
	_, err := login.Setup(login.FileConfig{PepperFile: pf, SMS: login.SMSConfig{Provider: "twilio", Account: "AC1", From: "+15005550006"}}, login.Deps{})
	if err == nil || !strings.Contains(err.Error(), login.EnvSMSSecret) {
		t.Errorf("twilio without a secret: %v", err)
	}
}
