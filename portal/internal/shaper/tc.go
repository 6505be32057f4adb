package shaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/civicwifi/civicwifi/internal/quantity"
)

// Config says where to shape.
type Config struct {
	// ClientIf is the interface facing the clients (a bridge such as br-cw).
	ClientIf string
	// IFB is the name of the IFB device made for upload shaping. Default "cwifb0".
	IFB string
	// Subnet is the client subnet, IPv4, prefix length 16 to 30. Host bits
	// are ignored (10.20.0.1/16 means 10.20.0.0/16).
	Subnet netip.Prefix
	// Netns, if set, runs every ip and tc command inside this named network
	// namespace (`ip netns exec <Netns> ...`), for tests and labs. Empty: the
	// daemon's own namespace.
	Netns string
}

// DefaultIFB is the IFB device's name when Config.IFB is empty.
const DefaultIFB = "cwifb0"

// MinRate is the smallest non-zero rate accepted.
const MinRate = 8 * quantity.Kbit

// Errors.
var (
	ErrConfig      = errors.New("invalid shaper config")
	ErrNoInterface = errors.New("no such interface")
	ErrRate        = errors.New("invalid rate")
)

// ClassStats is what the kernel counted in one client's classes. The
// counters restart when the class is re-made (Remove, or a Reconcile repair).
type ClassStats struct {
	DownBytes, DownPackets, DownDrops uint64
	UpBytes, UpPackets, UpDrops       uint64
}

// TC is the Shaper built on tc (HTB, u32 hash tables, IFB). It keeps a
// cache of the classes it installed so that Set and Remove cost one tc
// exec; Setup and Reconcile refill the cache from the kernel.
type TC struct {
	cfg  Config
	log  *slog.Logger
	run  runner
	down direction
	up   direction

	mu        sync.Mutex
	installed map[netip.Addr]Limit // what the kernel has, as far as we know
}

var _ Shaper = (*TC)(nil)

// New validates cfg and returns a TC. It touches nothing: call Setup.
func New(cfg Config, log *slog.Logger) (*TC, error) {
	return newTC(cfg, log, execRunner{netns: cfg.Netns})
}

func newTC(cfg Config, log *slog.Logger, r runner) (*TC, error) {
	if cfg.IFB == "" {
		cfg.IFB = DefaultIFB
	}
	var problems []string
	if cfg.ClientIf == "" {
		problems = append(problems, "client interface is empty")
	}
	if len(cfg.ClientIf) > 15 || len(cfg.IFB) > 15 || strings.ContainsAny(cfg.ClientIf+cfg.IFB, " \t\n/") {
		problems = append(problems, fmt.Sprintf("interface names %q, %q are not valid", cfg.ClientIf, cfg.IFB))
	}
	if cfg.IFB == cfg.ClientIf {
		problems = append(problems, "IFB device and client interface are the same")
	}
	switch {
	case !cfg.Subnet.IsValid():
		problems = append(problems, "subnet is not set")
	case !cfg.Subnet.Addr().Is4():
		problems = append(problems, fmt.Sprintf("subnet %s is not IPv4", cfg.Subnet))
	case cfg.Subnet.Bits() < 16 || cfg.Subnet.Bits() > 30:
		problems = append(problems, fmt.Sprintf("subnet %s: prefix length must be 16 to 30 (class ids have 16 bits, and a /31 or /32 has no clients)", cfg.Subnet))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TC{
		cfg:       cfg,
		log:       log.With("component", "shaper"),
		run:       r,
		down:      direction{dev: cfg.ClientIf, field: "dst", offset: 16},
		up:        direction{dev: cfg.IFB, field: "src", offset: 12},
		installed: map[netip.Addr]Limit{},
	}, nil
}

// Config returns the validated config (with defaults filled in).
func (t *TC) Config() Config { return t.cfg }

// Setup installs the IFB device, the root and ingress qdiscs and the hash
// tables, repairing what is missing or wrong; it keeps existing client
// classes and filters, and learns them.
func (t *TC) Setup(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.reconcile(ctx, nil, false)
	if err != nil {
		return fmt.Errorf("setting up shaper on %s: %w", t.cfg.ClientIf, err)
	}
	t.log.Info("shaper set up", "client_if", t.cfg.ClientIf, "ifb", t.cfg.IFB, "subnet", t.cfg.Subnet, "repairs", n, "clients", len(t.installed))
	return nil
}

// Set adds or changes one client's classes and filters with one tc exec.
// A zero rate leaves that direction unshaped (removing an earlier limit).
func (t *TC) Set(ctx context.Context, l Limit) error {
	minor, err := classMinor(t.cfg.Subnet, l.IP)
	if err != nil {
		return fmt.Errorf("shaping %s: %w", l.IP, err)
	}
	for _, r := range []quantity.Rate{l.Down, l.Up} {
		if r != 0 && r < MinRate {
			return fmt.Errorf("shaping %s: %w: %s is below %s", l.IP, ErrRate, r, MinRate)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.apply(ctx, minor, l); err != nil {
		return fmt.Errorf("shaping %s: %w", l.IP, err)
	}
	return nil
}

// Remove deletes one client's classes and filters; unknown IPs are fine.
func (t *TC) Remove(ctx context.Context, ip netip.Addr) error {
	minor, err := classMinor(t.cfg.Subnet, ip)
	if err != nil {
		return nil // never shaped
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.apply(ctx, minor, Limit{IP: ip}); err != nil {
		return fmt.Errorf("unshaping %s: %w", ip, err)
	}
	return nil
}

// apply moves one client from its cached limit to l. If the batch fails
// (the kernel drifted from the cache), it re-reads the kernel and tries once
// more.
func (t *TC) apply(ctx context.Context, minor uint16, l Limit) error {
	l.IP = l.IP.Unmap()
	lines := t.clientLines(minor, l.IP, t.installed[l.IP], l)
	if len(lines) == 0 {
		return nil
	}
	err := t.batch(ctx, lines)
	if err != nil {
		s, oerr := t.observe(ctx)
		if oerr != nil {
			return errors.Join(err, oerr)
		}
		t.learn(s)
		lines = t.clientLines(minor, l.IP, t.installed[l.IP], l)
		if len(lines) == 0 {
			return nil
		}
		t.log.Warn("tc state differed from cache; retrying", "ip", l.IP, "err", err)
		if err = t.batch(ctx, lines); err != nil {
			return err
		}
	}
	if l.Down == 0 && l.Up == 0 {
		delete(t.installed, l.IP)
	} else {
		t.installed[l.IP] = l
	}
	t.log.Debug("shaped", "ip", l.IP, "down", l.Down, "up", l.Up)
	return nil
}

// clientLines are the tc lines that take one client from old to new.
func (t *TC) clientLines(minor uint16, ip netip.Addr, old, new Limit) []string {
	var lines []string
	for _, x := range []struct {
		d        direction
		old, new quantity.Rate
	}{{t.down, old.Down, new.Down}, {t.up, old.Up, new.Up}} {
		switch {
		case x.new != 0 && x.old != 0:
			if !rateClose(wireBits(x.old), x.new) {
				lines = append(lines, classLine("change", x.d.dev, minor, x.new), leafLine(x.d.dev, minor, x.new))
			}
		case x.new != 0:
			lines = append(lines,
				classLine("replace", x.d.dev, minor, x.new),
				leafLine(x.d.dev, minor, x.new),
				hostFilterLine(x.d, ip, minor))
		case x.old != 0:
			lines = append(lines, nodeDelLine(x.d.dev, hostFilterHandle(ip)), classDelLine(x.d.dev, minor))
		}
	}
	return lines
}

// batch runs lines with one `tc -batch -`.
func (t *TC) batch(ctx context.Context, lines []string) error {
	_, err := t.run.run(ctx, strings.Join(lines, "\n")+"\n", "tc", "-batch", "-")
	return err
}

// learn fills the cache from the kernel's classes.
func (t *TC) learn(s state) {
	t.installed = map[netip.Addr]Limit{}
	add := func(classes map[uint16]classState, down bool) {
		for minor, c := range classes {
			ip, ok := addrOfMinor(t.cfg.Subnet, minor)
			if !ok {
				continue
			}
			l := t.installed[ip]
			l.IP = ip
			if down {
				l.Down = limitOfWire(c.rateBits)
			} else {
				l.Up = limitOfWire(c.rateBits)
			}
			t.installed[ip] = l
		}
	}
	add(s.down.classes, true)
	add(s.up.classes, false)
}

// Reconcile repairs drift so tc matches want: the IFB device, qdiscs, hash
// tables, classes and filters; classes and filters of clients not in want
// are removed. It returns the number of repairs (objects added, changed or
// deleted). Limits with both rates zero, or outside the subnet, are ignored.
//
// With a Guard (see there), tc is read without it (that listing takes a
// few hundred ms with 10,000 clients) and repaired while holding it, so a
// Set meanwhile waits only for the repairs.
func (t *TC) Reconcile(ctx context.Context, want []Limit, g Guard) (int, error) {
	m := make(map[netip.Addr]Limit, len(want))
	for _, l := range want {
		l.IP = l.IP.Unmap()
		if _, err := classMinor(t.cfg.Subnet, l.IP); err != nil {
			t.log.Warn("not shaping", "ip", l.IP, "err", err)
			continue
		}
		if l.Down != 0 && l.Down < MinRate || l.Up != 0 && l.Up < MinRate {
			t.log.Warn("not shaping: rate too small", "ip", l.IP, "down", l.Down, "up", l.Up)
			continue
		}
		if l.Down != 0 || l.Up != 0 {
			m[l.IP] = l
		}
	}
	var n int
	var err error
	if g == nil {
		t.mu.Lock()
		n, err = t.reconcile(ctx, m, true)
		t.mu.Unlock()
	} else {
		n, err = t.reconcileGuarded(ctx, m, g)
	}
	if err != nil {
		return n, fmt.Errorf("reconciling shaper on %s: %w", t.cfg.ClientIf, err)
	}
	if n > 0 {
		t.log.Info("shaper repaired", "repairs", n, "clients", len(m))
	}
	return n, nil
}

// reconcileGuarded is Reconcile with a Guard: read unlocked, repair locked.
// A client whose limit a Set or Remove changed after want was taken
// (Stale) is left out of both sides of the plan, and keeps the limit that
// Set or Remove cached; the next round checks it.
func (t *TC) reconcileGuarded(ctx context.Context, want map[netip.Addr]Limit, g Guard) (int, error) {
	s, err := t.observe(ctx)
	if err != nil {
		return 0, err
	}
	g.Lock()
	defer g.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	stale := map[netip.Addr]bool{}
	check := func(ip netip.Addr) {
		if _, seen := stale[ip]; !seen {
			stale[ip] = g.Stale(ip)
		}
	}
	for ip := range want {
		check(ip)
	}
	for ip := range t.installed {
		check(ip)
	}
	for _, d := range []devState{s.down, s.up} {
		for minor := range d.classes {
			if ip, ok := addrOfMinor(t.cfg.Subnet, minor); ok {
				check(ip)
			}
		}
	}
	// want, as it stands now: the cache is the truth for stale clients.
	for ip, isStale := range stale {
		if !isStale {
			continue
		}
		if l, ok := t.installed[ip]; ok {
			want[ip] = l
		} else {
			delete(want, ip)
		}
	}
	if !s.down.rootOK || !s.up.rootOK || !s.up.exists || !s.ifbUp || !s.down.ingressOK || badTables(s) {
		// Qdiscs to rebuild (rare, after outside damage): the classes of
		// every client go with them, so read again and repair it all,
		// under the lock.
		return t.reconcile(ctx, want, true)
	}
	keep := map[netip.Addr]Limit{}
	for ip, isStale := range stale {
		if !isStale {
			continue
		}
		if l, ok := want[ip]; ok {
			keep[ip] = l
			delete(want, ip)
		}
		minor, err := classMinor(t.cfg.Subnet, ip)
		if err != nil {
			continue
		}
		for _, d := range []*devState{&s.down, &s.up} {
			delete(d.classes, minor)
			delete(d.leaves, minor)
			delete(d.nodes, hostFilterHandle(ip))
		}
	}
	n, err := t.applyPlan(ctx, s, want, true)
	if err == nil {
		for ip, l := range keep {
			t.installed[ip] = l
		}
	}
	return n, err
}

// badTables reports a hash table with the wrong divisor: plan then starts
// every u32 filter afresh.
func badTables(s state) bool {
	for _, d := range []devState{s.down, s.up} {
		for htid, div := range d.tables {
			if htid != rootTable && div != 256 {
				return true
			}
		}
	}
	return false
}

// reconcile reads the kernel, plans and applies the repairs. With clients
// false, client classes and filters are left alone (Setup).
func (t *TC) reconcile(ctx context.Context, want map[netip.Addr]Limit, clients bool) (int, error) {
	s, err := t.observe(ctx)
	if err != nil {
		return 0, err
	}
	return t.applyPlan(ctx, s, want, clients)
}

// applyPlan plans the repairs from s to want and applies them.
func (t *TC) applyPlan(ctx context.Context, s state, want map[netip.Addr]Limit, clients bool) (int, error) {
	p, err := t.plan(s, want, clients)
	if err != nil {
		return 0, err
	}
	for _, argv := range p.commands {
		if _, err := t.run.run(ctx, "", argv...); err != nil {
			return 0, err
		}
	}
	if len(p.lines) > 0 {
		t.log.Debug("repairing", "lines", p.lines)
		if err := t.batch(ctx, p.lines); err != nil {
			t.installed = map[netip.Addr]Limit{}
			return 0, err
		}
	}
	if clients {
		t.installed = want
	} else {
		if p.rebuilt[0] {
			s.down.classes = nil
		}
		if p.rebuilt[1] {
			s.up.classes = nil
		}
		t.learn(s)
	}
	return p.repairs, nil
}

// plan is what reconcile will do.
type plan struct {
	commands [][]string // ip commands, before the batch
	lines    []string   // one tc batch
	repairs  int
	rebuilt  [2]bool // down, up: a root qdisc was re-made, so its classes are gone
}

func (t *TC) plan(s state, want map[netip.Addr]Limit, clients bool) (plan, error) {
	var p plan
	if s.up.exists && !s.ifbIsIFB {
		return p, fmt.Errorf("%w: %s exists and is not an ifb device", ErrConfig, t.cfg.IFB)
	}
	if !s.up.exists {
		p.commands = append(p.commands,
			[]string{"ip", "link", "add", t.cfg.IFB, "type", "ifb"},
			[]string{"ip", "link", "set", t.cfg.IFB, "up"})
		p.repairs++
	} else if !s.ifbUp {
		p.commands = append(p.commands, []string{"ip", "link", "set", t.cfg.IFB, "up"})
		p.repairs++
	}
	var tail []string // deletions of classes, after all filter changes
	for i, x := range []struct {
		d      direction
		st     devState
		rate   func(Limit) quantity.Rate
		ingres bool
	}{
		{t.down, s.down, func(l Limit) quantity.Rate { return l.Down }, true},
		{t.up, s.up, func(l Limit) quantity.Rate { return l.Up }, false},
	} {
		d, st := x.d, x.st
		if !st.rootOK {
			if st.rootKind == "htb" {
				p.lines = append(p.lines, rootQdiscDelLine(d.dev))
			}
			p.lines = append(p.lines, rootQdiscLine(d.dev))
			p.repairs++
			p.rebuilt[i] = true
			st.classes, st.leaves, st.tables, st.nodes, st.otherPref = nil, nil, nil, nil, nil
		}
		if x.ingres {
			if !st.ingressOK {
				p.lines = append(p.lines, ingressLines(t.cfg.ClientIf, t.cfg.IFB)...)
				p.repairs++
			} else if st.redirect != t.cfg.IFB {
				p.lines = append(p.lines, redirectLine(t.cfg.ClientIf, t.cfg.IFB))
				p.repairs++
			}
		}
		for _, pref := range st.otherPref {
			p.lines = append(p.lines, prioDelLine(d.dev, pref))
			p.repairs++
		}
		// Tables.
		parts := octets3(t.cfg.Subnet)
		wantTables := map[uint32]bool{octetTable: true}
		for _, part := range parts {
			wantTables[hostTable(third(part.Addr()))] = true
		}
		for htid, div := range st.tables {
			if wantTables[htid] && div != 256 {
				// A table cannot be changed: start the u32 filters afresh.
				p.lines = append(p.lines, prioDelLine(d.dev, prio))
				p.repairs++
				st.tables, st.nodes = nil, nil
				break
			}
		}
		// Filter nodes we want, with their lines.
		type wantNode struct {
			n    nodeState
			line string
		}
		wantNodes := map[string]wantNode{}
		mask := func(bits int) uint32 { return ^uint32(0) << (32 - bits) }
		wantNodes[nodeHandle(rootTable, 0)] = wantNode{nodeState{
			link: tableHandle(octetTable), value: ip4(t.cfg.Subnet.Addr()), mask: mask(t.cfg.Subnet.Bits()),
			off: d.offset, hashMask: 0xff00, hashOff: d.offset,
		}, rootLinkLine(d, t.cfg.Subnet)}
		for _, part := range parts {
			o := third(part.Addr())
			wantNodes[nodeHandle(octetTable, o)] = wantNode{nodeState{
				link: tableHandle(hostTable(o)), value: ip4(part.Addr()), mask: mask(part.Bits()),
				off: d.offset, hashMask: 0xff, hashOff: d.offset,
			}, octetLinkLine(d, part)}
		}
		wantClasses := map[uint16]quantity.Rate{}
		if clients {
			ips := make([]netip.Addr, 0, len(want))
			for ip := range want {
				ips = append(ips, ip)
			}
			slices.SortFunc(ips, netip.Addr.Compare)
			for _, ip := range ips {
				r := x.rate(want[ip])
				if r == 0 {
					continue
				}
				minor, _ := classMinor(t.cfg.Subnet, ip)
				wantClasses[minor] = r
				wantNodes[hostFilterHandle(ip)] = wantNode{nodeState{
					flowid: classID(minor), value: ip4(ip), mask: ^uint32(0), off: d.offset,
				}, hostFilterLine(d, ip, minor)}
			}
		}
		isHostNode := func(h string) bool {
			var htid uint32
			_, err := fmt.Sscanf(h, "%x:", &htid)
			return err == nil && htid >= hostTable0 && htid < hostTable0+256
		}
		// Deletions of unwanted nodes (host filters first, then links),
		// then unwanted tables.
		var delHost, delLink []string
		for h := range st.nodes {
			if _, ok := wantNodes[h]; ok {
				continue
			}
			if isHostNode(h) {
				if clients {
					delHost = append(delHost, h)
				}
			} else {
				delLink = append(delLink, h)
			}
		}
		slices.Sort(delHost)
		slices.Sort(delLink)
		for _, h := range append(delHost, delLink...) {
			p.lines = append(p.lines, nodeDelLine(d.dev, h))
			p.repairs++
		}
		var delTables []uint32
		for htid := range st.tables {
			if !wantTables[htid] && htid != rootTable {
				delTables = append(delTables, htid)
			}
		}
		slices.Sort(delTables)
		for _, htid := range delTables {
			p.lines = append(p.lines, tableDelLine(d.dev, htid))
			p.repairs++
		}
		var addTables []uint32
		for htid := range wantTables {
			if _, ok := st.tables[htid]; !ok {
				addTables = append(addTables, htid)
			}
		}
		slices.Sort(addTables)
		for _, htid := range addTables {
			p.lines = append(p.lines, tableLine(d.dev, htid))
			p.repairs++
		}
		// Classes and their leaves.
		minors := make([]uint16, 0, len(wantClasses))
		for m := range wantClasses {
			minors = append(minors, m)
		}
		slices.Sort(minors)
		for _, m := range minors {
			r := wantClasses[m]
			c, ok := st.classes[m]
			switch {
			case !ok:
				p.lines = append(p.lines, classLine("replace", d.dev, m, r), leafLine(d.dev, m, r))
				p.repairs++
				continue
			case !c.parentRoot:
				p.lines = append(p.lines, classDelLine(d.dev, m), classLine("replace", d.dev, m, r), leafLine(d.dev, m, r))
				p.repairs++
				continue
			case !rateClose(c.rateBits, r) || !rateClose(c.ceilBits, r):
				p.lines = append(p.lines, classLine("change", d.dev, m, r))
				p.repairs++
			}
			if lim, ok := st.leaves[m]; !ok || lim != paramsFor(r).limit {
				p.lines = append(p.lines, leafLine(d.dev, m, r))
				p.repairs++
			}
		}
		if clients {
			var extra []uint16
			for m := range st.classes {
				if _, ok := wantClasses[m]; !ok {
					extra = append(extra, m)
				}
			}
			slices.Sort(extra)
			for _, m := range extra {
				tail = append(tail, classDelLine(d.dev, m))
				p.repairs++
			}
		}
		// Filter nodes: links first, so the host filters' tables are linked.
		handles := make([]string, 0, len(wantNodes))
		for h := range wantNodes {
			handles = append(handles, h)
		}
		slices.SortFunc(handles, func(a, b string) int {
			if isHostNode(a) != isHostNode(b) {
				if isHostNode(a) {
					return 1
				}
				return -1
			}
			return strings.Compare(a, b)
		})
		for _, h := range handles {
			w := wantNodes[h]
			if got, ok := st.nodes[h]; !ok || got != w.n {
				p.lines = append(p.lines, w.line)
				p.repairs++
			}
		}
	}
	p.lines = append(p.lines, tail...)
	return p, nil
}

// rateClose says whether tc's printed rate (rounded to bytes, and to three
// significant digits above 1e6 of a unit) is the rate we set.
func rateClose(got uint64, want quantity.Rate) bool {
	w := paramsFor(want).rateBytes * 8
	diff := max(got, w) - min(got, w)
	return diff*500 <= w
}

// Teardown deletes the root and ingress qdiscs of the client interface and
// the IFB device; nothing else. What is missing is fine.
func (t *TC) Teardown(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.installed = map[netip.Addr]Limit{}
	out, err := t.run.run(ctx, "", "ip", "-d", "-j", "link", "show")
	if err != nil {
		return fmt.Errorf("tearing down shaper: %w", err)
	}
	links, err := parseLinks(out)
	if err != nil {
		return fmt.Errorf("tearing down shaper: %w", err)
	}
	if _, ok := links[t.cfg.ClientIf]; ok {
		out, err := t.run.run(ctx, "", "tc", "-j", "qdisc", "show", "dev", t.cfg.ClientIf)
		if err != nil {
			return fmt.Errorf("tearing down shaper: %w", err)
		}
		var d devState
		if err := parseQdiscs(out, &d); err != nil {
			return fmt.Errorf("tearing down shaper: parsing qdiscs: %w", err)
		}
		var lines []string
		if d.rootKind == "htb" {
			lines = append(lines, rootQdiscDelLine(t.cfg.ClientIf))
		}
		if d.ingressOK {
			lines = append(lines, fmt.Sprintf("qdisc del dev %s ingress", t.cfg.ClientIf))
		}
		if len(lines) > 0 {
			if err := t.batch(ctx, lines); err != nil {
				return fmt.Errorf("tearing down shaper: %w", err)
			}
		}
	}
	if l, ok := links[t.cfg.IFB]; ok && l.LinkInfo != nil && l.LinkInfo.Kind == "ifb" {
		if _, err := t.run.run(ctx, "", "ip", "link", "del", t.cfg.IFB); err != nil {
			return fmt.Errorf("tearing down shaper: %w", err)
		}
	}
	t.log.Info("shaper torn down", "client_if", t.cfg.ClientIf, "ifb", t.cfg.IFB)
	return nil
}

// Stats returns the kernel's counters of every shaped client's classes.
func (t *TC) Stats(ctx context.Context) (map[netip.Addr]ClassStats, error) {
	stats := map[netip.Addr]ClassStats{}
	for _, dev := range []string{t.cfg.ClientIf, t.cfg.IFB} {
		out, err := t.run.run(ctx, "", "tc", "-s", "class", "show", "dev", dev)
		if err != nil {
			return nil, fmt.Errorf("reading shaper stats: %w", err)
		}
		classes, err := parseClasses(out)
		if err != nil {
			return nil, fmt.Errorf("reading shaper stats of %s: %w", dev, err)
		}
		for minor, c := range classes {
			ip, ok := addrOfMinor(t.cfg.Subnet, minor)
			if !ok {
				continue
			}
			s := stats[ip]
			if dev == t.cfg.ClientIf {
				s.DownBytes, s.DownPackets, s.DownDrops = c.bytes, c.packets, c.drops
			} else {
				s.UpBytes, s.UpPackets, s.UpDrops = c.bytes, c.packets, c.drops
			}
			stats[ip] = s
		}
	}
	return stats, nil
}
