package firewall

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The clients' sets (cw-auth, cw-acct, cw-dl: thousands of elements each)
// are read every second by Usage and every two by Reconcile. Those
// readings are decoded in place into clientElem values (no pointers, no
// strings) kept in slices reused from one reading to the next, and looked
// up by address through a dense index over the client subnet (the sets'
// bitmap range): a reading of 10,000 elements allocates nothing once the
// slices have grown, so the idle daemon makes little garbage for the
// collector under its soft memory limit. The netlink listing itself goes
// through a blocking socket of its own read into one reused buffer (the
// netlink library's Receive allocates 64 KiB, and copies, per datagram).

// clientElem is one element of a client set.
type clientElem struct {
	ip          uint32 // IPv4, as a big-endian number
	timeout     uint32 // seconds left; 0: none
	packets     uint64
	bytes       uint64
	quota       uint64 // cw-acct: the quota its comment carries (parseQuotaComment)
	mac         [6]byte
	hasMAC      bool // cw-auth
	hasCounters bool
}

// clientSet is one reading of a client set.
type clientSet struct {
	elems []clientElem
	base  uint32  // the subnet's first address
	pos   []int32 // by address - base: index in elems + 1; 0: absent
}

func be32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// start empties s for a new reading of a set over subnet.
func (s *clientSet) start(subnet netip.Prefix) {
	base, n := be32(subnet.Masked().Addr()), 1<<(32-subnet.Bits())
	if s.base != base || len(s.pos) != n {
		s.base, s.pos = base, make([]int32, n)
	} else {
		for _, e := range s.elems { // only what the last reading set
			if off := e.ip - base; e.ip >= base && int(off) < n {
				s.pos[off] = 0
			}
		}
	}
	s.elems = s.elems[:0]
}

// index makes get find the elements read since start. Elements outside the
// subnet (a bitmap set holds none) stay in elems only.
func (s *clientSet) index() {
	for i, e := range s.elems {
		if off := e.ip - s.base; e.ip >= s.base && int(off) < len(s.pos) {
			s.pos[off] = int32(i + 1)
		}
	}
}

// get returns the element of address v (as be32 gives it).
func (s *clientSet) get(v uint32) (*clientElem, bool) {
	off := v - s.base
	if v < s.base || int(off) >= len(s.pos) || s.pos[off] == 0 {
		return nil, false
	}
	return &s.elems[s.pos[off]-1], true
}

// clientSets holds the readings of the three client sets, reused by Usage
// and Reconcile (one at a time: mu).
type clientSets struct {
	mu             sync.Mutex
	auth, acct, dl clientSet
	wanted         []bool // Reconcile's scratch: by address - base
}

// readClientSet reads the named client set into s.
func (k *Kernel) readClientSet(ctx context.Context, name string, s *clientSet) error {
	s.start(k.cfg.Subnet)
	if k.nl != nil {
		var err error
		if s.elems, err = k.nl.IpsetElems(name, s.elems); err != nil {
			s.elems = s.elems[:0]
			return fmt.Errorf("listing set %s: %w", name, err)
		}
	} else {
		out, err := k.run.Run(ctx, "", "ipset", "list", name, "-o", "save")
		if err != nil {
			return fmt.Errorf("listing set %s: %w", name, err)
		}
		m, err := parseSave(out)
		if err != nil {
			return fmt.Errorf("parsing set %s: %w", name, err)
		}
		s.elems = appendEntries(s.elems, m[name])
	}
	s.index()
	return nil
}

// appendEntries appends the entries of a client set, as parseSave or
// parseIpsetList give them, as clientElems. An entry whose key is not an
// IPv4 address (none in a bitmap set) is left out.
func appendEntries(into []clientElem, es []entry) []clientElem {
	for _, e := range es {
		ip, err := netip.ParseAddr(e.Key)
		if err != nil || !ip.Is4() {
			continue
		}
		c := clientElem{ip: be32(ip), timeout: uint32(e.Timeout), packets: e.Packets, bytes: e.Bytes,
			quota: parseQuotaComment(e.Comment), hasCounters: e.HasCounters}
		if mac, err := net.ParseMAC(e.MAC); err == nil && len(mac) == 6 {
			c.mac, c.hasMAC = [6]byte(mac), true
		}
		into = append(into, c)
	}
	return into
}

// attrIter walks netlink attributes in place.
type attrIter struct {
	b   []byte
	typ uint16
	val []byte
	err error
}

// next moves to the next attribute; false at the end or on malformed
// input (err says which).
func (it *attrIter) next() bool {
	if len(it.b) == 0 || it.err != nil {
		return false
	}
	if len(it.b) < unix.SizeofRtAttr {
		it.err = fmt.Errorf("%d stray bytes after the attributes", len(it.b))
		return false
	}
	n := int(binary.NativeEndian.Uint16(it.b[0:2]))
	if n < unix.SizeofRtAttr || n > len(it.b) {
		it.err = fmt.Errorf("attribute of length %d in %d bytes", n, len(it.b))
		return false
	}
	it.typ = binary.NativeEndian.Uint16(it.b[2:4]) & nl.NLA_TYPE_MASK
	it.val = it.b[unix.SizeofRtAttr:n]
	it.b = it.b[min((n+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1), len(it.b)):]
	return true
}

// appendClientElems decodes the elements in one message of an ipset
// listing of a client set (see parseIpsetList) and appends them to into.
// It allocates nothing but into's growth. An element with a prefix length
// other than /32 is left out, as parseIpsetList's key would not be an
// address.
func appendClientElems(into []clientElem, msg []byte) ([]clientElem, error) {
	if len(msg) < nl.SizeofNfgenmsg {
		return into, errors.New("short ipset message")
	}
	top := attrIter{b: msg[nl.SizeofNfgenmsg:]}
	for top.next() {
		if top.typ != nl.IPSET_ATTR_ADT {
			continue
		}
		datas := attrIter{b: top.val}
		for datas.next() {
			if datas.typ != nl.IPSET_ATTR_DATA {
				continue
			}
			e, ok, err := decodeClientElem(datas.val)
			if err != nil {
				return into, fmt.Errorf("parsing an ipset listing: %w", err)
			}
			if ok {
				into = append(into, e)
			}
		}
		if datas.err != nil {
			return into, fmt.Errorf("parsing an ipset listing: %w", datas.err)
		}
	}
	if top.err != nil {
		return into, fmt.Errorf("parsing an ipset listing: %w", top.err)
	}
	return into, nil
}

// decodeClientElem decodes one IPSET_ATTR_DATA, like parseIpsetElem.
func decodeClientElem(b []byte) (e clientElem, ok bool, err error) {
	var haveIP, v6 bool
	cidr := 32
	f := attrIter{b: b}
	for f.next() {
		switch v := f.val; {
		case f.typ == nl.IPSET_ATTR_IP:
			a := attrIter{b: v}
			for a.next() {
				// As parseIpsetElem: the length says the family.
				if a.typ != nl.IPSET_ATTR_IPADDR_IPV4 && a.typ != nl.IPSET_ATTR_IPADDR_IPV6 {
					continue
				}
				switch len(a.val) {
				case 4:
					e.ip, haveIP, v6 = binary.BigEndian.Uint32(a.val), true, false
				case 16:
					haveIP, v6 = true, true
				}
			}
			if a.err != nil {
				return e, false, a.err
			}
		case f.typ == nl.IPSET_ATTR_CIDR && len(v) == 1:
			cidr = int(v[0])
		case f.typ == nl.IPSET_ATTR_ETHER && len(v) == 6:
			e.mac, e.hasMAC = [6]byte(v), true
		case f.typ == nl.IPSET_ATTR_TIMEOUT && len(v) == 4:
			e.timeout = binary.BigEndian.Uint32(v)
		case f.typ == nl.IPSET_ATTR_PACKETS && len(v) == 8:
			e.packets, e.hasCounters = binary.BigEndian.Uint64(v), true
		case f.typ == nl.IPSET_ATTR_BYTES && len(v) == 8:
			e.bytes, e.hasCounters = binary.BigEndian.Uint64(v), true
		case f.typ == nl.IPSET_ATTR_COMMENT:
			e.quota = quotaOfComment(v)
		}
	}
	if f.err != nil {
		return e, false, f.err
	}
	if !haveIP {
		return e, false, errors.New("element without an address")
	}
	return e, !v6 && cidr == 32, nil
}

// quotaOfComment is parseQuotaComment of a NUL-terminated comment
// attribute, without making a string of it.
func quotaOfComment(v []byte) uint64 {
	if i := slices.Index(v, 0); i >= 0 {
		v = v[:i]
	}
	return parseQuotaComment(v)
}

// nlDump lists the client sets: a blocking NETLINK_NETFILTER socket of its
// own, read into one reused buffer, with a receive timeout.
type nlDump struct {
	mu   sync.Mutex
	sock *nl.NetlinkSocket
	pid  uint32
	seq  uint32
	buf  []byte
}

// nlDumpBuf holds one datagram of a dump: the kernel fills at most 32 KiB.
const nlDumpBuf = 64 << 10

func openNLDump(ns netns.NsHandle) (*nlDump, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	fd := s.GetFd()
	err = errors.Join(unix.SetNonblock(fd, false),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: nlTimeout}),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: nlTimeout}))
	var pid uint32
	if err == nil {
		var sa unix.Sockaddr
		if sa, err = unix.Getsockname(fd); err == nil {
			if a, ok := sa.(*unix.SockaddrNetlink); ok {
				pid = a.Pid
			} else {
				err = errors.New("netlink socket without a netlink address")
			}
		}
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return &nlDump{sock: s, pid: pid, buf: make([]byte, nlDumpBuf)}, nil
}

func (d *nlDump) close() { d.sock.Close() }

// list sends req (a dump request) and calls f with the payload of each
// message of the answer.
func (d *nlDump) list(req *nl.NetlinkRequest, f func(msg []byte) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	req.Seq = d.seq
	fd := d.sock.GetFd()
	if err := unix.Sendto(fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending netlink request: %w", err)
	}
	var ferr error
	intr := false
	for {
		n, _, err := unix.Recvfrom(fd, d.buf, unix.MSG_TRUNC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading netlink: %w", err)
		}
		if n > len(d.buf) {
			return fmt.Errorf("reading netlink: a datagram of %d bytes", n)
		}
		b := d.buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			h := unix.NlMsghdr{Len: binary.NativeEndian.Uint32(b[0:4]), Type: binary.NativeEndian.Uint16(b[4:6]),
				Flags: binary.NativeEndian.Uint16(b[6:8]), Seq: binary.NativeEndian.Uint32(b[8:12]), Pid: binary.NativeEndian.Uint32(b[12:16])}
			l := int(h.Len)
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("reading netlink: message of %d bytes in %d", l, len(b))
			}
			data := b[unix.NLMSG_HDRLEN:l]
			b = b[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
			if h.Seq != d.seq || h.Pid != d.pid {
				continue // the rest of an earlier request's answer
			}
			if h.Flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			switch h.Type {
			case unix.NLMSG_DONE, unix.NLMSG_ERROR:
				if len(data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(data[:4])); code != 0 {
						return ipsetError(unix.Errno(-code))
					}
				}
				if ferr == nil && intr {
					ferr = nl.ErrDumpInterrupted
				}
				return ferr
			}
			if ferr == nil {
				ferr = f(data)
			}
		}
	}
}

// IpsetElems reads the elements of a client set, appended to into[:0].
func (c *nlConn) IpsetElems(name string, into []clientElem) ([]clientElem, error) {
	into = into[:0]
	err := c.dump.list(c.ipsetRequest(nl.IPSET_CMD_LIST, unix.NLM_F_DUMP, name), func(msg []byte) error {
		var err error
		into, err = appendClientElems(into, msg)
		return err
	})
	return into, err
}
