package dnsmasq_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/portal/internal/dnsmasq"
	"golang.org/x/sys/unix"
)

// TestMain lets this test binary (named dnsmasq.test) stand in for dnsmasq:
// with CW_FAKE_DNSMASQ=1 it validates nothing on --test, and with
// --keep-in-foreground it writes the pidfile named in the config file,
// records SIGHUPs next to it and exits on SIGTERM.
//
// With CW_DNSMASQ_DAEMON=<config JSON> it is a portal daemon instead (see
// helperDaemon).
func TestMain(m *testing.M) {
	if js := os.Getenv("CW_DNSMASQ_DAEMON"); js != "" {
		os.Exit(helperDaemon(js))
	}
	if os.Getenv("CW_FAKE_DNSMASQ") == "1" && len(os.Args) > 1 &&
		(os.Args[1] == "--test" || os.Args[1] == "--keep-in-foreground") {
		os.Exit(fakeDnsmasq(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeDnsmasq(args []string) int {
	if args[0] == "--test" {
		fmt.Println("dnsmasq: syntax check OK.")
		return 0
	}
	var conf string
	for _, a := range args {
		if c, ok := strings.CutPrefix(a, "--conf-file="); ok {
			conf = c
		}
	}
	f, err := os.Open(conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsmasq:", err)
		return 1
	}
	var pidFile string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "pid-file="); ok {
			pidFile = p
		}
	}
	f.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
	if err := os.WriteFile(pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "dnsmasq:", err)
		return 1
	}
	for sig := range sigs {
		if sig == syscall.SIGTERM {
			return 0
		}
		hf, err := os.OpenFile(filepath.Join(filepath.Dir(pidFile), "hup"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err == nil {
			fmt.Fprintln(hf, "HUP")
			hf.Close()
		}
	}
	return 0
}

// TestSupervisionFake runs the supervisor against the fake dnsmasq: tier 0,
// no root needed.
func TestSupervisionFake(t *testing.T) {
	t.Setenv("CW_FAKE_DNSMASQ", "1")
	dir := t.TempDir()
	cfg := dnsmasq.Config{
		Binary:     os.Args[0],
		Address:    netip.MustParseAddr("10.20.0.1"),
		Subnet:     netip.MustParsePrefix("10.20.0.0/22"),
		RangeStart: netip.MustParseAddr("10.20.1.0"),
		RangeEnd:   netip.MustParseAddr("10.20.1.200"),
		StateDir:   dir,
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	newServer := func(cfg dnsmasq.Config) *dnsmasq.Server {
		t.Helper()
		srv, err := dnsmasq.New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	run := func(srv *dnsmasq.Server) (cancel func()) {
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		return func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		newServer(cfg).Stop(ctx)
	})

	srv := newServer(cfg)
	cancel1 := run(srv)
	first := waitPID(t, srv, 0)
	if sid, _ := unix.Getsid(first); sid != first {
		t.Errorf("session of %d = %d, want its own", first, sid)
	}

	// kill -9: restarted after the back-off.
	syscall.Kill(first, syscall.SIGKILL)
	start := time.Now()
	second := waitPID(t, srv, first)
	t.Logf("restarted %d -> %d in %s", first, second, time.Since(start).Round(time.Millisecond))

	// FlushCache sends SIGHUP (once the fake handles it: it has written
	// its pidfile).
	waitFor(t, "the pidfile", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "dnsmasq.pid"))
		return strings.TrimSpace(string(b)) == fmt.Sprint(second)
	})
	if err := srv.FlushCache(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a SIGHUP recorded", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "hup"))
		return bytes.Count(b, []byte("HUP")) == 1
	})

	// The end of Run leaves dnsmasq running; a second Server adopts it.
	cancel1()
	if !srv.Running() || srv.PID() != second {
		t.Fatalf("dnsmasq %d gone after Run returned", second)
	}
	srv2 := newServer(cfg)
	cancel2 := run(srv2)
	waitFor(t, "adoption logged", func() bool {
		return strings.Contains(logs.String(), fmt.Sprintf(`msg="adopted running dnsmasq" component=dnsmasq pid=%d`, second))
	})
	if got := srv2.PID(); got != second {
		t.Errorf("second Server: pid %d, want %d", got, second)
	}
	// An adopted process is polled: kill -9 restarts it too.
	syscall.Kill(second, syscall.SIGKILL)
	third := waitPID(t, srv2, second)
	cancel2()

	// Without a pidfile the running dnsmasq is still found (through /proc).
	os.Remove(filepath.Join(dir, "dnsmasq.pid"))
	if got := newServer(cfg).PID(); got != third {
		t.Errorf("without pidfile: pid %d, want %d", got, third)
	}

	// A changed configuration restarts it.
	cfg4 := cfg
	cfg4.LeaseTime = 3 * time.Hour
	srv4 := newServer(cfg4)
	cancel4 := run(srv4)
	fourth := waitPID(t, srv4, third)
	waitFor(t, "the end of the old dnsmasq after a config change", func() bool { return !alive(third) })

	// Stop from another Server (as `portal teardown` does) ends it, and
	// the supervising Run does not bring it back... because Stop is
	// per-Server, stop the supervisor first.
	cancel4()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := newServer(cfg4).Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Stop returns once the process is no dnsmasq any more (exiting); the
	// kernel may take a moment more to make it a zombie.
	waitFor(t, "the end of dnsmasq after Stop", func() bool { return !alive(fourth) })
	if err := newServer(cfg4).Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	// Stop on the supervising Server: no restart afterwards.
	srv5 := newServer(cfg4)
	cancel5 := run(srv5)
	fifth := waitPID(t, srv5, 0)
	if err := srv5.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if srv5.Running() || alive(fifth) {
		t.Errorf("dnsmasq running after Stop (pid %d)", srv5.PID())
	}
	cancel5()
}

func TestRunRejectsBadBinary(t *testing.T) {
	cfg := dnsmasq.Config{
		Binary:     "/bin/false",
		Address:    netip.MustParseAddr("10.20.0.1"),
		Subnet:     netip.MustParsePrefix("10.20.0.0/22"),
		RangeStart: netip.MustParseAddr("10.20.1.0"),
		RangeEnd:   netip.MustParseAddr("10.20.1.200"),
		StateDir:   t.TempDir(),
	}
	srv, err := dnsmasq.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "checking config: running") {
		t.Errorf("Run = %v, want a config check error", err)
	}
}

func waitPID(t *testing.T, srv *dnsmasq.Server, old int) int {
	t.Helper()
	var pid int
	waitFor(t, fmt.Sprintf("a dnsmasq other than %d", old), func() bool {
		pid = srv.PID()
		return pid != 0 && pid != old
	})
	return pid
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && !slices.Contains([]string{"Z", "X"}, f[0])
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
