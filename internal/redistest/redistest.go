// Package redistest runs a real redis-server for tests: on a free loopback
// port, in a temporary directory, with append-only persistence and a
// random password, stopped in t.Cleanup. Restart stops it and starts it
// again on the same port and data, to test durability.
//
// Without redis-server the test is skipped on a laptop and fails under
// CI=true (a skipped test proves nothing).
package redistest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running redis-server.
type Server struct {
	Addr     string // 127.0.0.1:port
	Password string
	Dir      string // data directory (appendonly files) and redis.log

	bin  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a redis-server for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redistest needs redis-server (Debian package redis-server)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true, so this is a failure)")
		}
		t.Skip(msg)
	}
	var pw [16]byte
	rand.Read(pw[:])
	s := &Server{Password: hex.EncodeToString(pw[:]), Dir: t.TempDir(), bin: bin}
	t.Cleanup(func() { s.stop(t) })
	// A free port may be taken by someone else between our probe and
	// redis-server's bind: try a few.
	for attempt := 0; ; attempt++ {
		s.port, err = freePort()
		if err == nil {
			err = s.start()
		}
		if err == nil {
			return s
		}
		if attempt == 4 {
			t.Fatalf("starting redis-server: %v\n%s", err, s.logTail())
		}
	}
}

// URL is the server's redis:// URL, with its password, database 0.
func (s *Server) URL() string {
	return fmt.Sprintf("redis://:%s@%s/0", s.Password, s.Addr)
}

// Restart stops the server (SIGTERM: redis-server flushes its append-only
// file) and starts it again on the same port and data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop(t)
	var err error
	for attempt := 0; attempt < 20; attempt++ { // the port may linger briefly
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("restarting redis-server: %v\n%s", err, s.logTail())
}

// Kill stops the server with SIGKILL, as a crash would (data written
// since the last fsync of the append-only file may be lost: redis's
// appendfsync everysec).
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	// The password goes in a 0600 config file, not on the command line
	// where ps would show it.
	conf := strings.Join([]string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(s.port),
		"dir " + s.Dir,
		"logfile " + filepath.Join(s.Dir, "redis.log"),
		"requirepass " + s.Password,
		"appendonly yes",
		"appendfsync everysec",
		`save ""`,
		"daemonize no",
		"protected-mode yes",
	}, "\n") + "\n"
	confPath := filepath.Join(s.Dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(s.bin, confPath)
	// Own process group; killed with the test binary if that dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %q: %w", cmd.Args, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("redis-server exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			s.cmd = nil
			return fmt.Errorf("redis-server on %s not answering PING after 10s: %w", s.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping sends AUTH and PING in the RESP protocol and wants +OK, +PONG.
func (s *Server) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n", len(s.Password), s.Password)
	r := bufio.NewReader(c)
	for _, want := range []string{"+OK\r\n", "+PONG\r\n"} {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if line != want {
			return fmt.Errorf("answer %q, want %q", line, want)
		}
	}
	return nil
}

func (s *Server) stop(t testing.TB) {
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		t.Errorf("redis-server on %s ignored SIGTERM for 10s; killed", s.Addr)
	}
	s.cmd = nil
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
