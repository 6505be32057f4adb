package control

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// now is the CLI's clock in these tests: 3h25m after t0.
var now = t0.Add(3*time.Hour + 25*time.Minute)

func sampleStatus() Status {
	return Status{
		Version: "0.3.1", Site: "parco-pertini", Started: t0,
		ClientInterface: "br-clients", UplinkInterface: "eth1",
		Authorised: 2, Captive: 1, Repairs: 3,
		LastReconcile: now.Add(-12 * time.Second), DNSRunning: true,
	}
}

func sampleClients() []Client {
	return []Client{
		{
			MAC: "aa:bb:cc:dd:ee:10", IP: "10.0.0.10", Hostname: "anna-phone", LastSeen: now.Add(-3 * time.Second), State: "authorised",
			Session: &Session{
				ID: "s-0001", MAC: "aa:bb:cc:dd:ee:10", IP: "10.0.0.10", Method: "click-through",
				Started: now.Add(-time.Hour), Expires: now.Add(time.Hour + 59*time.Minute + 30*time.Second),
				IdleTimeout: 15 * time.Minute, QuotaBytes: 500_000_000, DownRate: 10_000_000, UpRate: 2_000_000,
				BytesDown: 123_456_789, BytesUp: 4_567_890, Packets: 98765,
			},
		},
		{
			// Device-chosen hostname with an escape sequence and a tab: must not reach the terminal.
			MAC: "aa:bb:cc:dd:ee:09", IP: "10.0.0.9", Hostname: "\x1b[31mevil\tname-that-is-far-too-long-for-a-column", State: "captive",
		},
		{
			MAC: "aa:bb:cc:dd:ee:02", IP: "10.0.0.200", State: "authorised",
			Session: &Session{ID: "s-0002", MAC: "aa:bb:cc:dd:ee:02", IP: "10.0.0.200", Method: "ctl", Started: now.Add(-5 * time.Minute), BytesDown: 999, BytesUp: 0},
		},
	}
}

func sampleSession() Session {
	return Session{
		ID: "s-0003", MAC: "aa:bb:cc:dd:ee:03", IP: "10.0.0.3", Method: "ctl",
		Started: now, Expires: now.Add(2 * time.Hour), IdleTimeout: 15 * time.Minute,
		QuotaBytes: 500_000_000, DownRate: 10_000_000, UpRate: 2_000_000,
	}
}

func kickedSession() Session {
	return Session{
		ID: "s-0001", MAC: "aa:bb:cc:dd:ee:10", IP: "10.0.0.10", Method: "click-through",
		Started: now.Add(-time.Hour), Expires: now.Add(time.Hour), Ended: now, EndReason: "kicked",
		BytesDown: 123_456_789, BytesUp: 4_567_890, Packets: 98765,
	}
}

// runCLI runs `portal ctl args...` against path with a fixed clock in UTC.
func runCLI(t *testing.T, path string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{
		stdout: &out, stderr: &errb,
		now:  func() time.Time { return now },
		loc:  time.UTC,
		dial: func(p string) Service { return NewClient(p) },
	}
	code = c.run(t.Context(), append([]string{"--socket", path}, args...))
	return code, out.String(), errb.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("output differs from %s (-want +got):\n%s", file, diff)
	}
}

func TestCLI(t *testing.T) {
	tests := []struct {
		name       string
		svcErr     error
		noDaemon   bool // point --socket at a path where nothing listens
		args       []string
		wantCode   int
		wantGolden string // compare stdout with testdata/<name>.golden
		wantStdout string // else: substring of stdout
		wantStderr string // substring of stderr; "" means stderr must be empty
		wantCalls  int
	}{
		{name: "status", args: []string{"status"}, wantGolden: "status", wantCalls: 1},
		{name: "clients", args: []string{"clients"}, wantGolden: "clients", wantCalls: 1},
		{name: "allow", args: []string{"allow", "--mac", "AA:BB:CC:DD:EE:03", "--duration", "2h", "--idle", "15m", "--quota", "500MB", "--down", "10mbit", "--up", "2mbit"},
			wantGolden: "allow", wantCalls: 1},
		{name: "kick", args: []string{"kick", "--ip", "10.0.0.10", "--reason", "abuse report 42"}, wantGolden: "kick", wantCalls: 1},
		{name: "help", args: []string{"help"}, wantGolden: "help"},
		{name: "help allow", args: []string{"help", "allow"}, wantGolden: "help-allow"},
		{name: "allow --help", args: []string{"allow", "--help"}, wantGolden: "help-allow"},
		{name: "global flag after command", args: []string{"status", "--json"}, wantStdout: `"site": "parco-pertini"`, wantCalls: 1},

		// Usage errors: exit 2, nothing sent to the daemon.
		{name: "no command", args: nil, wantCode: 2, wantStderr: "portal ctl: missing command"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `portal ctl: unknown command "frobnicate"`},
		{name: "unknown flag", args: []string{"allow", "--mac", "aa:bb:cc:dd:ee:03", "--bogus", "1"}, wantCode: 2,
			wantStderr: "portal ctl allow: flag provided but not defined: --bogus\nRun 'portal ctl help allow' for usage."},
		{name: "missing flag value", args: []string{"kick", "--mac"}, wantCode: 2, wantStderr: "flag needs an argument: --mac"},
		{name: "extra argument", args: []string{"kick", "aa:bb:cc:dd:ee:03"}, wantCode: 2, wantStderr: `unexpected argument "aa:bb:cc:dd:ee:03"`},
		{name: "allow without target", args: []string{"allow", "--duration", "2h"}, wantCode: 2, wantStderr: "portal ctl allow: one of --mac or --ip is required"},
		{name: "kick without target", args: []string{"kick"}, wantCode: 2, wantStderr: "portal ctl kick: one of --mac or --ip is required"},
		{name: "bad mac", args: []string{"allow", "--mac", "aa:bb:cc:dd:ee"}, wantCode: 2,
			wantStderr: `portal ctl allow: --mac: "aa:bb:cc:dd:ee" is not a MAC address (want aa:bb:cc:dd:ee:ff)`},
		{name: "eui-64 is not a mac here", args: []string{"kick", "--mac", "02:00:5e:10:00:00:00:01"}, wantCode: 2, wantStderr: "--mac:"},
		{name: "bad ip", args: []string{"kick", "--ip", "10.0.0.256"}, wantCode: 2, wantStderr: `portal ctl kick: --ip: "10.0.0.256" is not an IP address`},
		{name: "bad duration", args: []string{"allow", "--ip", "10.0.0.3", "--duration", "2 hours"}, wantCode: 2,
			wantStderr: `portal ctl allow: --duration: "2 hours" is not a duration (try 2h or 45m)`},
		{name: "negative idle", args: []string{"allow", "--ip", "10.0.0.3", "--idle", "-5m"}, wantCode: 2, wantStderr: `--idle: "-5m" is negative`},
		{name: "bytes per second rate", args: []string{"allow", "--ip", "10.0.0.3", "--down", "5 Mbps"}, wantCode: 2,
			wantStderr: `portal ctl allow: --down: "5 Mbps" is not a rate (try 5mbit)`},
		{name: "bad up rate", args: []string{"allow", "--ip", "10.0.0.3", "--up", "fast"}, wantCode: 2, wantStderr: `--up: "fast" is not a rate`},
		{name: "bad quota", args: []string{"allow", "--ip", "10.0.0.3", "--quota", "lots"}, wantCode: 2,
			wantStderr: `--quota: "lots" is not a data size (try 500MB or 2GiB)`},
		{name: "control character in reason", args: []string{"kick", "--ip", "10.0.0.3", "--reason", "a\x1bb"}, wantCode: 2, wantStderr: "--reason:"},
		{name: "help for unknown command", args: []string{"help", "nope"}, wantCode: 2, wantStderr: `no help for unknown command "nope"`},

		// Daemon errors: exit 1 with the daemon's message.
		{name: "not found", svcErr: fmt.Errorf("%w: no session for 10.0.0.99", ErrNotFound), args: []string{"kick", "--ip", "10.0.0.99"},
			wantCode: 1, wantStderr: "portal ctl: kicking 10.0.0.99: not found: no session for 10.0.0.99\n", wantCalls: 1},
		{name: "rejected by daemon", svcErr: fmt.Errorf("%w: quota 50GB is above the site maximum 2GB", ErrBadRequest),
			args: []string{"allow", "--ip", "10.0.0.3", "--quota", "50GB"}, wantCode: 1, wantStderr: "quota 50GB is above the site maximum 2GB", wantCalls: 1},
		{name: "internal error", svcErr: fmt.Errorf("listing clients: reading ipset: exit status 1"), args: []string{"clients"},
			wantCode: 1, wantStderr: "portal ctl: listing clients: reading ipset: exit status 1\n", wantCalls: 1},
		{name: "daemon not running", noDaemon: true, args: []string{"status"}, wantCode: 1, wantStderr: "portal ctl: portal daemon not running? no socket at "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{status: sampleStatus(), clients: sampleClients(), err: tt.svcErr}
			if len(tt.args) > 0 && tt.args[0] == "kick" {
				svc.session = kickedSession()
			} else {
				svc.session = sampleSession()
			}
			var path string
			if tt.noDaemon {
				path = filepath.Join(t.TempDir(), "portal.sock")
			} else {
				path = startServer(t, svc)
			}
			code, stdout, stderr := runCLI(t, path, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			if tt.wantGolden != "" {
				golden(t, tt.wantGolden, stdout)
			} else if !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout, tt.wantStdout)
			}
			if tt.wantStderr == "" && stderr != "" {
				t.Errorf("unexpected stderr %q", stderr)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.wantStderr)
			}
			if tt.wantCode != 0 && stdout != "" {
				t.Errorf("stdout on failure: %q", stdout)
			}
			if got := svc.callCount(); got != tt.wantCalls {
				t.Errorf("daemon called %d times, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestCLIAllowSendsNormalizedRequest(t *testing.T) {
	svc := &fakeService{session: sampleSession()}
	path := startServer(t, svc)
	code, _, stderr := runCLI(t, path, "allow", "--mac", "AA-BB-CC-DD-EE-03", "--ip", "10.0.0.3", "--duration", "2h", "--quota", "500MB", "--down", "10mbit")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := []AllowRequest{{MAC: "aa:bb:cc:dd:ee:03", IP: "10.0.0.3", Duration: "2h", Quota: "500MB", Down: "10mbit", Method: "ctl"}}
	if diff := cmp.Diff(want, svc.allows); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

// TestCLIJSON checks that --json prints exactly the wire types: decoding the
// output strictly gives back what the service returned.
func TestCLIJSON(t *testing.T) {
	svc := &fakeService{status: sampleStatus(), clients: sampleClients(), session: sampleSession()}
	path := startServer(t, svc)
	tests := []struct {
		args []string
		into func() any
		want any
	}{
		{[]string{"--json", "status"}, func() any { return new(Status) }, new(sampleStatus())},
		{[]string{"--json", "clients"}, func() any { return new([]Client) }, new(sampleClients())},
		{[]string{"--json", "allow", "--ip", "10.0.0.3"}, func() any { return new(Session) }, new(sampleSession())},
		{[]string{"kick", "--json", "--mac", "aa:bb:cc:dd:ee:03"}, func() any { return new(Session) }, new(sampleSession())},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, path, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			got := tt.into()
			dec := json.NewDecoder(strings.NewReader(stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(got); err != nil {
				t.Fatalf("decoding %q: %v", stdout, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("no clients is an empty array", func(t *testing.T) {
		path := startServer(t, &fakeService{})
		code, stdout, _ := runCLI(t, path, "--json", "clients")
		if code != 0 || stdout != "[]\n" {
			t.Errorf("exit %d, stdout %q; want 0, \"[]\\n\"", code, stdout)
		}
	})
}

func TestCLIEmptyClients(t *testing.T) {
	path := startServer(t, &fakeService{})
	code, stdout, _ := runCLI(t, path, "clients")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	golden(t, "clients-empty", stdout)
}

func TestMainHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main(t.Context(), []string{"help"}, &out, &errb); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	for _, cmd := range []string{"status", "clients", "allow", "kick", "help"} {
		if !strings.Contains(out.String(), "\n  "+cmd+" ") {
			t.Errorf("help does not list %q:\n%s", cmd, out.String())
		}
	}
	if errb.Len() != 0 {
		t.Errorf("stderr: %q", errb.String())
	}
}

func TestHumanBytes(t *testing.T) {
	tests := map[uint64]string{
		0: "0 B", 999: "999 B", 1000: "1.0 kB", 1500: "1.5 kB", 999_949: "999.9 kB", 999_960: "1.0 MB",
		123_456_789: "123.5 MB", 2_000_000_000: "2.0 GB", 1<<64 - 1: "18.4 EB",
	}
	for in, want := range tests {
		if got := humanBytes(in); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	tests := map[time.Duration]string{
		0: "0s", 45 * time.Second: "45s", 14*time.Minute + 59*time.Second: "14m", time.Hour + 59*time.Minute + 30*time.Second: "1h59m",
		47 * time.Hour: "47h00m", 74 * time.Hour: "3d2h", -90 * time.Second: "-1m",
	}
	for in, want := range tests {
		if got := humanDuration(in); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", in, got, want)
		}
	}
}
