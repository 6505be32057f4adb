// Package lab builds a whole civicwifi site inside network namespaces on one
// machine: an "upstream" namespace that plays the internet, a "gateway"
// namespace where the portal daemon runs, and one namespace per Wi-Fi client
// behind an isolating bridge that stands in for the access points.
//
// Every name carries a per-run random suffix so parallel runs never collide,
// and Close removes every namespace and process the lab made. See README.md
// for the topology.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Options shape a lab.
type Options struct {
	// Clients is the number of client namespaces; 0 means 2.
	Clients int
	// DHCP leaves the clients' eth0 without an IPv4 address, for a test
	// that runs a DHCP client itself.
	DHCP bool
	// Upstream makes NewT also start the upstream services (StartUpstream).
	// New ignores it.
	Upstream bool
	// RouteIPv4 gives the upstream a route to 10.20.0.0/22 via the gateway,
	// so clients reach it without NAT (for tests of shaping or counting
	// that have no firewall). By default, as on the real internet, client
	// IPv4 must be NATed by the gateway to get answers.
	RouteIPv4 bool
	// ClientBits is the prefix length of the client network 10.20.0.1/N
	// (16..24); 0 means 22. A wider one leaves room for extra devices
	// (Client.AddDevices) beyond the client namespaces' own addresses.
	ClientBits int
}

// Fixed addresses of the lab. They are the same in every run: the
// namespaces keep runs apart, not the addresses.
var (
	upstreamIP    = netip.MustParseAddr("198.51.100.1")
	gardenIP      = netip.MustParseAddr("198.51.100.10")
	otherIP       = netip.MustParseAddr("198.51.100.11")
	upstreamIP6   = netip.MustParseAddr("2001:db8:100::1")
	gatewayWANIP  = netip.MustParseAddr("198.51.100.2")
	gatewayWANIP6 = netip.MustParseAddr("2001:db8:100::2")
	gatewayIP     = netip.MustParseAddr("10.20.0.1")
	gatewayIP6    = netip.MustParseAddr("2001:db8:20::1")
	clientPrefix  = netip.MustParsePrefix("10.20.0.1/22")
	clientPrefix6 = netip.MustParsePrefix("2001:db8:20::1/64")
	wanPrefix     = netip.MustParsePrefix("198.51.100.1/24")
	wanPrefix6    = netip.MustParsePrefix("2001:db8:100::1/64")
)

// MaxClients bounds Options.Clients: client addresses are 10.20.0.<10+N>.
const MaxClients = 200

// Lab is one site in namespaces. Its exported fields are read-only.
type Lab struct {
	ID       string // random suffix shared by every namespace name
	Upstream NS     // "the internet": cwu-<id>
	Gateway  NS     // the on-site gateway: cwg-<id>
	Clients  []*Client

	UpstreamIP    netip.Addr   // 198.51.100.1 on up0: default gateway of the WAN, DNS, HTTP(S), iperf3
	GardenIP      netip.Addr   // 198.51.100.10 on up0: a walled-garden host
	OtherIP       netip.Addr   // 198.51.100.11 on up0: an ordinary site
	UpstreamIP6   netip.Addr   // 2001:db8:100::1 on up0
	GatewayWANIP  netip.Addr   // 198.51.100.2 on wan0
	GatewayWANIP6 netip.Addr   // 2001:db8:100::2 on wan0
	GatewayIP     netip.Addr   // 10.20.0.1 on br-cw
	GatewayIP6    netip.Addr   // 2001:db8:20::1 on br-cw
	ClientPrefix  netip.Prefix // 10.20.0.1/22 (Options.ClientBits): the gateway's address on the client network
	ClientPrefix6 netip.Prefix // 2001:db8:20::1/64
	WANPrefix     netip.Prefix // 198.51.100.1/24: the upstream's address on the WAN link
	WANPrefix6    netip.Prefix // 2001:db8:100::1/64
	WANIf         string       // "wan0", in the gateway
	LANIf         string       // "br-cw", in the gateway
	UpstreamIf    string       // "up0", in the upstream

	// Dir holds the logs of started processes, dnsmasq's files and the
	// upstream's CA certificate. Close removes it.
	Dir string
	// UpstreamCAFile is the PEM certificate the upstream's HTTPS server
	// uses (self-signed, so also its CA); set by StartUpstream.
	UpstreamCAFile string

	mu       sync.Mutex
	closed   bool
	procs    []*proc
	closers  []func() error
	upstream *upstream
	marker   string
	dhcp     bool
	devices  int // AddDevices so far
}

// Client is one resident's device: a namespace with eth0 bridged to the
// gateway's br-cw through the isolated port cp<Index>.
type Client struct {
	NS
	Index int              // 1-based
	MAC   net.HardwareAddr // 02:00:00:00:00:<Index>
	IP    netip.Addr       // 10.20.0.<10+Index>; invalid with Options.DHCP
	IP6   netip.Addr       // 2001:db8:20::<10+Index>
	Port  string           // the gateway's bridge port for this client: cp<Index>
}

// ClientMAC returns the MAC address the lab gives client i (1-based).
func ClientMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
}

// ClientIP returns the static IPv4 address of client i (1-based).
func ClientIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 20, 0, byte(10 + i)}) }

// ClientIP6 returns the IPv6 address of client i (1-based).
func ClientIP6(i int) netip.Addr {
	a := gatewayIP6.As16()
	a[15] = byte(10 + i)
	return netip.AddrFrom16(a)
}

// New builds a lab. On error it removes whatever it made.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if opts.Clients == 0 {
		opts.Clients = 2
	}
	if opts.Clients < 0 || opts.Clients > MaxClients {
		return nil, fmt.Errorf("building lab: %d clients, want 1..%d", opts.Clients, MaxClients)
	}
	cp := clientPrefix
	if opts.ClientBits != 0 {
		if opts.ClientBits < 16 || opts.ClientBits > 24 {
			return nil, fmt.Errorf("building lab: client network /%d, want /16../24", opts.ClientBits)
		}
		cp = netip.PrefixFrom(gatewayIP, opts.ClientBits)
	}
	l := &Lab{
		UpstreamIP: upstreamIP, GardenIP: gardenIP, OtherIP: otherIP, UpstreamIP6: upstreamIP6,
		GatewayWANIP: gatewayWANIP, GatewayWANIP6: gatewayWANIP6,
		GatewayIP: gatewayIP, GatewayIP6: gatewayIP6,
		ClientPrefix: cp, ClientPrefix6: clientPrefix6,
		WANPrefix: wanPrefix, WANPrefix6: wanPrefix6,
		WANIf: "wan0", LANIf: "br-cw", UpstreamIf: "up0",
	}
	if err := l.claimID(); err != nil {
		return nil, fmt.Errorf("building lab: %w", err)
	}
	dir, err := os.MkdirTemp("", "cwlab-"+l.ID+"-")
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("building lab: %w", err)
	}
	l.Dir = dir
	l.dhcp = opts.DHCP
	l.Upstream = NS{Name: "cwu-" + l.ID}
	l.Gateway = NS{Name: "cwg-" + l.ID}
	if err := l.build(ctx, opts); err != nil {
		l.Close()
		return nil, fmt.Errorf("building lab %s: %w", l.ID, err)
	}
	return l, nil
}

// claimID picks a random suffix not used by a live or leftover lab and
// writes the owner marker before any namespace exists, so that Sweep can
// always tell whose namespaces they are.
func (l *Lab) claimID() error {
	if err := os.MkdirAll(MarkerDir, 0o755); err != nil {
		return err
	}
	for range 20 {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		id := hex.EncodeToString(b[:])[:5]
		if _, err := os.Stat(filepath.Join("/run/netns", "cwg-"+id)); err == nil {
			continue
		}
		marker := filepath.Join(MarkerDir, id)
		// Write the PID to a temporary file, then link it into place: the
		// marker appears whole or not at all, and never replaces another.
		tmp, err := os.CreateTemp(MarkerDir, ".tmp-")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(tmp, "%d\n", os.Getpid())
		if err == nil {
			err = tmp.Chmod(0o644)
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Link(tmp.Name(), marker)
		}
		os.Remove(tmp.Name())
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		l.ID, l.marker = id, marker
		return nil
	}
	return errors.New("finding a free lab id")
}

func (l *Lab) build(ctx context.Context, opts Options) error {
	up, gw := l.Upstream.Name, l.Gateway.Name
	for _, ns := range []struct{ name, dns string }{{up, upstreamIP.String()}, {gw, upstreamIP.String()}} {
		if err := addNS(ctx, ns.name, ns.dns); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"ip", "link", "add", "wan0", "netns", gw, "type", "veth", "peer", "name", "up0", "netns", up},
		// upstream: the internet
		{"ip", "-n", up, "link", "set", "lo", "up"},
		{"ip", "-n", up, "addr", "add", wanPrefix.String(), "dev", "up0"},
		{"ip", "-n", up, "addr", "add", netip.PrefixFrom(gardenIP, 24).String(), "dev", "up0"},
		{"ip", "-n", up, "addr", "add", netip.PrefixFrom(otherIP, 24).String(), "dev", "up0"},
		{"ip", "-n", up, "-6", "addr", "add", wanPrefix6.String(), "dev", "up0", "nodad"},
		{"ip", "-n", up, "link", "set", "up0", "up"},
		// The client prefix is routed to the site over IPv6; IPv4 from
		// 10.20.0.0/22 must be NATed by the gateway, as on the real internet.
		{"ip", "-n", up, "-6", "route", "add", clientPrefix6.Masked().String(), "via", gatewayWANIP6.String()},
		// gateway
		{"ip", "-n", gw, "link", "set", "lo", "up"},
		{"ip", "-n", gw, "addr", "add", netip.PrefixFrom(gatewayWANIP, 24).String(), "dev", "wan0"},
		{"ip", "-n", gw, "-6", "addr", "add", netip.PrefixFrom(gatewayWANIP6, 64).String(), "dev", "wan0", "nodad"},
		{"ip", "-n", gw, "link", "set", "wan0", "up"},
		{"ip", "-n", gw, "route", "add", "default", "via", upstreamIP.String()},
		{"ip", "-n", gw, "-6", "route", "add", "default", "via", upstreamIP6.String()},
		{"ip", "-n", gw, "link", "add", "br-cw", "address", "02:00:00:00:01:01", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"ip", "-n", gw, "addr", "add", l.ClientPrefix.String(), "dev", "br-cw"},
		{"ip", "-n", gw, "-6", "addr", "add", clientPrefix6.String(), "dev", "br-cw", "nodad"},
		{"ip", "-n", gw, "link", "set", "br-cw", "up"},
	}
	if opts.RouteIPv4 {
		steps = append(steps, []string{"ip", "-n", up, "route", "add", l.ClientPrefix.Masked().String(), "via", gatewayWANIP.String()})
	}
	for _, argv := range steps {
		if _, err := run(ctx, argv...); err != nil {
			return err
		}
	}
	if err := l.Gateway.Do(func() error {
		for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(f, []byte("1\n"), 0o644); err != nil {
				return fmt.Errorf("setting %s: %w", f, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for i := 1; i <= opts.Clients; i++ {
		if _, err := l.addClient(ctx, i, opts.DHCP); err != nil {
			return err
		}
	}
	return nil
}

// AddClient adds one more client namespace with the next index, configured
// like the others (no IPv4 with Options.DHCP).
func (l *Lab) AddClient(ctx context.Context) (*Client, error) {
	l.mu.Lock()
	i := len(l.Clients) + 1
	l.mu.Unlock()
	if i > MaxClients {
		return nil, fmt.Errorf("adding client: already %d", MaxClients)
	}
	return l.addClient(ctx, i, l.dhcp)
}

func (l *Lab) addClient(ctx context.Context, i int, dhcp bool) (*Client, error) {
	c := &Client{
		NS:    NS{Name: "cwc" + strconv.Itoa(i) + "-" + l.ID},
		Index: i,
		MAC:   ClientMAC(i),
		IP6:   ClientIP6(i),
		Port:  "cp" + strconv.Itoa(i),
	}
	if !dhcp {
		c.IP = ClientIP(i)
	}
	ns, gw := c.Name, l.Gateway.Name
	if err := addNS(ctx, ns, gatewayIP.String()); err != nil {
		return nil, fmt.Errorf("adding client %d: %w", i, err)
	}
	// Track the client before configuring it, so Close deletes it on error.
	l.mu.Lock()
	l.Clients = append(l.Clients, c)
	l.mu.Unlock()
	steps := [][]string{
		{"ip", "link", "add", "eth0", "netns", ns, "address", c.MAC.String(), "type", "veth", "peer", "name", c.Port, "netns", gw},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", gw, "link", "set", c.Port, "master", "br-cw"},
		{"bridge", "-n", gw, "link", "set", "dev", c.Port, "isolated", "on"},
		{"ip", "-n", gw, "link", "set", c.Port, "up"},
		{"ip", "-n", ns, "-6", "addr", "add", netip.PrefixFrom(c.IP6, 64).String(), "dev", "eth0", "nodad"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "-6", "route", "add", "default", "via", gatewayIP6.String()},
	}
	if !dhcp {
		steps = append(steps,
			[]string{"ip", "-n", ns, "addr", "add", netip.PrefixFrom(c.IP, l.ClientPrefix.Bits()).String(), "dev", "eth0"},
			[]string{"ip", "-n", ns, "route", "add", "default", "via", gatewayIP.String()},
		)
	}
	for _, argv := range steps {
		if _, err := run(ctx, argv...); err != nil {
			return nil, fmt.Errorf("adding client %d: %w", i, err)
		}
	}
	return c, nil
}

// Namespaces lists every namespace of the lab: upstream, gateway, clients.
func (l *Lab) Namespaces() []NS {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []NS{l.Upstream, l.Gateway}
	for _, c := range l.Clients {
		out = append(out, c.NS)
	}
	return out
}

// AddCloser registers fn to run at the start of Close, before processes
// are killed and namespaces deleted (last registered runs first).
func (l *Lab) AddCloser(fn func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, fn)
}

// Close stops the upstream services and every process started with Start,
// kills any other process still inside the lab's namespaces, deletes the
// namespaces, the marker and Dir. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	closers, procs, up := l.closers, l.procs, l.upstream
	l.closers, l.procs = nil, nil
	l.mu.Unlock()

	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	if up != nil {
		up.close()
	}
	for _, p := range procs {
		p.stop(3 * time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l.ID != "" {
		for _, ns := range l.Namespaces() {
			if err := deleteNS(ctx, ns.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if l.marker != "" {
		if err := os.Remove(l.marker); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if l.Dir != "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing lab %s: %w", l.ID, err)
	}
	return nil
}

// EtcDir is where `ip netns exec` finds the files it bind-mounts over
// /etc for a namespace: /etc/netns/<name>.
const EtcDir = "/etc/netns"

// addNS creates namespace name with its own resolv.conf naming dns, which
// `ip netns exec` mounts over /etc/resolv.conf: commands in the namespace
// resolve through the lab, and a DHCP client's script rewrites that copy,
// never the machine's /etc/resolv.conf.
func addNS(ctx context.Context, name, dns string) error {
	dir := filepath.Join(EtcDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("adding namespace %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+dns+"\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("adding namespace %s: %w", name, err)
	}
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		os.RemoveAll(dir)
		return err
	}
	return nil
}

// deleteNS kills the processes left in namespace name (never this one) and
// deletes it; a namespace that does not exist is fine.
func deleteNS(ctx context.Context, name string) error {
	if err := os.RemoveAll(filepath.Join(EtcDir, name)); err != nil {
		return fmt.Errorf("deleting namespace %s: %w", name, err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	killNSPids(ctx, name)
	if _, err := run(ctx, "ip", "netns", "delete", name); err != nil {
		if _, serr := os.Stat(filepath.Join("/run/netns", name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// run runs argv in the current namespace with LC_ALL=C and returns its
// combined output; failures carry argv and the output.
func run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("running %q: %w\n%s", argv, err, out)
	}
	return string(out), nil
}
