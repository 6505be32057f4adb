package shaper

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"

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

// attrs is a message's attributes by type (up to 15: all that tc's
// messages use here), as slices of the receive buffer: valid only during
// the callback that gets them.
type attrs [16][]byte

// parseAttrs fills a with the rtattrs of b (flags masked off the types).
func parseAttrs(b []byte, a *attrs) {
	*a = attrs{}
	eachAttr(b, func(typ uint16, v []byte) {
		if int(typ) < len(a) {
			a[typ] = v
		}
	})
}

// eachAttr calls f with each rtattr of b.
func eachAttr(b []byte, f func(typ uint16, v []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & 0x3fff // no NLA_F_NESTED, NLA_F_NET_BYTEORDER
		if l < 4 || l > len(b) {
			return
		}
		f(typ, b[4:l])
		b = b[min((l+3)&^3, len(b)):]
	}
}

// kindIs says whether a TCA_KIND value (NUL-terminated) is kind.
func kindIs(v []byte, kind string) bool {
	if len(v) > 0 && v[len(v)-1] == 0 {
		v = v[:len(v)-1]
	}
	return string(v) == kind
}

func u32At(v []byte, off int) uint32 {
	if len(v) < off+4 {
		return 0
	}
	return binary.NativeEndian.Uint32(v[off:])
}

// dump sends one dump request and calls f with each answer's tcmsg and
// attributes.
func (n *nlTC) dump(typ uint16, tcm nl.TcMsg, f func(tcm *nl.TcMsg, a *attrs) error) error {
	return n.request(typ, unix.NLM_F_DUMP, tcm, f)
}

// request sends one request (a dump, or a get with an ack) and calls f
// with each answer.
func (n *nlTC) request(typ uint16, flags int, tcm nl.TcMsg, f func(tcm *nl.TcMsg, a *attrs) error) error {
	req := nl.NewNetlinkRequest(int(typ), flags)
	req.AddData(&tcm)
	n.seq++
	req.Seq = n.seq
	if err := unix.Sendto(n.sock.GetFd(), req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending netlink request: %w", err)
	}
	var ferr, kerr error
	var a attrs
	for done := false; !done; {
		err := n.recv(func(h *unix.NlMsghdr, data []byte) {
			if h.Seq != req.Seq || done {
				return
			}
			switch h.Type {
			case unix.NLMSG_DONE:
				done = true
				return
			case unix.NLMSG_ERROR:
				done = true
				kerr = errnoOf(data)
				return
			}
			if len(data) < nl.SizeofTcMsg || ferr != nil {
				return
			}
			t := *nl.DeserializeTcMsg(data)
			parseAttrs(data[nl.SizeofTcMsg:], &a)
			ferr = f(&t, &a)
		})
		if err != nil {
			return err
		}
	}
	if kerr != nil {
		return fmt.Errorf("netlink: %w", kerr)
	}
	return ferr
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
	err = n.dump(unix.RTM_GETQDISC, nl.TcMsg{Ifindex: idx}, func(t *nl.TcMsg, a *attrs) error {
		if t.Ifindex != idx {
			return nil
		}
		kind, opts := a[nl.TCA_KIND], a[nl.TCA_OPTIONS]
		switch {
		case t.Parent == netlink.HANDLE_ROOT:
			d.rootKind = string(bytes.TrimRight(kind, "\x00"))
			d.rootOK = kindIs(kind, "htb") && t.Handle == 1<<16 && htbDefault(opts) == 0
		case kindIs(kind, "ingress"):
			d.ingressOK = true
		case t.Parent != netlink.HANDLE_INGRESS && t.Parent != 0:
			l := leafState{major: uint16(t.Handle >> 16)}
			switch {
			case kindIs(kind, "pfifo"):
				l.kind, l.limit = "pfifo", uint64(u32At(opts, 0))
			case kindIs(kind, "htb"):
				l.kind, l.defaultOK = "htb", htbDefault(opts) == 0
			default:
				l.kind = string(bytes.TrimRight(kind, "\x00"))
			}
			d.leaves[t.Parent] = l
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading qdiscs of %s: %w", dev, err)
	}
	if d.rootKind == "htb" {
		if d.classes, err = n.classes(idx); err != nil {
			return fmt.Errorf("reading classes of %s: %w", dev, err)
		}
	}
	var o attrs
	for _, p := range filterParents(d, client) {
		ingress := p == 0xffff
		var b *blockState
		if !ingress {
			b = d.block(p)
		}
		seenPref := map[int]bool{}
		err := n.dump(unix.RTM_GETTFILTER, nl.TcMsg{Ifindex: idx, Parent: uint32(p) << 16}, func(t *nl.TcMsg, a *attrs) error {
			pref := int(t.Info >> 16)
			if pref != prio || !kindIs(a[nl.TCA_KIND], "u32") {
				if !ingress && !seenPref[pref] {
					seenPref[pref] = true
					b.otherPref = append(b.otherPref, pref)
				}
				return nil
			}
			if t.Handle == 0 {
				return nil // the filter's own header, as tc prints without fh
			}
			parseAttrs(a[nl.TCA_OPTIONS], &o)
			if ingress {
				if t.Handle == u32Handle(rootTable, 0, nodeID) {
					d.redirect = n.redirectOf(o[nl.TCA_U32_ACT])
				}
				return nil
			}
			if o[nl.TCA_U32_DIVISOR] != nil && t.Handle&0xfffff == 0 {
				b.tables[t.Handle>>20] = int(u32At(o[nl.TCA_U32_DIVISOR], 0))
				return nil
			}
			b.nodes[t.Handle] = nodeOf(&o)
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading filters of %s parent %s: %w", dev, qdiscString(p), err)
		}
	}
	return nil
}

// nodeOf reads a u32 node from its options, as tc prints it.
func nodeOf(o *attrs) nodeState {
	ns := nodeState{flowid: u32At(o[nl.TCA_U32_CLASSID], 0), link: u32At(o[nl.TCA_U32_LINK], 0) >> 20}
	// struct tc_u32_sel { u8 flags, offshift, nkeys, pad; be16
	// offmask; u16 off; s16 offoff, hoff; be32 hmask; keys[] },
	// struct tc_u32_key { be32 mask, val; int off, offmask; }.
	if sel := o[nl.TCA_U32_SEL]; len(sel) >= 16 {
		ns.hashMask = binary.BigEndian.Uint32(sel[12:16])
		if ns.hashMask != 0 {
			ns.hashOff = int(int16(binary.NativeEndian.Uint16(sel[10:12])))
		}
		if sel[2] > 0 && len(sel) >= 16+16 {
			k := sel[16:]
			ns.mask = binary.BigEndian.Uint32(k[0:4])
			ns.value = binary.BigEndian.Uint32(k[4:8])
			ns.off = int(int32(binary.NativeEndian.Uint32(k[8:12])))
		}
	}
	return ns
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
		err := n.request(unix.RTM_GETQDISC, unix.NLM_F_ACK|unix.NLM_F_ECHO, nl.TcMsg{Ifindex: q.idx, Parent: q.parent}, func(t *nl.TcMsg, a *attrs) error {
			if q.parent == netlink.HANDLE_INGRESS {
				ok = kindIs(a[nl.TCA_KIND], "ingress")
			} else {
				ok = kindIs(a[nl.TCA_KIND], "htb") && t.Handle == 1<<16 && htbDefault(a[nl.TCA_OPTIONS]) == 0
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
	err := n.dump(unix.RTM_GETTCLASS, nl.TcMsg{Ifindex: idx}, func(t *nl.TcMsg, a *attrs) error {
		if t.Ifindex != idx || !kindIs(a[nl.TCA_KIND], "htb") {
			return nil
		}
		c, err := htbClass(a)
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
	delete(n.ifindex, dev) // the IFB device may have been re-made
	idx, err := n.index(dev)
	if err != nil {
		return nil, err
	}
	return n.classes(idx)
}

// htbDefault is the default class of an htb qdisc's options (-1 if none).
func htbDefault(opts []byte) int64 {
	var a attrs
	parseAttrs(opts, &a)
	// struct tc_htb_glob { version, rate2quantum, defcls, debug, direct_pkts }
	if len(a[nl.TCA_HTB_INIT]) < 12 {
		return -1
	}
	return int64(u32At(a[nl.TCA_HTB_INIT], 8))
}

// htbClass reads an HTB class's rates and counters.
func htbClass(top *attrs) (classState, error) {
	var c classState
	var o attrs
	parseAttrs(top[nl.TCA_OPTIONS], &o)
	parms := o[nl.TCA_HTB_PARMS]
	if len(parms) < 24 {
		return c, errors.New("no htb parameters")
	}
	// struct tc_htb_opt { struct tc_ratespec rate, ceil; ... }: rate at 8.
	c.rateBits = 8 * uint64(u32At(parms, 8))
	c.ceilBits = 8 * uint64(u32At(parms, 20))
	if v := o[nl.TCA_HTB_RATE64]; len(v) >= 8 {
		c.rateBits = 8 * binary.NativeEndian.Uint64(v)
	}
	if v := o[nl.TCA_HTB_CEIL64]; len(v) >= 8 {
		c.ceilBits = 8 * binary.NativeEndian.Uint64(v)
	}
	var st attrs
	parseAttrs(top[nl.TCA_STATS2], &st)
	// gnet_stats_basic { u64 bytes; u32 packets }; gnet_stats_queue
	// { qlen, backlog, drops, requeues, overlimits }.
	if b := st[nl.TCA_STATS_BASIC]; len(b) >= 12 {
		c.bytes = binary.NativeEndian.Uint64(b[0:8])
		c.packets = uint64(u32At(b, 8))
	}
	if q := st[nl.TCA_STATS_QUEUE]; len(q) >= 12 {
		c.drops = uint64(u32At(q, 8))
	}
	return c, nil
}

// redirectOf is the device a u32 node's mirred egress redirect (the
// TCA_U32_ACT attribute) sends to.
func (n *nlTC) redirectOf(acts []byte) string {
	to := ""
	eachAttr(acts, func(_ uint16, act []byte) {
		var a, o attrs
		parseAttrs(act, &a)
		if to != "" || !kindIs(a[nl.TCA_ACT_KIND], "mirred") {
			return
		}
		parseAttrs(a[nl.TCA_ACT_OPTIONS], &o)
		// struct tc_mirred { tc_gen (5 x 32 bits); int eaction; __u32
		// ifindex; } (the library's SizeofTcMirred says 30: not used).
		p := o[nl.TCA_MIRRED_PARMS]
		if len(p) < 28 || int32(u32At(p, 20)) != tcaEgressRedir {
			return
		}
		if l, err := n.links.LinkByIndex(int(u32At(p, 24))); err == nil {
			to = l.Attrs().Name
		}
	})
	return to
}
