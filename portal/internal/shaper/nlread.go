package shaper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Reading tc through netlink dumps: what observe reads with `tc -j qdisc
// show`, `tc -s class show` and `tc -j filter show`, without forking tc
// and without parsing its text (with 10,000 clients that text is several
// megabytes per read, every Reconcile). It fills the same devState, so
// plan cannot tell the two apart (a lab test checks that it plans the
// same from both).

// tcaEgressRedir is TCA_EGRESS_REDIR of linux/tc_act/tc_mirred.h.
const tcaEgressRedir = 1

// dump sends one dump request and calls f with each answer's tcmsg and
// attributes.
func (n *nlTC) dump(typ uint16, tcm nl.TcMsg, f func(tcm *nl.TcMsg, attrs map[uint16]syscall.NetlinkRouteAttr) error) error {
	return n.request(typ, unix.NLM_F_DUMP, tcm, f)
}

// request sends one request (a dump, or a get with an ack) and calls f
// with each answer.
func (n *nlTC) request(typ uint16, flags int, tcm nl.TcMsg, f func(tcm *nl.TcMsg, attrs map[uint16]syscall.NetlinkRouteAttr) error) error {
	req := nl.NewNetlinkRequest(int(typ), flags)
	req.AddData(&tcm)
	n.seq++
	req.Seq = n.seq
	if err := unix.Sendto(n.sock.GetFd(), req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending netlink dump: %w", err)
	}
	var ferr error
	for {
		msgs, _, err := n.sock.Receive()
		if err != nil {
			return fmt.Errorf("reading netlink dump: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return ferr
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
						return fmt.Errorf("netlink dump: %w", syscall.Errno(-code))
					}
				}
				return ferr
			}
			if len(m.Data) < nl.SizeofTcMsg || ferr != nil {
				continue
			}
			t := *nl.DeserializeTcMsg(m.Data)
			attrs, err := nl.ParseRouteAttrAsMap(m.Data[nl.SizeofTcMsg:])
			if err != nil {
				ferr = err
				continue
			}
			ferr = f(&t, attrs)
		}
	}
}

func kindOf(attrs map[uint16]syscall.NetlinkRouteAttr) string {
	a, ok := attrs[nl.TCA_KIND]
	if !ok || len(a.Value) == 0 {
		return ""
	}
	v := a.Value
	if v[len(v)-1] == 0 {
		v = v[:len(v)-1]
	}
	return string(v)
}

// observeLinks reads the two devices: whether they exist, and the IFB's
// kind and state.
func (n *nlTC) observeLinks(clientIf, ifb string, s *state) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ifindex = map[string]int32{} // the IFB device may have been re-made
	if _, err := n.links.LinkByName(clientIf); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("%w: %s", ErrNoInterface, clientIf)
		}
		return fmt.Errorf("finding %s: %w", clientIf, err)
	}
	l, err := n.links.LinkByName(ifb)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("finding %s: %w", ifb, err)
	}
	s.up.exists = true
	s.ifbIsIFB = l.Type() == "ifb"
	s.ifbUp = l.Attrs().Flags&net.FlagUp != 0
	return nil
}

// observeDev fills d as observeDev's tc reads would.
func (n *nlTC) observeDev(dev string, d *devState, client bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	idx, err := n.index(dev)
	if err != nil {
		return err
	}
	d.leaves = map[uint32]leafState{}
	err = n.dump(unix.RTM_GETQDISC, nl.TcMsg{Ifindex: idx}, func(t *nl.TcMsg, attrs map[uint16]syscall.NetlinkRouteAttr) error {
		if t.Ifindex != idx {
			return nil
		}
		kind := kindOf(attrs)
		opts := attrs[nl.TCA_OPTIONS].Value
		switch {
		case t.Parent == netlink.HANDLE_ROOT:
			d.rootKind = kind
			d.rootOK = kind == "htb" && t.Handle == 1<<16 && htbDefault(opts) == 0
		case kind == "ingress":
			d.ingressOK = true
		case t.Parent != netlink.HANDLE_INGRESS && t.Parent != 0:
			l := leafState{kind: kind, major: uint16(t.Handle >> 16)}
			switch kind {
			case "pfifo":
				if len(opts) >= 4 {
					l.limit = uint64(binary.NativeEndian.Uint32(opts))
				}
			case "htb":
				l.defaultOK = htbDefault(opts) == 0
			}
			d.leaves[t.Parent] = l
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading qdiscs of %s: %w", dev, err)
	}
	var parents []uint16
	if d.rootKind == "htb" {
		if d.classes, err = n.classes(idx); err != nil {
			return fmt.Errorf("reading classes of %s: %w", dev, err)
		}
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
	for _, p := range parents {
		ingress := p == 0xffff
		var b *blockState
		if !ingress {
			b = d.block(p)
		}
		seenPref := map[int]bool{}
		err := n.dump(unix.RTM_GETTFILTER, nl.TcMsg{Ifindex: idx, Parent: uint32(p) << 16}, func(t *nl.TcMsg, attrs map[uint16]syscall.NetlinkRouteAttr) error {
			pref := int(t.Info >> 16)
			if pref != prio || kindOf(attrs) != "u32" {
				if !ingress && !seenPref[pref] {
					seenPref[pref] = true
					b.otherPref = append(b.otherPref, pref)
				}
				return nil
			}
			if t.Handle == 0 {
				return nil // the filter's own header, as tc prints without fh
			}
			opts, err := nl.ParseRouteAttrAsMap(attrs[nl.TCA_OPTIONS].Value)
			if err != nil {
				return err
			}
			if ingress {
				if t.Handle == u32Handle(rootTable, 0, nodeID) {
					d.redirect = n.redirectOf(opts)
				}
				return nil
			}
			if a, ok := opts[nl.TCA_U32_DIVISOR]; ok && t.Handle&0xfffff == 0 {
				b.tables[t.Handle>>20] = int(binary.NativeEndian.Uint32(a.Value))
				return nil
			}
			var ns nodeState
			if a, ok := opts[nl.TCA_U32_CLASSID]; ok {
				ns.flowid = binary.NativeEndian.Uint32(a.Value)
			}
			if a, ok := opts[nl.TCA_U32_LINK]; ok {
				ns.link = binary.NativeEndian.Uint32(a.Value) >> 20
			}
			if a, ok := opts[nl.TCA_U32_SEL]; ok && len(a.Value) >= nl.SizeofTcU32Sel {
				sel := nl.DeserializeTcU32Sel(a.Value)
				ns.hashMask = binary.BigEndian.Uint32(a.Value[12:16])
				if ns.hashMask != 0 {
					ns.hashOff = int(sel.Hoff)
				}
				if len(sel.Keys) > 0 {
					k := a.Value[nl.SizeofTcU32Sel:]
					ns.mask = binary.BigEndian.Uint32(k[0:4])
					ns.value = binary.BigEndian.Uint32(k[4:8])
					ns.off = int(sel.Keys[0].Off)
				}
			}
			b.nodes[t.Handle] = ns
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading filters of %s parent %s: %w", dev, qdiscString(p), err)
		}
	}
	return nil
}

// intact is TC.Intact through netlink: the IFB device is up, and the root
// qdiscs (htb 1: default 0) and the ingress qdisc are there; three gets,
// whatever the number of clients.
func (n *nlTC) intact(clientIf, ifb string) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ifindex = map[string]int32{}
	l, err := n.links.LinkByName(ifb)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, fmt.Errorf("finding %s: %w", ifb, err)
	}
	if l.Type() != "ifb" || l.Attrs().Flags&net.FlagUp == 0 {
		return false, nil
	}
	ci, err := n.index(clientIf)
	if err != nil {
		return false, err
	}
	for _, q := range []struct {
		idx    int32
		parent uint32
	}{{ci, netlink.HANDLE_ROOT}, {ci, netlink.HANDLE_INGRESS}, {int32(l.Attrs().Index), netlink.HANDLE_ROOT}} {
		ok := false
		// (NLM_F_ECHO: this kernel answers a get only to an echo request
		// or when someone listens to tc events.)
		err := n.request(unix.RTM_GETQDISC, unix.NLM_F_ACK|unix.NLM_F_ECHO, nl.TcMsg{Ifindex: q.idx, Parent: q.parent}, func(t *nl.TcMsg, attrs map[uint16]syscall.NetlinkRouteAttr) error {
			kind := kindOf(attrs)
			if q.parent == netlink.HANDLE_INGRESS {
				ok = kind == "ingress"
			} else {
				ok = kind == "htb" && t.Handle == 1<<16 && htbDefault(attrs[nl.TCA_OPTIONS].Value) == 0
			}
			return nil
		})
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			return false, nil
		}
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// classes reads the HTB classes of device idx.
func (n *nlTC) classes(idx int32) (map[uint32]classState, error) {
	classes := map[uint32]classState{}
	err := n.dump(unix.RTM_GETTCLASS, nl.TcMsg{Ifindex: idx}, func(t *nl.TcMsg, attrs map[uint16]syscall.NetlinkRouteAttr) error {
		if t.Ifindex != idx || kindOf(attrs) != "htb" {
			return nil
		}
		c, err := htbClass(attrs)
		if err != nil {
			return fmt.Errorf("class %s: %w", classString(t.Handle), err)
		}
		c.parentRoot = t.Parent == netlink.HANDLE_ROOT
		classes[t.Handle] = c
		return nil
	})
	return classes, err
}

// devClasses reads the HTB classes of dev (Stats).
func (n *nlTC) devClasses(dev string) (map[uint32]classState, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	idx, err := n.index(dev)
	if err != nil {
		return nil, err
	}
	return n.classes(idx)
}

// htbDefault is the default class of an htb qdisc's options (-1 if none).
func htbDefault(opts []byte) int64 {
	attrs, err := nl.ParseRouteAttrAsMap(opts)
	if err != nil {
		return -1
	}
	a, ok := attrs[nl.TCA_HTB_INIT]
	if !ok || len(a.Value) < 12 {
		return -1
	}
	// struct tc_htb_glob { version, rate2quantum, defcls, debug, direct_pkts }
	return int64(binary.NativeEndian.Uint32(a.Value[8:12]))
}

// htbClass reads an HTB class's rates and counters.
func htbClass(attrs map[uint16]syscall.NetlinkRouteAttr) (classState, error) {
	var c classState
	opts, err := nl.ParseRouteAttrAsMap(attrs[nl.TCA_OPTIONS].Value)
	if err != nil {
		return c, err
	}
	a, ok := opts[nl.TCA_HTB_PARMS]
	if !ok || len(a.Value) < 24 {
		return c, errors.New("no htb parameters")
	}
	// struct tc_htb_opt { struct tc_ratespec rate, ceil; ... }: rate at 8.
	c.rateBits = 8 * uint64(binary.NativeEndian.Uint32(a.Value[8:12]))
	c.ceilBits = 8 * uint64(binary.NativeEndian.Uint32(a.Value[20:24]))
	if a, ok := opts[nl.TCA_HTB_RATE64]; ok && len(a.Value) >= 8 {
		c.rateBits = 8 * binary.NativeEndian.Uint64(a.Value)
	}
	if a, ok := opts[nl.TCA_HTB_CEIL64]; ok && len(a.Value) >= 8 {
		c.ceilBits = 8 * binary.NativeEndian.Uint64(a.Value)
	}
	if st, ok := attrs[nl.TCA_STATS2]; ok {
		stats, err := nl.ParseRouteAttrAsMap(st.Value)
		if err != nil {
			return c, err
		}
		// gnet_stats_basic { u64 bytes; u32 packets }; gnet_stats_queue
		// { qlen, backlog, drops, requeues, overlimits }.
		if b, ok := stats[nl.TCA_STATS_BASIC]; ok && len(b.Value) >= 12 {
			c.bytes = binary.NativeEndian.Uint64(b.Value[0:8])
			c.packets = uint64(binary.NativeEndian.Uint32(b.Value[8:12]))
		}
		if q, ok := stats[nl.TCA_STATS_QUEUE]; ok && len(q.Value) >= 12 {
			c.drops = uint64(binary.NativeEndian.Uint32(q.Value[8:12]))
		}
	}
	return c, nil
}

// redirectOf is the device a u32 node's mirred egress redirect sends to.
func (n *nlTC) redirectOf(opts map[uint16]syscall.NetlinkRouteAttr) string {
	acts, ok := opts[nl.TCA_U32_ACT]
	if !ok {
		return ""
	}
	list, err := nl.ParseRouteAttr(acts.Value)
	if err != nil {
		return ""
	}
	for _, act := range list {
		m, err := nl.ParseRouteAttrAsMap(act.Value)
		if err != nil || kindOf(map[uint16]syscall.NetlinkRouteAttr{nl.TCA_KIND: m[nl.TCA_ACT_KIND]}) != "mirred" {
			continue
		}
		o, err := nl.ParseRouteAttrAsMap(m[nl.TCA_ACT_OPTIONS].Value)
		if err != nil {
			continue
		}
		p, ok := o[nl.TCA_MIRRED_PARMS]
		// struct tc_mirred { tc_gen (5 x 32 bits); int eaction; __u32
		// ifindex; } (the library's SizeofTcMirred says 30: not used).
		if !ok || len(p.Value) < 28 {
			continue
		}
		if int32(binary.NativeEndian.Uint32(p.Value[20:24])) != tcaEgressRedir {
			continue
		}
		l, err := n.links.LinkByIndex(int(binary.NativeEndian.Uint32(p.Value[24:28])))
		if err != nil {
			return ""
		}
		return l.Attrs().Name
	}
	return ""
}
