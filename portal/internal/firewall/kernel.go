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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"golang.org/x/sys/unix"
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
	nl   nlKernel // nil: the hot paths use the ipset and conntrack commands too
	now  func() time.Time
	// sets are the readings of the client sets, reused (see clientsets.go).
	sets clientSets
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
	k := newKernel(cfg, log, r, i4, i6)
	c, err := openNL(cfg.Netns)
	if err != nil {
		return nil, fmt.Errorf("configuring the firewall: netlink: %w", err)
	}
	k.nl = c
	return k, nil
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
	if _, err := k.ensureInfra(ctx, &rep); err != nil {
		return fmt.Errorf("setting up the firewall: %w", err)
	}
	if err := k.ensureGarden(ctx, &rep); err != nil {
		return fmt.Errorf("setting up the firewall: %w", err)
	}
	k.log.Info("firewall set up", "sets", rep.Sets, "rules", rep.Rules)
	return nil
}

// ensureInfra makes the sets, chains and jumps match the desired state,
// counting what it had to change. With rep nil it only looks, and reports
// whether anything differs.
func (k *Kernel) ensureInfra(ctx context.Context, rep *Repairs) (drift bool, err error) {
	// Terse, in ipset's own format: `-t -o save` prints every element
	// too (ipset 7.17), 30,000 lines with 10,000 clients every 2 s.
	out, err := k.run.Run(ctx, "", "ipset", "list", "-t")
	if err != nil {
		return false, fmt.Errorf("listing sets: %w", err)
	}
	have := parseTerse(out)
	for _, s := range k.cfg.sets() {
		h, ok := have[s.name]
		if ok && h.equal(parseHeader(s.args)) {
			continue
		}
		if rep == nil {
			return true, nil
		}
		if ok {
			k.log.Warn("set differs, re-creating it", "set", s.name, "have", h.String(), "want", parseHeader(s.args).String())
			if err := k.recreateSet(ctx, s); err != nil {
				return true, err
			}
		} else {
			argv := append([]string{"ipset", "create", s.name}, s.args...)
			if _, err := k.run.Run(ctx, "", append(argv, "-exist")...); err != nil {
				return true, fmt.Errorf("creating set %s: %w", s.name, err)
			}
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
	// One listing per table (iptables -S: all its chains at once) serves
	// both the chain bodies and the jumps: a few execs per reconcile
	// instead of two per chain and one per jump.
	listings := map[key]map[string][]string{}
	listing := func(kk key) (map[string][]string, error) {
		if l, ok := listings[kk]; ok {
			return l, nil
		}
		l, err := k.listTable(ctx, kk.fam, kk.table)
		if err != nil {
			return nil, err
		}
		listings[kk] = l
		return l, nil
	}
	for _, kk := range order {
		cs := groups[kk]
		l, err := listing(kk)
		if err != nil {
			return false, err
		}
		if k.chainsMatch(kk.fam, cs, l) {
			continue
		}
		if rep == nil {
			return true, nil
		}
		if err := k.restore(ctx, kk.fam, cs); err != nil {
			return true, err
		}
		delete(listings, kk)
		rep.Rules++
	}
	for _, c := range k.cfg.chains() {
		if c.builtin == "" {
			continue
		}
		l, err := listing(key{c.fam, c.table})
		if err != nil {
			return false, err
		}
		if slices.Contains(l[c.builtin], "-A "+c.builtin+" "+strings.Join(c.jump(), " ")) {
			continue
		}
		if rep == nil {
			return true, nil
		}
		t := k.iptFor(c.fam)
		if err := t.Insert(c.table, c.builtin, 1, c.jump()...); err != nil {
			return true, fmt.Errorf("inserting the %s jump %s -> %s: %w", c.fam, c.builtin, c.name, err)
		}
		rep.Rules++
	}
	return rep != nil && rep.Rules+rep.Sets > 0, nil
}

// recreateSet replaces a set whose type or options differ from s (a new
// client subnet, a new option): the new set is made under a temporary name,
// filled with the old elements that fit, swapped in (rules keep pointing at
// the name) and the old one destroyed. Reconcile then fixes the elements.
func (k *Kernel) recreateSet(ctx context.Context, s setSpec) error {
	tmp := s.tmpName()
	if _, err := k.run.Run(ctx, "", "ipset", "destroy", tmp); err != nil {
		k.log.Debug("no leftover temporary set", "set", tmp)
	}
	if _, err := k.run.Run(ctx, "", append([]string{"ipset", "create", tmp}, s.args...)...); err != nil {
		return fmt.Errorf("re-creating set %s: %w", s.name, err)
	}
	old, err := k.list(ctx, s.name)
	if err != nil {
		return fmt.Errorf("re-creating set %s: %w", s.name, err)
	}
	h := parseHeader(s.args)
	var lines []string
	for _, e := range old[s.name] {
		if r, ok := h.opts["range"]; ok && !inRange(r, e.Key) {
			k.log.Warn("element left out of the re-created set", "set", s.name, "element", e.Key)
			continue
		}
		lines = append(lines, copyLine(tmp, h, e))
	}
	if err := k.restoreSets(ctx, lines); err != nil {
		k.log.Warn("copying elements to the re-created set", "set", s.name, "err", err)
	}
	if _, err := k.run.Run(ctx, "", "ipset", "swap", tmp, s.name); err != nil {
		return fmt.Errorf("re-creating set %s: %w", s.name, err)
	}
	if _, err := k.run.Run(ctx, "", "ipset", "destroy", tmp); err != nil {
		return fmt.Errorf("re-creating set %s: %w", s.name, err)
	}
	return nil
}

// inRange says whether the address key lies within r ("first-last").
func inRange(r, key string) bool {
	lo, hi, ok := strings.Cut(r, "-")
	a, err1 := netip.ParseAddr(lo)
	b, err2 := netip.ParseAddr(hi)
	ip, err3 := netip.ParseAddr(key)
	if !ok || err1 != nil || err2 != nil || err3 != nil {
		return false
	}
	return a.Compare(ip) <= 0 && ip.Compare(b) <= 0
}

// chainsMatch says whether every chain in cs exists with exactly the
// desired rules, in the table's listing l.
func (k *Kernel) chainsMatch(f family, cs []chain, l map[string][]string) bool {
	for _, c := range cs {
		got, ok := l[c.name]
		if !ok {
			k.log.Info("chain missing", "family", f.String(), "table", c.table, "chain", c.name)
			return false
		}
		if !slices.Equal(got, c.listed()) {
			k.log.Warn("chain differs", "family", f.String(), "table", c.table, "chain", c.name, "rules", len(got)-1, "want", len(c.rules))
			return false
		}
	}
	return true
}

// listTable reads every chain of one table with one `iptables -S`: chain
// name -> its lines as `iptables -S <chain>` prints them ("-N x" or
// "-P X POLICY" first, then "-A x ..." in order).
func (k *Kernel) listTable(ctx context.Context, f family, table string) (map[string][]string, error) {
	out, err := k.run.Run(ctx, "", f.cmd(), "-w", "5", "-t", table, "-S")
	if err != nil {
		return nil, fmt.Errorf("listing %s table %s: %w", f, table, err)
	}
	return parseListing(out), nil
}

// parseListing splits `iptables -S` output by chain.
func parseListing(out string) map[string][]string {
	l := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "-N", "-P", "-A":
			l[f[1]] = append(l[f[1]], line)
		}
	}
	return l
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

// ensureGarden makes the static walled garden exactly GardenNets: missing
// networks added, others removed. The dynamic set is dnsmasq's.
func (k *Kernel) ensureGarden(ctx context.Context, rep *Repairs) error {
	sets, err := k.list(ctx, GardenNetSet)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, e := range sets[GardenNetSet] {
		have[e.Key] = true
	}
	want := map[string]bool{}
	var lines []string
	for _, n := range k.cfg.GardenNets {
		s := n.Masked().String()
		if n.Bits() == 32 {
			s = n.Addr().String() // hash:net prints host routes without /32
		}
		if !have[s] && !want[s] {
			lines = append(lines, fmt.Sprintf("add %s %s", GardenNetSet, s))
		}
		want[s] = true
	}
	var extra []string
	for s := range have {
		if !want[s] {
			extra = append(extra, s)
		}
	}
	slices.Sort(extra)
	for _, s := range extra {
		lines = append([]string{fmt.Sprintf("del %s %s", GardenNetSet, s)}, lines...)
	}
	if len(lines) == 0 {
		return nil
	}
	if err := k.restoreSets(ctx, lines); err != nil {
		return fmt.Errorf("updating the walled garden: %w", err)
	}
	rep.Entries += len(lines)
	return nil
}

// list reads the elements of the named sets.
func (k *Kernel) list(ctx context.Context, names ...string) (map[string][]entry, error) {
	if k.nl != nil && !slices.Contains(names, GardenNetSet) && !slices.Contains(names, GardenSet) {
		// The clients' bitmap sets (polled every second): netlink. The
		// small hash sets go through ipset, whose listing the netlink
		// library does not fully decode.
		return k.listNL(netip.Addr{}, names...)
	}
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

// restoreSets applies ipset commands in one `ipset -exist restore`. ipset
// stops at the first line that fails (the lines before it are applied): that
// line is reported and the rest is applied again, so one bad element does not
// block the others. The error joins every failed line.
func (k *Kernel) restoreSets(ctx context.Context, lines []string) error {
	var errs []error
	for len(lines) > 0 {
		out, err := k.run.Run(ctx, strings.Join(lines, "\n")+"\n", "ipset", "-exist", "restore")
		if err == nil {
			break
		}
		n := failedLine(out)
		if n < 1 || n > len(lines) {
			errs = append(errs, err)
			break
		}
		errs = append(errs, fmt.Errorf("%q: %s", lines[n-1], strings.TrimSpace(out)))
		lines = lines[n:]
	}
	return errors.Join(errs...)
}

// failedLine finds N in ipset's "Error in line N: ..."; 0 if absent.
func failedLine(out string) int {
	_, rest, ok := strings.Cut(out, "Error in line ")
	if !ok {
		return 0
	}
	num, _, _ := strings.Cut(rest, ":")
	n, err := strconv.Atoi(num)
	if err != nil {
		return 0
	}
	return n
}

// FlushGarden empties the dynamic walled garden (the addresses dnsmasq
// added for the garden's names): after the site's garden domains changed,
// a name no longer in it must not stay reachable until its addresses time
// out. The names still in it fill the set again as they are resolved.
func (k *Kernel) FlushGarden(ctx context.Context) error {
	if _, err := k.run.Run(ctx, "", "ipset", "flush", GardenSet); err != nil {
		return fmt.Errorf("flushing the walled garden: %w", err)
	}
	return nil
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
	if k.nl != nil {
		if err := k.allowNL(ctx, g, timeout); err != nil {
			return fmt.Errorf("allowing %s: %w", g.IP, err)
		}
	} else if err := k.allowExec(ctx, g, timeout); err != nil {
		return fmt.Errorf("allowing %s: %w", g.IP, err)
	}
	// Debug: the gateway logs the session it opened (one line a login).
	k.log.Debug("client allowed", "ip", g.IP, "mac", g.MAC.String(), "timeout_s", timeout, "quota", g.QuotaBytes)
	return nil
}

// allowExec writes the grant with the ipset command. A new client (the
// usual case) is one restore, no read: cw-acct, cw-dl, then cw-auth,
// without -exist, so a client already counted fails on its first line and
// keeps its counters (read, then rewritten).
func (k *Kernel) allowExec(ctx context.Context, g Grant, timeout int64) error {
	fresh, down := acctOffset(g.QuotaBytes)+g.UsedBytes, g.UsedDownBytes
	lines := grantLines(g, timeout, &fresh, &down)
	out, err := k.run.Run(ctx, strings.Join(lines, "\n")+"\n", "ipset", "restore")
	switch {
	case err == nil:
		return nil
	case strings.Contains(out, "already added"):
		return k.updateCounters(ctx, g, timeout)
	default:
		return err
	}
}

// allowNL writes the grant through netlink, as allowExec does with the
// command: exclusive adds of cw-acct, cw-dl, then cw-auth (a client is
// authorised only once it is counted). An element already there stops
// them; the client's counters are read and its three elements rewritten
// keeping them. Any other refusal removes what this call added, so a new
// client is left as it was, and says which element failed and why.
func (k *Kernel) allowNL(ctx context.Context, g Grant, timeout int64) error {
	fresh, down := acctOffset(g.QuotaBytes)+g.UsedBytes, g.UsedDownBytes
	var added []setElem
	for _, e := range grantElems(g, timeout, &fresh, &down) {
		err := k.nl.IpsetAdd(e, true)
		if err == nil {
			added = append(added, e)
			continue
		}
		if errors.Is(err, errElemExists) {
			return k.updateCountersNL(ctx, g, timeout)
		}
		err = fmt.Errorf("adding %s to %s: %w", e.IP, e.Set, err)
		for _, a := range slices.Backward(added) {
			if derr := k.nl.IpsetDel(a.Set, a.IP); derr != nil {
				err = errors.Join(err, fmt.Errorf("undoing the add to %s: %w", a.Set, derr))
			}
		}
		return err
	}
	return nil
}

// updateCountersNL is updateCounters through netlink.
func (k *Kernel) updateCountersNL(ctx context.Context, g Grant, timeout int64) error {
	sets, err := k.listNL(g.IP, AcctSet, DownSet) // only this client's elements are decoded
	if err != nil {
		return err
	}
	acct, haveAcct := indexByIP(sets[AcctSet])[g.IP]
	dl, haveDl := indexByIP(sets[DownSet])[g.IP]
	acctBytes, dlBytes := initialCounters(g, acct, haveAcct, dl, haveDl)
	for _, e := range grantElems(g, timeout, acctBytes, dlBytes) {
		if err := k.nl.IpsetAdd(e, false); err != nil {
			return fmt.Errorf("rewriting %s in %s: %w", e.IP, e.Set, err)
		}
	}
	return nil
}

// updateCounters rewrites the elements of a client already (partly) there:
// its counters carry over, a changed quota moves the offset.
func (k *Kernel) updateCounters(ctx context.Context, g Grant, timeout int64) error {
	sets, err := k.list(ctx, AcctSet, DownSet)
	if err != nil {
		return err
	}
	acct, haveAcct := indexByIP(sets[AcctSet])[g.IP]
	dl, haveDl := indexByIP(sets[DownSet])[g.IP]
	acctBytes, dlBytes := initialCounters(g, acct, haveAcct, dl, haveDl)
	return k.restoreSets(ctx, grantLines(g, timeout, acctBytes, dlBytes))
}

// initialCounters decides the counters to (re)write for g: nil keeps the
// kernel's. A client already counted keeps the larger of the kernel's and
// the grant's figures; a quota change moves the offset.
func initialCounters(g Grant, acct entry, haveAcct bool, dl entry, haveDl bool) (acctBytes, dlBytes *uint64) {
	return counters(g, acct.Bytes, parseQuotaComment(acct.Comment), haveAcct, dl.Bytes, haveDl)
}

// counters is initialCounters of the kernel's figures: cw-acct's bytes and
// quota, cw-dl's bytes.
func counters(g Grant, acctKernel, acctQuota uint64, haveAcct bool, dlKernel uint64, haveDl bool) (acctBytes, dlBytes *uint64) {
	if haveAcct {
		used := usage(acctKernel, 0, acctQuota, 0).Bytes
		if acctQuota != g.QuotaBytes || g.UsedBytes > used {
			v := acctOffset(g.QuotaBytes) + max(used, g.UsedBytes)
			acctBytes = &v
		}
	} else {
		v := acctOffset(g.QuotaBytes) + g.UsedBytes
		acctBytes = &v
	}
	if !haveDl || g.UsedDownBytes > dlKernel {
		v := g.UsedDownBytes
		if haveDl {
			v = max(v, dlKernel)
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

// A batch Revoke finds its clients' UDP and ICMP flows either with two
// walks of the conntrack table per client, in which the kernel filters on
// the client's address (only its flows cross to user space), or with two
// walks in all, filtered on the protocol (UDP, ICMP), that hand over
// every UDP and ICMP flow of the table, the batch's picked here. A walk
// costs a pass over every bucket (10-20 ms, whatever it matches), each
// flow handed over about 5 µs (measured: 284 ms for 49,800 UDP flows;
// see TestKernelNetlinkCost). So the protocol walks win once (2k-1) walks
// cost more than the table's entries handed over: from 2 clients in an
// empty table, 14 at 50,000 entries. The count is the kernel's counter
// (every protocol: an upper bound of what would be handed over).
const (
	revokeWalkCost = 10 * time.Millisecond
	revokeFlowCost = 5 * time.Microsecond
)

// protoWalks reports whether k clients' flows are found cheaper by the
// walks filtered on the protocol, in a table of entries.
func protoWalks(k, entries int) bool {
	return k >= 2 && time.Duration(2*k-1)*revokeWalkCost > time.Duration(entries)*revokeFlowCost
}

// ipsetBatchMax is how many elements one IPSET_CMD_DEL carries: each is
// 16 bytes of the message's IPSET_ATTR_ADT, whose length is 16 bits.
const ipsetBatchMax = 1024

// Revoke removes the clients from every set and flushes their UDP and
// ICMP conntrack entries, so their open flows die at once. Through
// netlink the whole batch costs three set messages (every client out of
// cw-auth first, so all are captive at once and none passes uncounted)
// and, when that is cheaper (protoWalks), two walks of the conntrack
// table instead of two per client. An error names its client; one client's
// failure does not stop the others.
func (k *Kernel) Revoke(ctx context.Context, cs ...Client) error {
	var errs []error
	ips := make([]netip.Addr, 0, len(cs))
	seen := make(map[netip.Addr]bool, len(cs))
	for _, c := range cs {
		if !c.IP.Is4() || !k.cfg.Subnet.Contains(c.IP) {
			errs = append(errs, fmt.Errorf("revoking %s: address is not in the client subnet %s", c.IP, k.cfg.Subnet))
			continue
		}
		if !seen[c.IP] {
			seen[c.IP] = true
			ips = append(ips, c.IP)
		}
	}
	if len(ips) == 0 {
		return errors.Join(errs...)
	}
	t0 := time.Now()
	var failed map[netip.Addr]bool
	if k.nl != nil {
		var err error
		failed, err = k.revokeNL(ips)
		errs = append(errs, err)
	} else {
		failed = map[netip.Addr]bool{}
		for _, ip := range ips { // the commands' path (unit tests): client by client
			if err := k.revokeExec(ctx, ip); err != nil {
				failed[ip] = true
				errs = append(errs, fmt.Errorf("revoking %s: %w", ip, err))
			}
		}
	}
	for _, c := range cs {
		if seen[c.IP] && !failed[c.IP] {
			seen[c.IP] = false // a client given twice is logged once
			if len(ips) == 1 {
				k.log.Info("client revoked", "ip", c.IP, "mac", c.MAC.String())
			} else {
				k.log.Debug("client revoked", "ip", c.IP, "mac", c.MAC.String())
			}
		}
	}
	if len(ips) > 1 {
		k.log.Info("clients revoked", "clients", len(ips), "failed", len(failed), "took", time.Since(t0).Round(time.Microsecond))
	}
	return errors.Join(errs...)
}

// revokeExec is one client's Revoke through the ipset and conntrack
// commands.
func (k *Kernel) revokeExec(ctx context.Context, ip netip.Addr) error {
	// cw-auth first, so the client never passes uncounted.
	sets := []string{AuthSet, AcctSet, DownSet}
	lines := make([]string, 0, len(sets))
	for _, s := range sets {
		lines = append(lines, fmt.Sprintf("del %s %s", s, ip))
	}
	if err := k.restoreSets(ctx, lines); err != nil {
		return err
	}
	return k.flushConntrackExec(ctx, ip)
}

// revokeNL is Revoke through netlink: the elements of every client (one
// message per set and ipsetBatchMax clients), then the flows of those
// whose elements are gone. A refused message is retried element by
// element, so that the error names the client (the kernel stops at the
// element it refuses) and the others' elements still go. failed holds the
// clients with an error.
func (k *Kernel) revokeNL(ips []netip.Addr) (failed map[netip.Addr]bool, err error) {
	failed = map[netip.Addr]bool{}
	var errs []error
	for _, set := range []string{AuthSet, AcctSet, DownSet} { // cw-auth first: never uncounted
		for chunk := range slices.Chunk(ips, ipsetBatchMax) {
			if len(chunk) > 1 && k.nl.IpsetDel(set, chunk...) == nil {
				continue
			}
			for _, ip := range chunk {
				if err := k.nl.IpsetDel(set, ip); err != nil {
					failed[ip] = true
					errs = append(errs, fmt.Errorf("revoking %s: deleting %s from %s: %w", ip, ip, set, err))
				}
			}
		}
	}
	gone := slices.DeleteFunc(slices.Clone(ips), func(ip netip.Addr) bool { return failed[ip] })
	flushErrs := k.flushConntrack(gone)
	for _, ip := range gone {
		if err := flushErrs[ip]; err != nil {
			failed[ip] = true
			errs = append(errs, err)
		}
	}
	return failed, errors.Join(errs...)
}

// flushConntrack deletes the clients' UDP and ICMP flows, both directions
// (a client's address as original source or destination). TCP flows
// stay: deleting them would drop the NAT mapping, so the server's next
// segment would never reach the client and its connection would hang
// instead of dying; kept, that segment trickles through (see the kick
// rule) and the client's ACK meets the captive chain's reset.
//
// That is two walks of the table per client in which the kernel filters
// on its address, or two walks in all filtered on the protocol and the
// batch's flows picked here, whichever costs less (protoWalks). Walks run two at a time (the pool of
// conntrack sockets), then one delete per flow. The errors are per
// client, each naming it; a walk that fails fails the clients it served.
func (k *Kernel) flushConntrack(ips []netip.Addr) map[netip.Addr]error {
	if len(ips) == 0 {
		return nil
	}
	type walk struct {
		f     ctFilter
		of    []netip.Addr // the clients it serves
		flows []ctFlow
		err   error
	}
	var walks []*walk
	entries := 0
	if len(ips) > 1 {
		var err error
		if entries, err = k.nl.ConntrackCount(); err != nil {
			entries = 50_000 // a large table: the address walks up to 13 clients
			k.log.Warn("choosing the walks of a batch revoke", "clients", len(ips), "err", err)
		}
	}
	if !protoWalks(len(ips), entries) {
		for _, ip := range ips {
			of := []netip.Addr{ip}
			walks = append(walks, &walk{f: ctFilter{OrigSrc: ip}, of: of}, &walk{f: ctFilter{OrigDst: ip}, of: of})
		}
	} else {
		walks = []*walk{{f: ctFilter{Proto: unix.IPPROTO_UDP}, of: ips}, {f: ctFilter{Proto: unix.IPPROTO_ICMP}, of: ips}}
	}
	var wg sync.WaitGroup
	for _, w := range walks { // side by side, as many as the socket pool serves
		wg.Go(func() { w.flows, w.err = k.nl.ConntrackList(w.f) })
	}
	wg.Wait()
	batch := make(map[netip.Addr]bool, len(ips))
	for _, ip := range ips {
		batch[ip] = true
	}
	errs := map[netip.Addr]error{}
	fail := func(ip netip.Addr, err error) {
		errs[ip] = errors.Join(errs[ip], err)
	}
	done := map[string]bool{} // a flow between two clients of the batch is listed twice
	for _, w := range walks {
		if w.err != nil {
			for _, ip := range w.of {
				fail(ip, fmt.Errorf("revoking %s: flushing UDP and ICMP flows: %w", ip, w.err))
			}
			continue
		}
		for _, fl := range w.flows {
			if fl.Proto != unix.IPPROTO_UDP && fl.Proto != unix.IPPROTO_ICMP {
				continue
			}
			ip := fl.OrigSrc
			if !batch[ip] {
				ip = fl.OrigDst
			}
			key := fl.String() + string(fl.del)
			if !batch[ip] || done[key] {
				continue
			}
			done[key] = true
			if err := k.nl.ConntrackDelete(fl); err != nil {
				fail(ip, fmt.Errorf("revoking %s: flushing flow %s: %w", ip, fl, err))
			}
		}
	}
	return errs
}

// flushConntrackExec is flushConntrack through the conntrack command.
func (k *Kernel) flushConntrackExec(ctx context.Context, ip netip.Addr) error {
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
// session has ended are treated as not wanted. With a Guard (see there),
// every read happens unlocked: an allow waits only for repairs, which are
// rare, never for the listings (tens of ms with 10,000 clients).
func (k *Kernel) Reconcile(ctx context.Context, want []Grant, g Guard) (Repairs, error) {
	var rep Repairs
	// Chains, jumps and set headers: looked at unlocked; a repair (which
	// may re-create a set under an allow's feet) holds the guard and looks
	// again.
	drift, err := k.ensureInfra(ctx, nil)
	if err != nil {
		return rep, fmt.Errorf("reconciling the firewall: %w", err)
	}
	if drift {
		lock(g)
		_, err := k.ensureInfra(ctx, &rep)
		unlock(g)
		if err != nil {
			return rep, fmt.Errorf("reconciling the firewall: %w", err)
		}
	}
	// The static garden is only ever written by Setup and Reconcile.
	if err := k.ensureGarden(ctx, &rep); err != nil {
		return rep, fmt.Errorf("reconciling the firewall: %w", err)
	}
	cs := &k.sets
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, r := range []struct {
		name string
		s    *clientSet
	}{{AuthSet, &cs.auth}, {AcctSet, &cs.acct}, {DownSet, &cs.dl}} {
		if err := k.readClientSet(ctx, r.name, r.s); err != nil {
			return rep, fmt.Errorf("reconciling the firewall: %w", err)
		}
	}
	lock(g)
	defer unlock(g)
	var stale func(netip.Addr) bool
	if g != nil {
		stale = g.Stale
	}
	lines, n := k.diffElements(want, cs, stale)
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

func lock(g Guard) {
	if g != nil {
		g.Lock()
	}
}

func unlock(g Guard) {
	if g != nil {
		g.Unlock()
	}
}

// diffElements renders the ipset lines that make the sets match want, and
// how many elements they add, fix or remove. Removals come first, so a
// failing addition cannot keep an unwanted client in. Clients for which
// stale (if not nil) says true are left alone, wanted or not.
func (k *Kernel) diffElements(want []Grant, cs *clientSets, stale func(netip.Addr) bool) (lines []string, n int) {
	now := k.now()
	auth, acct, dl := &cs.auth, &cs.acct, &cs.dl
	// wanted is by address - base, like the sets' index (all three have
	// the subnet's).
	base := be32(k.cfg.Subnet.Masked().Addr())
	if size := 1 << (32 - k.cfg.Subnet.Bits()); len(cs.wanted) != size {
		cs.wanted = make([]bool, size)
	} else {
		clear(cs.wanted)
	}
	var adds []string
	for _, g := range want {
		if stale != nil && stale(g.IP) {
			continue
		}
		if checkGrant(k.cfg, g) != nil {
			k.log.Warn("ignoring an invalid grant", "ip", g.IP, "mac", g.MAC.String())
			continue
		}
		timeout, ok := timeoutFor(g.Expires, now)
		if !ok {
			continue
		}
		v := be32(g.IP)
		cs.wanted[v-base] = true // checkGrant: in the subnet
		ac, haveAcct := acct.get(v)
		d, haveDl := dl.get(v)
		var acBytes, acQuota, dBytes uint64
		if haveAcct {
			acBytes, acQuota = ac.bytes, ac.quota
		}
		if haveDl {
			dBytes = d.bytes
		}
		acctBytes, dlBytes := counters(g, acBytes, acQuota, haveAcct, dBytes, haveDl)
		off := func(e *clientElem) bool { return abs(int64(e.timeout)-timeout) > timeoutSlack }
		// Same order as Allow: counted before authorised.
		if acctBytes != nil || !haveAcct || off(ac) {
			adds = append(adds, acctLine(g, timeout, acctBytes))
			n++
		}
		if dlBytes != nil || !haveDl || off(d) {
			adds = append(adds, dlLine(g, timeout, dlBytes))
			n++
		}
		if a, haveAuth := auth.get(v); !haveAuth || !a.hasMAC || a.mac != [6]byte(g.MAC) || off(a) {
			adds = append(adds, authLine(g, timeout))
			n++
		}
	}
	// Unwanted: cw-auth first, so nobody passes uncounted meanwhile.
	for _, s := range []struct {
		name string
		set  *clientSet
	}{{AuthSet, auth}, {AcctSet, acct}, {DownSet, dl}} {
		var extra []uint32
		for _, e := range s.set.elems {
			if e.ip >= base && int(e.ip-base) < len(cs.wanted) && cs.wanted[e.ip-base] {
				continue
			}
			if stale == nil || !stale(addrOf(e.ip)) {
				extra = append(extra, e.ip)
			}
		}
		slices.Sort(extra)
		for _, ip := range extra {
			lines = append(lines, fmt.Sprintf("del %s %s", s.name, addrOf(ip)))
			n++
		}
	}
	return append(lines, adds...), n
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// Usage reads the counters of every client in cw-acct.
func (k *Kernel) Usage(ctx context.Context) (map[netip.Addr]Usage, error) {
	cs := &k.sets
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if err := k.readClientSet(ctx, AcctSet, &cs.acct); err != nil {
		return nil, fmt.Errorf("reading usage: %w", err)
	}
	if err := k.readClientSet(ctx, DownSet, &cs.dl); err != nil {
		return nil, fmt.Errorf("reading usage: %w", err)
	}
	out := make(map[netip.Addr]Usage, len(cs.acct.elems))
	for i := range cs.acct.elems {
		a := &cs.acct.elems[i]
		var down uint64
		if d, ok := cs.dl.get(a.ip); ok {
			down = d.bytes
		}
		out[addrOf(a.ip)] = usage(a.bytes, a.packets, a.quota, down)
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
			for _, name := range []string{s.name, s.tmpName()} {
				if !slices.Contains(have, name) {
					continue
				}
				if _, err := k.run.Run(ctx, "", "ipset", "destroy", name); err != nil {
					errs = append(errs, fmt.Errorf("destroying set %s: %w", name, err))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down the firewall: %w", err)
	}
	k.log.Info("firewall torn down")
	return nil
}
