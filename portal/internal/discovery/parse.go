package discovery

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// maxHostname bounds a DHCP hostname kept in the table.
const maxHostname = 64

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
// that much of ordinary packets). Parse is pure and never panics.
func Parse(frame []byte, subnet netip.Prefix, now time.Time) (hosts []Host) {
	defer func() {
		if recover() != nil { // gopacket's decoders have panicked on hostile input before
			hosts = nil
		}
	}()
	d := decoders.Get().(*decoder)
	defer decoders.Put(d) // also after a recovered panic: each decode overwrites all state
	d.decoded = d.decoded[:0]
	d.p.DecodeLayers(frame, &d.decoded) // an error after a useful layer (e.g. truncated UDP) is fine
	eth, arp, ip4, dhcp, decoded := &d.eth, &d.arp, &d.ip4, &d.dhcp, d.decoded

	has := func(lt gopacket.LayerType) bool {
		for _, d := range decoded {
			if d == lt {
				return true
			}
		}
		return false
	}
	if !has(layers.LayerTypeEthernet) {
		return nil
	}
	host := func(mac []byte, ip netip.Addr, name, source string) Host {
		return Host{MAC: net.HardwareAddr(append([]byte(nil), mac...)), IP: ip, Hostname: name,
			FirstSeen: now, LastSeen: now, Source: source}
	}
	inSubnet := func(a netip.Addr) bool {
		return a.IsValid() && subnet.Contains(a) && a != subnet.Masked().Addr() && a != broadcast(subnet)
	}

	switch {
	case has(layers.LayerTypeARP):
		if arp.AddrType != layers.LinkTypeEthernet || arp.Protocol != layers.EthernetTypeIPv4 ||
			len(arp.SourceHwAddress) != 6 || len(arp.SourceProtAddress) != 4 || !unicastMAC(arp.SourceHwAddress) {
			return nil
		}
		ip := netip.AddrFrom4([4]byte(arp.SourceProtAddress))
		if !inSubnet(ip) { // includes ARP probes from 0.0.0.0
			return nil
		}
		return []Host{host(arp.SourceHwAddress, ip, "", SourceARP)}

	case has(layers.LayerTypeDHCPv4):
		if dhcp.HardwareType != layers.LinkTypeEthernet || len(dhcp.ClientHWAddr) != 6 || !unicastMAC(dhcp.ClientHWAddr) {
			return nil
		}
		var (
			msgType  layers.DHCPMsgType
			name     string
			reqIP    netip.Addr
			haveType bool
		)
		for _, o := range dhcp.Options {
			switch o.Type {
			case layers.DHCPOptMessageType:
				if len(o.Data) == 1 {
					msgType, haveType = layers.DHCPMsgType(o.Data[0]), true
				}
			case layers.DHCPOptHostname:
				name = cleanHostname(o.Data)
			case layers.DHCPOptRequestIP:
				if len(o.Data) == 4 {
					reqIP = netip.AddrFrom4([4]byte(o.Data))
				}
			}
		}
		if !haveType {
			return nil
		}
		switch {
		case dhcp.Operation == layers.DHCPOpRequest &&
			(msgType == layers.DHCPMsgTypeDiscover || msgType == layers.DHCPMsgTypeRequest || msgType == layers.DHCPMsgTypeInform):
			ip := reqIP
			if !inSubnet(ip) {
				ip = addr4(dhcp.ClientIP)
			}
			if !inSubnet(ip) {
				ip = netip.Addr{}
			}
			if !ip.IsValid() && name == "" {
				return nil
			}
			return []Host{host(dhcp.ClientHWAddr, ip, name, SourceDHCPRequest)}
		case dhcp.Operation == layers.DHCPOpReply && msgType == layers.DHCPMsgTypeAck:
			ip := addr4(dhcp.YourClientIP)
			if !inSubnet(ip) {
				ip = addr4(dhcp.ClientIP) // an ACK to an INFORM has yiaddr 0
			}
			if !inSubnet(ip) {
				return nil
			}
			return []Host{host(dhcp.ClientHWAddr, ip, name, SourceDHCPAck)}
		}
		return nil

	case has(layers.LayerTypeIPv4):
		if ip4.Version != 4 || !unicastMAC(eth.SrcMAC) {
			return nil
		}
		ip := addr4(ip4.SrcIP)
		if !inSubnet(ip) {
			return nil
		}
		return []Host{host(eth.SrcMAC, ip, "", SourceIPv4)}
	}
	return nil
}

// decoder is a reusable gopacket parser: building one costs more than
// decoding a frame.
type decoder struct {
	eth     layers.Ethernet
	arp     layers.ARP
	ip4     layers.IPv4
	udp     layers.UDP
	dhcp    layers.DHCPv4
	p       *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

var decoders = sync.Pool{New: func() any {
	d := &decoder{decoded: make([]gopacket.LayerType, 0, 5)}
	d.p = gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &d.eth, &d.arp, &d.ip4, &d.udp, &d.dhcp)
	d.p.IgnoreUnsupported = true
	return d
}}

func addr4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
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
