package shaper

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/civicwifi/civicwifi/internal/quantity"
)

// The tc objects, per shaped device (the client interface for download, the
// IFB device for upload). See README.md for a picture.
const (
	prio       = 10    // preference of every filter we make
	rootTable  = 0x800 // u32's own root table (created with the first filter)
	octetTable = 0x2   // root qdisc, level 1: hashed on the third octet
	hostTable0 = 0x100 // root qdisc, level 2: hostTable0+third octet, hashed on the fourth
	innerTable = 0x1   // each /24's qdisc: hashed on the fourth octet
	nodeID     = 1     // node id of every filter we make inside a bucket

	mtuFrame   = 1514 // an Ethernet frame carrying a 1500-byte packet
	r2q        = 100  // only used for classes made by someone else without quantum
	directQlen = 1000 // unclassified traffic queue (HTB "default 0" sends it direct)
)

// ErrNotClient is returned for an address the shaper cannot shape: outside
// the subnet, or its network or broadcast address.
var ErrNotClient = errors.New("not a client address of the subnet")

// direction is one shaped device: download on the client interface (match
// the destination), upload on the IFB device (match the source).
type direction struct {
	dev    string
	field  string // "dst" or "src" for u32's "match ip"
	offset int    // 16 for the destination address, 12 for the source
}

// The nested layout (README.md has the picture). Per device:
//
//	qdisc htb 1: (root)
//	  class 1:<g>            g = 0x100 + third octet: one per /24 of the
//	                         subnet, rate = ceil = groupRate (never limits)
//	    qdisc htb <g>:       the /24's own HTB qdisc
//	      class <g>:<m>      m = 0x100 + fourth octet: one per shaped client
//	        qdisc pfifo      its leaf
//
// HTB's cost of adding a class grows with the classes of the same qdisc
// (quadratic in all); with at most 256 classes per qdisc it stays flat.
// Numbers are offset by 0x100 because x.y.z.0 is a host of a /23 or wider
// subnet, and minor 0 would name the qdisc itself.
const groupBase = 0x100

// groupRate is the rate (and ceil) of each /24's class under the root: far
// above anything a gateway forwards, so it never holds a packet back; it
// only carries the /24's inner qdisc. groupBurst is 1 ms at that rate.
const (
	groupRate  = 10 * quantity.Gbit
	groupBurst = 1250000
)

func group(o3 uint8) uint16 { return groupBase + uint16(o3) }

// checkClient returns nil if ip is a host address of subnet.
func checkClient(subnet netip.Prefix, ip netip.Addr) error {
	if !ip.Is4() || !subnet.Contains(ip) {
		return fmt.Errorf("%w: %s is outside %s", ErrNotClient, ip, subnet)
	}
	off := ip4(ip) - ip4(subnet.Addr())
	size := uint32(1) << (32 - subnet.Bits())
	if off == 0 || off == size-1 {
		return fmt.Errorf("%w: %s is the network or broadcast address of %s", ErrNotClient, ip, subnet)
	}
	return nil
}

// clientClass is the classid of a client's class: <g>:<m>.
func clientClass(ip netip.Addr) uint32 {
	return uint32(group(third(ip)))<<16 | uint32(groupBase+uint16(fourth(ip)))
}

// groupClass is the classid of a /24's class under the root: 1:<g>.
func groupClass(o3 uint8) uint32 { return 1<<16 | uint32(group(o3)) }

// addrOfClass is the inverse of clientClass, for the classes of subnet.
func addrOfClass(subnet netip.Prefix, classid uint32) (netip.Addr, bool) {
	maj, min := classid>>16, classid&0xffff
	if maj < groupBase || maj > groupBase+0xff || min < groupBase || min > groupBase+0xff {
		return netip.Addr{}, false
	}
	b := subnet.Addr().As4()
	a := netip.AddrFrom4([4]byte{b[0], b[1], byte(maj - groupBase), byte(min - groupBase)})
	if checkClient(subnet, a) != nil {
		return netip.Addr{}, false
	}
	return a, true
}

func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// octets3 lists the /24s that the subnet overlaps, with the part of the
// subnet inside each (the whole /24, or the subnet itself when it is
// smaller than a /24).
func octets3(subnet netip.Prefix) []netip.Prefix {
	if subnet.Bits() >= 24 {
		return []netip.Prefix{subnet}
	}
	n := 1 << (24 - subnet.Bits())
	base := ip4(subnet.Addr())
	out := make([]netip.Prefix, n)
	for i := range n {
		out[i] = netip.PrefixFrom(addr4(base+uint32(i)<<8), 24)
	}
	return out
}

func third(a netip.Addr) uint8  { return a.As4()[2] }
func fourth(a netip.Addr) uint8 { return a.As4()[3] }

// u32 handles: 12 bits of table id, 8 of bucket, 12 of node.
func u32Handle(htid uint32, bucket uint8, node uint32) uint32 {
	return htid<<20 | uint32(bucket)<<12 | node
}

// handleString prints a u32 handle as tc does ("fh" in `tc -j filter show`).
func handleString(h uint32) string {
	htid, b, n := h>>20, (h>>12)&0xff, h&0xfff
	switch {
	case n == 0 && b == 0:
		return fmt.Sprintf("%x:", htid)
	case b == 0: // tc prints bucket 0 as empty
		return fmt.Sprintf("%x::%x", htid, n)
	default:
		return fmt.Sprintf("%x:%x:%x", htid, b, n)
	}
}

// parseHandle reads a handle as tc prints it ("800:", "2:a:1", "100::1").
func parseHandle(s string) (uint32, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, fmt.Errorf("u32 handle %q: not htid:[bucket[:node]]", s)
	}
	var v [3]uint64
	for i, p := range parts {
		if p == "" {
			continue
		}
		n, err := strconv.ParseUint(p, 16, 32)
		if err != nil {
			return 0, fmt.Errorf("u32 handle %q: %w", s, err)
		}
		v[i] = n
	}
	if v[0] > 0xfff || v[1] > 0xff || v[2] > 0xfff {
		return 0, fmt.Errorf("u32 handle %q: out of range", s)
	}
	return u32Handle(uint32(v[0]), uint8(v[1]), uint32(v[2])), nil
}

func classString(id uint32) string    { return fmt.Sprintf("%x:%x", id>>16, id&0xffff) }
func qdiscString(major uint16) string { return fmt.Sprintf("%x:", major) }

// parseClassID reads "1:10b" (hex major:minor).
func parseClassID(s string) (uint32, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("class id %q: no colon", s)
	}
	a, err := strconv.ParseUint(maj, 16, 16)
	if err != nil {
		return 0, fmt.Errorf("class id %q: %w", s, err)
	}
	var b uint64
	if min != "" {
		if b, err = strconv.ParseUint(min, 16, 16); err != nil {
			return 0, fmt.Errorf("class id %q: %w", s, err)
		}
	}
	return uint32(a)<<16 | uint32(b), nil
}

// A limit is what the resident's speed test shows: TCP payload. HTB counts
// whole Ethernet frames, and a full-size frame (1514 bytes) carries 1448
// bytes of TCP payload (1500 - 20 IP - 32 TCP with timestamps), so a class
// runs at limit*1514/1448; without this a "20mbit" client measures 19.1.
const payloadPerFrame = 1448

// wireBits is the HTB rate (bits/s on the wire) for a limit.
func wireBits(r quantity.Rate) uint64 {
	return (uint64(r)*mtuFrame + payloadPerFrame/2) / payloadPerFrame
}

// limitOfWire is the limit a class's HTB rate was made for.
func limitOfWire(bits uint64) quantity.Rate {
	return quantity.Rate((bits*payloadPerFrame + mtuFrame/2) / mtuFrame)
}

// htbParams are the HTB class parameters for one rate.
type htbParams struct {
	rateBytes uint64 // bytes per second, as the kernel keeps it
	burst     uint64 // bytes, for both burst and cburst
	quantum   uint64
	limit     uint64 // packets in the pfifo leaf
}

// paramsFor picks burst and queue length for a rate:
//   - burst: 10 ms at the rate, at least two full frames: HTB then meets the
//     rate within a percent from 256kbit to 1gbit, and a short burst keeps
//     the rate honest over a one-second speed test.
//   - quantum: one full frame. Classes never borrow (rate = ceil, no parent),
//     so the quantum only orders packets among classes and an explicit value
//     avoids the kernel's "quantum of class is small/big" warnings that r2q
//     cannot avoid for rates this far apart.
//   - limit: about 100 ms of packets at the rate, 32..1000.
func paramsFor(r quantity.Rate) htbParams {
	bytes := wireBits(r) / 8
	p := htbParams{rateBytes: bytes, burst: bytes / 100, quantum: mtuFrame, limit: bytes / 10 / mtuFrame}
	p.burst = max(p.burst, 2*mtuFrame)
	p.limit = min(max(p.limit, 32), 1000)
	return p
}
