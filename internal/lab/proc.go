package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// proc is a background process the lab started and will stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

var logName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Start runs argv in the background inside ns, in its own process group,
// with stdout and stderr appended to <Dir>/<name>.log (see LogFile). Close
// stops it: SIGTERM to the group, SIGKILL after 3 s. The lab waits for the
// process; callers must not call Wait on the returned command, but may read
// its Process.Pid or signal it.
func (l *Lab) Start(ns NS, name string, argv ...string) (*exec.Cmd, error) {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("starting %s: lab is closed", name)
	}
	f, err := os.OpenFile(l.LogFile(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := ns.Command(context.Background(), argv...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig kills the process if this one dies without Close (a test
	// binary killed at its timeout); onSpawner makes sure the forking
	// thread, whose death is what the kernel watches, lives as long as the
	// process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := onSpawner(cmd.Start); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: running %q: %w", name, cmd.Args, err)
	}
	p := &proc{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	l.mu.Lock()
	if l.closed { // Close ran meanwhile: do not leak the process
		l.mu.Unlock()
		p.stop(time.Second)
		return nil, fmt.Errorf("starting %s: lab is closed", name)
	}
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return cmd, nil
}

// LogFile returns the path where Start writes the output of the process
// called name.
func (l *Lab) LogFile(name string) string {
	return filepath.Join(l.Dir, logName.ReplaceAllString(name, "_")+".log")
}

// Exited returns a channel closed when cmd, started by Start, has exited
// (then cmd.ProcessState is set). It returns nil for a command the lab did
// not start.
func (l *Lab) Exited(cmd *exec.Cmd) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.procs {
		if p.cmd == cmd {
			return p.done
		}
	}
	return nil
}

// stop signals the process group with SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		// The leader is gone; make sure its group is too.
		syscall.Kill(-pgid, syscall.SIGKILL)
		return
	default:
	}
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		p.cmd.Process.Kill()
		<-p.done
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

var (
	spawnOnce sync.Once
	spawnCh   chan func()
)

// onSpawner runs fn on one OS thread that is locked for the life of the
// process and never exits, so a child forked there keeps its parent thread
// (and Pdeathsig does not fire early when the Go runtime retires a thread).
func onSpawner(fn func() error) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan func())
		go func() {
			runtime.LockOSThread()
			for f := range spawnCh {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnCh <- func() { errc <- fn() }
	return <-errc
}
