package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// setting is one sysctl under /proc/sys; with atLeast, value is a minimum
// (a larger value is left alone).
type setting struct {
	path, value string
	atLeast     bool
}

// kernelSettings are the sysctls a gateway needs in its network namespace.
// IPv4 forwarding, of course. And br_netfilter off: when the client network
// is a bridge, bridge-nf-call-iptables makes bridged frames pass iptables at
// the bridge too, and with the IFB redirect that shapes uploads the
// conntrack entry of a captive client's DNAT to the portal is lost, so the
// portal's replies go out un-NATed. The gateway routes, it does not need to
// filter bridged frames (the access points isolate clients from each other).
//
// And a neighbour table that holds every client: Linux keeps at most
// gc_thresh3 entries (1,024 by default) for all interfaces and namespaces
// together; past it, the gateway cannot answer a new client at all
// ("neighbor table overflow"). The limits are raised, never lowered, to
// the client network's size plus room for the uplink: twice that for IPv6,
// where a phone often has two addresses. They are the host's, visible only
// in its first network namespace: elsewhere (a lab, a container) they are
// left to the host and the wanted values are logged.
func kernelSettings(clients netip.Prefix) []setting {
	hosts := 1<<(32-clients.Bits()) - 2
	return []setting{
		{path: "net/ipv4/ip_forward", value: "1"},
		{path: "net/bridge/bridge-nf-call-iptables", value: "0"},
		{path: "net/bridge/bridge-nf-call-ip6tables", value: "0"},
		{path: "net/bridge/bridge-nf-call-arptables", value: "0"},
		{path: "net/ipv4/neigh/default/gc_thresh2", value: strconv.Itoa(hosts + 512), atLeast: true},
		{path: "net/ipv4/neigh/default/gc_thresh3", value: strconv.Itoa(hosts + 1024), atLeast: true},
		{path: "net/ipv6/neigh/default/gc_thresh2", value: strconv.Itoa(2*hosts + 512), atLeast: true},
		{path: "net/ipv6/neigh/default/gc_thresh3", value: strconv.Itoa(2*hosts + 1024), atLeast: true},
	}
}

// tuneKernel applies kernelSettings under root (/proc/sys).
func tuneKernel(log *slog.Logger, root string, clients netip.Prefix) error {
	var hostWide []string
	for _, s := range kernelSettings(clients) {
		path := filepath.Join(root, s.path)
		cur, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			if s.atLeast {
				hostWide = append(hostWide, strings.ReplaceAll(s.path, "/", ".")+">="+s.value)
			}
			continue // br_netfilter not loaded: nothing to turn off
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		have := strings.TrimSpace(string(cur))
		if have == s.value {
			continue
		}
		if s.atLeast {
			n, err := strconv.Atoi(have)
			if err != nil {
				return fmt.Errorf("reading %s: %q is not a number", path, have)
			}
			if want, _ := strconv.Atoi(s.value); n >= want {
				continue
			}
		}
		if err := os.WriteFile(path, []byte(s.value), 0o644); err != nil {
			return fmt.Errorf("setting %s to %s: %w", path, s.value, err)
		}
		log.Info("kernel setting changed", "path", path, "from", have, "to", s.value)
	}
	if len(hostWide) > 0 {
		log.Info("neighbour table limits are the host's (not visible in this network namespace): the client network needs "+strings.Join(hostWide, " "), "client_network", clients)
	}
	return nil
}
