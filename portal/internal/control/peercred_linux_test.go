package control

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const nobody = 65534 // uid and gid of nobody / nogroup on Debian

// TestMain doubles as the helper process: TestPeerCredentials runs the test
// binary as another user with CONTROL_HELPER_SOCKET set, to drive
// `portal ctl` (no test is run, so none is listed as skipped).
func TestMain(m *testing.M) {
	if sock := os.Getenv("CONTROL_HELPER_SOCKET"); sock != "" {
		os.Exit(Main(context.Background(), []string{"--socket", sock, "status"}, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root to run a client as another user (CI=true: not skipping)")
	}
	t.Skip("needs root to run a client as another user")
}

// TestPeerCredentials runs `portal ctl status` as nobody against a real
// server: file permissions keep nobody out, and if they are too loose the
// SO_PEERCRED check still does; membership of the socket's group lets in.
func TestPeerCredentials(t *testing.T) {
	requireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		gid        int         // Server.GID
		chmod      os.FileMode // if set, loosen the socket's mode after start
		wantCode   int
		wantStderr string
	}{
		{name: "other user stopped by file mode", gid: 0, wantCode: 1, wantStderr: "permission denied on "},
		{name: "loose mode stopped by peer credentials", gid: 0, chmod: 0o666, wantCode: 1,
			wantStderr: "permission denied: uid 65534 (gid 65534) is neither root nor in group 0"},
		{name: "socket group admitted", gid: nobody, wantCode: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			// nobody must be able to reach the socket and run a copy of this binary.
			for d := dir; d != filepath.Dir(os.TempDir()) && d != "/"; d = filepath.Dir(d) {
				if strings.HasPrefix(d, os.TempDir()+"/") {
					if err := os.Chmod(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			bin := filepath.Join(dir, "control.test")
			copyFile(t, exe, bin)
			path := filepath.Join(dir, "portal.sock")
			s := NewServer(&fakeService{status: sampleStatus()}, testLogger(t))
			s.GID = tt.gid
			startServerWith(t, s, path)
			if tt.chmod != 0 {
				if err := os.Chmod(path, tt.chmod); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.CommandContext(t.Context(), bin)
			cmd.Env = []string{"CONTROL_HELPER_SOCKET=" + path, "PATH=/usr/bin:/bin"}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			if code != tt.wantCode {
				t.Fatalf("exit code %d (%v), want %d\nstdout: %s\nstderr: %s", code, err, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			if tt.wantCode == 0 && !strings.Contains(stdout.String(), "site:              parco-pertini") {
				t.Errorf("stdout has no status table: %q", stdout.String())
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
