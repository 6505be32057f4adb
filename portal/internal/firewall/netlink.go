package firewall

import (
	"fmt"
	"net"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nlSets is the netlink side of ipset, used on the hot path: reading the
// clients' sets (the counters poll every second and the reconcile every
// two, with thousands of elements). An `ipset list` exec forks and prints
// and parses about 100 bytes of text per element; netlink hands over the
// elements for a fraction of the CPU and garbage. Writes stay with the
// ipset command (the netlink library cannot set an element's counters,
// which a grant's quota offset needs), and so does everything when nlSets
// is nil (the unit tests' fake kernel).
type nlSets interface {
	IpsetList(name string) (*netlink.IPSetResult, error)
}

// openNL opens a netfilter netlink handle in the named network namespace
// ("" is the caller's own).
func openNL(netnsName string) (*netlink.Handle, error) {
	if netnsName == "" {
		return netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	ns, err := netns.GetFromName(netnsName)
	if err != nil {
		return nil, fmt.Errorf("opening namespace %s: %w", netnsName, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
}

// listNL reads sets through netlink into the same entries parseSave makes
// of `ipset list -o save`.
func (k *Kernel) listNL(names ...string) (map[string][]entry, error) {
	all := make(map[string][]entry, len(names))
	for _, n := range names {
		res, err := k.nl.IpsetList(n)
		if err != nil {
			return nil, fmt.Errorf("listing set %s: %w", n, err)
		}
		es := make([]entry, 0, len(res.Entries))
		for _, e := range res.Entries {
			es = append(es, entryOf(e))
		}
		all[n] = es
	}
	return all, nil
}

// entryOf converts a netlink element the way ipset prints it: a hash:net
// host route without /32, MACs in lower case.
func entryOf(e netlink.IPSetEntry) entry {
	out := entry{Comment: e.Comment}
	if ip4 := e.IP.To4(); ip4 != nil {
		out.Key = ip4.String()
	} else if e.IP != nil {
		out.Key = e.IP.String()
	}
	if e.CIDR != 0 && !(e.IP.To4() != nil && e.CIDR == 32) && !(e.IP.To4() == nil && e.CIDR == 128) {
		out.Key += "/" + strconv.Itoa(int(e.CIDR))
	}
	if len(e.MAC) == 6 {
		out.MAC = net.HardwareAddr(e.MAC).String()
	}
	if e.Timeout != nil {
		out.Timeout = int64(*e.Timeout)
	}
	if e.Packets != nil {
		out.Packets, out.HasCounters = *e.Packets, true
	}
	if e.Bytes != nil {
		out.Bytes, out.HasCounters = *e.Bytes, true
	}
	return out
}
