package captive

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// A real HTTP server on loopback with the tracker: which connections a
// login closes, and when. The firewall's translation is simulated (it
// needs a DNAT rule, see TestLoginClosesPreLoginConnections in
// portal/cmd/portal for the real one): connections whose first request
// names a foreign host count as translated.
func TestConnsCut(t *testing.T) {
	conns := NewConns()
	foreign := map[net.Conn]bool{}
	release := make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
			io.WriteString(w, "portal")
		}),
		ConnState: conns.track,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	conns.translated = func(c net.Conn) bool { return foreign[c] }
	ip := netip.MustParseAddr("127.0.0.1")
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// serverSide finds the server's end of the client's connection c.
	serverSide := func(c net.Conn) net.Conn {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			conns.mu.Lock()
			for sc := range conns.byIP[ip] {
				if sc.RemoteAddr().String() == c.LocalAddr().String() {
					conns.mu.Unlock()
					return sc
				}
			}
			conns.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("connection from %s not tracked", c.LocalAddr())
		return nil
	}
	get := func(c net.Conn, path string) (string, error) {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// closed waits for the server to close c: a read ends with EOF.
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF) || (err != nil && strings.Contains(err.Error(), "reset"))
	}

	kept, spare, busy, own := dial(), dial(), dial(), dial()
	if body, err := get(kept, "/"); err != nil || body != "portal" {
		t.Fatalf("kept-alive: %q, %v", body, err)
	}
	if body, err := get(own, "/"); err != nil || body != "portal" {
		t.Fatalf("own: %q, %v", body, err)
	}
	for _, c := range []net.Conn{kept, spare, busy} {
		foreign[serverSide(c)] = true
	}
	serverSide(own)
	if n := conns.count(ip); n != 4 {
		t.Fatalf("%d connections tracked, want 4", n)
	}
	// busy is answering a request when the login happens.
	answered := make(chan string, 1)
	go func() {
		body, err := get(busy, "/slow")
		if err != nil {
			body = err.Error()
		}
		answered <- body
	}()
	busySide := serverSide(busy)
	deadline := time.Now().Add(2 * time.Second)
	for {
		conns.mu.Lock()
		f := conns.byIP[ip][busySide]
		conns.mu.Unlock()
		if f&connBusy != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow request never became active")
		}
		time.Sleep(5 * time.Millisecond)
	}

	if n := conns.Cut(netip.MustParseAddr("127.0.0.2")); n != 0 {
		t.Errorf("Cut of another client = %d, want 0", n)
	}
	if n := conns.Cut(ip); n != 3 {
		t.Errorf("Cut = %d, want 3 (kept-alive, spare, busy)", n)
	}
	if !closed(kept) {
		t.Error("the kept-alive translated connection is still open after the login")
	}
	if !closed(spare) {
		t.Error("the unused translated connection is still open after the login")
	}
	close(release)
	if body := <-answered; body != "portal" {
		t.Errorf("the request in flight during the login got %q, want its answer", body)
	}
	if !closed(busy) {
		t.Error("the busy translated connection stayed open after its answer")
	}
	if body, err := get(own, "/"); err != nil || body != "portal" {
		t.Errorf("the client's own connection to the portal after the login: %q, %v; want it kept", body, err)
	}
	deadline = time.Now().Add(2 * time.Second)
	for conns.count(ip) != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := conns.count(ip); n != 1 {
		t.Errorf("%d connections tracked after the cut, want 1 (closed ones forgotten)", n)
	}
	own.Close()
	deadline = time.Now().Add(2 * time.Second)
	for conns.count(ip) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := conns.count(ip); n != 0 || len(conns.byIP) != 0 {
		t.Errorf("%d connections (%d addresses) tracked after all closed, want none", n, len(conns.byIP))
	}
}
