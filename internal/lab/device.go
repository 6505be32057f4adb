package lab

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Device is one more resident's device inside a client namespace: a
// macvlan on the namespace's eth0 with its own MAC and IPv4 address (no
// IPv6), so one namespace can stand for many phones on the same port.
// Sockets made with its methods are bound to it (SO_BINDTODEVICE), so they
// leave with its MAC and address; the namespace's other sockets use eth0.
type Device struct {
	NS                    // the client namespace it is in
	Name string           // mv<N> in NS
	MAC  net.HardwareAddr // 02:01:<N as 4 bytes>
	IP   netip.Addr       // 10.20.1.0 + N, in the lab's client network
}

// DeviceIP returns the IPv4 address of device n (0-based, lab-wide):
// counted from 10.20.1.0, after the client namespaces' own addresses.
func DeviceIP(n int) netip.Addr {
	v := uint32(10)<<24 | uint32(20)<<16 | 1<<8
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// AddDevices adds n devices to client c, numbered on from the lab's last
// one. Their addresses must fit in the client network (Options.ClientBits):
// /22 leaves room for 767 devices, /18 for 16,127. On error the devices
// made so far stay in c's namespace, which Close deletes.
func (l *Lab) AddDevices(ctx context.Context, c *Client, n int) ([]*Device, error) {
	l.mu.Lock()
	first := l.devices
	if last := DeviceIP(first + n - 1); n < 1 || !l.ClientPrefix.Contains(last) || last == lastAddr(l.ClientPrefix) {
		l.mu.Unlock()
		return nil, fmt.Errorf("adding %d devices to client %d: %s has room for %d more", n, c.Index, l.ClientPrefix.Masked(), roomFrom(l.ClientPrefix, first))
	}
	l.devices += n
	l.mu.Unlock()

	// Replies from the gateway come in on the macvlans while the default
	// route is eth0's: no reverse-path filter. Each device answers ARP only
	// for its own address, and asks with it. No IPv6 on new links.
	if err := c.Do(func() error {
		for f, v := range map[string]string{
			"ipv4/conf/all/rp_filter": "0", "ipv4/conf/default/rp_filter": "0",
			"ipv4/conf/all/arp_ignore": "1", "ipv4/conf/all/arp_announce": "2",
			"ipv6/conf/default/disable_ipv6": "1",
		} {
			if err := os.WriteFile("/proc/sys/net/"+f, []byte(v+"\n"), 0o644); err != nil {
				return fmt.Errorf("setting %s: %w", f, err)
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("adding devices to client %d: %w", c.Index, err)
	}
	var batch strings.Builder
	devs := make([]*Device, n)
	for k := range devs {
		i := first + k
		d := &Device{NS: c.NS, Name: fmt.Sprintf("mv%d", i), IP: DeviceIP(i),
			MAC: net.HardwareAddr{0x02, 0x01, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}}
		devs[k] = d
		fmt.Fprintf(&batch, "link add %s link eth0 address %s type macvlan mode private\n", d.Name, d.MAC)
		fmt.Fprintf(&batch, "addr add %s dev %s\n", netip.PrefixFrom(d.IP, l.ClientPrefix.Bits()), d.Name)
		fmt.Fprintf(&batch, "link set %s up\n", d.Name)
		fmt.Fprintf(&batch, "route add default via %s dev %s metric %d\n", gatewayIP, d.Name, 100+i)
	}
	cmd := exec.CommandContext(ctx, "ip", "-n", c.Name, "-batch", "-")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("adding devices to client %d: running %q: %w\n%s", c.Index, cmd.Args, err, out)
	}
	return devs, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// roomFrom is how many devices from device first on fit in p (below its
// broadcast address).
func roomFrom(p netip.Prefix, first int) int {
	room := 0
	for a := DeviceIP(first); p.Contains(a) && a != lastAddr(p); a = a.Next() {
		room++
	}
	return room
}

// bind makes a socket leave through the device.
func (d *Device) bind(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = syscall.BindToDevice(int(fd), d.Name) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("binding to %s: %w", d.Name, err)
	}
	return nil
}

// Dial connects from the device. Use IP literals (see NS.Dial).
func (d *Device) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.dial(ctx, &net.Dialer{Control: d.bind}, network, addr)
}

// ListenPacket opens a packet socket on the device (see net.ListenPacket).
func (d *Device) ListenPacket(network, addr string) (net.PacketConn, error) {
	return d.listenPacket(&net.ListenConfig{Control: d.bind}, network, addr)
}

// HTTPClient is NS.HTTPClient with connections from the device.
func (d *Device) HTTPClient(roots *x509.CertPool) *http.Client {
	hc := d.NS.HTTPClient(roots)
	hc.Transport.(*http.Transport).DialContext = d.Dial
	return hc
}
