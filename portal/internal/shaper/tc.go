package shaper

import (
	"cmp"
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

// TC is the Shaper built on tc (nested HTB, u32 hash tables, IFB). It keeps
// a cache of the classes it installed so that Set and Remove cost one
// netlink sendmsg; Setup and Reconcile refill the cache from the kernel.
type TC struct {
	cfg  Config
	log  *slog.Logger
	run  runner
	down direction
	up   direction

	mu        sync.Mutex
	installed map[netip.Addr]Limit // what the kernel has, as far as we know
	nlMu      sync.Mutex           // guards the four below (observe runs without mu)
	useNL     bool                 // talk netlink (New; not the unit tests' fake runner)
	nl        *nlTC                // for changes; opened on first use
	nlr       *nlTC                // for reads: a Set never waits for a Reconcile's dumps
	nlErr     error                // why they could not be opened
}

var _ Shaper = (*TC)(nil)

// New validates cfg and returns a TC. It touches nothing: call Setup.
func New(cfg Config, log *slog.Logger) (*TC, error) {
	t, err := newTC(cfg, log, execRunner{netns: cfg.Netns})
	if err != nil {
		return nil, err
	}
	t.useNL = true
	return t, nil
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

// Set adds or changes one client's classes and filters with one netlink
// sendmsg (or one tc exec without netlink).
// A zero rate leaves that direction unshaped (removing an earlier limit).
func (t *TC) Set(ctx context.Context, l Limit) error {
	if err := checkClient(t.cfg.Subnet, l.IP); err != nil {
		return fmt.Errorf("shaping %s: %w", l.IP, err)
	}
	for _, r := range []quantity.Rate{l.Down, l.Up} {
		if r != 0 && r < MinRate {
			return fmt.Errorf("shaping %s: %w: %s is below %s", l.IP, ErrRate, r, MinRate)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.apply(ctx, l); err != nil {
		return fmt.Errorf("shaping %s: %w", l.IP, err)
	}
	return nil
}

// Remove deletes one client's filters; unknown IPs are fine. Its classes
// stay, parked (no filter sends a packet to them): making a class costs
// time that grows with every HTB class on the machine (README.md), so the
// next client at this address only changes them.
func (t *TC) Remove(ctx context.Context, ip netip.Addr) error {
	if checkClient(t.cfg.Subnet, ip) != nil {
		return nil // never shaped
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.apply(ctx, Limit{IP: ip}); err != nil {
		return fmt.Errorf("unshaping %s: %w", ip, err)
	}
	return nil
}

// apply moves one client from its cached limit to l. If the change fails
// (the kernel drifted from the cache), it re-reads the kernel and tries once
// more.
func (t *TC) apply(ctx context.Context, l Limit) error {
	l.IP = l.IP.Unmap()
	ops := t.clientOps(l.IP, t.installed[l.IP], l)
	if len(ops) == 0 {
		return nil
	}
	err := t.exec(ctx, ops)
	if err != nil {
		s, oerr := t.observe(ctx)
		if oerr != nil {
			return errors.Join(err, oerr)
		}
		// Damage to the structure (a /24's qdisc deleted from outside)
		// would fail every Set in that part of the subnet until the next
		// full reconcile: repair it first (this also learns the clients'
		// classes as they are).
		if _, rerr := t.applyPlan(ctx, s, nil, false); rerr != nil {
			return errors.Join(err, rerr)
		}
		ops = t.clientOps(l.IP, t.installed[l.IP], l)
		if len(ops) == 0 {
			return nil
		}
		t.log.Warn("tc state differed from cache; retrying", "ip", l.IP, "err", err)
		if err = t.exec(ctx, ops); err != nil {
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

// clientOps take one client from old to new. A new class gets its leaf and
// then its filters, inner first: once the root's filter sends the client
// to its /24, the /24's qdisc knows the client. "class replace" makes the
// class, or changes a parked one. Removal deletes the filters, outer
// first, and parks the class.
func (t *TC) clientOps(ip netip.Addr, old, new Limit) []op {
	var ops []op
	for _, x := range []struct {
		d        direction
		old, new quantity.Rate
	}{{t.down, old.Down, new.Down}, {t.up, old.Up, new.Up}} {
		switch {
		case x.new != 0 && x.old != 0:
			if !rateClose(wireBits(x.old), x.new) {
				ops = append(ops, classOp(opClassChange, x.d.dev, ip, x.new), leafOp(x.d.dev, ip, x.new))
			}
		case x.new != 0:
			ops = append(ops,
				classOp(opClass, x.d.dev, ip, x.new),
				leafOp(x.d.dev, ip, x.new),
				innerHostOp(x.d, ip),
				outerHostOp(x.d, ip))
		case x.old != 0:
			ops = append(ops,
				nodeDelOp(x.d.dev, 1, outerHostHandle(ip)),
				nodeDelOp(x.d.dev, group(third(ip)), innerHostHandle(ip)))
		}
	}
	return ops
}

// exec applies ops: through netlink when it can (no fork), else with one
// `tc -batch -`.
//
// A plan's ops start with tc lines (qdiscs, tables, links) and end with
// client ops: the lines up to the last one go in one `tc -batch`, the
// rest through netlink.
func (t *TC) exec(ctx context.Context, ops []op) error {
	if t.netlink() == nil {
		return t.batch(ctx, lines(ops))
	}
	k := 0
	for i, o := range ops {
		if o.kind == opLine {
			k = i + 1
		}
	}
	if k > 0 {
		if err := t.batch(ctx, lines(ops[:k])); err != nil {
			return err
		}
	}
	if k < len(ops) {
		return t.netlink().apply(ops[k:])
	}
	return nil
}

// netlink returns the netlink socket for changes, opening it on first
// use; nil when netlink is not to be used or cannot be opened (then tc
// does everything).
func (t *TC) netlink() *nlTC { return t.openNL(false) }

// netlinkReader returns the netlink socket for reads (dumps).
func (t *TC) netlinkReader() *nlTC { return t.openNL(true) }

func (t *TC) openNL(reader bool) *nlTC {
	t.nlMu.Lock()
	defer t.nlMu.Unlock()
	if !t.useNL || t.nlErr != nil {
		return nil
	}
	if t.nl == nil {
		if t.nl, t.nlErr = openNLTC(t.cfg.Netns); t.nlErr == nil {
			t.nlr, t.nlErr = openNLTC(t.cfg.Netns)
		}
		if t.nlErr != nil {
			t.nl, t.nlr = nil, nil
			t.log.Warn("netlink unavailable: using the tc command", "err", t.nlErr)
			return nil
		}
	}
	if reader {
		return t.nlr
	}
	return t.nl
}

// Close releases the shaper's netlink sockets; the kernel state stays. A
// later call opens them again.
func (t *TC) Close() error {
	t.nlMu.Lock()
	defer t.nlMu.Unlock()
	for _, n := range []*nlTC{t.nl, t.nlr} {
		if n != nil {
			n.close()
		}
	}
	t.nl, t.nlr = nil, nil
	return nil
}

// batch runs lines with one `tc -batch -`.
func (t *TC) batch(ctx context.Context, lines []string) error {
	_, err := t.run.run(ctx, strings.Join(lines, "\n")+"\n", "tc", "-batch", "-")
	return err
}

// learn fills the cache from the kernel's client classes that a root
// filter sends packets to (the others are parked).
func (t *TC) learn(s state) {
	t.installed = map[netip.Addr]Limit{}
	add := func(d devState, down bool) {
		root := d.blocks[1]
		for id, c := range d.classes {
			ip, ok := addrOfClass(t.cfg.Subnet, id)
			if !ok || root == nil {
				continue
			}
			if _, shaped := root.nodes[outerHostHandle(ip)]; !shaped {
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
	add(s.down, true)
	add(s.up, false)
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
		if err := checkClient(t.cfg.Subnet, l.IP); err != nil {
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
		for id := range d.classes {
			if ip, ok := addrOfClass(t.cfg.Subnet, id); ok {
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
	if !s.down.rootOK || !s.up.rootOK || !s.up.exists || !s.ifbUp || !s.down.ingressOK || t.badTables(s) {
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
	}
	// exclude takes the stale clients out of a reading.
	exclude := func(s *state) {
		for ip, isStale := range stale {
			if !isStale || checkClient(t.cfg.Subnet, ip) != nil {
				continue
			}
			id := clientClass(ip)
			for _, d := range []*devState{&s.down, &s.up} {
				delete(d.classes, id)
				delete(d.leaves, id)
				if b, ok := d.blocks[1]; ok {
					delete(b.nodes, outerHostHandle(ip))
				}
				if b, ok := d.blocks[group(third(ip))]; ok {
					delete(b.nodes, innerHostHandle(ip))
				}
			}
		}
	}
	exclude(&s)
	p, err := t.plan(s, want, true)
	if err != nil {
		return 0, err
	}
	n := 0
	if p.repairs == 0 {
		t.installed = want
	} else {
		// The reading was taken while logins went on, and the kernel
		// dumps classes and filters in parts, walking them by position:
		// one added meanwhile can hide one that was there all along
		// (seen as hundreds of phantom repairs at 10,000 clients). Drift
		// is repaired only as a reading taken under the lock shows it.
		s, err = t.observe(ctx)
		if err != nil {
			return 0, err
		}
		exclude(&s)
		if n, err = t.applyPlan(ctx, s, want, true); err != nil {
			return n, err
		}
	}
	for ip, l := range keep {
		t.installed[ip] = l
	}
	return n, nil
}

// badTables reports damage that plan repairs by rebuilding a root qdisc
// (every client's classes go with it): a hash table with the wrong
// divisor, or a class under the root that is not one of the /24 classes
// (someone else's, or the flat layout of an older version).
func (t *TC) badTables(s state) bool {
	for _, d := range []devState{s.down, s.up} {
		if t.rebuildRoot(d) {
			return true
		}
		for _, b := range d.blocks {
			for htid, div := range b.tables {
				if htid != rootTable && div != 256 {
					return true
				}
			}
		}
		for _, part := range octets3(t.cfg.Subnet) {
			l, ok := d.leaves[groupClass(third(part.Addr()))]
			if !ok || l.kind != "htb" || l.major != group(third(part.Addr())) || !l.defaultOK {
				return true
			}
		}
	}
	return false
}

// rebuildRoot says whether a root qdisc has classes that are not ours: the
// old flat layout (one class per client under 1:), or anything else. They
// go with the root qdisc (deleting thousands of classes one by one costs
// as much as making them, and the flat layout is what is slow to make).
func (t *TC) rebuildRoot(d devState) bool {
	groups := map[uint32]bool{}
	for _, part := range octets3(t.cfg.Subnet) {
		groups[groupClass(third(part.Addr()))] = true
	}
	for id, c := range d.classes {
		if id>>16 == 1 && (!groups[id] || !c.parentRoot) {
			return true
		}
		if maj := uint16(id >> 16); maj != 1 && !groups[1<<16|uint32(maj)] {
			return true // a class in a qdisc that is no /24 of ours
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
	if n := t.netlink(); len(p.commands) > 0 && n != nil {
		n.forget() // the IFB device has a new index
	}
	if len(p.ops) > 0 {
		t.log.Debug("repairing", "ops", len(p.ops))
		if err := t.exec(ctx, p.ops); err != nil {
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
	commands [][]string // ip commands, before the ops
	ops      []op
	repairs  int
	rebuilt  [2]bool // down, up: a root qdisc was re-made, so its classes are gone
}

// wantNode is a filter node plan wants, with the op that makes it.
type wantNode struct {
	n  nodeState
	op op
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
	ips := make([]netip.Addr, 0, len(want))
	if clients {
		for ip := range want {
			ips = append(ips, ip)
		}
		slices.SortFunc(ips, netip.Addr.Compare)
	}
	parts := octets3(t.cfg.Subnet)
	// The ops go in three parts: the qdiscs, tables and links of both
	// devices (tc lines), then the clients' classes, leaves and host
	// filters (netlink can send these), then deletions of classes.
	var clientPart, tail []op
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
		add := func(o ...op) { p.ops = append(p.ops, o...); p.repairs++ }
		addClient := func(o ...op) { clientPart = append(clientPart, o...); p.repairs++ }
		if !st.rootOK || t.rebuildRoot(st) {
			if st.rootKind == "htb" {
				p.ops = append(p.ops, rootQdiscDelOp(d.dev))
			}
			add(rootQdiscOp(d.dev))
			p.rebuilt[i] = true
			st.classes, st.leaves, st.blocks = nil, nil, nil
		}
		if x.ingres {
			if !st.ingressOK {
				add(ingressOps(t.cfg.ClientIf, t.cfg.IFB)...)
			} else if st.redirect != t.cfg.IFB {
				add(redirectOp(t.cfg.ClientIf, t.cfg.IFB))
			}
		}
		// The /24 classes and their qdiscs. A /24 qdisc re-made has lost
		// its classes and filters.
		for _, part := range parts {
			o := third(part.Addr())
			gc := groupClass(o)
			c, ok := st.classes[gc]
			if !ok || c.rateBits != uint64(groupRate) || c.ceilBits != uint64(groupRate) {
				add(groupClassOp(d.dev, o))
			}
			if l, ok := st.leaves[gc]; !ok || l.kind != "htb" || l.major != group(o) || !l.defaultOK {
				if ok && l.kind == "htb" && l.major == group(o) {
					p.ops = append(p.ops, groupQdiscDelOp(d.dev, o)) // wrong default: cannot be changed
				}
				add(groupQdiscOp(d.dev, o))
				for id := range st.classes {
					if uint16(id>>16) == group(o) {
						delete(st.classes, id)
					}
				}
				delete(st.blocks, group(o))
			}
		}
		// What each qdisc's filters should be: the root's tables (octet
		// table, one host table per /24) and each /24's table.
		mask := func(bits int) uint32 { return ^uint32(0) << (32 - bits) }
		type blockWant struct {
			major  uint16
			tables map[uint32]bool
			nodes  map[uint32]wantNode
			host   func(h uint32) bool
		}
		outer := blockWant{major: 1, tables: map[uint32]bool{octetTable: true}, nodes: map[uint32]wantNode{},
			host: func(h uint32) bool { return h>>20 >= hostTable0 && h>>20 < hostTable0+256 }}
		outer.nodes[u32Handle(rootTable, 0, nodeID)] = wantNode{nodeState{
			link: octetTable, value: ip4(t.cfg.Subnet.Addr()), mask: mask(t.cfg.Subnet.Bits()),
			off: d.offset, hashMask: 0xff00, hashOff: d.offset,
		}, linkOp(d, 1, u32Handle(rootTable, 0, nodeID), t.cfg.Subnet, 0xff00, octetTable)}
		blocks := []*blockWant{&outer}
		inner := map[uint16]*blockWant{}
		for _, part := range parts {
			o := third(part.Addr())
			ht := hostTable0 + uint32(o)
			outer.tables[ht] = true
			h := u32Handle(octetTable, o, nodeID)
			outer.nodes[h] = wantNode{nodeState{
				link: ht, value: ip4(part.Addr()), mask: mask(part.Bits()), off: d.offset, hashMask: 0xff, hashOff: d.offset,
			}, linkOp(d, 1, h, part, 0xff, ht)}
			b := &blockWant{major: group(o), tables: map[uint32]bool{innerTable: true}, nodes: map[uint32]wantNode{},
				host: func(h uint32) bool { return h>>20 == innerTable }}
			h = u32Handle(rootTable, 0, nodeID)
			b.nodes[h] = wantNode{nodeState{
				link: innerTable, value: ip4(part.Addr()), mask: mask(part.Bits()), off: d.offset, hashMask: 0xff, hashOff: d.offset,
			}, linkOp(d, group(o), h, part, 0xff, innerTable)}
			inner[group(o)] = b
			blocks = append(blocks, b)
		}
		wantClasses := map[uint32]quantity.Rate{}
		var order []netip.Addr
		for _, ip := range ips {
			r := x.rate(want[ip])
			if r == 0 {
				continue
			}
			order = append(order, ip)
			wantClasses[clientClass(ip)] = r
			o := outerHostOp(d, ip)
			outer.nodes[o.id] = wantNode{nodeState{flowid: o.flowid, value: ip4(ip), mask: ^uint32(0), off: d.offset}, o}
			o = innerHostOp(d, ip)
			inner[group(third(ip))].nodes[o.id] = wantNode{nodeState{flowid: o.flowid, value: ip4(ip), mask: ^uint32(0), off: d.offset}, o}
		}
		// Foreign preferences and tables that cannot be right go first.
		for _, bw := range blocks {
			got := st.blocks[bw.major]
			if got == nil {
				continue
			}
			for _, pref := range got.otherPref {
				add(prioDelOp(d.dev, bw.major, pref))
			}
			for htid, div := range got.tables {
				if bw.tables[htid] && div != 256 {
					// A table cannot be changed: start this qdisc's u32
					// filters afresh.
					add(prioDelOp(d.dev, bw.major, prio))
					delete(st.blocks, bw.major)
					break
				}
			}
		}
		// Deletions of unwanted nodes (host filters first, then links),
		// then of unwanted tables; then the tables we miss.
		for _, bw := range blocks {
			got := st.blocks[bw.major]
			if got == nil {
				got = newBlock()
			}
			var delHost, delLink []uint32
			for h := range got.nodes {
				if _, ok := bw.nodes[h]; ok {
					continue
				}
				if bw.host(h) {
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
				add(nodeDelOp(d.dev, bw.major, h))
			}
			var delTables, addTables []uint32
			for htid := range got.tables {
				if !bw.tables[htid] && htid != rootTable {
					delTables = append(delTables, htid)
				}
			}
			for htid := range bw.tables {
				if _, ok := got.tables[htid]; !ok {
					addTables = append(addTables, htid)
				}
			}
			slices.Sort(delTables)
			slices.Sort(addTables)
			for _, htid := range delTables {
				add(tableDelOp(d.dev, bw.major, htid))
			}
			for _, htid := range addTables {
				add(tableOp(d.dev, bw.major, htid))
			}
		}
		// Client classes and their leaves.
		for _, ip := range order {
			id := clientClass(ip)
			r := wantClasses[id]
			c, ok := st.classes[id]
			switch {
			case !ok:
				addClient(classOp(opClass, d.dev, ip, r), leafOp(d.dev, ip, r))
				continue
			case !c.parentRoot:
				addClient(classOp(opClassDel, d.dev, ip, 0), classOp(opClass, d.dev, ip, r), leafOp(d.dev, ip, r))
				continue
			case !rateClose(c.rateBits, r) || !rateClose(c.ceilBits, r):
				addClient(classOp(opClassChange, d.dev, ip, r))
			}
			if l, ok := st.leaves[id]; !ok || l.kind != "pfifo" || l.limit != paramsFor(r).limit {
				addClient(leafOp(d.dev, ip, r))
			}
		}
		if clients {
			// Client classes not wanted stay, parked (their filters go);
			// other classes in a /24's qdisc are someone else's.
			var extra []uint32
			for id := range st.classes {
				if _, client := addrOfClass(t.cfg.Subnet, id); !client && id>>16 != 1 {
					extra = append(extra, id)
				}
			}
			slices.Sort(extra)
			for _, id := range extra {
				tail = append(tail, op{kind: opClassDel, dev: d.dev, parent: id &^ 0xffff, id: id})
				p.repairs++
			}
		}
		// Filter nodes: the /24 qdiscs' first, then the root's, so a packet
		// sent to a /24 finds its client there; in each, links before the
		// host filters they lead to.
		for _, bw := range append(blocks[1:], blocks[0]) {
			got := st.blocks[bw.major]
			if got == nil {
				got = newBlock()
			}
			handles := make([]uint32, 0, len(bw.nodes))
			for h := range bw.nodes {
				handles = append(handles, h)
			}
			slices.SortFunc(handles, func(a, b uint32) int {
				if bw.host(a) != bw.host(b) {
					if bw.host(a) {
						return 1
					}
					return -1
				}
				return cmp.Compare(a, b)
			})
			for _, h := range handles {
				w := bw.nodes[h]
				if n, ok := got.nodes[h]; !ok || n != w.n {
					if bw.host(h) {
						addClient(w.op)
					} else {
						add(w.op)
					}
				}
			}
		}
	}
	p.ops = append(append(p.ops, clientPart...), tail...)
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
			lines = append(lines, rootQdiscDelOp(t.cfg.ClientIf).String())
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

// warmChunk is how many addresses Warm makes classes for under one hold
// of the lock that Set takes (2 classes each): a login waits for one
// chunk at most, a few ms.
const warmChunk = 16

// WarmMax bounds the addresses Warm makes classes for: each costs the
// kernel about 6 KB (two classes, two leaves), so 4,096 cost ~25 MB.
// Addresses past it get their classes at their first login, and keep them.
const WarmMax = 4096

// Warm makes parked classes ahead, in both directions, for the client
// addresses from first to last (the DHCP range; its first WarmMax), so that a login there
// changes a class instead of making one: making one costs time that grows
// with every HTB class on the machine (README.md), and a login must not
// pay for thousands. It reads tc once, then makes the missing classes in
// chunks, each under the lock Set and Remove take; a client Set meanwhile
// keeps its own. It returns the classes made; on error or when ctx ends,
// those made so far stay (parked classes are harmless) and the next call
// goes on.
func (t *TC) Warm(ctx context.Context, first, last netip.Addr) (int, error) {
	s, err := t.observe(ctx)
	if err != nil {
		return 0, fmt.Errorf("making classes ahead: %w", err)
	}
	var todo []netip.Addr
	seen := 0
	for ip := first.Unmap(); ip.IsValid() && ip.Compare(last.Unmap()) <= 0 && seen < WarmMax; ip = ip.Next() {
		if checkClient(t.cfg.Subnet, ip) != nil {
			continue
		}
		seen++
		id := clientClass(ip)
		_, down := s.down.classes[id]
		_, up := s.up.classes[id]
		if !down || !up {
			todo = append(todo, ip)
		}
	}
	made := 0
	for len(todo) > 0 {
		if err := ctx.Err(); err != nil {
			return made, err
		}
		chunk := todo[:min(warmChunk, len(todo))]
		todo = todo[len(chunk):]
		t.mu.Lock()
		var ops []op
		for _, ip := range chunk {
			if _, shaped := t.installed[ip]; shaped {
				continue // Set made or changed its classes meanwhile
			}
			id := clientClass(ip)
			for _, x := range []struct {
				d    direction
				have map[uint32]classState
			}{{t.down, s.down.classes}, {t.up, s.up.classes}} {
				if _, ok := x.have[id]; !ok {
					// With its own pfifo leaf: a login then changes the
					// leaf's limit in place, where replacing HTB's default
					// leaf would make a qdisc (a search of the device's
					// qdisc hash for a free handle).
					ops = append(ops, classOp(opClass, x.d.dev, ip, groupRate), leafOp(x.d.dev, ip, groupRate))
				}
			}
		}
		err := t.exec(ctx, ops)
		t.mu.Unlock()
		if err != nil {
			return made, fmt.Errorf("making classes ahead: %w", err)
		}
		made += len(ops) / 2
	}
	return made, nil
}

// Stats returns the kernel's counters of every shaped client's classes.
func (t *TC) Stats(ctx context.Context) (map[netip.Addr]ClassStats, error) {
	n := t.netlinkReader()
	stats := map[netip.Addr]ClassStats{}
	for _, dev := range []string{t.cfg.ClientIf, t.cfg.IFB} {
		var classes map[uint32]classState
		if n != nil {
			var err error
			if classes, err = n.devClasses(dev); err != nil {
				return nil, fmt.Errorf("reading shaper stats of %s: %w", dev, err)
			}
		} else {
			out, err := t.run.run(ctx, "", "tc", "-s", "class", "show", "dev", dev)
			if err != nil {
				return nil, fmt.Errorf("reading shaper stats: %w", err)
			}
			if classes, err = parseClasses(out); err != nil {
				return nil, fmt.Errorf("reading shaper stats of %s: %w", dev, err)
			}
		}
		for id, c := range classes {
			ip, ok := addrOfClass(t.cfg.Subnet, id)
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
	t.mu.Lock()
	defer t.mu.Unlock()
	for ip := range stats {
		if _, shaped := t.installed[ip]; !shaped {
			delete(stats, ip) // parked
		}
	}
	return stats, nil
}
