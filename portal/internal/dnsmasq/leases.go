package dnsmasq

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Lease is one DHCPv4 lease from dnsmasq's lease database.
type Lease struct {
	// Expires is when the lease ends; zero for an infinite lease.
	Expires time.Time
	// MAC is the client's hardware address.
	MAC net.HardwareAddr
	IP  netip.Addr
	// Hostname is the name the client sent (option 12); empty if none.
	Hostname string
	// ClientID is the client identifier (option 61) as dnsmasq writes it
	// (colon-separated hex); empty if none.
	ClientID string
}

// Leases reads dnsmasq's lease database. A missing file means no leases.
func (s *Server) Leases() ([]Lease, error) {
	f, err := os.Open(s.cfg.LeasesPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading leases: %w", err)
	}
	defer f.Close()
	ls, err := ParseLeases(f)
	if err != nil {
		return nil, fmt.Errorf("reading leases %s: %w", s.cfg.LeasesPath(), err)
	}
	return ls, nil
}

// ParseLeases parses a dnsmasq lease file: one lease per line,
//
//	<expiry unix seconds> <mac> <ip> <hostname|*> <client-id|*>
//
// DHCPv6 lines (after the "duid" line) and blank lines are skipped. A
// malformed line is an error naming its line number.
func ParseLeases(r io.Reader) ([]Lease, error) {
	var out []Lease
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	v6 := false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if f[0] == "duid" {
			v6 = true // everything after the duid line is DHCPv6
			continue
		}
		if v6 {
			continue
		}
		l, err := parseLease(f)
		if err != nil {
			return out, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	return out, nil
}

func parseLease(f []string) (Lease, error) {
	var l Lease
	if len(f) < 4 || len(f) > 5 {
		return l, fmt.Errorf("%d fields, want 4 or 5", len(f))
	}
	exp, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || exp < 0 || exp > 1<<40 {
		return l, fmt.Errorf("expiry %q: want unix seconds", f[0])
	}
	if exp != 0 {
		l.Expires = time.Unix(exp, 0).UTC()
	}
	mac, err := net.ParseMAC(f[1])
	if err != nil {
		return l, fmt.Errorf("mac %q: %w", f[1], err)
	}
	l.MAC = mac
	ip, err := netip.ParseAddr(f[2])
	if err != nil || !ip.Is4() {
		return l, fmt.Errorf("ip %q: want IPv4", f[2])
	}
	l.IP = ip
	if f[3] != "*" {
		l.Hostname = f[3]
	}
	if len(f) == 5 && f[4] != "*" {
		l.ClientID = f[4]
	}
	return l, nil
}
