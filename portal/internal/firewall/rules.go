package firewall

import (
	"fmt"
	"strings"
)

// Names of the kernel objects this package owns. Everything starts with "cw-"
// so Teardown can tell ours from anybody else's.
const (
	AuthSet = "cw-auth" // bitmap:ip,mac: authorised IP+MAC pairs
	AcctSet = "cw-acct" // bitmap:ip counters comment: both directions, quota offset
	DownSet = "cw-dl"   // bitmap:ip counters: download only
	// GardenSet is the dynamic walled garden, the set dnsmasq fills
	// (ipset=/domain/cw-garden): hash:net with a default timeout, so
	// addresses a garden name stopped resolving to expire.
	GardenSet = "cw-garden"
	// GardenNetSet is the static walled garden: exactly Config.GardenNets.
	GardenNetSet = "cw-garden-net"

	chainFwd     = "cw-fwd"
	chainCaptive = "cw-captive"
	chainIn      = "cw-in"
	chainPre     = "cw-pre"
	chainPost    = "cw-post"
)

// QuotaBase is the counter value beyond which a client is over quota. A
// client with quota Q is added to cw-acct with an initial byte counter of
// QuotaBase-Q (+ bytes already used), so a single rule
// "--bytes-gt QuotaBase" enforces every client's own quota in O(1).
const QuotaBase uint64 = 1 << 62

// The trickle of TCP let through to a client that is over quota or no
// longer authorised, per client, so its open connections get reset.
const (
	kickRate  = "10/sec"
	kickBurst = "20"
	kickTable = "cw-kick"
)

// family is the IP version a ruleset is for.
type family int

const (
	v4 family = 4
	v6 family = 6
)

func (f family) String() string { return fmt.Sprintf("IPv%d", int(f)) }

// cmd is the iptables command of the family.
func (f family) cmd() string {
	if f == v6 {
		return "ip6tables"
	}
	return "iptables"
}

// chain is one of our chains and the built-in chain that jumps to it (empty
// for chains reached only from our own chains).
type chain struct {
	fam     family
	table   string
	name    string
	builtin string
	rules   []string // in the canonical form `iptables -S` prints, without "-A <chain> "
}

// jump is the rule spec of the single jump from c.builtin to c.
func (c chain) jump() []string { return []string{"-j", c.name} }

// chains renders the desired rules of every chain we own, in creation
// order (a chain before any chain that jumps to it).
//
// The rule text is exactly what `iptables -S` prints back, so Reconcile can
// compare the kernel with the desired state line by line.
func (cfg Config) chains() []chain {
	cli, up := cfg.ClientIf, cfg.UplinkIf
	gw := cfg.GatewayIP.String() + "/32"
	quota := fmt.Sprint(QuotaBase)
	overQuota := func(dir string) string {
		return fmt.Sprintf("-m set --match-set %s %s ! --update-counters --bytes-gt %s", AcctSet, dir, quota)
	}
	f := func(format string, a ...any) string { return fmt.Sprintf(format, a...) }
	kick := "-m hashlimit --hashlimit-upto " + kickRate + " --hashlimit-burst " + kickBurst +
		" --hashlimit-mode dstip --hashlimit-name " + kickTable

	// A captive client reaches the walled garden (static or dynamic) only
	// through the uplink and only for web traffic: tcp 80/443, udp 443
	// (QUIC). A garden name on a CDN address must not open every port.
	var gardenRules []string
	for _, set := range []string{GardenNetSet, GardenSet} {
		gardenRules = append(gardenRules,
			f("-o %s -p tcp -m multiport --dports 80,443 -m set --match-set %s dst -j ACCEPT", up, set))
	}
	for _, set := range []string{GardenNetSet, GardenSet} {
		gardenRules = append(gardenRules,
			f("-o %s -p udp -m udp --dport 443 -m set --match-set %s dst -j ACCEPT", up, set))
	}
	captive := chain{fam: v4, table: "filter", name: chainCaptive, rules: append(gardenRules,
		"-p tcp -j REJECT --reject-with tcp-reset",
		"-j REJECT --reject-with icmp-port-unreachable",
	)}
	// A client never uses an address outside the client network (e.g. to
	// inject spoofed replies into the gateway's own DNS queries).
	antiSpoof := f("! -s %s -i %s -j DROP", cfg.Subnet.Masked(), cli)
	fwd := chain{fam: v4, table: "filter", name: chainFwd, builtin: "FORWARD", rules: []string{
		antiSpoof,
		// Clients never talk to each other through the gateway.
		f("-i %s -o %s -j DROP", cli, cli),
		// Upload: not an authorised IP+MAC pair -> captive.
		f("-i %s -m set ! --match-set %s src,src -j %s", cli, AuthSet, chainCaptive),
		// Over quota (non-counting lookups) -> fast failure.
		f("-i %s -p tcp %s -j REJECT --reject-with tcp-reset", cli, overQuota("src")),
		f("-i %s %s -j REJECT --reject-with icmp-port-unreachable", cli, overQuota("src")),
		// The one counting lookup for upload, out of the uplink only: never
		// to another network of the gateway (management, APs).
		f("-i %s -o %s -m set --match-set %s src -j ACCEPT", cli, up, AcctSet),
		f("-i %s -j REJECT --reject-with icmp-port-unreachable", cli),
		// Download. A client over quota, or no longer authorised, still
		// gets a trickle of its open TCP connections (uncounted, at most
		// kickRate per client): its next ACK then meets the reset above,
		// so the connection dies at once instead of hanging until the
		// application times out. Everything else is dropped.
		f("-o %s -p tcp -m conntrack --ctstate ESTABLISHED %s %s -j ACCEPT", cli, overQuota("dst"), kick),
		f("-o %s %s -j DROP", cli, overQuota("dst")),
		// The counting lookups for download: cw-dl and cw-acct, once each.
		f("-i %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED -m set --match-set %s dst -m set --match-set %s dst -j ACCEPT", up, cli, DownSet, AcctSet),
		// Walled-garden replies to captive clients.
		f("-i %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED -m set --match-set %s src -j ACCEPT", up, cli, GardenNetSet),
		f("-i %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED -m set --match-set %s src -j ACCEPT", up, cli, GardenSet),
		f("-o %s -p tcp -m conntrack --ctstate ESTABLISHED %s -j ACCEPT", cli, kick),
		f("-o %s -j DROP", cli),
	}}
	in := chain{fam: v4, table: "filter", name: chainIn, builtin: "INPUT", rules: []string{
		// DHCP discover/request come from 0.0.0.0.
		f("-s 0.0.0.0/32 -i %s -p udp -m udp --dport 67 -j ACCEPT", cli),
		antiSpoof,
		f("-i %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", cli),
		f("-i %s -p udp -m udp --dport 67 -j ACCEPT", cli),
		f("-i %s -p udp -m udp --dport 53 -j ACCEPT", cli),
		f("-i %s -p tcp -m tcp --dport 53 -j ACCEPT", cli),
		f("-d %s -i %s -p tcp -m tcp --dport %d -j ACCEPT", gw, cli, cfg.PortalHTTPPort),
		f("-d %s -i %s -p tcp -m tcp --dport %d -j ACCEPT", gw, cli, cfg.PortalHTTPSPort),
		f("-i %s -p icmp -m icmp --icmp-type 8 -j ACCEPT", cli),
		f("-i %s -p tcp -j REJECT --reject-with tcp-reset", cli),
		f("-i %s -j REJECT --reject-with icmp-port-unreachable", cli),
	}}
	pre := chain{fam: v4, table: "nat", name: chainPre, builtin: "PREROUTING", rules: []string{
		// Every client, captive or authorised, reaches the portal on the
		// gateway's own address at the standard ports: dnsmasq answers
		// the OS probe hosts and the portal's name with it, so probes
		// after login and an api_url without a port land on the portal.
		f("-d %s -i %s -p tcp -m tcp --dport 80 -j DNAT --to-destination %s:%d", gw, cli, cfg.GatewayIP, cfg.PortalHTTPPort),
		f("-d %s -i %s -p tcp -m tcp --dport 443 -j DNAT --to-destination %s:%d", gw, cli, cfg.GatewayIP, cfg.PortalHTTPSPort),
		f("-i %s -m set --match-set %s src,src -j RETURN", cli, AuthSet),
		f("-i %s -p tcp -m tcp --dport 80 -m set --match-set %s dst -j RETURN", cli, GardenNetSet),
		f("-i %s -p tcp -m tcp --dport 80 -m set --match-set %s dst -j RETURN", cli, GardenSet),
		f("-i %s -p tcp -m tcp --dport 80 -j DNAT --to-destination %s:%d", cli, cfg.GatewayIP, cfg.PortalHTTPPort),
	}}
	post := chain{fam: v4, table: "nat", name: chainPost, builtin: "POSTROUTING", rules: []string{
		f("-s %s -o %s -j MASQUERADE", cfg.Subnet.Masked(), up),
	}}
	// IPv6 is never forwarded for clients (captive or not): the portal
	// gates IPv4 only, so IPv6 must not be a way around it.
	fwd6 := chain{fam: v6, table: "filter", name: chainFwd, builtin: "FORWARD", rules: []string{
		f("-i %s -p tcp -j REJECT --reject-with tcp-reset", cli),
		f("-i %s -j REJECT --reject-with icmp6-adm-prohibited", cli),
		f("-o %s -j DROP", cli),
	}}
	in6 := chain{fam: v6, table: "filter", name: chainIn, builtin: "INPUT", rules: []string{
		f("-i %s -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j ACCEPT", cli), // router solicitation
		f("-i %s -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT", cli), // neighbour solicitation
		f("-i %s -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT", cli), // neighbour advertisement
		f("-i %s -p tcp -j REJECT --reject-with tcp-reset", cli),
		f("-i %s -j REJECT --reject-with icmp6-adm-prohibited", cli),
	}}
	return []chain{captive, fwd, in, pre, post, fwd6, in6}
}

// restoreText renders chains (all of one family) as input for
// `iptables-restore --noflush`: declaring ":name - [0:0]" flushes just that
// chain, and the whole table commits atomically or not at all.
func restoreText(chains []chain) string {
	var b strings.Builder
	tables := []string{}
	byTable := map[string][]chain{}
	for _, c := range chains {
		if _, ok := byTable[c.table]; !ok {
			tables = append(tables, c.table)
		}
		byTable[c.table] = append(byTable[c.table], c)
	}
	for _, t := range tables {
		fmt.Fprintf(&b, "*%s\n", t)
		for _, c := range byTable[t] {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c.name)
		}
		for _, c := range byTable[t] {
			for _, r := range c.rules {
				fmt.Fprintf(&b, "-A %s %s\n", c.name, r)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// listed is what go-iptables List (iptables -S <chain>) returns for c when
// the kernel matches the desired state.
func (c chain) listed() []string {
	out := []string{"-N " + c.name}
	for _, r := range c.rules {
		out = append(out, "-A "+c.name+" "+r)
	}
	return out
}
