package server

import (
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/adminconf"
	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/sms"
)

// The example in deploy/ is what operators copy: it must parse to what its comments say.
func TestDeployExample(t *testing.T) {
	const path = "../../../deploy/controller.yaml"
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := FileConfig{
		Listen: ":8443", TLSCert: "/etc/civicwifi/tls/controller.crt", TLSKey: "/etc/civicwifi/tls/controller.key",
		Sites: "/etc/civicwifi/sites.yaml", Store: DefaultStore, SigningKey: "/etc/civicwifi/keys/controller.key",
		APEnrollTokens: []string{"/etc/civicwifi/ap-enroll.token"}, MetricsListen: "127.0.0.1:9464",
		APCheckin: time.Minute, APMissedCheckins: 3, Reload: 2 * time.Second, LogFormat: "json", StateDir: "/var/lib/civicwifi",
		SPID: SPIDConfig{EntityID: "https://wifi.comune.voghera.pv.it/spid", PublicURL: "https://wifi.comune.voghera.pv.it",
			OrganizationURL: "https://www.comune.voghera.pv.it", Key: "/etc/civicwifi/spid/sp.key",
			Certificate: "/etc/civicwifi/spid/sp.crt", IdPRegistry: "/etc/civicwifi/spid/idps.xml"},
		Login: login.FileConfig{PepperFile: "/etc/civicwifi/pepper", SMS: login.SMSConfig{Provider: "skebby", Account: "comune.voghera",
			From: "Comune", SecretFile: "/etc/civicwifi/sms.secret", Limits: sms.Limits{Window: time.Hour, PerNumber: 3, PerMAC: 3,
				PerSite: 200, PerPrefix: 50, DailyBudget: 2000, ResendAfter: time.Minute}, Cost: 0.045}},
		Admin: adminconf.FileConfig{Listen: "10.0.0.5:8444", Accounts: "/etc/civicwifi/admin-accounts"},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("deploy/controller.yaml (-want +got):\n%s", diff)
	}
	if _, err := os.Stat("../../../deploy/systemd/civicwifi-controller.service"); err != nil {
		t.Error(err)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, in string
		want     FileConfig // when no error
		err      string
	}{
		{
			name: "minimal, relative paths and defaults",
			in:   "sites: sites.yaml\nsigning_key: keys/controller.key\n",
			want: FileConfig{
				Listen: ":8443", Sites: "/etc/cw/sites.yaml", Store: DefaultStore, SigningKey: "/etc/cw/keys/controller.key",
				MetricsListen: "127.0.0.1:9464", APCheckin: time.Minute, APMissedCheckins: 3, Reload: 2 * time.Second, LogFormat: "json", StateDir: "/var/lib/civicwifi",
			},
		},
		{
			name: "redis, no metrics, text logs",
			in: "sites: /s.yaml\nsigning_key: /k\nstore: redis://10.0.0.5:6379/2\nredis_password_file: pw\n" +
				"metrics_listen: \"off\"\nlog_format: text\nreload_check: 500ms\n",
			want: FileConfig{
				Listen: ":8443", Sites: "/s.yaml", Store: "redis://10.0.0.5:6379/2", RedisPasswordFile: "/etc/cw/pw", SigningKey: "/k",
				APCheckin: time.Minute, APMissedCheckins: 3, Reload: 500 * time.Millisecond, LogFormat: "text", StateDir: "/var/lib/civicwifi",
			},
		},
		{
			name: "duplicate key: said once, nothing reported missing",
			in:   "sites: /s.yaml\nsigning_key: /k\nsites: /t.yaml\n",
			err:  `/etc/cw/controller.yaml:3:1: mapping key "sites" already defined at line 1`,
		},
		{
			name: "password in the redis address",
			in:   "sites: /s.yaml\nsigning_key: /k\nstore: redis://:hunter2hunter2@10.0.0.5:6379/0\n",
			err: "/etc/cw/controller.yaml:3:8: store: no user or password in the address: put the password in " +
				"$CIVICWIFI_REDIS_PASSWORD or in redis_password_file (and change it, since it has been written in a file)",
		},
		{
			name: "unknown key with a hint, bad values, missing keys",
			in:   "listen: 8443\nsite: /s.yaml\nstore: mysql://x\nap_checkin_interval: soon\ntls: {cert: /c}\n",
			err: "/etc/cw/controller.yaml: sites: missing (the path of sites.yaml, e.g. /etc/civicwifi/sites.yaml)\n" +
				"/etc/cw/controller.yaml: signing_key: missing (the controller's private key file; make one with `controller enroll -out /etc/civicwifi -name controller`)\n" +
				"/etc/cw/controller.yaml:1:9: listen: \"8443\" is not host:port (e.g. :8443 or 127.0.0.1:9464)\n" +
				"/etc/cw/controller.yaml:2:1: top level: unknown key \"site\" (did you mean \"sites\"?)\n" +
				"/etc/cw/controller.yaml:3:8: store: want bolt:/path/to/controller.db or redis://host:port/db\n" +
				"/etc/cw/controller.yaml:4:22: ap_checkin_interval: \"soon\" is not a duration of at least 1s (e.g. 60s, 2m)\n" +
				"/etc/cw/controller.yaml:5:6: tls: give both cert and key (PEM files), or neither for plain HTTP",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig("/etc/cw/controller.yaml", []byte(tt.in))
			if tt.err != "" {
				if err == nil {
					t.Fatalf("no error, want:\n%s", tt.err)
				}
				if diff := cmp.Diff(tt.err, err.Error()); diff != "" {
					t.Errorf("error (-want +got):\n%s", diff)
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
