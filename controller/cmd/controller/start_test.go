package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A controller with a bad file, a readable secret or a password in its config refuses to start and says why
// (and where); a started one would serve nothing wrong.
func TestRunRefusesToStart(t *testing.T) {
	tests := []struct {
		name string
		mod  func(t *testing.T, l *lab)
		want string
	}{
		{"bad controller.yaml", func(t *testing.T, l *lab) {
			b, _ := os.ReadFile(l.configPath)
			os.WriteFile(l.configPath, bytes.Replace(b, []byte("metrics_listen: 127.0.0.1:0"), []byte("metrics_listen: 9464"), 1), 0o644)
		}, `controller.yaml:2:17: metrics_listen: "9464" is not host:port`},
		{"bad sites.yaml", func(t *testing.T, l *lab) { l.writeSites(t, "fast") }, `sites.yaml:10:11: policy "parks": down:`},
		{"enrollment token readable by others", func(t *testing.T, l *lab) {
			os.Chmod(filepath.Join(l.dir, "ap.token"), 0o644)
		}, "ap.token: mode 0644: private key file is accessible by group or others"},
		{"signing key readable by others", func(t *testing.T, l *lab) {
			os.Chmod(filepath.Join(l.dir, "keys", "controller.key"), 0o640)
		}, "controller.key: mode 0640: private key file is accessible by group or others"},
		{"redis password in the address", func(t *testing.T, l *lab) {
			b, _ := os.ReadFile(l.configPath)
			os.WriteFile(l.configPath, bytes.Replace(b, []byte("store: bolt:state/controller.db"), []byte("store: redis://:s3cretpassw0rd@127.0.0.1:1/0"), 1), 0o644)
		}, "controller.yaml:4:8: store: no user or password in the address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLab(t, "bolt:state/controller.db")
			tt.mod(t, l)
			var out bytes.Buffer
			code := run(context.Background(), &env{stdout: &out, stderr: &out}, []string{"run", "-config", l.configPath})
			if code != 1 || !strings.Contains(out.String(), tt.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit 1 and %q", code, out.String(), tt.want)
			}
			if strings.Contains(out.String(), "s3cretpassw0rd") {
				t.Errorf("the password is in the output:\n%s", out.String())
			}
			if _, err := os.Stat(filepath.Join(l.dir, "state", "controller.db")); err == nil {
				t.Errorf("a store was created by a controller that refused to start")
			}
		})
	}
}
