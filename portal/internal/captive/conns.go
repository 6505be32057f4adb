package captive

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// Conns knows the portal's open plain-HTTP connections by client address,
// so that a login can close those the firewall translated to the portal
// before it (Cut).
//
// Before login the firewall DNATs a client's port 80 to the portal. A
// browser keeps such connections (kept alive after a probe, or opened
// ahead as spares) and would send its first request after login over one,
// to the portal again instead of the site. The portal answers a request
// like that with a redirect to the same URL on a new connection (see
// ServeHTTP), which costs a round trip, and a spare stays the portal's
// until the browser gives up on it. Closing them at login, from here, is
// cheap: the alternative, deleting their conntrack entries, walks the
// kernel's whole connection table (all of its buckets, ~10 ms with the
// default size) for every login.
type Conns struct {
	mu   sync.Mutex
	byIP map[netip.Addr]map[net.Conn]connFlags
	// translated reports whether the firewall DNATed conn to the portal
	// (a question to the kernel; tests replace it).
	translated func(net.Conn) bool
}

// connFlags is what Conns knows of one connection.
type connFlags uint8

const (
	connBusy connFlags = 1 << iota // a request is being served
	connCut                        // close once the request in flight is answered
)

// NewConns returns an empty tracker. Give it to the Server (Config.Conns)
// and call its Cut when a client's session opens.
func NewConns() *Conns {
	return &Conns{byIP: map[netip.Addr]map[net.Conn]connFlags{}, translated: translated}
}

// track is the HTTP server's ConnState hook.
func (c *Conns) track(conn net.Conn, st http.ConnState) {
	ip := remoteIP(conn)
	if !ip.IsValid() {
		return
	}
	closeNow := false
	c.mu.Lock()
	switch st {
	case http.StateNew:
		m := c.byIP[ip]
		if m == nil {
			m = make(map[net.Conn]connFlags, 1)
			c.byIP[ip] = m
		}
		m[conn] = 0
	case http.StateActive:
		if f, ok := c.byIP[ip][conn]; ok {
			c.byIP[ip][conn] = f | connBusy
		}
	case http.StateIdle:
		if f, ok := c.byIP[ip][conn]; ok {
			c.byIP[ip][conn] = f &^ connBusy
			closeNow = f&connCut != 0
		}
	case http.StateHijacked, http.StateClosed:
		if m := c.byIP[ip]; m != nil {
			delete(m, conn)
			if len(m) == 0 {
				delete(c.byIP, ip)
			}
		}
	}
	c.mu.Unlock()
	if closeNow {
		conn.Close()
	}
}

// Cut closes the client's connections that were translated to the portal
// (their original destination is another host): an idle or unused one at
// once, one carrying a request as soon as it is answered. Connections the
// client opened to the portal itself stay (to its address, whatever the
// port: the gateway's own :80 is translated to the portal's port too). It
// returns how many it closed or marked.
//
// A request whose header is still arriving counts as idle (net/http says
// active only once the header is read), and one may start between the
// check and the close: such a request gets no answer, the browser sends
// it again on a new connection, which goes out (as a browser does on any
// kept-alive connection the server closed).
func (c *Conns) Cut(ip netip.Addr) int {
	ip = ip.Unmap()
	c.mu.Lock()
	var conns []net.Conn
	for conn := range c.byIP[ip] {
		conns = append(conns, conn)
	}
	c.mu.Unlock()
	n := 0
	for _, conn := range conns {
		if !c.translated(conn) {
			continue
		}
		c.mu.Lock()
		f, ok := c.byIP[ip][conn]
		if ok && f&connBusy != 0 {
			c.byIP[ip][conn] = f | connCut
		}
		c.mu.Unlock()
		if !ok {
			continue // closed meanwhile
		}
		if f&connBusy == 0 {
			conn.Close()
		}
		n++
	}
	return n
}

// count is how many connections of ip are tracked (for tests).
func (c *Conns) count(ip netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byIP[ip.Unmap()])
}

func remoteIP(conn net.Conn) netip.Addr {
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// translated reports whether conn's original destination, before the
// firewall's DNAT, was another host than the address it reached.
func translated(conn net.Conn) bool {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return false
	}
	local, ok := tc.LocalAddr().(*net.TCPAddr)
	if !ok {
		return false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	var orig netip.AddrPort
	var oerr error
	if err := raw.Control(func(fd uintptr) { orig, oerr = originalDst(int(fd)) }); err != nil || oerr != nil {
		return false // not tracked by conntrack: nothing translated it
	}
	return orig.Addr() != local.AddrPort().Addr().Unmap()
}

// originalDst asks conntrack for the connection's destination before NAT
// (SO_ORIGINAL_DST, IPv4). The kernel writes a struct sockaddr_in; x/sys
// has no getter of that shape, so it is read into an IPv6Mreq, 20 bytes,
// large enough.
func originalDst(fd int) (netip.AddrPort, error) {
	m, err := unix.GetsockoptIPv6Mreq(fd, unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, err
	}
	b := m.Multiaddr // sin_family (host order), sin_port, sin_addr
	if family := binary.NativeEndian.Uint16(b[0:2]); family != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: address family %d", family)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), nil
}
