package discovery

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxHostname bounds a DHCP hostname kept in the table.
const maxHostname = 64

// Wire constants of the few headers Parse reads.
const (
	etherHeaderLen = 14
	etherTypeIPv4  = 0x0800
	etherTypeARP   = 0x0806

	arpLen          = 8 + 2*6 + 2*4 // fixed part + Ethernet/IPv4 addresses
	arpHTypeEther   = 1
	ipv4HeaderMin   = 20
	ipProtoUDP      = 17
	ipFragmentMask  = 0x3fff // More Fragments flag + fragment offset
	udpHeaderLen    = 8
	portDHCPServer  = 67
	portDHCPClient  = 68
	dhcpFixedLen    = 240 // BOOTP header + magic cookie
	dhcpMagic       = 0x63825363
	dhcpOpRequest   = 1
	dhcpOpReply     = 2
	dhcpHTypeEther  = 1
	dhcpOptPad      = 0
	dhcpOptEnd      = 255
	dhcpOptHostname = 12
	dhcpOptReqIP    = 50
	dhcpOptMsgType  = 53
	dhcpDiscover    = 1
	dhcpRequest     = 3
	dhcpAck         = 5
	dhcpInform      = 8
)

// Parse extracts the hosts one Ethernet frame reveals about the client
// network subnet:
//
//   - ARP request or reply: the sender's MAC and IP (sender IP in subnet);
//   - DHCP DISCOVER/REQUEST/INFORM from a client: chaddr, the hostname
//     (option 12) and the requested IP (option 50, else ciaddr) when in
//     subnet — the IP may be invalid (a DISCOVER carries none);
//   - DHCPACK: chaddr and yiaddr (and option 12 if the server echoes it);
//   - any other IPv4 packet: the source MAC and IP when the IP is in subnet.
//
// Frames may be truncated after the IPv4 header (the Sniffer captures only
// that much of ordinary packets). An IPv4 packet whose UDP or DHCP part is
// malformed or cut short still counts as an ordinary IPv4 packet. Parse is
// pure, allocates only the result and never panics: every read below is
// preceded by a length check.
func Parse(frame []byte, subnet netip.Prefix, now time.Time) []Host {
	if len(frame) <= etherHeaderLen {
		return nil
	}
	p := parser{subnet: subnet, now: now}
	payload := frame[etherHeaderLen:]
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case etherTypeARP:
		return p.arp(payload)
	case etherTypeIPv4:
		return p.ipv4(frame[6:12], payload)
	}
	return nil // 802.1Q-tagged, IPv6, LLC...: the client bridge carries untagged IPv4
}

type parser struct {
	subnet netip.Prefix
	now    time.Time
}

// host returns one Host with a copy of mac (6 bytes), in one allocation.
func (p parser) host(mac []byte, ip netip.Addr, name, source string) []Host {
	r := new(struct {
		hosts [1]Host
		mac   [6]byte
	})
	copy(r.mac[:], mac)
	r.hosts[0] = Host{MAC: net.HardwareAddr(r.mac[:]), IP: ip, Hostname: name,
		FirstSeen: p.now, LastSeen: p.now, Source: source}
	return r.hosts[:]
}

// inSubnet says whether a is a host address of the client subnet (not its
// network or broadcast address).
func (p parser) inSubnet(a netip.Addr) bool {
	return a.IsValid() && p.subnet.Contains(a) && a != p.subnet.Masked().Addr() && a != broadcast(p.subnet)
}

// arp handles an ARP packet (RFC 826) for Ethernet and IPv4 addresses,
// request or reply alike.
func (p parser) arp(b []byte) []Host {
	if len(b) < arpLen || binary.BigEndian.Uint16(b[0:2]) != arpHTypeEther ||
		binary.BigEndian.Uint16(b[2:4]) != etherTypeIPv4 || b[4] != 6 || b[5] != 4 {
		return nil
	}
	sha, spa := b[8:14], netip.AddrFrom4([4]byte(b[14:18]))
	if !unicastMAC(sha) || !p.inSubnet(spa) { // includes ARP probes from 0.0.0.0
		return nil
	}
	return p.host(sha, spa, "", SourceARP)
}

// ipv4 handles an IPv4 packet sent by srcMAC: a DHCP message when it is
// one, else the packet's source address.
func (p parser) ipv4(srcMAC, b []byte) []Host {
	payload, ok := ipv4Payload(b)
	if !ok {
		return nil
	}
	frag := binary.BigEndian.Uint16(b[6:8])&ipFragmentMask != 0
	if !frag && b[9] == ipProtoUDP {
		if m, ok := parseDHCP(udpDHCPPayload(payload)); ok {
			return p.dhcp(&m)
		}
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	if b[0]>>4 != 4 || !unicastMAC(srcMAC) || !p.inSubnet(src) {
		return nil
	}
	return p.host(srcMAC, src, "", SourceIPv4)
}

// ipv4Payload checks an IPv4 header (RFC 791) and returns what follows it,
// up to the total length. The header, options included, must be complete;
// the payload may be cut short. Rejected: IHL < 5, a total length shorter
// than the header, malformed options. A total length of 0 (TCP
// segmentation offload) means the whole buffer.
func ipv4Payload(b []byte) ([]byte, bool) {
	if len(b) < ipv4HeaderMin {
		return nil, false
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total == 0 {
		total = int(uint16(len(b)))
	}
	hlen := int(b[0]&0x0f) * 4
	if hlen < ipv4HeaderMin || total < hlen || len(b) < hlen {
		return nil, false
	}
	if len(b) > total {
		b = b[:total]
	}
	for opts := b[ipv4HeaderMin:hlen]; len(opts) > 0; {
		switch opts[0] {
		case 0: // end of options list
			opts = nil
		case 1: // no operation
			opts = opts[1:]
		default:
			if len(opts) < 2 || int(opts[1]) <= 2 || int(opts[1]) > len(opts) {
				return nil, false
			}
			opts = opts[opts[1]:]
		}
	}
	return b[hlen:], true
}

// udpDHCPPayload returns the payload of a UDP datagram (RFC 768) from or
// to a DHCP port, up to the datagram's length (0: all of b), or nil.
func udpDHCPPayload(b []byte) []byte {
	if len(b) < udpHeaderLen {
		return nil
	}
	sport, dport := binary.BigEndian.Uint16(b[0:2]), binary.BigEndian.Uint16(b[2:4])
	if sport != portDHCPServer && sport != portDHCPClient && dport != portDHCPServer && dport != portDHCPClient {
		return nil
	}
	switch n := int(binary.BigEndian.Uint16(b[4:6])); {
	case n == 0:
		return b[udpHeaderLen:]
	case n < udpHeaderLen:
		return nil
	case n < len(b):
		return b[udpHeaderLen:n]
	}
	return b[udpHeaderLen:]
}

// dhcpMessage is what Parse needs of a DHCPv4 message (RFC 2131, 2132).
type dhcpMessage struct {
	op, htype, hlen byte
	ciaddr, yiaddr  netip.Addr
	chaddr          []byte // 16 bytes; the address is the first hlen
	msgType         byte   // option 53; 0 when absent
	hostname        []byte // option 12
	reqIP           netip.Addr
}

// parseDHCP decodes the fixed header and walks the options up to the end
// option (or the end of b; pad options are skipped). An option running
// past the end of b, a bad magic cookie or a message shorter than 240
// bytes make it no DHCP message. Of repeated options the last well-formed
// one counts.
func parseDHCP(b []byte) (m dhcpMessage, ok bool) {
	if len(b) < dhcpFixedLen || binary.BigEndian.Uint32(b[236:240]) != dhcpMagic {
		return m, false
	}
	m.op, m.htype, m.hlen = b[0], b[1], b[2]
	m.ciaddr = netip.AddrFrom4([4]byte(b[12:16]))
	m.yiaddr = netip.AddrFrom4([4]byte(b[16:20]))
	m.chaddr = b[28:44]
	for opts := b[dhcpFixedLen:]; len(opts) > 0; {
		code := opts[0]
		if code == dhcpOptEnd {
			break
		}
		if code == dhcpOptPad {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) > len(opts)-2 {
			return m, false
		}
		data := opts[2 : 2+int(opts[1])]
		opts = opts[2+len(data):]
		switch code {
		case dhcpOptMsgType:
			if len(data) == 1 {
				m.msgType = data[0]
			}
		case dhcpOptHostname:
			m.hostname = data
		case dhcpOptReqIP:
			if len(data) == 4 {
				m.reqIP = netip.AddrFrom4([4]byte(data))
			}
		}
	}
	return m, true
}

func (p parser) dhcp(m *dhcpMessage) []Host {
	if m.htype != dhcpHTypeEther || m.hlen != 6 || m.msgType == 0 {
		return nil
	}
	mac := m.chaddr[:6]
	if !unicastMAC(mac) {
		return nil
	}
	name := cleanHostname(m.hostname)
	switch {
	case m.op == dhcpOpRequest && (m.msgType == dhcpDiscover || m.msgType == dhcpRequest || m.msgType == dhcpInform):
		ip := m.reqIP
		if !p.inSubnet(ip) {
			ip = m.ciaddr
		}
		if !p.inSubnet(ip) {
			ip = netip.Addr{}
		}
		if !ip.IsValid() && name == "" {
			return nil
		}
		return p.host(mac, ip, name, SourceDHCPRequest)
	case m.op == dhcpOpReply && m.msgType == dhcpAck:
		ip := m.yiaddr
		if !p.inSubnet(ip) {
			ip = m.ciaddr // an ACK to an INFORM has yiaddr 0
		}
		if !p.inSubnet(ip) {
			return nil
		}
		return p.host(mac, ip, name, SourceDHCPAck)
	}
	return nil
}

// unicastMAC rejects multicast/broadcast and all-zero addresses.
func unicastMAC(mac []byte) bool {
	if len(mac) != 6 || mac[0]&1 != 0 {
		return false
	}
	for _, b := range mac {
		if b != 0 {
			return true
		}
	}
	return false
}

func broadcast(p netip.Prefix) netip.Addr {
	if !p.Addr().Is4() {
		return netip.Addr{}
	}
	a := p.Masked().Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// cleanHostname keeps a printable, valid UTF-8 name of at most maxHostname
// bytes; control characters and surrounding spaces and NULs are dropped.
func cleanHostname(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	for len(s) > maxHostname {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return strings.TrimSpace(s)
}
