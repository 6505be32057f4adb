package shaper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nlTC sends the client ops (classes, leaves, host filters) as rtnetlink
// messages on one socket in the gateway's namespace: what `tc -batch`
// sends, without a fork and exec of tc (1.6-2 ms each, on the login path).
// Many ops go out in one sendmsg (nlChunk messages, each acknowledged), so
// a bulk restore of thousands of clients costs the kernel's work and
// little else. The netlink library has the message types but no pfifo
// with a limit and no batching, so the messages are built here with its
// nl package.
type nlTC struct {
	mu      sync.Mutex
	sock    *nl.NetlinkSocket // blocking: read and written with buf, not its methods
	buf     []byte            // receive buffer, reused: a Reconcile reads ~80,000 messages
	links   *netlink.Handle
	ifindex map[string]int32
	seq     uint32
}

// nlRecvBuf holds one datagram of a dump (the kernel fills up to 32 KiB).
const nlRecvBuf = 1 << 17

// nlChunk is how many messages go out in one sendmsg: their acks (36
// bytes each, a few hundred with an error) must fit the socket's receive
// buffer.
const nlChunk = 128

// openNLTC opens the rtnetlink socket in the named network namespace (""
// is the caller's own).
func openNLTC(netnsName string) (*nlTC, error) {
	ns := netns.None()
	if netnsName != "" {
		var err error
		if ns, err = netns.GetFromName(netnsName); err != nil {
			return nil, fmt.Errorf("opening namespace %s: %w", netnsName, err)
		}
		defer ns.Close()
	}
	var sock *nl.NetlinkSocket
	var h *netlink.Handle
	var err error
	if netnsName == "" {
		sock, err = nl.Subscribe(unix.NETLINK_ROUTE)
		if err == nil {
			h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		}
	} else {
		sock, err = nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
		if err == nil {
			h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		}
	}
	if err == nil {
		// The library's Receive allocates 64 KiB per call; this package
		// reads with its own buffer, blocking, with a timeout.
		fd := sock.GetFd()
		err = unix.SetNonblock(fd, false)
		if err == nil {
			err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 30})
		}
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
		}
	}
	if err != nil {
		if sock != nil {
			sock.Close()
		}
		if h != nil {
			h.Close()
		}
		return nil, fmt.Errorf("opening rtnetlink socket: %w", err)
	}
	return &nlTC{sock: sock, buf: make([]byte, nlRecvBuf), links: h, ifindex: map[string]int32{}}, nil
}

// recv reads one datagram and calls f with each message in it.
func (n *nlTC) recv(f func(h *unix.NlMsghdr, data []byte)) error {
	nr, _, err := unix.Recvfrom(n.sock.GetFd(), n.buf, 0)
	if err != nil {
		return fmt.Errorf("reading netlink: %w", err)
	}
	b := n.buf[:nr]
	for len(b) >= unix.NLMSG_HDRLEN {
		h := (*unix.NlMsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return fmt.Errorf("reading netlink: message of %d bytes in %d", l, len(b))
		}
		f(h, b[unix.NLMSG_HDRLEN:l])
		b = b[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
	}
	return nil
}

// errnoOf is the error an NLMSG_ERROR message carries (nil for an ack).
func errnoOf(data []byte) error {
	if len(data) < 4 {
		return nil
	}
	if code := int32(binary.NativeEndian.Uint32(data[:4])); code != 0 {
		return syscall.Errno(-code)
	}
	return nil
}

func (n *nlTC) close() {
	n.sock.Close()
	n.links.Close()
}

// forget drops the cached interface indexes (the IFB device is re-made by
// a repair with a new index).
func (n *nlTC) forget() {
	n.mu.Lock()
	n.ifindex = map[string]int32{}
	n.mu.Unlock()
}

func (n *nlTC) index(dev string) (int32, error) {
	if i, ok := n.ifindex[dev]; ok {
		return i, nil
	}
	l, err := n.links.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("finding %s: %w", dev, err)
	}
	n.ifindex[dev] = int32(l.Attrs().Index)
	return n.ifindex[dev], nil
}

// apply sends ops in order and waits for every ack. It stops after the
// chunk holding the first failure and returns that failure, naming the op
// as a tc line.
func (n *nlTC) apply(ops []op) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for len(ops) > 0 {
		c := ops[:min(len(ops), nlChunk)]
		ops = ops[len(c):]
		if err := n.send(c); err != nil {
			n.ifindex = map[string]int32{}
			return err
		}
	}
	return nil
}

func (n *nlTC) send(ops []op) error {
	var buf []byte
	first := n.seq + 1
	for _, o := range ops {
		idx, err := n.index(o.dev)
		if err != nil {
			return err
		}
		req, err := message(o, idx)
		if err != nil {
			return err
		}
		n.seq++
		req.Seq = n.seq
		buf = append(buf, req.Serialize()...)
	}
	if err := unix.Sendto(n.sock.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending %d tc changes by netlink: %w", len(ops), err)
	}
	var errs []error
	for acked := 0; acked < len(ops); {
		err := n.recv(func(h *unix.NlMsghdr, data []byte) {
			i := int(h.Seq - first)
			if h.Type != unix.NLMSG_ERROR || i < 0 || i >= len(ops) {
				return
			}
			acked++
			if err := errnoOf(data); err != nil {
				errs = append(errs, fmt.Errorf("netlink %q: %w", ops[i].String(), err))
			}
		})
		if err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// message builds the rtnetlink request of one op, as tc would.
func message(o op, ifindex int32) (*nl.NetlinkRequest, error) {
	tcm := &nl.TcMsg{Family: nl.FAMILY_ALL, Ifindex: ifindex}
	var req *nl.NetlinkRequest
	switch o.kind {
	case opClass, opClassChange:
		flags := unix.NLM_F_CREATE | unix.NLM_F_REPLACE
		if o.kind == opClassChange {
			flags = 0
		}
		req = nl.NewNetlinkRequest(unix.RTM_NEWTCLASS, flags|unix.NLM_F_ACK)
		tcm.Handle, tcm.Parent = o.id, o.parent
		req.AddData(tcm)
		req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("htb")))
		p := paramsFor(o.rate)
		spec := nl.TcRateSpec{Linklayer: nl.LINKLAYER_ETHERNET, CellAlign: -1, Rate: uint32(min(p.rateBytes, math.MaxUint32))}
		buffer := xmitTicks(p.burst, p.rateBytes)
		opt := nl.TcHtbCopt{Rate: spec, Ceil: spec, Buffer: buffer, Cbuffer: buffer, Quantum: uint32(p.quantum)}
		options := nl.NewRtAttr(nl.TCA_OPTIONS, nil)
		options.AddRtAttr(nl.TCA_HTB_PARMS, opt.Serialize())
		if p.rateBytes >= math.MaxUint32 {
			options.AddRtAttr(nl.TCA_HTB_RATE64, nl.Uint64Attr(p.rateBytes))
			options.AddRtAttr(nl.TCA_HTB_CEIL64, nl.Uint64Attr(p.rateBytes))
		}
		req.AddData(options)
	case opClassDel:
		req = nl.NewNetlinkRequest(unix.RTM_DELTCLASS, unix.NLM_F_ACK)
		tcm.Handle = o.id
		req.AddData(tcm)
	case opLeaf:
		req = nl.NewNetlinkRequest(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
		tcm.Parent = o.id
		req.AddData(tcm)
		req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("pfifo")))
		// struct tc_fifo_qopt { __u32 limit; }, not nested.
		req.AddData(nl.NewRtAttr(nl.TCA_OPTIONS, nl.Uint32Attr(uint32(paramsFor(o.rate).limit))))
	case opHost:
		req = nl.NewNetlinkRequest(unix.RTM_NEWTFILTER, unix.NLM_F_CREATE|unix.NLM_F_ACK)
		tcm.Handle, tcm.Parent, tcm.Info = o.id, o.parent, filterInfo()
		req.AddData(tcm)
		req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("u32")))
		a := o.ip.As4()
		sel := nl.TcU32Sel{Flags: nl.TC_U32_TERMINAL, Nkeys: 1, Keys: []nl.TcU32Key{{
			Mask: 0xffffffff, Val: binary.NativeEndian.Uint32(a[:]), Off: int32(o.offset),
		}}}
		options := nl.NewRtAttr(nl.TCA_OPTIONS, nil)
		options.AddRtAttr(nl.TCA_U32_HASH, nl.Uint32Attr(o.id&^0xfff))
		options.AddRtAttr(nl.TCA_U32_SEL, sel.Serialize())
		options.AddRtAttr(nl.TCA_U32_CLASSID, nl.Uint32Attr(o.flowid))
		req.AddData(options)
	case opNodeDel:
		req = nl.NewNetlinkRequest(unix.RTM_DELTFILTER, unix.NLM_F_ACK)
		tcm.Handle, tcm.Parent, tcm.Info = o.id, o.parent, filterInfo()
		req.AddData(tcm)
		req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("u32")))
	default:
		return nil, fmt.Errorf("no netlink message for %q", o.String())
	}
	return req, nil
}

// filterInfo is tcm_info of our filters: preference and protocol (ETH_P_IP
// in network order).
func filterInfo() uint32 {
	return uint32(prio)<<16 | uint32(nl.Swap16(unix.ETH_P_IP))
}

// ticksPerUsec is the kernel's packet scheduler clock, from /proc/net/psched
// as tc reads it (15.625 ticks of 64 ns per microsecond on Linux since 2.6.x).
var ticksPerUsec = sync.OnceValue(func() float64 {
	b, err := os.ReadFile("/proc/net/psched")
	if err == nil {
		var t2us, us2t uint32
		if _, err := fmt.Sscanf(string(b), "%x %x", &t2us, &us2t); err == nil && us2t != 0 {
			return float64(t2us) / float64(us2t)
		}
	}
	return 1000.0 / 64
})

// xmitTicks is tc's tc_calc_xmittime: the time to send size bytes at rate
// bytes/s, in scheduler ticks (how HTB's buffer and cbuffer are given).
// tc truncates the time to whole microseconds first (tc_core_time2tick
// takes an unsigned int); so does this, so that both print the same burst.
func xmitTicks(size, rate uint64) uint32 {
	usec := math.Floor(min(1e6*float64(size)/float64(rate), math.MaxUint32))
	return uint32(min(usec*ticksPerUsec(), math.MaxUint32))
}
