package lab

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Require skips t unless the process is root and every tool is on PATH.
// Under CI=true a missing capability fails the test instead: a skipped
// network test proves nothing.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "lab needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true, so this is a failure)")
	}
	t.Skip(msg)
}

// NewT builds a lab for a test (see New), requiring root, ip and bridge,
// and closes it in t.Cleanup. With opts.Upstream it also requires dnsmasq
// and iperf3 and starts the upstream services. If the test failed, the
// tails of the lab's process logs are logged before they are removed.
func NewT(t testing.TB, opts Options) *Lab {
	t.Helper()
	Require(t, "ip", "bridge")
	if opts.Upstream {
		Require(t, "dnsmasq", "iperf3", "ss")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.logTails(t)
		}
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	if opts.Upstream {
		if err := l.StartUpstream(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// logTails logs the last lines of every log in Dir.
func (l *Lab) logTails(t testing.TB) {
	t.Helper()
	entries, err := os.ReadDir(l.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		b, err := os.ReadFile(l.Dir + "/" + e.Name())
		if err != nil || len(b) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		t.Logf("lab %s: %s (last %d lines):\n%s", l.ID, e.Name(), len(lines), strings.Join(lines, "\n"))
	}
}
