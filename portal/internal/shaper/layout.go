package shaper

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/civicwifi/civicwifi/internal/quantity"
)

// The tc objects, per shaped device (the client interface for download, the
// IFB device for upload). See README.md for a picture.
const (
	prio       = 10    // preference of every filter we make
	rootTable  = 0x800 // u32's own root table (created with the first filter)
	octetTable = 0x2   // level 1: hashed on the third octet
	hostTable0 = 0x100 // level 2: hostTable0+third octet, hashed on the fourth
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

// classMinor is the HTB class minor number (and so the classid 1:<minor>) of
// a client: its offset inside the subnet. The network address (offset 0,
// which would be the qdisc itself) and the broadcast address (for a /16,
// 0xffff, which tc reserves) are never clients, so every host of a /16..30
// maps to 1..0xfffe, one to one.
func classMinor(subnet netip.Prefix, ip netip.Addr) (uint16, error) {
	if !ip.Is4() || !subnet.Contains(ip) {
		return 0, fmt.Errorf("%w: %s is outside %s", ErrNotClient, ip, subnet)
	}
	off := ip4(ip) - ip4(subnet.Addr())
	size := uint32(1) << (32 - subnet.Bits())
	if off == 0 || off == size-1 {
		return 0, fmt.Errorf("%w: %s is the network or broadcast address of %s", ErrNotClient, ip, subnet)
	}
	return uint16(off), nil
}

// addrOfMinor is the inverse of classMinor.
func addrOfMinor(subnet netip.Prefix, minor uint16) (netip.Addr, bool) {
	size := uint32(1) << (32 - subnet.Bits())
	if minor == 0 || uint32(minor) >= size-1 {
		return netip.Addr{}, false
	}
	return addr4(ip4(subnet.Addr()) + uint32(minor)), true
}

func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// octets3 lists the third octets of the /24s that the subnet overlaps, with
// the part of the subnet inside each (the whole /24, or the subnet itself
// when it is smaller than a /24).
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

// Handles, as tc prints them ("fh" in `tc -j filter show`).
func tableHandle(htid uint32) string { return fmt.Sprintf("%x:", htid) }
func nodeHandle(htid uint32, bucket uint8) string {
	if bucket == 0 { // tc prints bucket 0 as empty
		return fmt.Sprintf("%x::%x", htid, nodeID)
	}
	return fmt.Sprintf("%x:%x:%x", htid, bucket, nodeID)
}
func hostTable(oct3 uint8) uint32 { return hostTable0 + uint32(oct3) }
func classID(minor uint16) string { return fmt.Sprintf("1:%x", minor) }

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

// lines: tc batch lines for the objects of one device.

func rootQdiscLine(dev string) string {
	return fmt.Sprintf("qdisc replace dev %s root handle 1: htb default 0 r2q %d direct_qlen %d", dev, r2q, directQlen)
}

func rootQdiscDelLine(dev string) string { return fmt.Sprintf("qdisc del dev %s root", dev) }

func ingressLines(clientIf, ifb string) []string {
	return []string{
		fmt.Sprintf("qdisc replace dev %s ingress", clientIf),
		redirectLine(clientIf, ifb),
	}
}

func redirectLine(clientIf, ifb string) string {
	return fmt.Sprintf("filter replace dev %s parent ffff: prio %d handle %s protocol ip u32 match u32 0 0 action mirred egress redirect dev %s",
		clientIf, prio, nodeHandle(rootTable, 0), ifb)
}

func tableLine(dev string, htid uint32) string {
	return fmt.Sprintf("filter add dev %s parent 1: prio %d handle %s protocol ip u32 divisor 256", dev, prio, tableHandle(htid))
}

func tableDelLine(dev string, htid uint32) string {
	return fmt.Sprintf("filter del dev %s parent 1: prio %d handle %s protocol ip u32", dev, prio, tableHandle(htid))
}

// rootLinkLine sends the subnet's packets from u32's root table to the octet
// table, hashed on the third octet of the address.
func rootLinkLine(d direction, subnet netip.Prefix) string {
	return fmt.Sprintf("filter replace dev %s parent 1: prio %d handle %s protocol ip u32 ht %x:: match ip %s %s hashkey mask 0x0000ff00 at %d link %s",
		d.dev, prio, nodeHandle(rootTable, 0), rootTable, d.field, subnet, d.offset, tableHandle(octetTable))
}

// octetLinkLine sends one /24 from its octet-table bucket to its host table,
// hashed on the fourth octet.
func octetLinkLine(d direction, part netip.Prefix) string {
	o := third(part.Addr())
	return fmt.Sprintf("filter replace dev %s parent 1: prio %d handle %s protocol ip u32 ht %x:%x: match ip %s %s hashkey mask 0x000000ff at %d link %s",
		d.dev, prio, nodeHandle(octetTable, o), octetTable, o, d.field, part, d.offset, tableHandle(hostTable(o)))
}

func nodeDelLine(dev, handle string) string {
	return fmt.Sprintf("filter del dev %s parent 1: prio %d handle %s protocol ip u32", dev, prio, handle)
}

func prioDelLine(dev string, pref int) string {
	return fmt.Sprintf("filter del dev %s parent 1: prio %d", dev, pref)
}

func hostFilterHandle(ip netip.Addr) string {
	return nodeHandle(hostTable(third(ip)), fourth(ip))
}

func hostFilterLine(d direction, ip netip.Addr, minor uint16) string {
	return fmt.Sprintf("filter replace dev %s parent 1: prio %d handle %s protocol ip u32 ht %x:%x: match ip %s %s/32 flowid %s",
		d.dev, prio, hostFilterHandle(ip), hostTable(third(ip)), fourth(ip), d.field, ip, classID(minor))
}

// classLine makes ("replace": add or change) or changes ("change") a class.
func classLine(verb, dev string, minor uint16, r quantity.Rate) string {
	p := paramsFor(r)
	return fmt.Sprintf("class %s dev %s parent 1: classid %s htb rate %dbit ceil %dbit burst %d cburst %d quantum %d",
		verb, dev, classID(minor), p.rateBytes*8, p.rateBytes*8, p.burst, p.burst, p.quantum)
}

func leafLine(dev string, minor uint16, r quantity.Rate) string {
	return fmt.Sprintf("qdisc replace dev %s parent %s pfifo limit %d", dev, classID(minor), paramsFor(r).limit)
}

func classDelLine(dev string, minor uint16) string {
	return fmt.Sprintf("class del dev %s classid %s", dev, classID(minor))
}
