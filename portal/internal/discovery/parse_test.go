package discovery

import (
	"net"
	"net/netip"
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

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		frame func(testing.TB) []byte
		want  []Host
	}{
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Parse(tt.frame(t), subnet, now)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
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
	f.Add(arpFrame(f, layers.ARPRequest, clientMAC, "10.20.0.11"))
	f.Add(dhcpFrame(f, dhcpMsg{op: layers.DHCPOpRequest, typ: layers.DHCPMsgTypeRequest, chaddr: clientMAC,
		hostname: "anna-phone", reqIP: "10.20.1.5", src: "0.0.0.0", dst: "255.255.255.255"}))
	f.Add(dhcpFrame(f, dhcpMsg{op: layers.DHCPOpReply, typ: layers.DHCPMsgTypeAck, chaddr: clientMAC,
		yiaddr: "10.20.1.5", src: "10.20.0.1", dst: "10.20.1.5"}))
	f.Add(ipFrame(f, clientMAC, "10.20.2.9", "198.51.100.1", []byte("x")))
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, h := range Parse(frame, subnet, now) {
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
