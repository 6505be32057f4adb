package discovery

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// parseLayers is the Parse that shipped before gopacket/layers was dropped
// from the daemon (commit af95b88), kept here unchanged but for names as
// the reference the new decoder is compared with (TestParseMatchesLayers,
// FuzzParse). Test binaries may import layers: the RSS cost that made the
// daemon drop it is paid by the test only.
//
// One change: the frame is copied into a buffer with spare capacity, since
// layers.DHCPv4 slices chaddr by hlen up to the slice's capacity and the
// old result for 16 < hlen < 228 depended on the caller's capacity (a
// panic, recovered by gopacket, versus nil); with spare capacity it is nil,
// as in Parse, and as it was in the Sniffer (2048-byte buffer).
func parseLayers(frame []byte, subnet netip.Prefix, now time.Time) (hosts []Host) {
	frame = append(make([]byte, 0, len(frame)+512), frame...)
	defer func() {
		if recover() != nil {
			hosts = nil
		}
	}()
	d := refDecoders.Get().(*refDecoder)
	defer refDecoders.Put(d)
	d.decoded = d.decoded[:0]
	d.p.DecodeLayers(frame, &d.decoded)
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
		if !inSubnet(ip) {
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
				ip = refAddr4(dhcp.ClientIP)
			}
			if !inSubnet(ip) {
				ip = netip.Addr{}
			}
			if !ip.IsValid() && name == "" {
				return nil
			}
			return []Host{host(dhcp.ClientHWAddr, ip, name, SourceDHCPRequest)}
		case dhcp.Operation == layers.DHCPOpReply && msgType == layers.DHCPMsgTypeAck:
			ip := refAddr4(dhcp.YourClientIP)
			if !inSubnet(ip) {
				ip = refAddr4(dhcp.ClientIP)
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
		ip := refAddr4(ip4.SrcIP)
		if !inSubnet(ip) {
			return nil
		}
		return []Host{host(eth.SrcMAC, ip, "", SourceIPv4)}
	}
	return nil
}

type refDecoder struct {
	eth     layers.Ethernet
	arp     layers.ARP
	ip4     layers.IPv4
	udp     layers.UDP
	dhcp    layers.DHCPv4
	p       *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

var refDecoders = sync.Pool{New: func() any {
	d := &refDecoder{decoded: make([]gopacket.LayerType, 0, 5)}
	d.p = gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &d.eth, &d.arp, &d.ip4, &d.udp, &d.dhcp)
	d.p.IgnoreUnsupported = true
	return d
}}

func refAddr4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// knownDifference names why Parse deliberately differs from parseLayers
// on frame, or returns "":
//
//   - layers looks at a UDP datagram's destination port first, in its table
//     of well-known ports (layers.UDPPort.LayerType), so a DHCP message from
//     port 67/68 to, say, port 53 was decoded as DNS; Parse takes any
//     datagram from or to a DHCP port that parses as DHCP;
//   - layers reads ARP's 16-bit hardware type into the 8-bit LinkType, so
//     it took 0x0101 or 0x3001 for Ethernet (1); Parse compares all 16 bits
//     (RFC 826);
//   - layers sliced chaddr as data[28:28+hlen] in uint8 arithmetic, so an
//     hlen of 228 or more panicked (recovered by gopacket) and the frame
//     counted as plain IPv4; Parse rejects any hlen but 6 as the DHCP
//     message it is;
//   - layers decoded the inner header of IP-in-IP (protocol 4) into the same
//     IPv4 value as the outer one, so the host was the inner source address
//     (or nothing, or even the inner DHCP message); Parse counts the outer
//     source, the device on the client network.
func knownDifference(frame []byte) string {
	if len(frame) < 14+20 || frame[12] != 0x08 {
		return ""
	}
	switch frame[13] {
	case 0x06: // ARP
		if frame[14] != 0 {
			return "ARP hardware type above 255"
		}
	case 0x00: // IPv4
		if frame[14+9] == 4 && binary.BigEndian.Uint16(frame[14+6:])&0x3fff == 0 {
			return "layers decoded IP-in-IP's inner header over the outer one"
		}
		off := 14 + int(frame[14]&0x0f)*4
		if len(frame) < off+4 {
			return ""
		}
		dport := layers.UDPPort(uint16(frame[off+2])<<8 | uint16(frame[off+3]))
		if lt := dport.LayerType(); lt != gopacket.LayerTypePayload && lt != layers.LayerTypeDHCPv4 {
			return "layers decodes UDP port " + dport.String() + " as " + lt.String()
		}
		if hlen := off + 8 + 2; len(frame) > hlen && frame[hlen] >= 228 {
			return "layers panicked on DHCP hlen >= 228"
		}
	}
	return ""
}
