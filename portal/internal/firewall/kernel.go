package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// Config is what the firewall needs to know about the site.
type Config struct {
	ClientIf, UplinkIf string       // e.g. "br-cw", "wan0"
	Subnet             netip.Prefix // client subnet, e.g. 10.20.0.0/22 (bitmap sets need <= /16)
	// GatewayIP is the gateway's address on the client network, where the
	// portal and DNS listen.
	GatewayIP netip.Addr
	// PortalHTTPPort receives every captive client's port-80 connection
	// (DNAT); PortalHTTPSPort is the portal's own HTTPS port.
	PortalHTTPPort, PortalHTTPSPort uint16
	// GardenNets are the static walled-garden destinations.
	GardenNets []netip.Prefix
	// Netns, when set, runs every command (iptables, ipset, conntrack)
	// inside that named network namespace via `ip netns exec`. Used by the
	// lab and tests; a daemon running in the gateway's own namespace leaves
	// it empty.
	Netns string
}

// Validate reports every problem with cfg at once.
func (cfg Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, f := range []struct{ name, val string }{{"client interface", cfg.ClientIf}, {"uplink interface", cfg.UplinkIf}} {
		switch {
		case f.val == "":
			bad("%s is empty", f.name)
		case len(f.val) > 15 || strings.ContainsAny(f.val, " \t/!+*\"'"):
			bad("%s %q is not an interface name", f.name, f.val)
		}
	}
	if cfg.ClientIf != "" && cfg.ClientIf == cfg.UplinkIf {
		bad("client and uplink interface are both %q", cfg.ClientIf)
	}
	switch {
	case !cfg.Subnet.IsValid():
		bad("client subnet is not set")
	case !cfg.Subnet.Addr().Is4():
		bad("client subnet %s is not IPv4", cfg.Subnet)
	case cfg.Subnet.Bits() < 16:
		bad("client subnet %s is larger than /16 (ipset bitmap sets hold at most 65536 addresses)", cfg.Subnet)
	case cfg.Subnet.Bits() > 30:
		bad("client subnet %s is too small for clients", cfg.Subnet)
	}
	switch {
	case !cfg.GatewayIP.IsValid():
		bad("gateway IP is not set")
	case !cfg.GatewayIP.Is4():
		bad("gateway IP %s is not IPv4", cfg.GatewayIP)
	case cfg.Subnet.IsValid() && !cfg.Subnet.Contains(cfg.GatewayIP):
		bad("gateway IP %s is outside the client subnet %s", cfg.GatewayIP, cfg.Subnet)
	}
	if cfg.PortalHTTPPort == 0 {
		bad("portal HTTP port is not set")
	}
	if cfg.PortalHTTPSPort == 0 {
		bad("portal HTTPS port is not set")
	}
	if cfg.PortalHTTPPort != 0 && cfg.PortalHTTPPort == cfg.PortalHTTPSPort {
		bad("portal HTTP and HTTPS ports are both %d", cfg.PortalHTTPPort)
	}
	for _, n := range cfg.GardenNets {
		switch {
		case !n.IsValid():
			bad("walled-garden network is not a valid prefix")
		case !n.Addr().Is4():
			bad("walled-garden network %s is not IPv4", n)
		case n.Bits() == 0:
			bad("walled-garden network %s would open everything", n)
		}
	}
	if cfg.Netns != "" && strings.ContainsAny(cfg.Netns, "/ \t") {
		bad("network namespace %q is not a name", cfg.Netns)
	}
	return errors.Join(errs...)
}

// ipt is the part of *iptables.IPTables the firewall uses.
type ipt interface {
	ChainExists(table, chain string) (bool, error)
	List(table, chain string) ([]string, error)
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
	ClearAndDeleteChain(table, chain string) error
}

// Kernel is the Firewall on the real kernel: iptables (through go-iptables
// and iptables-restore) and ipset.
type Kernel struct {
	cfg  Config
	log  *slog.Logger
	run  runner
	ipt4 ipt
	ipt6 ipt
	now  func() time.Time
}

var _ Firewall = (*Kernel)(nil)

// New validates cfg and returns a Kernel firewall. It changes nothing in the
// kernel until Setup.
func New(cfg Config, log *slog.Logger) (*Kernel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuring the firewall: %w", err)
	}
	r := execRunner{}
	p4, p6 := "iptables", "ip6tables"
	if cfg.Netns != "" {
		r.prefix = []string{"ip", "netns", "exec", cfg.Netns}
		var err error
		if p4, p6, err = netnsWrappers(cfg.Netns); err != nil {
			return nil, fmt.Errorf("configuring the firewall: %w", err)
		}
	} else {
		var err error
		if p4, err = exec.LookPath(p4); err != nil {
			return nil, fmt.Errorf("configuring the firewall: %w", err)
		}
		if p6, err = exec.LookPath(p6); err != nil {
			return nil, fmt.Errorf("configuring the firewall: %w", err)
		}
	}
	i4, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Path(p4), iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("configuring the firewall: iptables: %w", err)
	}
	i6, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv6), iptables.Path(p6), iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("configuring the firewall: ip6tables: %w", err)
	}
	return newKernel(cfg, log, r, i4, i6), nil
}

func newKernel(cfg Config, log *slog.Logger, r runner, i4, i6 ipt) *Kernel {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Kernel{cfg: cfg, log: log.With("component", "firewall"), run: r, ipt4: i4, ipt6: i6, now: time.Now}
}

// netnsWrappers writes two tiny scripts that run iptables/ip6tables in the
// named namespace: go-iptables takes one executable path, not an argv.
func netnsWrappers(ns string) (p4, p6 string, err error) {
	dir := filepath.Join(os.TempDir(), "cw-firewall-netns-"+ns)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	for _, w := range []struct{ path, cmd string }{
		{filepath.Join(dir, "iptables"), "iptables"},
		{filepath.Join(dir, "ip6tables"), "ip6tables"},
	} {
		script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec '%s' %s \"$@\"\n", ns, w.cmd)
		if err := os.WriteFile(w.path, []byte(script), 0o700); err != nil {
			return "", "", err
		}
	}
	return filepath.Join(dir, "iptables"), filepath.Join(dir, "ip6tables"), nil
}

func (k *Kernel) iptFor(f family) ipt {
	if f == v6 {
		return k.ipt6
	}
	return k.ipt4
}

// Setup creates the sets, own chains and one jump from each built-in chain,
// and adds the static walled garden. Idempotent; keeps set elements.
func (k *Kernel) Setup(ctx context.Context) error {
	var rep Repairs
	if err := k.ensureInfra(ctx, &rep); err != nil {
		return fmt.Errorf("setting up the firewall: %w", err)
	}
	if err := k.ensureGarden(ctx, &rep); err != nil {
		return fmt.Errorf("setting up the firewall: %w", err)
	}
	k.log.Info("firewall set up", "sets", rep.Sets, "rules", rep.Rules)
	return nil
}

// ensureInfra makes the sets, chains and jumps match the desired state,
// counting what it had to change.
func (k *Kernel) ensureInfra(ctx context.Context, rep *Repairs) error {
	out, err := k.run.Run(ctx, "", "ipset", "list", "-n")
	if err != nil {
		return fmt.Errorf("listing sets: %w", err)
	}
	have := strings.Fields(out)
	for _, s := range k.cfg.sets() {
		if slices.Contains(have, s.name) {
			continue
		}
		argv := append([]string{"ipset", "create", s.name}, s.args...)
		if _, err := k.run.Run(ctx, "", append(argv, "-exist")...); err != nil {
			return fmt.Errorf("creating set %s: %w", s.name, err)
		}
		rep.Sets++
	}

	// Rewrite a whole table of one family atomically when any of its
	// chains differs from the desired rules.
	type key struct {
		fam   family
		table string
	}
	var order []key
	groups := map[key][]chain{}
	for _, c := range k.cfg.chains() {
		kk := key{c.fam, c.table}
		if _, ok := groups[kk]; !ok {
			order = append(order, kk)
		}
		groups[kk] = append(groups[kk], c)
	}
	for _, kk := range order {
		cs := groups[kk]
		ok, err := k.chainsMatch(kk.fam, cs)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		if err := k.restore(ctx, kk.fam, cs); err != nil {
			return err
		}
		rep.Rules++
	}
	for _, c := range k.cfg.chains() {
		if c.builtin == "" {
			continue
		}
		t := k.iptFor(c.fam)
		ok, err := t.Exists(c.table, c.builtin, c.jump()...)
		if err != nil {
			return fmt.Errorf("checking the %s jump %s -> %s: %w", c.fam, c.builtin, c.name, err)
		}
		if ok {
			continue
		}
		if err := t.Insert(c.table, c.builtin, 1, c.jump()...); err != nil {
			return fmt.Errorf("inserting the %s jump %s -> %s: %w", c.fam, c.builtin, c.name, err)
		}
		rep.Rules++
	}
	return nil
}

// chainsMatch says whether every chain in cs exists with exactly the
// desired rules.
func (k *Kernel) chainsMatch(f family, cs []chain) (bool, error) {
	t := k.iptFor(f)
	for _, c := range cs {
		ok, err := t.ChainExists(c.table, c.name)
		if err != nil {
			return false, fmt.Errorf("checking %s chain %s/%s: %w", f, c.table, c.name, err)
		}
		if !ok {
			k.log.Info("chain missing", "family", f.String(), "table", c.table, "chain", c.name)
			return false, nil
		}
		got, err := t.List(c.table, c.name)
		if err != nil {
			return false, fmt.Errorf("listing %s chain %s/%s: %w", f, c.table, c.name, err)
		}
		if !slices.Equal(got, c.listed()) {
			k.log.Warn("chain differs", "family", f.String(), "table", c.table, "chain", c.name, "rules", len(got)-1, "want", len(c.rules))
			return false, nil
		}
	}
	return true, nil
}

// restore writes the chains of one table atomically.
func (k *Kernel) restore(ctx context.Context, f family, cs []chain) error {
	cmd := "iptables-restore"
	if f == v6 {
		cmd = "ip6tables-restore"
	}
	if _, err := k.run.Run(ctx, restoreText(cs), cmd, "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("writing %s chains of table %s: %w", f, cs[0].table, err)
	}
	return nil
}

// ensureGarden adds the static walled-garden networks that are missing.
func (k *Kernel) ensureGarden(ctx context.Context, rep *Repairs) error {
	if len(k.cfg.GardenNets) == 0 {
		return nil
	}
	sets, err := k.list(ctx, GardenSet)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, e := range sets[GardenSet] {
		have[e.Key] = true
	}
	var lines []string
	for _, n := range k.cfg.GardenNets {
		s := n.Masked().String()
		if n.Bits() == 32 {
			s = n.Addr().String() // hash:net prints host routes without /32
		}
		if !have[s] {
			lines = append(lines, fmt.Sprintf("add %s %s", GardenSet, s))
		}
	}
	if len(lines) == 0 {
		return nil
	}
	if err := k.restoreSets(ctx, lines); err != nil {
		return fmt.Errorf("adding the walled garden: %w", err)
	}
	rep.Entries += len(lines)
	return nil
}

// list reads the elements of the named sets.
func (k *Kernel) list(ctx context.Context, names ...string) (map[string][]entry, error) {
	all := map[string][]entry{}
	for _, n := range names {
		out, err := k.run.Run(ctx, "", "ipset", "list", n, "-o", "save")
		if err != nil {
			return nil, fmt.Errorf("listing set %s: %w", n, err)
		}
		m, err := parseSave(out)
		if err != nil {
			return nil, fmt.Errorf("parsing set %s: %w", n, err)
		}
		all[n] = m[n]
	}
	return all, nil
}

// restoreSets applies ipset commands in one batch.
func (k *Kernel) restoreSets(ctx context.Context, lines []string) error {
	_, err := k.run.Run(ctx, strings.Join(lines, "\n")+"\n", "ipset", "-exist", "restore")
	return err
}

// ErrExpired is returned by Allow for a grant whose Expires has passed.
var ErrExpired = errors.New("grant already expired")

// Allow authorises one client, or updates its grant keeping its counters.
func (k *Kernel) Allow(ctx context.Context, g Grant) error {
	if err := checkGrant(k.cfg, g); err != nil {
		return fmt.Errorf("allowing %s: %w", g.IP, err)
	}
	timeout, ok := timeoutFor(g.Expires, k.now())
	if !ok {
		return fmt.Errorf("allowing %s: %w", g.IP, ErrExpired)
	}
	ip := g.IP.String()
	ipset := func(line string) (string, error) {
		return k.run.Run(ctx, "", append([]string{"ipset"}, splitArgs(line)...)...)
	}
	// A new client (the usual case) is one add per set, O(1). Only a
	// client already counted costs a read of its counters.
	fresh := acctOffset(g.QuotaBytes) + g.UsedBytes
	out, err := ipset(fmt.Sprintf("add %s %s packets 0 bytes %d comment %q", AcctSet, ip, fresh, quotaComment(g.QuotaBytes)))
	switch {
	case err == nil:
		if _, err := ipset(fmt.Sprintf("-exist add %s %s packets 0 bytes %d", DownSet, ip, g.UsedDownBytes)); err != nil {
			return fmt.Errorf("allowing %s: %w", g.IP, err)
		}
	case strings.Contains(out, "already added"):
		if err := k.updateCounters(ctx, g); err != nil {
			return fmt.Errorf("allowing %s: %w", g.IP, err)
		}
	default:
		return fmt.Errorf("allowing %s: %w", g.IP, err)
	}
	// Authorise last, so the client never passes without being counted.
	if _, err := ipset(fmt.Sprintf("-exist add %s %s,%s timeout %d", AuthSet, ip, g.MAC, timeout)); err != nil {
		return fmt.Errorf("allowing %s: %w", g.IP, err)
	}
	k.log.Info("client allowed", "ip", g.IP, "mac", g.MAC.String(), "timeout_s", timeout, "quota", g.QuotaBytes)
	return nil
}

// updateCounters rewrites the cw-acct and cw-dl elements of a client already
// counted: its counters carry over, a changed quota moves the offset.
func (k *Kernel) updateCounters(ctx context.Context, g Grant) error {
	sets, err := k.list(ctx, AcctSet, DownSet)
	if err != nil {
		return err
	}
	acct, haveAcct := indexByIP(sets[AcctSet])[g.IP]
	dl, haveDl := indexByIP(sets[DownSet])[g.IP]
	acctBytes, dlBytes := initialCounters(g, acct, haveAcct, dl, haveDl)
	for _, l := range grantLines(g, 0, acctBytes, dlBytes)[1:] {
		argv := append([]string{"ipset", "-exist"}, splitArgs(l)...)
		if _, err := k.run.Run(ctx, "", argv...); err != nil {
			return err
		}
	}
	return nil
}

// initialCounters decides the counters to (re)write for g: nil keeps the
// kernel's. A client already counted keeps the larger of the kernel's and
// the grant's figures; a quota change moves the offset.
func initialCounters(g Grant, acct entry, haveAcct bool, dl entry, haveDl bool) (acctBytes, dlBytes *uint64) {
	if haveAcct {
		used := usageOf(acct, entry{}).Bytes
		if parseQuotaComment(acct.Comment) != g.QuotaBytes || g.UsedBytes > used {
			v := acctOffset(g.QuotaBytes) + max(used, g.UsedBytes)
			acctBytes = &v
		}
	} else {
		v := acctOffset(g.QuotaBytes) + g.UsedBytes
		acctBytes = &v
	}
	if !haveDl || g.UsedDownBytes > dl.Bytes {
		v := g.UsedDownBytes
		if haveDl {
			v = max(v, dl.Bytes)
		}
		dlBytes = &v
	}
	return acctBytes, dlBytes
}

func checkGrant(cfg Config, g Grant) error {
	if !g.IP.Is4() || !cfg.Subnet.Contains(g.IP) {
		return fmt.Errorf("address %s is not in the client subnet %s", g.IP, cfg.Subnet)
	}
	if len(g.MAC) != 6 {
		return fmt.Errorf("MAC %q is not an Ethernet address", g.MAC)
	}
	if g.QuotaBytes > QuotaBase/2 {
		return fmt.Errorf("quota %d is too large", g.QuotaBytes)
	}
	return nil
}

// splitArgs splits one of our own ipset lines into argv (the only quoted
// field is a comment without blanks).
func splitArgs(l string) []string {
	f, _ := splitQuoted(l)
	return f
}

// Revoke removes the client from every set and flushes its conntrack
// entries, so open connections die at once.
func (k *Kernel) Revoke(ctx context.Context, c Client) error {
	if !c.IP.Is4() || !k.cfg.Subnet.Contains(c.IP) {
		return fmt.Errorf("revoking %s: address is not in the client subnet %s", c.IP, k.cfg.Subnet)
	}
	ip := c.IP.String()
	lines := []string{
		fmt.Sprintf("del %s %s", AuthSet, ip),
		fmt.Sprintf("del %s %s", AcctSet, ip),
		fmt.Sprintf("del %s %s", DownSet, ip),
	}
	if err := k.restoreSets(ctx, lines); err != nil {
		return fmt.Errorf("revoking %s: %w", c.IP, err)
	}
	if err := k.flushConntrack(ctx, c.IP); err != nil {
		return fmt.Errorf("revoking %s: %w", c.IP, err)
	}
	k.log.Info("client revoked", "ip", c.IP, "mac", c.MAC.String())
	return nil
}

// flushConntrack deletes the client's UDP and ICMP flows. TCP flows stay:
// deleting them would drop the NAT mapping, so the server's next segment
// would never reach the client and its connection would hang instead of
// dying; kept, that segment trickles through (see the kick rule) and the
// client's ACK meets the captive chain's reset.
func (k *Kernel) flushConntrack(ctx context.Context, ip netip.Addr) error {
	for _, proto := range []string{"udp", "icmp"} {
		for _, dir := range []string{"-s", "-d"} {
			out, err := k.run.Run(ctx, "", "conntrack", "-D", dir, ip.String(), "-p", proto)
			if err != nil && !strings.Contains(out, "0 flow entries") {
				return fmt.Errorf("flushing %s flows: %w", proto, err)
			}
		}
	}
	return nil
}

// Reconcile repairs drift so the kernel matches want: sets, chains, jumps,
// walled garden and the elements of every authorised client. Grants whose
// session has ended are treated as not wanted.
func (k *Kernel) Reconcile(ctx context.Context, want []Grant) (Repairs, error) {
	var rep Repairs
	if err := k.ensureInfra(ctx, &rep); err != nil {
		return rep, fmt.Errorf("reconciling the firewall: %w", err)
	}
	if err := k.ensureGarden(ctx, &rep); err != nil {
		return rep, fmt.Errorf("reconciling the firewall: %w", err)
	}
	sets, err := k.list(ctx, AuthSet, AcctSet, DownSet)
	if err != nil {
		return rep, fmt.Errorf("reconciling the firewall: %w", err)
	}
	lines, n := k.diffElements(want, sets)
	if len(lines) > 0 {
		if err := k.restoreSets(ctx, lines); err != nil {
			return rep, fmt.Errorf("reconciling the firewall: %w", err)
		}
	}
	rep.Entries += n
	if rep.Total() > 0 {
		k.log.Warn("firewall drift repaired", "rules", rep.Rules, "sets", rep.Sets, "entries", rep.Entries)
	}
	return rep, nil
}

// timeoutSlack is how far an element's kernel timeout may be from the
// grant's before Reconcile rewrites it.
const timeoutSlack = 10

// diffElements renders the ipset lines that make the sets match want, and
// how many elements they add, fix or remove.
func (k *Kernel) diffElements(want []Grant, sets map[string][]entry) (lines []string, n int) {
	now := k.now()
	auth := indexByIP(sets[AuthSet])
	acct := indexByIP(sets[AcctSet])
	dl := indexByIP(sets[DownSet])
	wanted := map[netip.Addr]bool{}
	for _, g := range want {
		if checkGrant(k.cfg, g) != nil {
			k.log.Warn("ignoring an invalid grant", "ip", g.IP, "mac", g.MAC.String())
			continue
		}
		timeout, ok := timeoutFor(g.Expires, now)
		if !ok {
			continue
		}
		wanted[g.IP] = true
		ip := g.IP.String()
		a, haveAuth := auth[g.IP]
		if !haveAuth || a.MAC != g.MAC.String() || abs(a.Timeout-timeout) > timeoutSlack {
			lines = append(lines, fmt.Sprintf("add %s %s,%s timeout %d", AuthSet, ip, g.MAC, timeout))
			n++
		}
		ac, haveAcct := acct[g.IP]
		d, haveDl := dl[g.IP]
		acctBytes, dlBytes := initialCounters(g, ac, haveAcct, d, haveDl)
		if acctBytes != nil || !haveAcct {
			lines = append(lines, grantLines(g, timeout, acctBytes, nil)[1])
			n++
		}
		if dlBytes != nil {
			lines = append(lines, fmt.Sprintf("add %s %s packets 0 bytes %d", DownSet, ip, *dlBytes))
			n++
		}
	}
	for _, s := range []struct {
		name string
		m    map[netip.Addr]entry
	}{{AuthSet, auth}, {AcctSet, acct}, {DownSet, dl}} {
		var extra []netip.Addr
		for ip := range s.m {
			if !wanted[ip] {
				extra = append(extra, ip)
			}
		}
		slices.SortFunc(extra, func(a, b netip.Addr) int { return a.Compare(b) })
		for _, ip := range extra {
			lines = append(lines, fmt.Sprintf("del %s %s", s.name, ip))
			n++
		}
	}
	return lines, n
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// Usage reads the counters of every client in cw-acct.
func (k *Kernel) Usage(ctx context.Context) (map[netip.Addr]Usage, error) {
	sets, err := k.list(ctx, AcctSet, DownSet)
	if err != nil {
		return nil, fmt.Errorf("reading usage: %w", err)
	}
	dl := indexByIP(sets[DownSet])
	out := map[netip.Addr]Usage{}
	for ip, a := range indexByIP(sets[AcctSet]) {
		out[ip] = usageOf(a, dl[ip])
	}
	return out, nil
}

// Teardown removes our jumps, chains (IPv4 and IPv6) and sets; a missing
// one is fine, and nothing else is touched.
func (k *Kernel) Teardown(ctx context.Context) error {
	var errs []error
	chains := k.cfg.chains()
	for _, c := range chains {
		if c.builtin == "" {
			continue
		}
		t := k.iptFor(c.fam)
		// Remove every copy, in case something duplicated the jump.
		for range 10 {
			ok, err := t.Exists(c.table, c.builtin, c.jump()...)
			if err != nil || !ok {
				break
			}
			if err := t.DeleteIfExists(c.table, c.builtin, c.jump()...); err != nil {
				errs = append(errs, fmt.Errorf("deleting the %s jump %s -> %s: %w", c.fam, c.builtin, c.name, err))
				break
			}
		}
	}
	// Chains that jump to others first (cw-fwd before cw-captive).
	for _, c := range slices.Backward(chains) {
		t := k.iptFor(c.fam)
		ok, err := t.ChainExists(c.table, c.name)
		if err != nil {
			errs = append(errs, fmt.Errorf("checking %s chain %s/%s: %w", c.fam, c.table, c.name, err))
			continue
		}
		if !ok {
			continue
		}
		if err := t.ClearAndDeleteChain(c.table, c.name); err != nil {
			errs = append(errs, fmt.Errorf("deleting %s chain %s/%s: %w", c.fam, c.table, c.name, err))
		}
	}
	out, err := k.run.Run(ctx, "", "ipset", "list", "-n")
	if err != nil {
		errs = append(errs, fmt.Errorf("listing sets: %w", err))
	} else {
		have := strings.Fields(out)
		for _, s := range k.cfg.sets() {
			if !slices.Contains(have, s.name) {
				continue
			}
			if _, err := k.run.Run(ctx, "", "ipset", "destroy", s.name); err != nil {
				errs = append(errs, fmt.Errorf("destroying set %s: %w", s.name, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down the firewall: %w", err)
	}
	k.log.Info("firewall torn down")
	return nil
}
