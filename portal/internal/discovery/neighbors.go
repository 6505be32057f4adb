package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
)

// Neighbors reads the kernel's IPv4 neighbour (ARP) table for ifname: the
// fallback for a client the Sniffer has not seen yet. Entries without a
// usable MAC (incomplete, failed, noarp) are skipped. The hosts carry
// Source "neighbor" and the current time.
//
// Like the Sniffer, it reads the network namespace of the calling thread.
func Neighbors(ifname string) ([]Host, error) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours of %s: %w", ifname, err)
	}
	neighs, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours of %s: %w", ifname, err)
	}
	now := time.Now()
	var out []Host
	for _, n := range neighs {
		if n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED|netlink.NUD_NOARP) != 0 || n.State == netlink.NUD_NONE {
			continue
		}
		if !unicastMAC(n.HardwareAddr) {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		out = append(out, Host{MAC: net.HardwareAddr(slices.Clone(n.HardwareAddr)), IP: ip.Unmap(),
			FirstSeen: now, LastSeen: now, Source: SourceNeighbor})
	}
	return out, nil
}
