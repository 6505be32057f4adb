package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nlKernel is the netlink side of ipset and conntrack: the calls the hot
// paths make, so that a fake can stand in for them in unit tests.
//
// Reading the clients' sets (the counters poll every second and the
// reconcile every two, with thousands of elements), writing one client's
// elements (Allow, Revoke) and deleting its conntrack entries go through
// one NETLINK_NETFILTER socket in the gateway's namespace: no fork/exec,
// no text to print and parse. Everything else (set creation, the walled
// garden, batched repairs) stays with the ipset command, and so does
// everything when nl is nil.
type nlKernel interface {
	// IpsetList reads the elements of one set, as `ipset list -o save`
	// shows them; with only valid, just the element of that address.
	IpsetList(name string, only netip.Addr) ([]entry, error)
	// IpsetElems reads the elements of a client set (cw-auth, cw-acct,
	// cw-dl) appended to into[:0], which it reuses: the poll's and the
	// reconcile's readings allocate nothing once into has grown.
	IpsetElems(name string, into []clientElem) ([]clientElem, error)
	// IpsetAdd adds one element (IPSET_CMD_ADD). With excl an element
	// already there is refused with errElemExists and left as it is;
	// without, it is rewritten (ipset's -exist): given counters and
	// comment replace the kernel's, omitted counters are kept.
	IpsetAdd(e setElem, excl bool) error
	// IpsetDel removes the elements of these addresses (at most
	// ipsetBatchMax) with one IPSET_CMD_DEL; a missing one is fine. The
	// kernel stops at an element it refuses: those before it are gone,
	// the rest are not.
	IpsetDel(set string, ips ...netip.Addr) error
	// ConntrackList returns the IPv4 flows f matches. The kernel filters
	// (CTA_FILTER, Linux 5.8+), so only those cross to user space; f is
	// applied again here, so a kernel that ignores the filter only costs
	// time, never a wrong flow.
	ConntrackList(f ctFilter) ([]ctFlow, error)
	// ConntrackCount is the number of entries in the conntrack table
	// (IPCTNL_MSG_CT_GET_STATS: a counter, no walk).
	ConntrackCount() (int, error)
	// ConntrackDelete deletes one listed flow (by its original tuple and
	// id, so a new flow reusing the tuple is not hit); a flow already gone
	// is fine.
	ConntrackDelete(fl ctFlow) error
}

// errElemExists is IPSET_ERR_EXIST on an exclusive add: the element is
// already in the set.
var errElemExists = errors.New("element cannot be added to the set: it's already added")

// setElem is one element of cw-auth, cw-acct or cw-dl as Allow writes it.
type setElem struct {
	Set     string
	IP      netip.Addr
	MAC     net.HardwareAddr // cw-auth only
	Timeout uint32           // seconds; 0: none (the set's default, 0 = permanent)
	// Bytes, when set, is the initial byte counter (packets 0); nil keeps
	// the kernel's counters (a new element starts at 0).
	Bytes   *uint64
	Comment string // cw-acct only; "" none
}

// String renders e as the ipset restore line that would write it.
func (e setElem) String() string {
	s := "add " + e.Set + " " + e.IP.String()
	if e.MAC != nil {
		s += "," + e.MAC.String()
	}
	s += " timeout " + strconv.FormatUint(uint64(e.Timeout), 10)
	if e.Bytes != nil {
		s += " packets 0 bytes " + strconv.FormatUint(*e.Bytes, 10)
	}
	if e.Comment != "" {
		s += " comment " + strconv.Quote(e.Comment)
	}
	return s
}

// ctFilter selects IPv4 conntrack flows; zero fields match anything. At
// least one field must be set.
type ctFilter struct {
	Proto   uint8 // unix.IPPROTO_TCP, ...
	OrigSrc netip.Addr
	OrigDst netip.Addr
}

func (f ctFilter) empty() bool { return f == ctFilter{} }

func (f ctFilter) match(fl ctFlow) bool {
	return (f.Proto == 0 || f.Proto == fl.Proto) &&
		(!f.OrigSrc.IsValid() || f.OrigSrc == fl.OrigSrc) &&
		(!f.OrigDst.IsValid() || f.OrigDst == fl.OrigDst)
}

// ctFlow is one conntrack entry, as much of it as the firewall looks at.
type ctFlow struct {
	Proto                uint8
	OrigSrc, OrigDst     netip.Addr
	OrigSport, OrigDport uint16
	ReplySrc, ReplyDst   netip.Addr
	ReplySport           uint16
	ReplyDport           uint16
	// del holds the attributes that delete exactly this flow: its
	// original tuple, zone and id as the kernel listed them.
	del []byte
}

func (fl ctFlow) String() string {
	return fmt.Sprintf("proto %d %s:%d -> %s:%d reply %s:%d -> %s:%d", fl.Proto,
		fl.OrigSrc, fl.OrigSport, fl.OrigDst, fl.OrigDport, fl.ReplySrc, fl.ReplySport, fl.ReplyDst, fl.ReplyDport)
}

// nlConn is nlKernel on the real kernel: NETLINK_NETFILTER sockets opened
// in the gateway's namespace, messages built with the nl package of
// vishvananda/netlink. Its higher-level calls do not fit: IpsetAdd cannot
// set an element's counters (which a grant's quota offset needs), IpsetList
// decodes a few µs per element where a whole listing costs the kernel less,
// and no conntrack call lets the kernel filter the flows. Safe for
// concurrent use (the library locks a socket for each request).
//
// Each kind of request has its own socket: a socket serves one request at a
// time, and neither a listing (the counters poll) nor a conntrack dump (a
// walk of the whole table in the kernel, milliseconds) may hold up an
// Allow's adds. Conntrack requests take a socket from a pool of two, so
// Revoke's two walks run side by side.
type nlConn struct {
	ipset   map[int]*nl.SocketHandle
	list    map[int]*nl.SocketHandle // set listings (the counters poll), apart from the writes
	dump    *nlDump                  // listings of the client sets (IpsetElems)
	ct      chan map[int]*nl.SocketHandle
	sockets []*nl.NetlinkSocket
}

// nlTimeout bounds every netlink request: a dump of a large conntrack
// table takes tens of milliseconds, nothing takes seconds.
const nlTimeout = 10

// openNL opens the netfilter netlink sockets in the named network
// namespace ("" is the caller's own): from the daemon's start on, every
// request runs there whatever thread sends it.
func openNL(netnsName string) (*nlConn, error) {
	ns := netns.None()
	if netnsName != "" {
		var err error
		if ns, err = netns.GetFromName(netnsName); err != nil {
			return nil, fmt.Errorf("opening namespace %s: %w", netnsName, err)
		}
		defer ns.Close()
	}
	var err error
	c := &nlConn{ct: make(chan map[int]*nl.SocketHandle, 2)}
	open := func() (map[int]*nl.SocketHandle, error) {
		s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
		if err != nil {
			return nil, err
		}
		c.sockets = append(c.sockets, s)
		tv := unix.Timeval{Sec: nlTimeout}
		if err := errors.Join(s.SetSendTimeout(&tv), s.SetReceiveTimeout(&tv), s.SetExtAck(true)); err != nil {
			return nil, err
		}
		return map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: {Socket: s}}, nil
	}
	if c.ipset, err = open(); err != nil {
		c.Close()
		return nil, err
	}
	if c.list, err = open(); err != nil {
		c.Close()
		return nil, err
	}
	if c.dump, err = openNLDump(ns); err != nil {
		c.Close()
		return nil, err
	}
	for _, pool := range []chan map[int]*nl.SocketHandle{c.ct, c.ct} {
		socks, err := open()
		if err != nil {
			c.Close()
			return nil, err
		}
		pool <- socks
	}
	return c, nil
}

// Close closes the sockets.
func (c *nlConn) Close() {
	if c.dump != nil {
		c.dump.close()
	}
	for _, s := range c.sockets {
		s.Close()
	}
}

func (c *nlConn) IpsetList(name string, only netip.Addr) ([]entry, error) {
	req := c.ipsetRequest(nl.IPSET_CMD_LIST, unix.NLM_F_DUMP, name)
	var out []entry
	var perr error
	err := execute(c.list, req, func(msg []byte) bool {
		es, err := parseIpsetList(msg, only)
		if err != nil {
			perr = err
			return false
		}
		out = append(out, es...)
		return true
	})
	if err := errors.Join(ipsetError(err), perr); err != nil {
		return nil, err
	}
	return out, nil
}

// parseIpsetList decodes the elements in one message of an ipset listing
// (nfgenmsg, the set's attributes, IPSET_ATTR_ADT with one IPSET_ATTR_DATA
// per element). With only valid, the other elements are skipped before
// anything is decoded but their address.
func parseIpsetList(msg []byte, only netip.Addr) ([]entry, error) {
	if len(msg) < nl.SizeofNfgenmsg {
		return nil, errors.New("short ipset message")
	}
	attrs, err := parseAttrs(msg[nl.SizeofNfgenmsg:])
	if err != nil {
		return nil, fmt.Errorf("parsing an ipset listing: %w", err)
	}
	var out []entry
	for _, a := range attrs {
		if a.typ != nl.IPSET_ATTR_ADT {
			continue
		}
		datas, err := parseAttrs(a.val)
		if err != nil {
			return nil, fmt.Errorf("parsing an ipset listing: %w", err)
		}
		for _, d := range datas {
			if d.typ != nl.IPSET_ATTR_DATA {
				continue
			}
			e, ok, err := parseIpsetElem(d.val, only)
			if err != nil {
				return nil, fmt.Errorf("parsing an ipset listing: %w", err)
			}
			if ok {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// parseIpsetElem decodes one element the way ipset prints it: a hash:net
// host route without /32, MACs in lower case. ok is false for an element
// other than only (when valid).
func parseIpsetElem(b []byte, only netip.Addr) (e entry, ok bool, err error) {
	fields, err := parseAttrs(b)
	if err != nil {
		return e, false, err
	}
	var ip netip.Addr
	for _, f := range fields {
		if f.typ != nl.IPSET_ATTR_IP {
			continue
		}
		addrs, err := parseAttrs(f.val)
		if err != nil {
			return e, false, err
		}
		for _, a := range addrs {
			if v, ok := netip.AddrFromSlice(a.val); ok && (a.typ == nl.IPSET_ATTR_IPADDR_IPV4 || a.typ == nl.IPSET_ATTR_IPADDR_IPV6) {
				ip = v
			}
		}
	}
	if !ip.IsValid() {
		return e, false, errors.New("element without an address")
	}
	if only.IsValid() && ip != only {
		return e, false, nil
	}
	e.Key = ip.String()
	for _, f := range fields {
		switch {
		case f.typ == nl.IPSET_ATTR_CIDR && len(f.val) == 1:
			if bits := int(f.val[0]); bits != ip.BitLen() {
				e.Key += "/" + strconv.Itoa(bits)
			}
		case f.typ == nl.IPSET_ATTR_ETHER && len(f.val) == 6:
			e.MAC = net.HardwareAddr(f.val).String()
		case f.typ == nl.IPSET_ATTR_TIMEOUT && len(f.val) == 4:
			e.Timeout = int64(binary.BigEndian.Uint32(f.val))
		case f.typ == nl.IPSET_ATTR_PACKETS && len(f.val) == 8:
			e.Packets, e.HasCounters = binary.BigEndian.Uint64(f.val), true
		case f.typ == nl.IPSET_ATTR_BYTES && len(f.val) == 8:
			e.Bytes, e.HasCounters = binary.BigEndian.Uint64(f.val), true
		case f.typ == nl.IPSET_ATTR_COMMENT:
			e.Comment, _, _ = strings.Cut(string(f.val), "\x00")
		}
	}
	return e, true, nil
}

// execute sends req on socks' socket and calls f (if not nil) with each
// answer's payload.
func execute(socks map[int]*nl.SocketHandle, req *nl.NetlinkRequest, f func(msg []byte) bool) error {
	req.Sockets = socks
	if f == nil {
		f = func([]byte) bool { return true }
	}
	return req.ExecuteIter(unix.NETLINK_NETFILTER, 0, f)
}

func nfgen() *nl.Nfgenmsg {
	return &nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: nl.NFNETLINK_V0}
}

func (c *nlConn) ipsetRequest(cmd, flags int, set string) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(cmd|unix.NFNL_SUBSYS_IPSET<<8, unix.NLM_F_ACK|flags)
	req.AddData(nfgen())
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(set)))
	return req
}

// ipsetData is the IPSET_ATTR_DATA of an element with this address.
func ipsetData(ip netip.Addr) *nl.RtAttr {
	data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|unix.NLA_F_NESTED, nil)
	a4 := ip.As4()
	data.AddRtAttr(nl.IPSET_ATTR_IP|unix.NLA_F_NESTED, nil).
		AddRtAttr(nl.IPSET_ATTR_IPADDR_IPV4|unix.NLA_F_NET_BYTEORDER, a4[:])
	return data
}

func (c *nlConn) IpsetAdd(e setElem, excl bool) error {
	if !e.IP.Is4() {
		return fmt.Errorf("address %s is not IPv4", e.IP)
	}
	flags := 0
	if excl {
		flags = unix.NLM_F_EXCL
	}
	req := c.ipsetRequest(nl.IPSET_CMD_ADD, flags, e.Set)
	data := ipsetData(e.IP)
	if e.MAC != nil {
		data.AddRtAttr(nl.IPSET_ATTR_ETHER, e.MAC)
	}
	data.AddRtAttr(nl.IPSET_ATTR_TIMEOUT|unix.NLA_F_NET_BYTEORDER, nl.BEUint32Attr(e.Timeout))
	if e.Bytes != nil {
		data.AddRtAttr(nl.IPSET_ATTR_PACKETS|unix.NLA_F_NET_BYTEORDER, nl.BEUint64Attr(0))
		data.AddRtAttr(nl.IPSET_ATTR_BYTES|unix.NLA_F_NET_BYTEORDER, nl.BEUint64Attr(*e.Bytes))
	}
	if e.Comment != "" {
		data.AddRtAttr(nl.IPSET_ATTR_COMMENT, nl.ZeroTerminated(e.Comment))
	}
	req.AddData(data)
	return ipsetError(execute(c.ipset, req, nil))
}

func (c *nlConn) IpsetDel(set string, ips ...netip.Addr) error {
	req, err := c.ipsetDelRequest(set, ips)
	if err != nil {
		return err
	}
	return ipsetError(execute(c.ipset, req, nil))
}

// ipsetDelRequest is the IPSET_CMD_DEL of these addresses: one element's
// IPSET_ATTR_DATA at the top, as ipset sends it; several in one
// IPSET_ATTR_ADT, as `ipset restore` batches them. Without NLM_F_EXCL
// the kernel ignores a missing element (-exist).
func (c *nlConn) ipsetDelRequest(set string, ips []netip.Addr) (*nl.NetlinkRequest, error) {
	if len(ips) == 0 || len(ips) > ipsetBatchMax {
		return nil, fmt.Errorf("deleting %d elements in one message (1 to %d)", len(ips), ipsetBatchMax)
	}
	for _, ip := range ips {
		if !ip.Is4() {
			return nil, fmt.Errorf("address %s is not IPv4", ip)
		}
	}
	req := c.ipsetRequest(nl.IPSET_CMD_DEL, 0, set)
	if len(ips) == 1 {
		req.AddData(ipsetData(ips[0]))
		return req, nil
	}
	adt := nl.NewRtAttr(nl.IPSET_ATTR_ADT|unix.NLA_F_NESTED, nil)
	for _, ip := range ips {
		adt.AddChild(ipsetData(ip))
	}
	req.AddData(adt)
	return req, nil
}

// ipsetError words the kernel's ipset errors as the ipset command does.
func ipsetError(err error) error {
	var errno syscall.Errno
	if err == nil || !errors.As(err, &errno) {
		return err
	}
	switch int(errno) {
	case nl.IPSET_ERR_EXIST:
		return errElemExists
	case int(unix.ENOENT):
		return errors.New("the set with the given name does not exist")
	case nl.IPSET_ERR_TYPE_SPECIFIC: // bitmap types: IPSET_ERR_BITMAP_RANGE
		return errors.New("element is out of the range of the set")
	case nl.IPSET_ERR_TIMEOUT:
		return errors.New("timeout cannot be used: set was created without timeout support")
	case nl.IPSET_ERR_COUNTER:
		return errors.New("packet/byte counters cannot be used: set was created without counter support")
	case nl.IPSET_ERR_COMMENT:
		return errors.New("comment cannot be used: set was created without comment support")
	}
	if int(errno) >= nl.IPSET_ERR_PRIVATE {
		return fmt.Errorf("ipset: %w", nl.IPSetError(errno))
	}
	return err
}

// The conntrack netlink attributes the nl package does not name
// (include/uapi/linux/netfilter/nfnetlink_conntrack.h) and the tuple
// filter flags (net/netfilter/nf_internals.h).
const (
	ctaFilter          = 25 // CTA_FILTER
	ctaFilterOrigFlags = 1  // CTA_FILTER_ORIG_FLAGS

	ctaProtoSrcPort = 2 // CTA_PROTO_SRC_PORT
	ctaProtoDstPort = 3 // CTA_PROTO_DST_PORT

	ipctnlMsgCtGetStats   = 5 // IPCTNL_MSG_CT_GET_STATS
	ctaStatsGlobalEntries = 1 // CTA_STATS_GLOBAL_ENTRIES

	ctFilterIPSrc   = 1 << 0
	ctFilterIPDst   = 1 << 1
	ctFilterProto   = 1 << 3
	ctFilterSrcPort = 1 << 4
	ctFilterDstPort = 1 << 5
)

// ctTuple renders one direction of a filter as a CTA_TUPLE_* attribute
// and its filter flags (0: nothing to filter in that direction).
func ctTuple(typ int, proto uint8, src, dst netip.Addr, sport, dport uint16) (*nl.RtAttr, uint32) {
	var flags uint32
	t := nl.NewRtAttr(typ|unix.NLA_F_NESTED, nil)
	ip := t.AddRtAttr(nl.CTA_TUPLE_IP|unix.NLA_F_NESTED, nil)
	if src.IsValid() {
		a := src.As4()
		ip.AddRtAttr(nl.CTA_IP_V4_SRC, a[:])
		flags |= ctFilterIPSrc
	}
	if dst.IsValid() {
		a := dst.As4()
		ip.AddRtAttr(nl.CTA_IP_V4_DST, a[:])
		flags |= ctFilterIPDst
	}
	if proto != 0 {
		p := t.AddRtAttr(nl.CTA_TUPLE_PROTO|unix.NLA_F_NESTED, nil)
		p.AddRtAttr(nl.CTA_PROTO_NUM, []byte{proto})
		flags |= ctFilterProto
		if sport != 0 {
			p.AddRtAttr(ctaProtoSrcPort, nl.BEUint16Attr(sport))
			flags |= ctFilterSrcPort
		}
		if dport != 0 {
			p.AddRtAttr(ctaProtoDstPort, nl.BEUint16Attr(dport))
			flags |= ctFilterDstPort
		}
	}
	return t, flags
}

func ctRequest(msg, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(msg|unix.NFNL_SUBSYS_CTNETLINK<<8, flags)
	req.AddData(nfgen())
	return req
}

func (c *nlConn) ConntrackList(f ctFilter) ([]ctFlow, error) {
	if f.empty() {
		return nil, errors.New("listing conntrack flows: empty filter")
	}
	req := ctRequest(nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
	orig, origFlags := ctTuple(nl.CTA_TUPLE_ORIG, f.Proto, f.OrigSrc, f.OrigDst, 0, 0)
	filter := nl.NewRtAttr(ctaFilter|unix.NLA_F_NESTED, nil)
	if origFlags != 0 {
		req.AddData(orig)
		filter.AddRtAttr(ctaFilterOrigFlags, nl.Uint32Attr(origFlags))
	}
	req.AddData(filter)
	var flows []ctFlow
	var perr error
	socks := <-c.ct
	defer func() { c.ct <- socks }()
	var err error
	// The table may change during the dump (a resize can make the walk
	// skip flows that were there all along): the kernel says so, and the
	// dump is taken again, up to three times; then what was read stands.
	for attempt := 1; ; attempt++ {
		flows, perr = nil, nil
		err = execute(socks, req, func(msg []byte) bool {
			fl, err := parseFlow(msg)
			if err != nil {
				perr = err
				return false
			}
			if f.match(fl) {
				flows = append(flows, fl)
			}
			return true
		})
		if !errors.Is(err, nl.ErrDumpInterrupted) || attempt == 3 {
			break
		}
	}
	if errors.Is(err, nl.ErrDumpInterrupted) {
		err = nil
	}
	if err = errors.Join(err, perr); err != nil {
		return nil, fmt.Errorf("listing conntrack flows: %w", err)
	}
	return flows, nil
}

func (c *nlConn) ConntrackCount() (int, error) {
	// The kernel flags its one answer NLM_F_MULTI and sends no
	// NLMSG_DONE: the ack ends the exchange.
	req := ctRequest(ipctnlMsgCtGetStats, unix.NLM_F_ACK)
	n := -1
	var perr error
	socks := <-c.ct
	defer func() { c.ct <- socks }()
	err := execute(socks, req, func(msg []byte) bool {
		n, perr = parseCount(msg)
		return perr == nil
	})
	if err = errors.Join(err, perr); err != nil {
		return 0, fmt.Errorf("counting conntrack entries: %w", err)
	}
	if n < 0 {
		return 0, errors.New("counting conntrack entries: no answer")
	}
	return n, nil
}

// parseCount reads CTA_STATS_GLOBAL_ENTRIES of a stats answer.
func parseCount(msg []byte) (int, error) {
	if len(msg) < nl.SizeofNfgenmsg {
		return 0, errors.New("short conntrack stats message")
	}
	attrs, err := parseAttrs(msg[nl.SizeofNfgenmsg:])
	if err != nil {
		return 0, fmt.Errorf("parsing conntrack stats: %w", err)
	}
	for _, a := range attrs {
		if a.typ == ctaStatsGlobalEntries && len(a.val) == 4 {
			return int(binary.BigEndian.Uint32(a.val)), nil
		}
	}
	return 0, errors.New("conntrack stats without the entry count")
}

func (c *nlConn) ConntrackDelete(fl ctFlow) error {
	req := ctRequest(nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
	req.AddRawData(fl.del)
	socks := <-c.ct
	defer func() { c.ct <- socks }()
	err := execute(socks, req, nil)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// parseFlow decodes one conntrack message (nfgenmsg, then attributes).
func parseFlow(msg []byte) (ctFlow, error) {
	var fl ctFlow
	if len(msg) < nl.SizeofNfgenmsg {
		return fl, errors.New("short conntrack message")
	}
	attrs, err := parseAttrs(msg[nl.SizeofNfgenmsg:])
	if err != nil {
		return fl, fmt.Errorf("parsing a conntrack message: %w", err)
	}
	for _, a := range attrs {
		switch a.typ {
		case nl.CTA_TUPLE_ORIG:
			if err := parseTuple(a.val, &fl.Proto, &fl.OrigSrc, &fl.OrigDst, &fl.OrigSport, &fl.OrigDport); err != nil {
				return fl, err
			}
			fl.del = append(fl.del, a.raw...)
		case nl.CTA_TUPLE_REPLY:
			var p uint8
			if err := parseTuple(a.val, &p, &fl.ReplySrc, &fl.ReplyDst, &fl.ReplySport, &fl.ReplyDport); err != nil {
				return fl, err
			}
		case nl.CTA_ID, nl.CTA_ZONE:
			fl.del = append(fl.del, a.raw...)
		}
	}
	if !fl.OrigSrc.IsValid() {
		return fl, errors.New("conntrack message without an IPv4 original tuple")
	}
	return fl, nil
}

func parseTuple(b []byte, proto *uint8, src, dst *netip.Addr, sport, dport *uint16) error {
	attrs, err := parseAttrs(b)
	if err != nil {
		return fmt.Errorf("parsing a conntrack tuple: %w", err)
	}
	for _, a := range attrs {
		switch a.typ {
		case nl.CTA_TUPLE_IP:
			ips, err := parseAttrs(a.val)
			if err != nil {
				return fmt.Errorf("parsing a conntrack tuple: %w", err)
			}
			for _, ip := range ips {
				addr, ok := netip.AddrFromSlice(ip.val)
				if !ok || !addr.Is4() {
					continue
				}
				switch ip.typ {
				case nl.CTA_IP_V4_SRC:
					*src = addr
				case nl.CTA_IP_V4_DST:
					*dst = addr
				}
			}
		case nl.CTA_TUPLE_PROTO:
			ps, err := parseAttrs(a.val)
			if err != nil {
				return fmt.Errorf("parsing a conntrack tuple: %w", err)
			}
			for _, p := range ps {
				switch {
				case p.typ == nl.CTA_PROTO_NUM && len(p.val) >= 1:
					*proto = p.val[0]
				case p.typ == ctaProtoSrcPort && len(p.val) >= 2:
					*sport = binary.BigEndian.Uint16(p.val)
				case p.typ == ctaProtoDstPort && len(p.val) >= 2:
					*dport = binary.BigEndian.Uint16(p.val)
				}
			}
		}
	}
	return nil
}

// nlAttr is one netlink attribute: its type without the nested and
// byte-order flags, its payload, and its whole encoding (padded).
type nlAttr struct {
	typ      uint16
	val, raw []byte
}

// parseAttrs splits b into attributes, refusing any that does not fit.
// (The netlink library's ParseRouteAttr panics on some malformed input.)
func parseAttrs(b []byte) ([]nlAttr, error) {
	var out []nlAttr
	for len(b) > 0 {
		if len(b) < unix.SizeofRtAttr {
			return nil, fmt.Errorf("%d stray bytes after the attributes", len(b))
		}
		n := int(nl.NativeEndian().Uint16(b[0:2]))
		if n < unix.SizeofRtAttr || n > len(b) {
			return nil, fmt.Errorf("attribute of length %d in %d bytes", n, len(b))
		}
		padded := min((n+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1), len(b))
		out = append(out, nlAttr{typ: nl.NativeEndian().Uint16(b[2:4]) & nl.NLA_TYPE_MASK, val: b[unix.SizeofRtAttr:n], raw: b[:padded]})
		b = b[padded:]
	}
	return out, nil
}

// listNL reads sets through netlink into the same entries parseSave makes
// of `ipset list -o save`.
func (k *Kernel) listNL(only netip.Addr, names ...string) (map[string][]entry, error) {
	all := make(map[string][]entry, len(names))
	for _, n := range names {
		es, err := k.nl.IpsetList(n, only)
		if err != nil {
			return nil, fmt.Errorf("listing set %s: %w", n, err)
		}
		all[n] = es
	}
	return all, nil
}
