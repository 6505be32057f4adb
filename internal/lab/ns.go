package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// NS is a named network namespace (as in `ip netns list`).
type NS struct{ Name string }

// String returns the namespace's name.
func (n NS) String() string { return n.Name }

// Command returns `ip netns exec <name> argv...` with LC_ALL=C.
func (n NS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, argv...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// Run runs argv inside the namespace and returns its combined output. The
// error names the command and carries the output.
func (n NS) Run(ctx context.Context, argv ...string) (string, error) {
	return run(ctx, append([]string{"ip", "netns", "exec", n.Name}, argv...)...)
}

// Do runs fn on a locked OS thread switched into the namespace, then
// switches the thread back. Sockets fn creates stay in the namespace for
// their whole life, so Do is how a test opens a listener or a connection
// inside a namespace and serves or uses it from the test process.
// Goroutines started by fn do not run in the namespace.
func (n NS) Do(fn func() error) (err error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering %s: getting current netns: %w", n.Name, err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering %s: %w", n.Name, err)
	}
	// Deferred, so that a panic in fn also switches back.
	defer func() {
		if serr := netns.Set(orig); serr != nil {
			// Leave the thread locked: the runtime ends it when this
			// goroutine exits, so no other goroutine inherits the namespace.
			err = errors.Join(err, fmt.Errorf("leaving %s: %w", n.Name, serr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// openIn makes a socket (listener or connection) on a thread inside the
// namespace. The socket stays in the namespace for its whole life; if the
// thread cannot switch back, the socket is closed and the error returned.
func openIn[T io.Closer](n NS, open func() (T, error)) (T, error) {
	var v T
	var made bool
	derr := n.Do(func() error {
		var err error
		v, err = open()
		made = err == nil
		return err
	})
	if derr != nil {
		if made {
			v.Close()
		}
		var zero T
		return zero, derr
	}
	return v, nil
}

// Listen opens a listener inside the namespace (see net.Listen).
func (n NS) Listen(network, addr string) (net.Listener, error) {
	return openIn(n, func() (net.Listener, error) { return net.Listen(network, addr) })
}

// ListenPacket opens a packet socket inside the namespace (see net.ListenPacket).
func (n NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	return n.listenPacket(&net.ListenConfig{}, network, addr)
}

func (n NS) listenPacket(lc *net.ListenConfig, network, addr string) (net.PacketConn, error) {
	return openIn(n, func() (net.PacketConn, error) { return lc.ListenPacket(context.Background(), network, addr) })
}

// Dial connects from inside the namespace. Use IP literals: a host name
// would be resolved by the test process's resolver, not the lab's.
func (n NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.dial(ctx, &net.Dialer{}, network, addr)
}

func (n NS) dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	return openIn(n, func() (net.Conn, error) { return d.DialContext(ctx, network, addr) })
}

// HTTPClient returns an HTTP client whose connections are made inside the
// namespace, with no proxy and no keep-alive (each request is a new
// connection, as a test of a firewall wants). roots, if not nil, are the
// trusted CAs for HTTPS (see Lab.HTTPClient for the upstream's).
func (n NS) HTTPClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       n.Dial,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: roots},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Resolver returns a resolver that asks the DNS server at server
// ("198.51.100.1:53") from inside the namespace.
func (n NS) Resolver(server string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return n.Dial(ctx, network, server)
		},
	}
}

// ErrNoReply is returned by Ping when no echo reply came in time.
var ErrNoReply = errors.New("no echo reply")

// Ping sends ICMP echo requests from inside the namespace to dst, one every
// 200 ms, until a reply arrives (nil) or ctx ends, or 2 s pass when ctx has
// no deadline (an error wrapping ErrNoReply). It needs no ping binary.
func (n NS) Ping(ctx context.Context, dst netip.Addr) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	network, laddr, reqType, replyType := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if dst.Is6() && !dst.Is4In6() {
		network, laddr, reqType, replyType = "ip6:ipv6-icmp", "::", 128, 129
	}
	dst = dst.Unmap()
	pc, err := n.ListenPacket(network, laddr)
	if err != nil {
		return fmt.Errorf("pinging %s from %s: %w", dst, n.Name, err)
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
	defer stop()

	var idb [2]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return err
	}
	id := binary.BigEndian.Uint16(idb[:])
	to := &net.IPAddr{IP: dst.AsSlice()}
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			nr, _, err := pc.ReadFrom(buf)
			if err != nil {
				got <- err
				return
			}
			if nr >= 8 && buf[0] == replyType && binary.BigEndian.Uint16(buf[4:6]) == id {
				got <- nil
				return
			}
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); ; seq++ {
		msg := make([]byte, 8+32)
		msg[0] = reqType
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], seq)
		copy(msg[8:], "civicwifi lab ping")
		if reqType == 8 {
			binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		} // the kernel fills in the ICMPv6 checksum
		if _, err := pc.WriteTo(msg, to); err != nil && !isTransient(err) {
			return fmt.Errorf("pinging %s from %s: %w", dst, n.Name, err)
		}
		select {
		case err := <-got:
			if err == nil {
				return nil
			}
			return fmt.Errorf("pinging %s from %s: %w", dst, n.Name, ErrNoReply)
		case <-tick.C:
		}
	}
}

// isTransient reports send errors that only mean "no route or neighbour
// yet": the ping goes on until its deadline.
func isTransient(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) ||
		errors.Is(err, syscall.EHOSTDOWN) || errors.Is(err, syscall.EAGAIN)
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// pidsIn returns the processes whose network namespace is name, as
// `ip netns pids` does, without this process.
func pidsIn(ctx context.Context, name string) []int {
	out, err := run(ctx, "ip", "netns", "pids", name)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err == nil && pid != os.Getpid() && pid > 1 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killNSPids kills what is left inside namespace name: SIGTERM, then
// SIGKILL to whatever is still there after a second.
func killNSPids(ctx context.Context, name string) {
	pids := pidsIn(ctx, name)
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if len(pidsIn(ctx, name)) == 0 {
			return
		}
	}
	for _, pid := range pidsIn(ctx, name) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
