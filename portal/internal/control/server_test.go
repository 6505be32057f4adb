package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// fakeService answers with canned values and records what it was asked.
type fakeService struct {
	mu      sync.Mutex
	status  Status
	clients []Client
	session Session
	err     error         // returned by every method if set
	block   chan struct{} // if set, Status waits for it to be closed
	allows  []AllowRequest
	kicks   []KickRequest
	calls   int
}

func (f *fakeService) Status(ctx context.Context) (Status, error) {
	f.mu.Lock()
	f.calls++
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return Status{}, ctx.Err()
		}
	}
	return f.status, f.err
}

func (f *fakeService) Clients(context.Context) ([]Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.clients, f.err
}

func (f *fakeService) Allow(_ context.Context, req AllowRequest) (Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.allows = append(f.allows, req)
	return f.session, f.err
}

func (f *fakeService) Kick(_ context.Context, req KickRequest) (Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.kicks = append(f.kicks, req)
	return f.session, f.err
}

func (f *fakeService) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// startServerBench is startServer without request logging.
func startServerBench(b *testing.B, svc Service) string {
	path := filepath.Join(b.TempDir(), "portal.sock")
	startServerWith(b, NewServer(svc, slog.New(slog.DiscardHandler)), path)
	return path
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startServer runs a real Server on a unix socket in a temporary directory
// and stops it (checking Serve returns nil) when the test ends.
func startServer(t *testing.T, svc Service) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "portal.sock")
	startServerAt(t, svc, path)
	return path
}

func startServerAt(t *testing.T, svc Service, path string) *Server {
	t.Helper()
	return startServerWith(t, NewServer(svc, testLogger(t)), path)
}

func startServerWith(t testing.TB, s *Server, path string) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, path) }()
	select {
	case <-s.ready:
	case err := <-errc:
		cancel()
		t.Fatalf("Serve: %v", err)
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatal("server did not start within 5s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	return s
}

// rawDo sends one HTTP request over the socket and returns status and body.
func rawDo(t *testing.T, path, method, url, body string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://portal"+url, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, url, ct)
	}
	return resp.StatusCode, string(b)
}

func errorMessage(t *testing.T, body string) string {
	t.Helper()
	var eb errorBody
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error == "" {
		t.Fatalf("error body %q is not {\"error\": \"...\"}: %v", body, err)
	}
	return eb.Error
}

func TestServerRoutesAndErrors(t *testing.T) {
	tests := []struct {
		name       string
		svcErr     error
		method     string
		url        string
		body       string
		wantStatus int
		wantErr    string // substring of the JSON error; "" means success
		wantCalls  int
	}{
		{name: "status ok", method: "GET", url: "/v1/status", wantStatus: 200, wantCalls: 1},
		{name: "clients ok", method: "GET", url: "/v1/clients", wantStatus: 200, wantCalls: 1},
		{name: "allow ok", method: "POST", url: "/v1/allow", body: `{"mac":"AA:BB:CC:DD:EE:01"}`, wantStatus: 200, wantCalls: 1},
		{name: "kick ok", method: "POST", url: "/v1/kick", body: `{"ip":"10.0.0.5"}`, wantStatus: 200, wantCalls: 1},
		{name: "service bad request is 400", svcErr: fmt.Errorf("%w: duration 90d is above the site maximum", ErrBadRequest),
			method: "POST", url: "/v1/allow", body: `{"ip":"10.0.0.5"}`, wantStatus: 400, wantErr: "duration 90d is above the site maximum", wantCalls: 1},
		{name: "service not found is 404", svcErr: fmt.Errorf("kicking: %w: no session for 10.0.0.5", ErrNotFound),
			method: "POST", url: "/v1/kick", body: `{"ip":"10.0.0.5"}`, wantStatus: 404, wantErr: "no session for 10.0.0.5", wantCalls: 1},
		{name: "other service error is 500", svcErr: errors.New("running ipset: exit status 1"),
			method: "GET", url: "/v1/status", wantStatus: 500, wantErr: "running ipset: exit status 1", wantCalls: 1},
		{name: "unknown field", method: "POST", url: "/v1/allow", body: `{"mac":"aa:bb:cc:dd:ee:01","quotaa":"5MB"}`,
			wantStatus: 400, wantErr: `unknown field "quotaa"`},
		{name: "wrong type", method: "POST", url: "/v1/kick", body: `{"mac":42}`, wantStatus: 400, wantErr: `field "mac" must be a string, not number`},
		{name: "not an object", method: "POST", url: "/v1/kick", body: `[1]`, wantStatus: 400, wantErr: "must be a JSON object"},
		{name: "empty body", method: "POST", url: "/v1/allow", wantStatus: 400, wantErr: "request body is empty"},
		{name: "truncated", method: "POST", url: "/v1/allow", body: `{"mac":`, wantStatus: 400, wantErr: "truncated"},
		{name: "syntax", method: "POST", url: "/v1/allow", body: `{mac}`, wantStatus: 400, wantErr: "not JSON"},
		{name: "trailing data", method: "POST", url: "/v1/allow", body: `{"ip":"10.0.0.5"} {}`, wantStatus: 400, wantErr: "data after the JSON object"},
		{name: "invalid mac checked by server", method: "POST", url: "/v1/allow", body: `{"mac":"zz"}`, wantStatus: 400, wantErr: `mac: "zz" is not a MAC address`},
		{name: "invalid rate checked by server", method: "POST", url: "/v1/allow", body: `{"ip":"10.0.0.5","down":"5 Mbps"}`, wantStatus: 400, wantErr: `down: "5 Mbps" is not a rate (try 5mbit)`},
		{name: "no target", method: "POST", url: "/v1/kick", body: `{"reason":"x"}`, wantStatus: 400, wantErr: "one of mac or ip is required"},
		{name: "unknown path", method: "GET", url: "/v1/nope", wantStatus: 404, wantErr: "no endpoint /v1/nope"},
		{name: "wrong method", method: "GET", url: "/v1/allow", wantStatus: 405, wantErr: "/v1/allow wants POST, not GET"},
		{name: "body over limit", method: "POST", url: "/v1/allow",
			body: `{"mac":"aa:bb:cc:dd:ee:01","method":"` + strings.Repeat("x", MaxRequestBytes) + `"}`, wantStatus: 413, wantErr: "larger than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{err: tt.svcErr, session: Session{ID: "s1"}}
			path := startServer(t, svc)
			code, body := rawDo(t, path, tt.method, tt.url, tt.body)
			if code != tt.wantStatus {
				t.Errorf("status %d, want %d (body %.300s)", code, tt.wantStatus, body)
			}
			if tt.wantErr != "" {
				if msg := errorMessage(t, body); !strings.Contains(msg, tt.wantErr) {
					t.Errorf("error %q does not contain %q", msg, tt.wantErr)
				}
			}
			if got := svc.callCount(); got != tt.wantCalls {
				t.Errorf("service called %d times, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestServerBodyJustUnderLimit(t *testing.T) {
	svc := &fakeService{session: Session{ID: "s1"}}
	path := startServer(t, svc)
	// A valid object padded with whitespace to exactly the limit is accepted.
	obj := `{"ip":"10.0.0.5"}`
	body := obj + strings.Repeat(" ", MaxRequestBytes-len(obj))
	if code, b := rawDo(t, path, "POST", "/v1/kick", body); code != 200 {
		t.Fatalf("status %d for a body of exactly %d bytes: %s", code, len(body), b)
	}
}

func TestServerNormalizesBeforeService(t *testing.T) {
	svc := &fakeService{session: Session{ID: "s1"}}
	path := startServer(t, svc)
	if code, b := rawDo(t, path, "POST", "/v1/allow", `{"mac":" AA-BB-CC-DD-EE-01 ","ip":"::ffff:10.0.0.5","duration":"2h","down":"10mbit"}`); code != 200 {
		t.Fatalf("status %d: %s", code, b)
	}
	want := []AllowRequest{{MAC: "aa:bb:cc:dd:ee:01", IP: "10.0.0.5", Duration: "2h", Down: "10mbit", Method: "ctl"}}
	if diff := cmp.Diff(want, svc.allows); diff != "" {
		t.Errorf("request seen by the service (-want +got):\n%s", diff)
	}
}

func TestServerSocketFile(t *testing.T) {
	path := startServer(t, &fakeService{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		t.Errorf("%s is %v, want a socket", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm != 0o660 {
		t.Errorf("socket mode %o, want 660", perm)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if os.Geteuid() == 0 && (st.Uid != 0 || st.Gid != 0) {
		t.Errorf("socket owned by %d:%d, want 0:0", st.Uid, st.Gid)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".ctl*")); len(leftovers) > 0 {
		t.Errorf("temporary socket names left behind: %v", leftovers)
	}
}

func TestServerRemovesSocketOnShutdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portal.sock")
	s := NewServer(&fakeService{}, testLogger(t))
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, path) }()
	<-s.ready
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve returned %v after cancel, want nil", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
}

func TestServerRefusesSecondDaemon(t *testing.T) {
	svc := &fakeService{status: Status{Site: "first"}}
	path := startServer(t, svc)
	second := NewServer(&fakeService{status: Status{Site: "second"}}, testLogger(t))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err := second.Serve(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "another daemon is already listening on "+path) {
		t.Fatalf("second Serve on the same socket: %v, want refusal", err)
	}
	// The first daemon still answers on its socket.
	st, err := NewClient(path).Status(t.Context())
	if err != nil || st.Site != "first" {
		t.Errorf("first daemon after refused second: %+v, %v", st, err)
	}
}

func TestServerReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portal.sock")
	// A daemon that died without cleaning up leaves a socket file nobody listens on.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stale socket dial: %v, want ECONNREFUSED", err)
	}
	startServerAt(t, &fakeService{status: Status{Site: "fresh"}}, path)
	st, err := NewClient(path).Status(t.Context())
	if err != nil || st.Site != "fresh" {
		t.Errorf("status after replacing stale socket: %+v, %v", st, err)
	}
}

func TestServerKeepsNonSocketFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portal.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := NewServer(&fakeService{}, testLogger(t)).Serve(t.Context(), path)
	if err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Serve over a regular file: %v, want refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Errorf("regular file was touched: %q", b)
	}
}

func TestServerGracefulShutdown(t *testing.T) {
	block := make(chan struct{})
	svc := &fakeService{block: block, status: Status{Site: "slow"}}
	path := filepath.Join(t.TempDir(), "portal.sock")
	s := NewServer(svc, testLogger(t))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, path) }()
	<-s.ready

	type result struct {
		st  Status
		err error
	}
	resc := make(chan result, 1)
	go func() {
		st, err := NewClient(path).Status(context.Background())
		resc <- result{st, err}
	}()
	for svc.callCount() == 0 { // the request is in the service
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		t.Fatalf("Serve returned (%v) while a request was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(block)
	if r := <-resc; r.err != nil || r.st.Site != "slow" {
		t.Errorf("in-flight request: %+v, %v; want it to finish", r.st, r.err)
	}
	if err := <-errc; err != nil {
		t.Errorf("Serve: %v, want nil on cancel", err)
	}
}

func TestServerShutdownTimeout(t *testing.T) {
	svc := &fakeService{block: make(chan struct{})} // never unblocked
	path := filepath.Join(t.TempDir(), "portal.sock")
	s := NewServer(svc, testLogger(t))
	s.ShutdownTimeout = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, path) }()
	<-s.ready
	go NewClient(path).Status(t.Context())
	for svc.callCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve: %v, want nil", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("shutdown took %v with a 100ms timeout", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the shutdown timeout")
	}
}

func TestClientErrors(t *testing.T) {
	t.Run("no socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "portal.sock")
		_, err := NewClient(path).Status(t.Context())
		want := "portal daemon not running? no socket at " + path
		if err == nil || err.Error() != want {
			t.Errorf("got %v, want %q", err, want)
		}
	})
	t.Run("stale socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "portal.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		_, err = NewClient(path).Clients(t.Context())
		if err == nil || !strings.Contains(err.Error(), "nothing listens on "+path) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("server errors keep message and sentinel", func(t *testing.T) {
		for _, tt := range []struct {
			svcErr error
			is     error
			status int
		}{
			{fmt.Errorf("%w: no session for 10.0.0.9", ErrNotFound), ErrNotFound, 404},
			{fmt.Errorf("%w: quota above site maximum", ErrBadRequest), ErrBadRequest, 400},
			{errors.New("disk on fire"), nil, 500},
		} {
			path := startServer(t, &fakeService{err: tt.svcErr})
			_, err := NewClient(path).Kick(t.Context(), KickRequest{IP: "10.0.0.9"})
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Message != tt.svcErr.Error() {
				t.Errorf("Kick: %#v, want APIError{%d, %q}", err, tt.status, tt.svcErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
		}
	})
}

func TestAuthorize(t *testing.T) {
	s := NewServer(&fakeService{}, slog.New(slog.DiscardHandler))
	s.sockGID = 4242
	me := uint32(os.Geteuid())
	tests := []struct {
		name string
		info *peerInfo
		ok   bool
	}{
		{"root", &peerInfo{cred: peerCred{UID: 0, GID: 100}}, true},
		{"daemon's own user", &peerInfo{cred: peerCred{UID: me, GID: 100}}, true},
		{"socket group", &peerInfo{cred: peerCred{UID: 1000, GID: 4242}}, true},
		{"other user", &peerInfo{cred: peerCred{UID: 1000, GID: 1000}}, me == 1000},
		{"credentials unreadable", &peerInfo{err: errors.New("EBADF")}, false},
		{"no credentials", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.info != nil {
				ctx = context.WithValue(ctx, peerKey{}, *tt.info)
			}
			_, err := s.authorize(ctx)
			if (err == nil) != tt.ok {
				t.Errorf("authorize: %v, want ok=%v", err, tt.ok)
			}
			if err != nil && statusOf(err) != http.StatusForbidden {
				t.Errorf("status %d for %v, want 403", statusOf(err), err)
			}
		})
	}
}
