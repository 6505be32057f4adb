package shaper

import (
	"fmt"
	"net/netip"

	"github.com/civicwifi/civicwifi/internal/quantity"
)

// An op is one change to tc. Its String is the `tc -batch` line; the ops a
// client's Set or Remove needs (classes, leaves, host filters) can also be
// sent through netlink (nl.go), without a fork. Ops of kind opLine (qdiscs,
// tables, links, the ingress redirect: Setup and repairs) exist only as
// lines.
type op struct {
	kind   opKind
	line   string // opLine
	dev    string
	parent uint32 // opClass*: parent qdisc (major<<16); filters: qdisc (major<<16)
	id     uint32 // class: classid; leaf: parent classid; filter: u32 handle
	rate   quantity.Rate
	// opHost: match ip <field> ip/32 at offset, flowid.
	ip     netip.Addr
	field  string
	offset int
	flowid uint32
}

type opKind uint8

const (
	opLine        opKind = iota // a tc batch line
	opClass                     // class replace: add or change an HTB client class
	opClassChange               // class change
	opClassDel                  // class del
	opLeaf                      // qdisc replace: the pfifo leaf of a client class
	opHost                      // filter replace: a host filter
	opNodeDel                   // filter del: a u32 node
)

func (o op) String() string {
	switch o.kind {
	case opClass, opClassChange:
		verb := "replace"
		if o.kind == opClassChange {
			verb = "change"
		}
		p := paramsFor(o.rate)
		return fmt.Sprintf("class %s dev %s parent %s classid %s htb rate %dbit ceil %dbit burst %d cburst %d quantum %d",
			verb, o.dev, qdiscString(uint16(o.parent>>16)), classString(o.id), p.rateBytes*8, p.rateBytes*8, p.burst, p.burst, p.quantum)
	case opClassDel:
		return fmt.Sprintf("class del dev %s classid %s", o.dev, classString(o.id))
	case opLeaf:
		return fmt.Sprintf("qdisc replace dev %s parent %s pfifo limit %d", o.dev, classString(o.id), paramsFor(o.rate).limit)
	case opHost:
		return fmt.Sprintf("filter replace dev %s parent %s prio %d handle %s protocol ip u32 ht %s match ip %s %s/32 flowid %s",
			o.dev, qdiscString(uint16(o.parent>>16)), prio, handleString(o.id), bucketString(o.id), o.field, o.ip, classString(o.flowid))
	case opNodeDel:
		return fmt.Sprintf("filter del dev %s parent %s prio %d handle %s protocol ip u32", o.dev, qdiscString(uint16(o.parent>>16)), prio, handleString(o.id))
	}
	return o.line
}

// bucketString is the "ht" argument of a node: its table and bucket.
func bucketString(h uint32) string { return fmt.Sprintf("%x:%x:", h>>20, (h>>12)&0xff) }

func lineOp(format string, args ...any) op {
	return op{kind: opLine, line: fmt.Sprintf(format, args...)}
}

func lines(ops []op) []string {
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = o.String()
	}
	return out
}

// Structural objects: tc lines only.

func rootQdiscOp(dev string) op {
	return lineOp("qdisc replace dev %s root handle 1: htb default 0 r2q %d direct_qlen %d", dev, r2q, directQlen)
}

func rootQdiscDelOp(dev string) op { return lineOp("qdisc del dev %s root", dev) }

func ingressOps(clientIf, ifb string) []op {
	return []op{lineOp("qdisc replace dev %s ingress", clientIf), redirectOp(clientIf, ifb)}
}

func redirectOp(clientIf, ifb string) op {
	return lineOp("filter replace dev %s parent ffff: prio %d handle %s protocol ip u32 match u32 0 0 action mirred egress redirect dev %s",
		clientIf, prio, handleString(u32Handle(rootTable, 0, nodeID)), ifb)
}

// groupClassOp makes (or changes) a /24's class under the root.
func groupClassOp(dev string, o3 uint8) op {
	return lineOp("class replace dev %s parent 1: classid %s htb rate %dbit ceil %dbit burst %d cburst %d quantum %d",
		dev, classString(groupClass(o3)), uint64(groupRate), uint64(groupRate), groupBurst, groupBurst, mtuFrame)
}

// groupQdiscOp makes a /24's HTB qdisc, replacing whatever leaf its class had.
func groupQdiscOp(dev string, o3 uint8) op {
	return lineOp("qdisc replace dev %s parent %s handle %s htb default 0 r2q %d direct_qlen %d",
		dev, classString(groupClass(o3)), qdiscString(group(o3)), r2q, directQlen)
}

func groupQdiscDelOp(dev string, o3 uint8) op {
	return lineOp("qdisc del dev %s parent %s", dev, classString(groupClass(o3)))
}

func tableOp(dev string, major uint16, htid uint32) op {
	return lineOp("filter add dev %s parent %s prio %d handle %s protocol ip u32 divisor 256", dev, qdiscString(major), prio, handleString(htid<<20))
}

func tableDelOp(dev string, major uint16, htid uint32) op {
	return lineOp("filter del dev %s parent %s prio %d handle %s protocol ip u32", dev, qdiscString(major), prio, handleString(htid<<20))
}

func prioDelOp(dev string, major uint16, pref int) op {
	return lineOp("filter del dev %s parent %s prio %d", dev, qdiscString(major), pref)
}

// linkOp is a node in table.bucket that matches part and sends its packets
// to table link, hashed on hashMask of the address.
func linkOp(d direction, major uint16, handle uint32, part netip.Prefix, hashMask uint32, link uint32) op {
	return lineOp("filter replace dev %s parent %s prio %d handle %s protocol ip u32 ht %s match ip %s %s hashkey mask 0x%08x at %d link %s",
		d.dev, qdiscString(major), prio, handleString(handle), bucketString(handle), d.field, part, hashMask, d.offset, handleString(link<<20))
}

// Client objects: lines or netlink.

func classOp(kind opKind, dev string, ip netip.Addr, r quantity.Rate) op {
	id := clientClass(ip)
	return op{kind: kind, dev: dev, parent: id &^ 0xffff, id: id, rate: r}
}

func leafOp(dev string, ip netip.Addr, r quantity.Rate) op {
	return op{kind: opLeaf, dev: dev, id: clientClass(ip), rate: r}
}

// innerHostOp is the filter in the client's /24 qdisc that picks its class.
func innerHostOp(d direction, ip netip.Addr) op {
	id := clientClass(ip)
	return op{kind: opHost, dev: d.dev, parent: id &^ 0xffff, id: innerHostHandle(ip), ip: ip, field: d.field, offset: d.offset, flowid: id}
}

// outerHostOp is the filter in the root qdisc that sends the client's
// packets to its /24's class (only shaped clients: the others stay
// unclassified, so direct).
func outerHostOp(d direction, ip netip.Addr) op {
	return op{kind: opHost, dev: d.dev, parent: 1 << 16, id: outerHostHandle(ip), ip: ip, field: d.field, offset: d.offset, flowid: groupClass(third(ip))}
}

func nodeDelOp(dev string, major uint16, handle uint32) op {
	return op{kind: opNodeDel, dev: dev, parent: uint32(major) << 16, id: handle}
}

func outerHostHandle(ip netip.Addr) uint32 {
	return u32Handle(hostTable0+uint32(third(ip)), fourth(ip), nodeID)
}

func innerHostHandle(ip netip.Addr) uint32 {
	return u32Handle(innerTable, fourth(ip), nodeID)
}
