package shaper

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// devState is what the kernel has on one device, as far as we care.
type devState struct {
	exists    bool
	rootOK    bool                   // root qdisc is htb 1: with default 0
	rootKind  string                 // kind of the root qdisc ("" if none)
	ingressOK bool                   // ingress qdisc present (client interface only)
	redirect  string                 // to_dev of the ingress mirred redirect filter 800::1
	classes   map[uint32]classState  // classid -> class (of every HTB qdisc)
	leaves    map[uint32]leafState   // classid -> the qdisc under it
	blocks    map[uint16]*blockState // qdisc major -> its u32 filters (1: and the /24 qdiscs)
}

type classState struct {
	rateBits, ceilBits uint64
	parentRoot         bool // top class of its qdisc (tc prints "root")
	bytes, packets     uint64
	drops              uint64
}

// leafState is the qdisc attached to a class.
type leafState struct {
	kind      string
	major     uint16 // handle's major
	limit     uint64 // pfifo
	defaultOK bool   // htb with default 0
}

// blockState is the u32 filters of one qdisc.
type blockState struct {
	tables    map[uint32]int // u32 table id -> divisor
	nodes     map[uint32]nodeState
	otherPref []int // filter preferences that are not ours
}

func newBlock() *blockState {
	return &blockState{tables: map[uint32]int{}, nodes: map[uint32]nodeState{}}
}

// block returns the filters of qdisc major, empty if none were read.
func (d *devState) block(major uint16) *blockState {
	if d.blocks == nil {
		d.blocks = map[uint16]*blockState{}
	}
	b, ok := d.blocks[major]
	if !ok {
		b = newBlock()
		d.blocks[major] = b
	}
	return b
}

// nodeState is one u32 filter node (key), with its single match.
type nodeState struct {
	flowid, link uint32
	value, mask  uint32
	off          int
	hashMask     uint32
	hashOff      int
}

type tcFilter struct {
	Pref    int    `json:"pref"`
	Kind    string `json:"kind"`
	Options *struct {
		FH       string `json:"fh"`
		Divisor  int    `json:"ht_divisor"`
		Flowid   string `json:"flowid"`
		Link     string `json:"link"`
		HashMask string `json:"hash_mask"`
		HashOff  int    `json:"hash_off"`
		Match    *struct {
			Value string `json:"value"`
			Mask  string `json:"mask"`
			Off   int    `json:"off"`
		} `json:"match"`
		Actions []struct {
			Kind   string `json:"kind"`
			Action string `json:"mirred_action"`
			Dir    string `json:"direction"`
			ToDev  string `json:"to_dev"`
		} `json:"actions"`
	} `json:"options"`
}

type tcQdisc struct {
	Kind    string `json:"kind"`
	Handle  string `json:"handle"`
	Parent  string `json:"parent"`
	Root    bool   `json:"root"`
	Options struct {
		Default string `json:"default"`
		Limit   uint64 `json:"limit"`
	} `json:"options"`
}

type ipLink struct {
	Name     string   `json:"ifname"`
	Flags    []string `json:"flags"`
	LinkInfo *struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
}

// state is the kernel's view of both devices.
type state struct {
	down, up devState
	ifbUp    bool
	ifbIsIFB bool
}

// observe reads the kernel's state of both devices.
func (t *TC) observe(ctx context.Context) (state, error) {
	if n := t.netlinkReader(); n != nil {
		return t.observeNL(n)
	}
	var s state
	out, err := t.run.run(ctx, "", "ip", "-d", "-j", "link", "show")
	if err != nil {
		return s, err
	}
	links, err := parseLinks(out)
	if err != nil {
		return s, err
	}
	if _, ok := links[t.cfg.ClientIf]; !ok {
		return s, fmt.Errorf("%w: %s", ErrNoInterface, t.cfg.ClientIf)
	}
	if ifb, ok := links[t.cfg.IFB]; ok {
		s.up.exists = true
		s.ifbIsIFB = ifb.LinkInfo != nil && ifb.LinkInfo.Kind == "ifb"
		for _, f := range ifb.Flags {
			if f == "UP" {
				s.ifbUp = true
			}
		}
	}
	s.down.exists = true
	if err := t.observeDev(ctx, t.cfg.ClientIf, &s.down, true); err != nil {
		return s, err
	}
	if s.up.exists && s.ifbIsIFB {
		if err := t.observeDev(ctx, t.cfg.IFB, &s.up, false); err != nil {
			return s, err
		}
	}
	return s, nil
}

// observeNL is observe through netlink dumps.
func (t *TC) observeNL(n *nlTC) (state, error) {
	var s state
	if err := n.observeLinks(t.cfg.ClientIf, t.cfg.IFB, &s); err != nil {
		return s, err
	}
	s.down.exists = true
	if err := n.observeDev(t.cfg.ClientIf, &s.down, true); err != nil {
		return s, err
	}
	if s.up.exists && s.ifbIsIFB {
		if err := n.observeDev(t.cfg.IFB, &s.up, false); err != nil {
			return s, err
		}
	}
	return s, nil
}

// filterParents are the qdiscs whose filters a reading takes: the root and
// every /24 qdisc when the root is HTB, and the ingress redirect on the
// client interface.
func filterParents(d *devState, client bool) []uint16 {
	var parents []uint16
	if d.rootKind == "htb" {
		parents = append(parents, 1)
		for _, l := range sortedLeaves(d.leaves) {
			if l.kind == "htb" && l.major != 1 {
				parents = append(parents, l.major)
			}
		}
	}
	if client && d.ingressOK {
		parents = append(parents, 0xffff)
	}
	return parents
}

func (t *TC) observeDev(ctx context.Context, dev string, d *devState, client bool) error {
	out, err := t.run.run(ctx, "", "tc", "-j", "qdisc", "show", "dev", dev)
	if err != nil {
		return err
	}
	if err := parseQdiscs(out, d); err != nil {
		return fmt.Errorf("parsing qdiscs of %s: %w", dev, err)
	}
	if d.rootKind == "htb" {
		out, err = t.run.run(ctx, "", "tc", "-s", "class", "show", "dev", dev)
		if err != nil {
			return err
		}
		if d.classes, err = parseClasses(out); err != nil {
			return fmt.Errorf("parsing classes of %s: %w", dev, err)
		}
	}
	// The filters of every parent, in one tc exec.
	parents := filterParents(d, client)
	if len(parents) == 0 {
		return nil
	}
	var b strings.Builder
	for _, p := range parents {
		fmt.Fprintf(&b, "filter show dev %s parent %s\n", dev, qdiscString(p))
	}
	out, err = t.run.run(ctx, b.String(), "tc", "-j", "-batch", "-")
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for _, p := range parents {
		var fs []tcFilter
		if err := dec.Decode(&fs); err != nil {
			return fmt.Errorf("parsing filters of %s parent %s: %w", dev, qdiscString(p), err)
		}
		if err := parseFilters(fs, d, p); err != nil {
			return fmt.Errorf("parsing filters of %s parent %s: %w", dev, qdiscString(p), err)
		}
	}
	return nil
}

// sortedLeaves lists the leaves in classid order (for a stable order of
// reads and repairs).
func sortedLeaves(m map[uint32]leafState) []leafState {
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]leafState, len(ids))
	for i, id := range ids {
		out[i] = m[id]
	}
	return out
}

func parseLinks(out []byte) (map[string]ipLink, error) {
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("parsing ip -j link: %w", err)
	}
	m := make(map[string]ipLink, len(links))
	for _, l := range links {
		m[l.Name] = l
	}
	return m, nil
}

func parseQdiscs(out []byte, d *devState) error {
	var qs []tcQdisc
	if err := json.Unmarshal(out, &qs); err != nil {
		return err
	}
	d.leaves = map[uint32]leafState{}
	for _, q := range qs {
		switch {
		case q.Root:
			d.rootKind = q.Kind
			d.rootOK = q.Kind == "htb" && q.Handle == "1:" && q.Options.Default == "0"
		case q.Kind == "ingress":
			d.ingressOK = true
		default:
			parent, err := parseClassID(q.Parent)
			if err != nil {
				continue
			}
			handle, err := parseClassID(q.Handle)
			if err != nil {
				continue
			}
			l := leafState{kind: q.Kind, major: uint16(handle >> 16)}
			switch q.Kind {
			case "pfifo":
				l.limit = q.Options.Limit
			case "htb":
				l.defaultOK = q.Options.Default == "0"
			}
			d.leaves[parent] = l
		}
	}
	return nil
}

// parseFilters reads the filters of qdisc major into d (0xffff: the
// ingress qdisc, where only the redirect's device matters).
func parseFilters(fs []tcFilter, d *devState, major uint16) error {
	ingress := major == 0xffff
	var b *blockState
	if !ingress {
		b = d.block(major)
	}
	seenPref := map[int]bool{}
	for _, f := range fs {
		if f.Pref != prio || f.Kind != "u32" {
			if !ingress && !seenPref[f.Pref] {
				seenPref[f.Pref] = true
				b.otherPref = append(b.otherPref, f.Pref)
			}
			continue
		}
		o := f.Options
		if o == nil || o.FH == "" {
			continue
		}
		h, err := parseHandle(o.FH)
		if err != nil {
			return err
		}
		if ingress {
			if h == u32Handle(rootTable, 0, nodeID) {
				for _, a := range o.Actions {
					if a.Kind == "mirred" && a.Action == "redirect" && a.Dir == "egress" {
						d.redirect = a.ToDev
					}
				}
			}
			continue
		}
		if h&0xfffff == 0 && o.Divisor > 0 {
			b.tables[h>>20] = o.Divisor
			continue
		}
		n := nodeState{hashOff: o.HashOff}
		if o.Flowid != "" {
			if n.flowid, err = parseClassID(o.Flowid); err != nil {
				return err
			}
		}
		if o.Link != "" {
			l, err := parseHandle(o.Link)
			if err != nil {
				return err
			}
			n.link = l >> 20
		}
		if o.HashMask != "" {
			v, err := strconv.ParseUint(o.HashMask, 16, 32)
			if err != nil {
				return fmt.Errorf("hash mask %q: %w", o.HashMask, err)
			}
			n.hashMask = uint32(v)
		}
		if m := o.Match; m != nil {
			v, err1 := strconv.ParseUint(m.Value, 16, 32)
			k, err2 := strconv.ParseUint(m.Mask, 16, 32)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("match %s/%s: not hex", m.Value, m.Mask)
			}
			n.value, n.mask, n.off = uint32(v), uint32(k), m.Off
		}
		b.nodes[h] = n
	}
	return nil
}

// parseClasses reads `tc -s class show` (HTB classes have no JSON output in
// iproute2 6.1):
//
//	class htb 1:b root leaf 8001: prio 0 rate 2Mbit ceil 2Mbit burst 3000b cburst 3000b
//	 Sent 1234 bytes 12 pkt (dropped 0, overlimits 0 requeues 0)
func parseClasses(out []byte) (map[uint32]classState, error) {
	classes := map[uint32]classState{}
	var cur *classState
	var curMinor uint32
	flush := func() {
		if cur != nil {
			classes[curMinor] = *cur
			cur = nil
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "class" {
			flush()
			if len(f) < 3 || f[1] != "htb" {
				continue
			}
			minor, err := parseClassID(f[2])
			if err != nil {
				return nil, err
			}
			c := classState{parentRoot: len(f) > 3 && f[3] == "root"}
			for i := 3; i+1 < len(f); i++ {
				switch f[i] {
				case "rate":
					if c.rateBits, err = parseTCRate(f[i+1]); err != nil {
						return nil, err
					}
				case "ceil":
					if c.ceilBits, err = parseTCRate(f[i+1]); err != nil {
						return nil, err
					}
				}
			}
			cur, curMinor = &c, minor
			continue
		}
		if cur != nil && f[0] == "Sent" && len(f) >= 7 {
			cur.bytes, _ = strconv.ParseUint(f[1], 10, 64)
			cur.packets, _ = strconv.ParseUint(f[3], 10, 64)
			cur.drops, _ = strconv.ParseUint(strings.TrimSuffix(f[6], ","), 10, 64)
		}
	}
	flush()
	return classes, sc.Err()
}

// parseTCRate parses a rate as tc prints it: "2Mbit", "1234567bit",
// "12Kbit", "1Gbit" (SI units; tc prints IEC only with -iec).
func parseTCRate(s string) (uint64, error) {
	num, ok := strings.CutSuffix(s, "bit")
	if !ok {
		return 0, fmt.Errorf("rate %q: no bit suffix", s)
	}
	mult := uint64(1)
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K':
			mult, num = 1e3, num[:n-1]
		case 'M':
			mult, num = 1e6, num[:n-1]
		case 'G':
			mult, num = 1e9, num[:n-1]
		case 'T':
			mult, num = 1e12, num[:n-1]
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	return v * mult, nil
}

// Intact is the cheap check run every few seconds: the IFB device is up and
// the root and ingress qdiscs are ours. It reads only the root and ingress
// qdiscs (not the thousands of classes, leaves and filters that Reconcile
// reads), so the gateway can check often and reconcile in full rarely.
func (t *TC) Intact(ctx context.Context) (bool, error) {
	if n := t.netlinkReader(); n != nil {
		return n.intact(t.cfg.ClientIf, t.cfg.IFB)
	}
	out, err := t.run.run(ctx, "", "ip", "-d", "-j", "link", "show", "dev", t.cfg.IFB)
	if err != nil {
		return false, nil // no IFB device
	}
	links, err := parseLinks(out)
	if err != nil {
		return false, err
	}
	ifb, ok := links[t.cfg.IFB]
	if !ok || ifb.LinkInfo == nil || ifb.LinkInfo.Kind != "ifb" || !slices.Contains(ifb.Flags, "UP") {
		return false, nil
	}
	var d devState
	for _, q := range []struct{ dev, which string }{{t.cfg.ClientIf, "root"}, {t.cfg.ClientIf, "ingress"}, {t.cfg.IFB, "root"}} {
		out, err := t.run.run(ctx, "", "tc", "-j", "qdisc", "show", "dev", q.dev, q.which)
		if err != nil {
			return false, err
		}
		var one devState
		if err := parseQdiscs(out, &one); err != nil {
			return false, fmt.Errorf("parsing qdiscs of %s: %w", q.dev, err)
		}
		switch {
		case q.which == "ingress":
			d.ingressOK = one.ingressOK
		case q.dev == t.cfg.ClientIf:
			d.rootOK = one.rootOK
		default:
			if !one.rootOK {
				return false, nil
			}
		}
	}
	return d.rootOK && d.ingressOK, nil
}
