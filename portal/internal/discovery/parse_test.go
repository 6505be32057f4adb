package discovery

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	subnet    = netip.MustParsePrefix("10.20.0.0/22")
	now       = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	gwMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0xff, 0x01}
	bcastMAC  = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func arpFrame(t testing.TB, op uint16, mac net.HardwareAddr, ip string) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: mac, DstMAC: bcastMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: op, SourceHwAddress: mac, SourceProtAddress: net.ParseIP(ip).To4(),
			DstHwAddress: make([]byte, 6), DstProtAddress: net.IP{10, 20, 0, 1}})
}

type dhcpMsg struct {
	op       layers.DHCPOp
	typ      layers.DHCPMsgType
	chaddr   net.HardwareAddr
	ciaddr   string
	yiaddr   string
	hostname string
	reqIP    string
	src, dst string
}

func dhcpFrame(t testing.TB, m dhcpMsg) []byte {
	d := &layers.DHCPv4{Operation: m.op, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6, Xid: 42,
		ClientHWAddr: m.chaddr, ClientIP: ip4(m.ciaddr), YourClientIP: ip4(m.yiaddr),
		NextServerIP: net.IPv4zero.To4(), RelayAgentIP: net.IPv4zero.To4()}
	d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(m.typ)}))
	if m.hostname != "" {
		d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptHostname, []byte(m.hostname)))
	}
	if m.reqIP != "" {
		d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptRequestIP, ip4(m.reqIP)))
	}
	d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptEnd, nil))
	sport, dport := layers.UDPPort(68), layers.UDPPort(67)
	srcMAC := m.chaddr
	if m.op == layers.DHCPOpReply {
		sport, dport, srcMAC = 67, 68, gwMAC
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: ip4(m.src), DstIP: ip4(m.dst)}
	udp := &layers.UDP{SrcPort: sport, DstPort: dport}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, &layers.Ethernet{SrcMAC: srcMAC, DstMAC: bcastMAC, EthernetType: layers.EthernetTypeIPv4}, ip, udp, d)
}

func ip4(s string) net.IP {
	if s == "" {
		return net.IPv4zero.To4()
	}
	return net.ParseIP(s).To4()
}

func ipFrame(t testing.TB, mac net.HardwareAddr, src, dst string, payload []byte) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip4(src), DstIP: ip4(dst)}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true, Window: 1000}
	tcp.SetNetworkLayerForChecksum(ip)
	return serialize(t, &layers.Ethernet{SrcMAC: mac, DstMAC: gwMAC, EthernetType: layers.EthernetTypeIPv4}, ip, tcp, gopacket.Payload(payload))
}

func h(mac net.HardwareAddr, ip, name, src string) Host {
	var a netip.Addr
	if ip != "" {
		a = netip.MustParseAddr(ip)
	}
	return Host{MAC: mac, IP: a, Hostname: name, FirstSeen: now, LastSeen: now, Source: src}
}

// udpFrame builds an Ethernet/IPv4/UDP frame around payload.
func udpFrame(t testing.TB, mac net.HardwareAddr, src, dst string, sport, dport uint16, payload []byte) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: ip4(src), DstIP: ip4(dst)}
	u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	u.SetNetworkLayerForChecksum(ip)
	return serialize(t, &layers.Ethernet{SrcMAC: mac, DstMAC: bcastMAC, EthernetType: layers.EthernetTypeIPv4}, ip, u, gopacket.Payload(payload))
}

// dhcpRaw builds a DHCP message by hand: the fixed header (htype 1, hlen 6)
// and the magic cookie, then options exactly as given.
func dhcpRaw(op byte, chaddr net.HardwareAddr, ciaddr, yiaddr string, options ...byte) []byte {
	b := make([]byte, 240, 240+len(options))
	b[0], b[1], b[2] = op, 1, 6
	copy(b[12:16], ip4(ciaddr))
	copy(b[16:20], ip4(yiaddr))
	copy(b[28:44], chaddr)
	binary.BigEndian.PutUint32(b[236:240], 0x63825363)
	return append(b, options...)
}

// patch returns a copy of f with b written at off.
func patch(f []byte, off int, b ...byte) []byte {
	f = append([]byte(nil), f...)
	copy(f[off:], b)
	return f
}

// withIPOptions inserts opts (a multiple of 4 bytes) after the 20-byte IPv4
// header of f and fixes the header and total lengths.
func withIPOptions(f []byte, opts ...byte) []byte {
	out := append(append(append([]byte(nil), f[:14+20]...), opts...), f[14+20:]...)
	out[14] = 0x40 | byte(5+len(opts)/4)
	binary.BigEndian.PutUint16(out[16:18], binary.BigEndian.Uint16(f[16:18])+uint16(len(opts)))
	return out
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

type parseCase struct {
	name  string
	frame func(testing.TB) []byte
	want  []Host
}

// parseCases are the frames TestParse checks, TestParseMatchesLayers
// compares with the old gopacket/layers decoder and FuzzParse starts from.
func parseCases() []parseCase {
	renew := func(t testing.TB) []byte {
		return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeRequest, chaddr: clientMAC,
			ciaddr: "10.20.1.5", src: "10.20.1.5", dst: "10.20.0.1"})
	}
	ping := func(t testing.TB) []byte { return ipFrame(t, clientMAC, "10.20.2.9", "198.51.100.1", []byte("hello")) }
	// fromClient wraps a hand-made DHCP message as the renewing client sends it.
	fromClient := func(msg []byte) func(testing.TB) []byte {
		return func(t testing.TB) []byte { return udpFrame(t, clientMAC, "10.20.1.5", "10.20.0.1", 68, 67, msg) }
	}
	fromServer := func(msg []byte) func(testing.TB) []byte {
		return func(t testing.TB) []byte { return udpFrame(t, gwMAC, "10.20.0.1", "10.20.1.5", 67, 68, msg) }
	}
	const udp, dhcp, opts = 14 + 20, 14 + 20 + 8, 14 + 20 + 8 + 240 // offsets in a frame
	return []parseCase{
		{"arp request", func(t testing.TB) []byte { return arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11") },
			[]Host{h(clientMAC, "10.20.0.11", "", SourceARP)}},
		{"arp reply", func(t testing.TB) []byte { return arpFrame(t, layers.ARPReply, clientMAC, "10.20.1.7") },
			[]Host{h(clientMAC, "10.20.1.7", "", SourceARP)}},
		{"arp probe from 0.0.0.0", func(t testing.TB) []byte { return arpFrame(t, layers.ARPRequest, clientMAC, "0.0.0.0") }, nil},
		{"arp outside subnet", func(t testing.TB) []byte { return arpFrame(t, layers.ARPRequest, clientMAC, "192.168.1.5") }, nil},
		{"arp broadcast address", func(t testing.TB) []byte { return arpFrame(t, layers.ARPRequest, clientMAC, "10.20.3.255") }, nil},
		{"arp multicast sender", func(t testing.TB) []byte {
			return arpFrame(t, layers.ARPRequest, net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, "10.20.0.11")
		}, nil},
		{"dhcp discover with hostname", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeDiscover, chaddr: clientMAC,
				hostname: "anna-phone", src: "0.0.0.0", dst: "255.255.255.255"})
		}, []Host{h(clientMAC, "", "anna-phone", SourceDHCPRequest)}},
		{"dhcp discover without hostname", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeDiscover, chaddr: clientMAC,
				src: "0.0.0.0", dst: "255.255.255.255"})
		}, nil},
		{"dhcp request option 50", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeRequest, chaddr: clientMAC,
				hostname: "anna-phone", reqIP: "10.20.1.5", src: "0.0.0.0", dst: "255.255.255.255"})
		}, []Host{h(clientMAC, "10.20.1.5", "anna-phone", SourceDHCPRequest)}},
		{"dhcp renew uses ciaddr", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeRequest, chaddr: clientMAC,
				ciaddr: "10.20.1.5", src: "10.20.1.5", dst: "10.20.0.1"})
		}, []Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		{"dhcp request outside subnet", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeRequest, chaddr: clientMAC,
				reqIP: "192.168.1.9", src: "0.0.0.0", dst: "255.255.255.255"})
		}, nil},
		{"hostname cleaned", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeRequest, chaddr: clientMAC,
				hostname: " Anna's\x00 iPhone\n\xff", reqIP: "10.20.1.5", src: "0.0.0.0", dst: "255.255.255.255"})
		}, []Host{h(clientMAC, "10.20.1.5", "Anna's iPhone", SourceDHCPRequest)}},
		{"dhcp ack yiaddr", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpReply, typ: layers.DHCPMsgTypeAck, chaddr: clientMAC,
				yiaddr: "10.20.1.5", src: "10.20.0.1", dst: "10.20.1.5"})
		}, []Host{h(clientMAC, "10.20.1.5", "", SourceDHCPAck)}},
		{"dhcp offer ignored", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpReply, typ: layers.DHCPMsgTypeOffer, chaddr: clientMAC,
				yiaddr: "10.20.1.5", src: "10.20.0.1", dst: "10.20.1.5"})
		}, nil},
		{"dhcp nak ignored", func(t testing.TB) []byte {
			return dhcpFrame(t, dhcpMsg{op: layers.DHCPOpReply, typ: layers.DHCPMsgTypeNak, chaddr: clientMAC,
				src: "10.20.0.1", dst: "255.255.255.255"})
		}, nil},
		{"ipv4 from client", func(t testing.TB) []byte { return ipFrame(t, clientMAC, "10.20.2.9", "198.51.100.1", []byte("hello")) },
			[]Host{h(clientMAC, "10.20.2.9", "", SourceIPv4)}},
		{"ipv4 truncated after header", func(t testing.TB) []byte {
			return ipFrame(t, clientMAC, "10.20.2.9", "198.51.100.1", make([]byte, 1000))[:headerSnap]
		}, []Host{h(clientMAC, "10.20.2.9", "", SourceIPv4)}},
		{"ipv4 from outside", func(t testing.TB) []byte { return ipFrame(t, clientMAC, "198.51.100.1", "10.20.2.9", nil) }, nil},
		{"garbage", func(testing.TB) []byte { return []byte{1, 2, 3} }, nil},
		{"empty", func(testing.TB) []byte { return nil }, nil},

		// Hostile and unusual frames. The want values are what the old
		// gopacket/layers decoder gave (TestParseMatchesLayers checks).
		{"ethernet llc length", func(t testing.TB) []byte { return patch(ping(t), 12, 0, 0x40) }, nil},
		{"ethernet header only", func(t testing.TB) []byte { return ping(t)[:14] }, nil},
		{"vlan tagged arp", func(t testing.TB) []byte {
			f := arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11")
			return append(append(append([]byte(nil), f[:12]...), 0x81, 0, 0, 5), f[12:]...)
		}, nil},
		{"arp truncated", func(t testing.TB) []byte { return arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11")[:14+27] }, nil},
		{"arp exactly 28 bytes", func(t testing.TB) []byte { return arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11")[:14+28] },
			[]Host{h(clientMAC, "10.20.0.11", "", SourceARP)}},
		{"arp hardware type not ethernet", func(t testing.TB) []byte {
			return patch(arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11"), 14, 0, 6)
		}, nil},
		{"arp hardware type 0x0101", func(t testing.TB) []byte { // layers took it for Ethernet
			return patch(arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11"), 14, 1, 1)
		}, nil},
		{"arp protocol not ipv4", func(t testing.TB) []byte {
			return patch(arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11"), 16, 0x86, 0xdd)
		}, nil},
		{"arp hardware size 8", func(t testing.TB) []byte {
			return patch(arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11"), 18, 8)
		}, nil},
		{"arp hardware size 250", func(t testing.TB) []byte {
			return patch(arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11"), 18, 250, 4)
		}, nil},
		{"arp unknown operation", func(t testing.TB) []byte {
			return patch(arpFrame(t, layers.ARPRequest, clientMAC, "10.20.0.11"), 20, 0, 9)
		}, []Host{h(clientMAC, "10.20.0.11", "", SourceARP)}},
		{"ipv4 ihl below 5", func(t testing.TB) []byte { return patch(ping(t), 14, 0x44) }, nil},
		{"ipv4 ihl 0", func(t testing.TB) []byte { return patch(ping(t), 14, 0x40) }, nil},
		{"ipv4 version 6", func(t testing.TB) []byte { return patch(ping(t), 14, 0x65) }, nil},
		{"ipv4 header cut short", func(t testing.TB) []byte { return ping(t)[:14+19] }, nil},
		{"ipv4 header only", func(t testing.TB) []byte { return ping(t)[:14+20] },
			[]Host{h(clientMAC, "10.20.2.9", "", SourceIPv4)}},
		{"ipv4 total length below header", func(t testing.TB) []byte { return patch(ping(t), 16, 0, 19) }, nil},
		{"ipv4 total length 0 (segmentation offload)", func(t testing.TB) []byte { return patch(ping(t), 16, 0, 0) },
			[]Host{h(clientMAC, "10.20.2.9", "", SourceIPv4)}},
		{"ipv4 header longer than total length", func(t testing.TB) []byte { return patch(ping(t), 14, 0x4f) }, nil},
		{"ipv4 header longer than frame", func(t testing.TB) []byte {
			return patch(ping(t)[:14+40], 14, 0x4f, 0, 0xff, 0xff)
		}, nil},
		{"ipv4 options", func(t testing.TB) []byte { return withIPOptions(ping(t), 1, 0x44, 3, 0, 0) },
			[]Host{h(clientMAC, "10.20.2.9", "", SourceIPv4)}},
		{"ipv4 option past header", func(t testing.TB) []byte { return withIPOptions(ping(t), 1, 7, 9, 0) }, nil},
		{"ipv4 option length 2", func(t testing.TB) []byte { return withIPOptions(ping(t), 0x44, 2, 1, 0) }, nil},
		{"ipv4 option length byte missing", func(t testing.TB) []byte { return withIPOptions(ping(t), 1, 1, 1, 7) }, nil},
		{"ipv4 padding after end of options", func(t testing.TB) []byte { return withIPOptions(ping(t), 0, 7, 9, 9) },
			[]Host{h(clientMAC, "10.20.2.9", "", SourceIPv4)}},
		{"ipv4 multicast source mac", func(t testing.TB) []byte {
			return ipFrame(t, net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, "10.20.2.9", "198.51.100.1", nil)
		}, nil},
		{"ipv4 zero source mac", func(t testing.TB) []byte { return ipFrame(t, make(net.HardwareAddr, 6), "10.20.2.9", "10.20.0.1", nil) }, nil},
		{"ipv4 from network address", func(t testing.TB) []byte { return ipFrame(t, clientMAC, "10.20.0.0", "10.20.0.1", nil) }, nil},
		{"ipv4 from broadcast address", func(t testing.TB) []byte { return ipFrame(t, clientMAC, "10.20.3.255", "10.20.0.1", nil) }, nil},
		{"udp between other ports", func(t testing.TB) []byte {
			return udpFrame(t, clientMAC, "10.20.1.5", "10.20.0.1", 5000, 5001, dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3))
		}, []Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"dhcp from port 68 to another port", func(t testing.TB) []byte {
			return udpFrame(t, clientMAC, "10.20.1.5", "10.20.0.1", 68, 5000, dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3))
		}, []Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		{"dhcp to port 67 from another port", func(t testing.TB) []byte {
			return udpFrame(t, clientMAC, "10.20.1.5", "10.20.0.1", 5000, 67, dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3))
		}, []Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		// A deliberate difference (knownDifference): layers decoded this as
		// DNS (it looks up the destination port first), Parse as the DHCP
		// message it is.
		{"dhcp from port 68 to port 53", func(t testing.TB) []byte {
			return udpFrame(t, clientMAC, "10.20.1.5", "10.20.0.1", 68, 53, dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3))
		}, []Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		{"dhcp renew", renew, []Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		{"dhcp fragment is plain ipv4", func(t testing.TB) []byte { return patch(renew(t), 20, 0x20) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"dhcp later fragment is plain ipv4", func(t testing.TB) []byte { return patch(renew(t), 20, 0, 1) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"ip in ip counts the outer header", func(t testing.TB) []byte { // layers: the inner one
			inner := ipFrame(t, clientMAC, "10.20.2.77", "198.51.100.1", nil)[14 : 14+40]
			outer := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: ip4("10.20.2.9"), DstIP: ip4("198.51.100.1")}
			return serialize(t, &layers.Ethernet{SrcMAC: clientMAC, DstMAC: gwMAC, EthernetType: layers.EthernetTypeIPv4}, outer, gopacket.Payload(inner))
		}, []Host{h(clientMAC, "10.20.2.9", "", SourceIPv4)}},
		{"ip protocol not udp", func(t testing.TB) []byte { return patch(renew(t), 23, 6) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"udp header cut short", func(t testing.TB) []byte { return renew(t)[:udp+7] },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"udp length below 8 is plain ipv4", func(t testing.TB) []byte { return patch(renew(t), udp+4, 0, 7) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"udp length 8 is plain ipv4", func(t testing.TB) []byte { return patch(renew(t), udp+4, 0, 8) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"udp length cuts dhcp short", func(t testing.TB) []byte { return patch(renew(t), udp+4, 0, 8+239) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"udp length 0 means the rest", func(t testing.TB) []byte { return patch(renew(t), udp+4, 0, 0) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		{"udp length past frame", func(t testing.TB) []byte { return patch(renew(t), udp+4, 0xff, 0xff) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		{"ip total length cuts dhcp short", func(t testing.TB) []byte { return patch(renew(t), 16, 0, 20+8+200) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"dhcp truncated frame is plain ipv4", func(t testing.TB) []byte { return renew(t)[:dhcp+239] },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"dhcp bad magic cookie is plain ipv4", func(t testing.TB) []byte { return patch(renew(t), dhcp+236, 0) },
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"dhcp no options", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "")), nil},
		{"dhcp option past the end is plain ipv4", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3, 12, 10, 'a', 'b')),
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"dhcp option length byte missing is plain ipv4", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3, 12)),
			[]Host{h(clientMAC, "10.20.1.5", "", SourceIPv4)}},
		{"dhcp options after end ignored", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3, 12, 3, 'b', 'o', 'b', 255, 12, 200)),
			[]Host{h(clientMAC, "10.20.1.5", "bob", SourceDHCPRequest)}},
		{"dhcp without end option", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3, 12, 3, 'b', 'o', 'b')),
			[]Host{h(clientMAC, "10.20.1.5", "bob", SourceDHCPRequest)}},
		{"dhcp pads and repeated options", fromClient(dhcpRaw(1, clientMAC, "", "", 0, 0, 53, 1, 1, 53, 2, 3, 3,
			12, 3, 'o', 'l', 'd', 12, 3, 'n', 'e', 'w', 50, 4, 10, 20, 1, 9, 50, 3, 1, 2, 3, 0, 255)),
			[]Host{h(clientMAC, "10.20.1.9", "new", SourceDHCPRequest)}},
		{"dhcp hostname emptied by a later option", fromClient(dhcpRaw(1, clientMAC, "", "", 53, 1, 1, 12, 3, 'b', 'o', 'b', 12, 0)), nil},
		{"dhcp hostname of spaces only", fromClient(dhcpRaw(1, clientMAC, "", "", 53, 1, 1, 12, 3, ' ', 0, '\t')), nil},
		{"dhcp hostname cut at 64 bytes", fromClient(dhcpRaw(1, clientMAC, "", "",
			append([]byte{53, 1, 1, 12, 65}, append(bytesOf('a', 63), 0xc3, 0xa9)...)...)),
			[]Host{h(clientMAC, "", string(bytesOf('a', 63)), SourceDHCPRequest)}},
		{"dhcp message type 0", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 0, 255)), nil},
		{"dhcp message type of 2 bytes", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 2, 3, 3, 255)), nil},
		{"dhcp without message type", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 12, 3, 'b', 'o', 'b', 255)), nil},
		{"dhcp requested ip outside subnet, ciaddr inside", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 3, 50, 4, 192, 168, 1, 9, 255)),
			[]Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		{"dhcp inform", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 8, 255)),
			[]Host{h(clientMAC, "10.20.1.5", "", SourceDHCPRequest)}},
		{"dhcp release ignored", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "", 53, 1, 7, 255)), nil},
		{"dhcp request op with ack type", fromClient(dhcpRaw(1, clientMAC, "10.20.1.5", "10.20.1.5", 53, 1, 5, 255)), nil},
		{"dhcp reply op with request type", fromServer(dhcpRaw(2, clientMAC, "", "10.20.1.5", 53, 1, 3, 255)), nil},
		{"dhcp unknown op", fromClient(dhcpRaw(3, clientMAC, "10.20.1.5", "", 53, 1, 3, 255)), nil},
		{"dhcp hlen 16", func(t testing.TB) []byte { return patch(renew(t), dhcp+2, 16) }, nil},
		{"dhcp hlen 255 from a client in subnet", func(t testing.TB) []byte { // layers: plain IPv4
			return patch(renew(t), dhcp+2, 255)
		}, nil},
		{"dhcp hlen 0", func(t testing.TB) []byte { return patch(renew(t), dhcp+2, 0) }, nil},
		{"dhcp htype not ethernet", func(t testing.TB) []byte { return patch(renew(t), dhcp+1, 6) }, nil},
		{"dhcp multicast chaddr", func(t testing.TB) []byte { return patch(renew(t), dhcp+28, 1) }, nil},
		{"dhcp zero chaddr", func(t testing.TB) []byte { return patch(renew(t), dhcp+28, 0, 0, 0, 0, 0, 0) }, nil},
		{"dhcp ack to inform uses ciaddr", fromServer(dhcpRaw(2, clientMAC, "10.20.1.5", "", 53, 1, 5, 255)),
			[]Host{h(clientMAC, "10.20.1.5", "", SourceDHCPAck)}},
		{"dhcp ack with hostname", fromServer(dhcpRaw(2, clientMAC, "", "10.20.1.5", 53, 1, 5, 12, 3, 'b', 'o', 'b', 255)),
			[]Host{h(clientMAC, "10.20.1.5", "bob", SourceDHCPAck)}},
		{"dhcp ack outside subnet", fromServer(dhcpRaw(2, clientMAC, "", "192.168.1.5", 53, 1, 5, 255)), nil},
		{"dhcp ack version nibble not checked", func(t testing.TB) []byte {
			return patch(fromServer(dhcpRaw(2, clientMAC, "", "10.20.1.5", 53, 1, 5, 255))(t), 14, 0x65)
		}, []Host{h(clientMAC, "10.20.1.5", "", SourceDHCPAck)}},
		{"dhcp message type overwritten by pads", func(t testing.TB) []byte { return patch(renew(t), opts, 0, 0, 0) }, nil},
	}
}

func TestParse(t *testing.T) {
	for _, tt := range parseCases() {
		t.Run(tt.name, func(t *testing.T) {
			got := Parse(tt.frame(t), subnet, now)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseMatchesLayers proves Parse gives, frame for frame, what the
// gopacket/layers decoder it replaced gave (parseLayers), but for the
// differences knownDifference documents.
func TestParseMatchesLayers(t *testing.T) {
	for _, tt := range parseCases() {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.frame(t)
			if why := knownDifference(f); why != "" {
				t.Skip("a documented difference: " + why)
			}
			if diff := cmp.Diff(parseLayers(f, subnet, now), Parse(f, subnet, now), addrEqual); diff != "" {
				t.Errorf("(-layers +Parse):\n%s", diff)
			}
		})
	}
}

var addrEqual = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func sameHost(a, b Host) bool {
	return slices.Equal(a.MAC, b.MAC) && a.IP == b.IP && a.Hostname == b.Hostname && a.Source == b.Source &&
		a.FirstSeen.Equal(b.FirstSeen) && a.LastSeen.Equal(b.LastSeen)
}

func TestParseHostileDHCP(t *testing.T) {
	// gopacket v1.1.19 slices chaddr by the header's hlen without a bound.
	f := dhcpFrame(t, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeRequest, chaddr: clientMAC,
		reqIP: "10.20.1.5", src: "0.0.0.0", dst: "255.255.255.255"})
	f[14+20+8+2] = 255 // hlen
	if got := Parse(f[:14+20+8+240], subnet, now); got != nil {
		t.Errorf("Parse = %v, want nil", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseCases() {
		f.Add(tt.frame(f))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		got := Parse(frame, subnet, now)
		if knownDifference(frame) == "" {
			// cmp.Diff only on a mismatch: it would cost more than both decoders.
			if want := parseLayers(frame, subnet, now); !slices.EqualFunc(want, got, sameHost) {
				t.Fatalf("Parse differs from the layers decoder (-layers +Parse):\n%s", cmp.Diff(want, got, addrEqual))
			}
		}
		for _, h := range got {
			if len(h.MAC) != 6 || h.MAC[0]&1 != 0 {
				t.Fatalf("host with bad MAC %v", h.MAC)
			}
			if h.IP.IsValid() && !subnet.Contains(h.IP) {
				t.Fatalf("host IP %s outside %s", h.IP, subnet)
			}
			if !h.IP.IsValid() && h.Hostname == "" {
				t.Fatalf("host with neither IP nor hostname: %+v", h)
			}
			if len(h.Hostname) > maxHostname {
				t.Fatalf("hostname %q too long", h.Hostname)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	frames := map[string][]byte{
		"ipv4-header": ipFrame(b, clientMAC, "10.20.2.9", "198.51.100.1", make([]byte, 1400))[:headerSnap],
		"arp":         arpFrame(b, layers.ARPRequest, clientMAC, "10.20.0.11"),
		"dhcp-request": dhcpFrame(b, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeRequest, chaddr: clientMAC,
			hostname: "anna-phone", reqIP: "10.20.1.5", src: "0.0.0.0", dst: "255.255.255.255"}),
	}
	for name, f := range frames {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if len(Parse(f, subnet, now)) != 1 {
					b.Fatal("no host")
				}
			}
		})
	}
}
