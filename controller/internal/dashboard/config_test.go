package dashboard

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/internal/yamlconf"
	"github.com/google/go-cmp/cmp"
)

type rawDoc struct {
	Listen yamlconf.Value[string]        `yaml:"listen"`
	Admin  yamlconf.Value[RawFileConfig] `yaml:"admin"`
}

func parseAdmin(t *testing.T, src string) (FileConfig, error) {
	t.Helper()
	var ps yamlconf.Problems
	var doc rawDoc
	if !yamlconf.Decode("controller.yaml", []byte(src), &doc, &ps) {
		return FileConfig{}, ps.Err()
	}
	c := ParseFileConfig(doc.Admin, func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join("/etc/civicwifi", p)
	}, &ps)
	return c, ps.Err()
}

func TestFileConfig(t *testing.T) {
	c, err := parseAdmin(t, `admin:
  listen: 10.0.0.5:8444
  accounts: admin-accounts
  trusted_proxies: [10.0.0.0/24, 192.0.2.7]
  idle_timeout: 20m
  oidc:
    issuer: https://login.comune.example/realms/staff
    client_id: civicwifi
    client_secret_file: oidc-secret
    redirect_url: https://wifi.comune.example/admin/oidc/callback
    role_claim: groups
    roles: {wifi-it: it, wifi-ops: operator}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := FileConfig{Listen: "10.0.0.5:8444", Accounts: "/etc/civicwifi/admin-accounts", IdleTimeout: 20 * time.Minute,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("192.0.2.7/32")},
		OIDC: &OIDCFileConfig{Issuer: "https://login.comune.example/realms/staff", ClientID: "civicwifi", ClientSecretFile: "/etc/civicwifi/oidc-secret",
			RedirectURL: "https://wifi.comune.example/admin/oidc/callback", RoleClaim: "groups", Roles: map[string]auth.Role{"wifi-it": auth.IT, "wifi-ops": auth.Operator}}}
	if diff := cmp.Diff(want, c, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if c, err := parseAdmin(t, "listen: :8443\n"); err != nil || c.Enabled() {
		t.Errorf("no admin block: %+v %v", c, err)
	}
	bad := []struct{ src, want string }{
		{"admin:\n  listen: 8444\n", "controller.yaml:2:3: admin.accounts: missing"},
		{"admin:\n  accounts: a\n  listen: 8444\n", `controller.yaml:3:11: admin.listen: "8444" is not host:port`},
		{"admin:\n  accounts: a\n  trusted_proxies: [10.0.0.300/24]\n", `controller.yaml:3:20: admin.trusted_proxies[0]: "10.0.0.300/24" is not an address or prefix`},
		{"admin:\n  accounts: a\n  max_age: 3 days\n", `controller.yaml:3:12: admin.max_age: "3 days" is not a duration from 1m0s to 168h0m0s`},
		{"admin:\n  accounts: a\n  acounts: b\n", `controller.yaml:3:3: admin: unknown key "acounts" (did you mean "accounts"?)`},
		{"admin:\n  accounts: a\n  oidc:\n    issuer: http://idp.example\n    client_id: c\n    redirect_url: https://w.example/admin/oidc/callback\n    role_claim: groups\n    roles: {g: it}\n",
			`controller.yaml:4:13: admin.oidc.issuer: "http://idp.example" is not an https URL`},
		{"admin:\n  accounts: a\n  oidc:\n    issuer: https://idp.example\n    client_id: c\n    redirect_url: https://w.example/callback\n    role_claim: groups\n    roles: {g: root}\n",
			"controller.yaml:6:19: admin.oidc.redirect_url: \"https://w.example/callback\" must end in /admin/oidc/callback\ncontroller.yaml:8:12: admin.oidc.roles.g: unknown role \"root\""},
		{"admin:\n  accounts: a\n  oidc:\n    issuer: https://idp.example\n", "controller.yaml:4:5: admin.oidc.redirect_url"},
	}
	for _, tc := range bad {
		_, err := parseAdmin(t, tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %s", tc.src, err, tc.want)
		}
	}
}

// Setup builds a working dashboard from the block, and refuses a
// readable accounts file or a missing OIDC secret before serving anything.
func TestSetup(t *testing.T) {
	h := newHarness(t)
	deps := Deps{Store: h.st, Sites: func() *sites.Config { return h.cfg }}
	if _, err := Setup(context.Background(), FileConfig{Accounts: h.accts}, deps); err != nil {
		t.Fatal(err)
	}
	readable := filepath.Join(t.TempDir(), "admins")
	writeFile(t, readable, "")
	if err := chmod(readable, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Setup(context.Background(), FileConfig{Accounts: readable}, deps); err == nil || !strings.Contains(err.Error(), "make it 0600") {
		t.Errorf("readable accounts file: %v", err)
	}
	t.Setenv(EnvOIDCSecret, "")
	_, err := Setup(context.Background(), FileConfig{Accounts: h.accts, OIDC: &OIDCFileConfig{Issuer: "https://idp.example", ClientID: "c"}}, deps)
	if err == nil || !strings.Contains(err.Error(), "CIVICWIFI_OIDC_SECRET") {
		t.Errorf("no OIDC secret: %v", err)
	}
}
