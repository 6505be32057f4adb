package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// fakeKernel stands in for iptables (both families), ipset and conntrack:
// it keeps their state in memory, records every command, and renders the
// state as text for golden files.
type fakeKernel struct {
	chains map[family]map[string][]string // "table/chain" -> rules ("-A ..." form without the prefix)
	sets   map[string]*fakeSet
	cmds   []string
	// fail makes a command whose argv joined with blanks starts with the
	// key fail with the value as output.
	fail map[string]string
}

type fakeSet struct {
	create string
	elems  map[string]entry
}

func newFakeKernel() *fakeKernel {
	f := &fakeKernel{chains: map[family]map[string][]string{}, sets: map[string]*fakeSet{}, fail: map[string]string{}}
	for _, fam := range []family{v4, v6} {
		f.chains[fam] = map[string][]string{}
		for _, c := range []string{"filter/INPUT", "filter/FORWARD", "filter/OUTPUT", "nat/PREROUTING", "nat/POSTROUTING", "nat/INPUT", "nat/OUTPUT"} {
			f.chains[fam][c] = nil
		}
	}
	return f
}

// ipt returns the iptables interface of one family.
func (f *fakeKernel) ipt(fam family) ipt { return fakeIPT{f, fam} }

type fakeIPT struct {
	k   *fakeKernel
	fam family
}

func (i fakeIPT) m() map[string][]string { return i.k.chains[i.fam] }

func (i fakeIPT) ChainExists(table, chain string) (bool, error) {
	_, ok := i.m()[table+"/"+chain]
	return ok, nil
}

func (i fakeIPT) List(table, chain string) ([]string, error) {
	rules, ok := i.m()[table+"/"+chain]
	if !ok {
		return nil, fmt.Errorf("no chain %s/%s", table, chain)
	}
	out := []string{"-N " + chain}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+r)
	}
	return out, nil
}

func (i fakeIPT) Exists(table, chain string, spec ...string) (bool, error) {
	rules, ok := i.m()[table+"/"+chain]
	if !ok {
		return false, fmt.Errorf("no chain %s/%s", table, chain)
	}
	return slices.Contains(rules, strings.Join(spec, " ")), nil
}

func (i fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	i.k.cmds = append(i.k.cmds, fmt.Sprintf("%s -t %s -I %s %d %s", i.fam.cmd(), table, chain, pos, strings.Join(spec, " ")))
	key := table + "/" + chain
	rules, ok := i.m()[key]
	if !ok {
		return fmt.Errorf("no chain %s", key)
	}
	i.m()[key] = slices.Insert(rules, pos-1, strings.Join(spec, " "))
	return nil
}

func (i fakeIPT) DeleteIfExists(table, chain string, spec ...string) error {
	i.k.cmds = append(i.k.cmds, fmt.Sprintf("%s -t %s -D %s %s", i.fam.cmd(), table, chain, strings.Join(spec, " ")))
	key := table + "/" + chain
	rules := i.m()[key]
	if j := slices.Index(rules, strings.Join(spec, " ")); j >= 0 {
		i.m()[key] = slices.Delete(rules, j, j+1)
	}
	return nil
}

func (i fakeIPT) ClearAndDeleteChain(table, chain string) error {
	i.k.cmds = append(i.k.cmds, fmt.Sprintf("%s -t %s -F %s -X %s", i.fam.cmd(), table, chain, chain))
	for key, rules := range i.m() {
		for _, r := range rules {
			if strings.HasSuffix(r, "-j "+chain) {
				return fmt.Errorf("chain %s is still referenced from %s", chain, key)
			}
		}
	}
	delete(i.m(), table+"/"+chain)
	return nil
}

func (f *fakeKernel) Run(ctx context.Context, stdin string, argv ...string) (string, error) {
	line := strings.Join(argv, " ")
	if argv[0] == "ipset" && argv[len(argv)-1] == "restore" {
		f.cmds = append(f.cmds, line+"\n"+stdin)
	} else {
		f.cmds = append(f.cmds, line)
	}
	for prefix, out := range f.fail {
		if strings.HasPrefix(line, prefix) {
			return out, fmt.Errorf("running %q: exit status 1\n%s", argv, out)
		}
	}
	var out string
	var err error
	switch argv[0] {
	case "iptables-restore":
		err = f.restore(v4, stdin)
	case "ip6tables-restore":
		err = f.restore(v6, stdin)
	case "ipset":
		out, err = f.ipset(argv[1:], stdin)
	case "iptables", "ip6tables":
		fam := v4
		if argv[0] == "ip6tables" {
			fam = v6
		}
		out, err = f.listTable(fam, argv)
	case "conntrack":
		out = "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n"
		err = fmt.Errorf("exit status 1")
	default:
		err = fmt.Errorf("fake: unknown command %q", line)
	}
	if err != nil {
		return out, fmt.Errorf("running %q: %w\n%s", argv, err, out)
	}
	return out, nil
}

func (f *fakeKernel) restore(fam family, text string) error {
	table := ""
	pending := map[string][]string{}
	for _, l := range strings.Split(text, "\n") {
		switch {
		case l == "" || l == "COMMIT":
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":"):
			name := strings.Fields(l[1:])[0]
			pending[table+"/"+name] = []string{}
		case strings.HasPrefix(l, "-A "):
			rest := strings.TrimPrefix(l, "-A ")
			name, rule, _ := strings.Cut(rest, " ")
			key := table + "/" + name
			if _, ok := pending[key]; !ok {
				return fmt.Errorf("rule for undeclared chain %s", key)
			}
			pending[key] = append(pending[key], rule)
		default:
			return fmt.Errorf("unexpected restore line %q", l)
		}
	}
	for k, v := range pending { // all or nothing
		f.chains[fam][k] = v
	}
	return nil
}

func (f *fakeKernel) ipset(args []string, stdin string) (string, error) {
	exist := slices.Contains(args, "-exist")
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "-exist" })
	switch args[0] {
	case "list":
		if args[1] == "-t" { // the headers of every set, as ipset 7.17 prints them
			names := []string{}
			for n := range f.sets {
				names = append(names, n)
			}
			sort.Strings(names)
			var b strings.Builder
			for _, n := range names {
				typ, opts, _ := strings.Cut(f.sets[n].header(), " ")
				fmt.Fprintf(&b, "Name: %s\nType: %s\nRevision: 3\nHeader: %s\nSize in memory: 4216\nReferences: 1\nNumber of entries: %d\n", n, typ, opts, len(f.sets[n].elems))
			}
			return b.String(), nil
		}
		if args[1] == "-n" {
			names := []string{}
			for n := range f.sets {
				names = append(names, n)
			}
			sort.Strings(names)
			return strings.Join(names, "\n") + "\n", nil
		}
		s, ok := f.sets[args[1]]
		if !ok {
			return "ipset v7.17: The set with the given name does not exist\n", fmt.Errorf("exit status 1")
		}
		return f.save(args[1], s), nil
	case "create":
		if _, ok := f.sets[args[1]]; ok {
			if exist {
				return "", nil
			}
			return "set exists\n", fmt.Errorf("exit status 1")
		}
		f.sets[args[1]] = &fakeSet{create: strings.Join(args[2:], " "), elems: map[string]entry{}}
		return "", nil
	case "destroy":
		if _, ok := f.sets[args[1]]; !ok {
			return "does not exist\n", fmt.Errorf("exit status 1")
		}
		delete(f.sets, args[1])
		return "", nil
	case "add", "del":
		if err := f.element(args, exist); err != nil {
			return err.Error() + "\n", fmt.Errorf("exit status 1")
		}
		return "", nil
	case "swap":
		a, okA := f.sets[args[1]]
		b, okB := f.sets[args[2]]
		if !okA || !okB {
			return "no such set\n", fmt.Errorf("exit status 1")
		}
		f.sets[args[1]], f.sets[args[2]] = b, a
		return "", nil
	case "restore":
		// As ipset: lines apply in order; the first failure stops it.
		for i, l := range strings.Split(strings.TrimSpace(stdin), "\n") {
			fl, err := splitQuoted(l)
			if err != nil {
				return "", err
			}
			if err := f.element(fl, exist); err != nil {
				return fmt.Sprintf("ipset v7.17: Error in line %d: %v\n", i+1, err), fmt.Errorf("exit status 1")
			}
		}
		return "", nil
	}
	return "", fmt.Errorf("fake ipset: unknown %q", args)
}

// header is the create line's options as the kernel prints them: a range
// as first-last.
func (s *fakeSet) header() string {
	f := strings.Fields(s.create)
	for i := range f {
		if i > 0 && f[i-1] == "range" {
			f[i] = rangeOf(f[i])
		}
	}
	return strings.Join(f, " ")
}

func (f *fakeKernel) element(args []string, exist bool) error {
	op, name := args[0], args[1]
	s, ok := f.sets[name]
	if !ok {
		return fmt.Errorf("no set %s", name)
	}
	e, err := parseEntry(args[2], args[3:])
	if err != nil {
		return err
	}
	if r := parseHeader(strings.Fields(s.header())).opts["range"]; r != "" && !inRange(r, e.Key) {
		return fmt.Errorf("Element is out of the range of the set")
	}
	old, had := s.elems[e.Key]
	switch op {
	case "del":
		if !had && !exist {
			return fmt.Errorf("element %s not in %s", e.Key, name)
		}
		delete(s.elems, e.Key)
	case "add":
		if had && !exist {
			return fmt.Errorf("ipset v7.17: Element cannot be added to the set: it's already added")
		}
		// As the kernel: counters given replace, counters omitted are kept.
		if had && !e.HasCounters {
			e.Bytes, e.Packets, e.HasCounters = old.Bytes, old.Packets, true
		}
		s.elems[e.Key] = e
	}
	return nil
}

func (f *fakeKernel) save(name string, s *fakeSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "create %s %s\n", name, s.create)
	keys := []string{}
	for k := range s.elems {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	counters := strings.Contains(s.create, "counters")
	for _, k := range keys {
		e := s.elems[k]
		fmt.Fprintf(&b, "add %s %s", name, k)
		if e.MAC != "" {
			b.WriteString("," + e.MAC)
		}
		if strings.Contains(s.create, "timeout") {
			fmt.Fprintf(&b, " timeout %d", e.Timeout)
		}
		if counters {
			fmt.Fprintf(&b, " packets %d bytes %d", e.Packets, e.Bytes)
		}
		if e.Comment != "" {
			fmt.Fprintf(&b, " comment %q", e.Comment)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// render prints the whole state: our chains, the built-in chains, the sets.
func (f *fakeKernel) render() string {
	var b strings.Builder
	for _, fam := range []family{v4, v6} {
		keys := []string{}
		for k := range f.chains[fam] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s\n", fam, k)
			for _, r := range f.chains[fam][k] {
				fmt.Fprintf(&b, "  %s\n", r)
			}
		}
	}
	names := []string{}
	for n := range f.sets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b.WriteString(f.save(n, f.sets[n]))
	}
	return b.String()
}

// count counts elements in a set, for quick checks.
func (f *fakeKernel) count(set string) string {
	s, ok := f.sets[set]
	if !ok {
		return "none"
	}
	return strconv.Itoa(len(s.elems))
}

// listTable answers `iptables -w 5 -t TABLE -S` from the fake's chains, in
// the kernel's order: policies, chain declarations, then rules.
func (f *fakeKernel) listTable(fam family, argv []string) (string, error) {
	i := slices.Index(argv, "-t")
	if i < 0 || i+1 >= len(argv) || argv[len(argv)-1] != "-S" {
		return "", fmt.Errorf("fake: unsupported %q", argv)
	}
	table := argv[i+1]
	var names []string
	for key := range f.chains[fam] {
		if t, name, _ := strings.Cut(key, "/"); t == table {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var heads, rules []string
	for _, name := range names {
		if strings.ToUpper(name) == name {
			heads = append(heads, "-P "+name+" ACCEPT")
		} else {
			heads = append(heads, "-N "+name)
		}
		for _, r := range f.chains[fam][table+"/"+name] {
			rules = append(rules, "-A "+name+" "+r)
		}
	}
	return strings.Join(append(heads, rules...), "\n") + "\n", nil
}

// fakeNL stands in for the netlink side (nlKernel): set elements live in the
// fake kernel's sets (so both paths render the same state), conntrack
// flows in a list. Every call is recorded in the fake's command log with a
// "netlink " prefix; fail works on that line too.
type fakeNL struct {
	mu    sync.Mutex // Revoke lists flows from two goroutines
	f     *fakeKernel
	flows []ctFlow
	count int // what ConntrackCount says, when not 0
}

func (n *fakeNL) record(line string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	line = "netlink " + line
	n.f.cmds = append(n.f.cmds, line)
	for prefix, out := range n.f.fail {
		if strings.HasPrefix(line, prefix) {
			return errors.New(out)
		}
	}
	return nil
}

func (n *fakeNL) IpsetList(name string, only netip.Addr) ([]entry, error) {
	line := "list " + name
	if only.IsValid() {
		line += " " + only.String()
	}
	if err := n.record(line); err != nil {
		return nil, err
	}
	s, ok := n.f.sets[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	m, err := parseSave(n.f.save(name, s))
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, e := range m[name] {
		if !only.IsValid() || e.Key == only.String() {
			out = append(out, e)
		}
	}
	return out, nil
}

func (n *fakeNL) IpsetElems(name string, into []clientElem) ([]clientElem, error) {
	es, err := n.IpsetList(name, netip.Addr{})
	if err != nil {
		return into[:0], err
	}
	return appendEntries(into[:0], es), nil
}

func (n *fakeNL) IpsetAdd(e setElem, excl bool) error {
	line := e.String()
	if excl {
		line += " (excl)"
	}
	if err := n.record(line); err != nil {
		return err
	}
	fl, err := splitQuoted(e.String())
	if err != nil {
		return err
	}
	if err := n.f.element(fl, !excl); err != nil {
		if strings.Contains(err.Error(), "already added") {
			return errElemExists
		}
		return err
	}
	return nil
}

// IpsetDel records one line for the message; like the kernel, it stops
// at an element that fails (fail matches "netlink del <set> <ip>").
func (n *fakeNL) IpsetDel(set string, ips ...netip.Addr) error {
	line := "del " + set
	for _, ip := range ips {
		line += " " + ip.String()
	}
	if err := n.record(line); err != nil {
		return err
	}
	for _, ip := range ips {
		one := "del " + set + " " + ip.String()
		if len(ips) > 1 {
			if err := n.failing("netlink " + one); err != nil {
				return err
			}
		}
		if err := n.f.element(strings.Fields(one), true); err != nil {
			return err
		}
	}
	return nil
}

// failing is the fail entry matching line, unrecorded.
func (n *fakeNL) failing(line string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for prefix, out := range n.f.fail {
		if strings.HasPrefix(line, prefix) {
			return errors.New(out)
		}
	}
	return nil
}

func (n *fakeNL) ConntrackList(f ctFilter) ([]ctFlow, error) {
	if err := n.record(fmt.Sprintf("conntrack list %+v", f)); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []ctFlow
	for _, fl := range n.flows {
		if f.match(fl) {
			out = append(out, fl)
		}
	}
	return out, nil
}

// ConntrackCount is count if set, else the number of flows.
func (n *fakeNL) ConntrackCount() (int, error) {
	if err := n.record("conntrack count"); err != nil {
		return 0, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.count != 0 {
		return n.count, nil
	}
	return len(n.flows), nil
}

func (n *fakeNL) ConntrackDelete(fl ctFlow) error {
	if err := n.record("conntrack delete " + fl.String()); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.flows = slices.DeleteFunc(n.flows, func(g ctFlow) bool { return g.String() == fl.String() })
	return nil
}
