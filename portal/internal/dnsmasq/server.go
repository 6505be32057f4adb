package dnsmasq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Supervision timings.
const (
	minBackoff   = 500 * time.Millisecond
	maxBackoff   = 30 * time.Second
	stableRun    = time.Minute // a run this long resets the back-off
	pollInterval = 500 * time.Millisecond
	maxOutBytes  = 1 << 20 // dnsmasq.out is truncated beyond this at each start
)

// Server supervises one dnsmasq.
type Server struct {
	log *slog.Logger

	reconf sync.Mutex // serialises SetGardenDomains
	// fixed at New: what SetGardenDomains never changes
	stateDir, confPath, pidPath, binary string

	mu      sync.Mutex
	cfg     Config   // the configuration in use (SetGardenDomains changes it)
	conf    []byte   // cfg rendered
	proc    *process // the dnsmasq we started or adopted; nil if none
	stopped bool     // Stop was called: Run no longer restarts
}

// process is one dnsmasq process.
type process struct {
	pid     int
	child   bool          // started by this Server (else adopted)
	done    chan struct{} // closed when the process is gone (children only)
	state   *os.ProcessState
	started time.Time
}

// New validates cfg (after filling defaults) and returns a Server.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, conf: cfg.Render(), log: log.With("component", "dnsmasq"),
		stateDir: cfg.StateDir, confPath: cfg.ConfPath(), pidPath: cfg.PidPath(), binary: cfg.Binary}, nil
}

// Config returns the configuration in use, defaults filled.
func (s *Server) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func (s *Server) rendered() (Config, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg, s.conf
}

// SetGardenDomains replaces the walled garden's domain names (the site's
// policy changed). The new configuration is checked with dnsmasq --test and
// written; the running dnsmasq is then restarted with it (dnsmasq reads its
// ipset lines only at start), so DNS pauses for about a second. A list that
// fails validation changes nothing.
func (s *Server) SetGardenDomains(ctx context.Context, domains []string) error {
	s.reconf.Lock()
	defer s.reconf.Unlock()
	cfg := s.Config()
	if slices.Equal(cfg.GardenDomains, domains) {
		return nil
	}
	cfg.GardenDomains = slices.Clone(domains)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("changing the walled garden: %w", err)
	}
	conf := cfg.Render()
	if err := s.check(ctx, cfg, conf); err != nil {
		return fmt.Errorf("changing the walled garden: %w", err)
	}
	if err := writeFileAtomic(cfg.ConfPath(), conf); err != nil {
		return fmt.Errorf("changing the walled garden: %w", err)
	}
	s.mu.Lock()
	s.cfg, s.conf = cfg, conf
	p := s.proc
	s.mu.Unlock()
	s.log.Info("walled garden changed: restarting dnsmasq", "domains", domains)
	if p != nil && s.alive(p) {
		// Run sees it exit and starts it again with the new file.
		if err := s.terminate(ctx, p); err != nil {
			return fmt.Errorf("changing the walled garden: restarting dnsmasq: %w", err)
		}
	}
	return nil
}

// Run makes sure dnsmasq runs with this configuration and restarts it, with
// back-off, whenever it dies. It adopts a dnsmasq that already runs from
// StateDir's pidfile with an identical configuration file, and restarts one
// whose configuration differs. It returns nil when ctx is cancelled and
// leaves dnsmasq running (see Stop); it returns an error only when dnsmasq
// rejects the configuration or StateDir is unusable.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.stateDir, 0o755); err != nil {
		return fmt.Errorf("running dnsmasq: %w", err)
	}
	p, err := s.adopt()
	if err != nil {
		return fmt.Errorf("running dnsmasq: %w", err)
	}
	if p == nil {
		// Under reconf: a SetGardenDomains made meanwhile (the first site
		// policy can come before dnsmasq is started) must not be written
		// over with the configuration read before it.
		s.reconf.Lock()
		cfg, conf := s.rendered()
		err := s.check(ctx, cfg, conf)
		if err == nil {
			err = writeFileAtomic(cfg.ConfPath(), conf)
		}
		s.reconf.Unlock()
		if err != nil {
			return fmt.Errorf("running dnsmasq: %w", err)
		}
	}
	backoff := minBackoff
	for {
		if p == nil && s.isStopped() {
			<-ctx.Done()
			return nil
		}
		if p == nil {
			if p, err = s.start(); err != nil {
				s.log.Error("starting dnsmasq", "err", err, "retry_in", backoff)
			}
		}
		if p != nil {
			if !s.wait(ctx, p) {
				return nil
			}
			if s.isStopped() {
				<-ctx.Done()
				return nil
			}
			ran := time.Since(p.started)
			if ran > stableRun {
				backoff = minBackoff
			}
			s.log.Warn("dnsmasq exited", "pid", p.pid, "ran", ran.Round(time.Millisecond),
				"status", p.status(), "output", s.outputTail(), "restart_in", backoff)
			p = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// check asks dnsmasq to validate a rendered configuration (dnsmasq --test).
func (s *Server) check(ctx context.Context, cfg Config, conf []byte) error {
	f, err := os.CreateTemp(cfg.StateDir, ".check-*.conf")
	if err != nil {
		return fmt.Errorf("checking config: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(conf); err != nil {
		f.Close()
		return fmt.Errorf("checking config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("checking config: %w", err)
	}
	argv := []string{cfg.Binary, "--test", "--conf-file=" + f.Name()}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("checking config: running %q: %w\n%s", argv, err, out)
	}
	return nil
}

// adopt returns the running dnsmasq of this StateDir if its configuration
// file equals ours. A running one with another configuration is stopped.
func (s *Server) adopt() (*process, error) {
	pid, ok := s.pidFromFile()
	if !ok {
		return nil, nil
	}
	_, conf := s.rendered()
	old, err := os.ReadFile(s.confPath)
	if err == nil && bytes.Equal(old, conf) {
		p := &process{pid: pid, started: time.Now()}
		s.setProc(p)
		s.log.Info("adopted running dnsmasq", "pid", pid)
		return p, nil
	}
	s.log.Info("configuration changed: restarting dnsmasq", "pid", pid)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.terminate(ctx, &process{pid: pid}); err != nil {
		return nil, err
	}
	return nil, nil
}

// start starts dnsmasq in its own session, with no parent-death signal, so
// that it survives the daemon.
func (s *Server) start() (*process, error) {
	out, err := openOutput(filepath.Join(s.stateDir, outName))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	argv := s.argv()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out // a file, not a pipe: no SIGPIPE when the daemon is gone
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %q: %w", argv, err)
	}
	p := &process{pid: cmd.Process.Pid, child: true, done: make(chan struct{}), started: time.Now()}
	go func() {
		cmd.Wait() // the exit status is kept in cmd.ProcessState
		s.mu.Lock()
		p.state = cmd.ProcessState
		s.mu.Unlock()
		close(p.done)
	}()
	s.setProc(p)
	s.log.Info("started dnsmasq", "pid", p.pid, "argv", argv)
	return p, nil
}

func (s *Server) argv() []string {
	return []string{s.binary, "--keep-in-foreground", "--conf-file=" + s.confPath}
}

// wait blocks until p is gone (true) or ctx is done (false).
func (s *Server) wait(ctx context.Context, p *process) bool {
	if p.child {
		select {
		case <-p.done:
			return true
		case <-ctx.Done():
			return false
		}
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		if !s.isOurs(p.pid) {
			return true
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
}

// Running reports whether the dnsmasq of this StateDir runs (started or
// adopted by this Server, or found through the pidfile).
func (s *Server) Running() bool {
	_, ok := s.livePID()
	return ok
}

// PID returns the pid of the running dnsmasq, or 0.
func (s *Server) PID() int {
	pid, _ := s.livePID()
	return pid
}

// FlushCache sends SIGHUP: dnsmasq clears its cache, so walled-garden names
// are resolved again (and their addresses added to the set again).
func (s *Server) FlushCache() error {
	pid, ok := s.livePID()
	if !ok {
		return errors.New("flushing dnsmasq cache: dnsmasq is not running")
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("flushing dnsmasq cache: signalling pid %d: %w", pid, err)
	}
	return nil
}

// Stop ends dnsmasq (SIGTERM, then SIGKILL when ctx is done) and keeps Run
// from restarting it. Stopping a dnsmasq that does not run is not an error.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	p := s.proc
	s.mu.Unlock()
	if p == nil || !s.alive(p) {
		pid, ok := s.pidFromFile()
		if !ok {
			return nil
		}
		p = &process{pid: pid}
	}
	if err := s.terminate(ctx, p); err != nil {
		return fmt.Errorf("stopping dnsmasq: %w", err)
	}
	os.Remove(s.pidPath)
	return nil
}

// terminate sends SIGTERM and waits; SIGKILL when ctx ends first.
func (s *Server) terminate(ctx context.Context, p *process) error {
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling pid %d: %w", p.pid, err)
	}
	if s.waitGone(ctx, p) {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing pid %d: %w", p.pid, err)
	}
	kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !s.waitGone(kctx, p) {
		return fmt.Errorf("pid %d still running after SIGKILL", p.pid)
	}
	return nil
}

// waitGone waits until p has exited: a child is reaped, another process is
// gone or a zombie (checked by pid alone: once it got our signal, its
// command line empties while it exits).
func (s *Server) waitGone(ctx context.Context, p *process) bool {
	gone := func() bool {
		if p.child {
			return !s.alive(p)
		}
		return !pidLive(p.pid)
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !gone() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return gone()
		}
	}
	return true
}

// pidLive reports whether pid exists and is not a zombie.
func pidLive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses, which may itself
	// contain ") ".
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

func (s *Server) alive(p *process) bool {
	if p.child {
		select {
		case <-p.done:
			return false
		default:
			return true
		}
	}
	return s.isOurs(p.pid)
}

func (s *Server) livePID() (int, bool) {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil && s.alive(p) {
		return p.pid, true
	}
	return s.pidFromFile()
}

func (s *Server) setProc(p *process) {
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
}

func (s *Server) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// pidFromFile returns the running dnsmasq of this StateDir: the pid in the
// pidfile if that process is alive and runs dnsmasq with our configuration
// file, else such a process found by scanning /proc (the pidfile may be
// gone or stale while dnsmasq still runs).
func (s *Server) pidFromFile() (int, bool) {
	if b, err := os.ReadFile(s.pidPath); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 && s.isOurs(pid) {
			return pid, true
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 1 && s.isOurs(pid) {
			return pid, true
		}
	}
	return 0, false
}

// isOurs reports whether pid is a live (not zombie) process whose command
// line runs dnsmasq with our configuration file.
func (s *Server) isOurs(pid int) bool {
	if !pidLive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "dnsmasq") {
		return false
	}
	for _, a := range args[1:] {
		if a == "--conf-file="+s.confPath {
			return true
		}
	}
	return false
}

func (p *process) status() string {
	if p.state == nil {
		return "gone"
	}
	return p.state.String()
}

// outputTail returns the end of dnsmasq.out, for logs.
func (s *Server) outputTail() string {
	b, err := os.ReadFile(filepath.Join(s.stateDir, outName))
	if err != nil {
		return ""
	}
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return strings.TrimSpace(string(b))
}

func openOutput(path string) (*os.File, error) {
	flag := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxOutBytes {
		flag |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening dnsmasq output: %w", err)
	}
	return f, nil
}

// writeFileAtomic replaces path with data through a rename, so dnsmasq never
// reads a half-written file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
