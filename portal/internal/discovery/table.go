// Package discovery learns which devices are on the client network: their
// MAC, IPv4 address and DHCP hostname. A Sniffer reads ARP, DHCP and IPv4
// frames on the client interface through an AF_PACKET socket (pure Go, so
// it builds with CGO_ENABLED=0 for every gateway) and feeds a Table;
// Neighbors reads the kernel's neighbour table as a fallback for a client
// the Sniffer has not seen yet.
//
// Frames are decoded by hand (Parse), not with gopacket/layers: importing
// layers alone costs the daemon ~7 MB of RSS at init (its 65,536-entry enum
// tables), a fifth of its budget; see README.md.
package discovery

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Sources of a Host observation.
const (
	SourceARP         = "arp"
	SourceDHCPRequest = "dhcp-request" // a client's DHCPDISCOVER/REQUEST/INFORM
	SourceDHCPAck     = "dhcp-ack"     // the server's DHCPACK
	SourceIPv4        = "ipv4"         // any IPv4 packet from the client subnet
	SourceNeighbor    = "neighbor"     // the kernel's neighbour table
)

// Host is one device on the client network.
type Host struct {
	MAC net.HardwareAddr
	// IP is the device's IPv4 address; invalid when only its MAC (and
	// perhaps hostname) is known, e.g. from a DHCPDISCOVER.
	IP netip.Addr
	// Hostname is the name the device sent in DHCP option 12, if any.
	Hostname  string
	FirstSeen time.Time
	LastSeen  time.Time
	// Source says where the latest observation came from (Source*).
	Source string
}

// Table holds the hosts seen, one per MAC, indexed by IP too. It is safe for
// concurrent use.
type Table struct {
	mu    sync.RWMutex
	byMAC map[string]*Host
	byIP  map[netip.Addr]string // IP -> MAC key
}

// NewTable returns an empty table. The zero Table is ready to use too.
func NewTable() *Table { return &Table{} }

func (t *Table) init() {
	if t.byMAC == nil {
		t.byMAC = map[string]*Host{}
		t.byIP = map[netip.Addr]string{}
	}
}

// Observe merges one observation: the host keyed by h.MAC gets h's IP (an
// IP moves away from a MAC that held it before), hostname (when not empty)
// and times. Zero times mean now. Observations without a MAC are ignored.
func (t *Table) Observe(h Host) {
	if len(h.MAC) == 0 {
		return
	}
	if h.LastSeen.IsZero() {
		h.LastSeen = time.Now()
	}
	if h.FirstSeen.IsZero() || h.FirstSeen.After(h.LastSeen) {
		h.FirstSeen = h.LastSeen
	}
	key := string(h.MAC)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.init()
	e, ok := t.byMAC[key]
	if !ok {
		e = &Host{MAC: slices.Clone(h.MAC), FirstSeen: h.FirstSeen, LastSeen: h.LastSeen, Source: h.Source}
		t.byMAC[key] = e
	}
	if h.IP.IsValid() && h.IP != e.IP {
		if e.IP.IsValid() && t.byIP[e.IP] == key {
			delete(t.byIP, e.IP)
		}
		if other, ok := t.byIP[h.IP]; ok && other != key {
			t.byMAC[other].IP = netip.Addr{}
		}
		e.IP = h.IP
		t.byIP[h.IP] = key
	}
	if h.Hostname != "" {
		e.Hostname = h.Hostname
	}
	if h.FirstSeen.Before(e.FirstSeen) {
		e.FirstSeen = h.FirstSeen
	}
	if !h.LastSeen.Before(e.LastSeen) {
		e.LastSeen = h.LastSeen
		e.Source = h.Source
	}
}

// Lookup returns the host that holds ip.
func (t *Table) Lookup(ip netip.Addr) (Host, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	key, ok := t.byIP[ip]
	if !ok {
		return Host{}, false
	}
	return t.byMAC[key].clone(), true
}

// LookupMAC returns the host with this MAC.
func (t *Table) LookupMAC(mac net.HardwareAddr) (Host, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, ok := t.byMAC[string(mac)]
	if !ok {
		return Host{}, false
	}
	return e.clone(), true
}

// All returns every host, ordered by IP (hosts without one first), then MAC.
func (t *Table) All() []Host {
	t.mu.RLock()
	out := make([]Host, 0, len(t.byMAC))
	for _, e := range t.byMAC {
		out = append(out, e.clone())
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b Host) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return slices.Compare(a.MAC, b.MAC)
	})
	return out
}

// Forget removes the hosts last seen before olderThan and returns how many.
func (t *Table) Forget(olderThan time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for key, e := range t.byMAC {
		if e.LastSeen.Before(olderThan) {
			if e.IP.IsValid() && t.byIP[e.IP] == key {
				delete(t.byIP, e.IP)
			}
			delete(t.byMAC, key)
			n++
		}
	}
	return n
}

// Len returns the number of hosts.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byMAC)
}

func (h *Host) clone() Host {
	c := *h
	c.MAC = slices.Clone(h.MAC)
	return c
}
