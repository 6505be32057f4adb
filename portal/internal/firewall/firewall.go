// Package firewall enforces who may pass through the gateway, with the
// kernel's iptables (through go-iptables) and ipset.
//
// Authorised clients live in kernel sets, never in one rule per client:
//
//	cw-auth  bitmap:ip,mac  the authorised IP+MAC pairs (upload check, O(1)); kernel timeout = session end
//	cw-acct  bitmap:ip      counters: bytes/packets both directions; quota enforced with --bytes-gt
//	cw-dl    bitmap:ip      counters: download direction only (so up = acct - dl)
//	cw-garden-net hash:net  static walled garden (exactly Config.GardenNets)
//	cw-garden hash:net      dynamic walled garden: dnsmasq adds resolved names, 1 h timeout
//
// cw-auth, cw-acct and cw-dl elements share the session's timeout. Clients
// are forwarded out of the uplink only; the garden is tcp 80/443, udp 443.
//
// Own chains (prefix "cw-") hold all rules; each built-in chain gets exactly one
// jump. Rules stay in place when the daemon stops, so the site fails closed
// and authorised clients keep working; Teardown removes only what Setup made.
package firewall

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// Client is one device on the client network: its IP paired with its MAC.
type Client struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// Grant is what the firewall needs to let one client through.
type Grant struct {
	Client
	// Expires is the absolute end of the session, enforced by the kernel
	// (set element timeout) even while the daemon is down. Zero: none.
	Expires time.Time
	// QuotaBytes is the session's data quota, down+up. Zero: unlimited.
	QuotaBytes uint64
	// UsedBytes is what the session already used, when re-adding a session
	// (restart or drift repair), so the quota and the counters carry on.
	UsedBytes uint64
	// UsedDownBytes is the download part of UsedBytes.
	UsedDownBytes uint64
}

// Usage is what the kernel counted for one authorised client since its grant
// (including the Used* values given at Allow time).
type Usage struct {
	Bytes     uint64 // down+up
	Packets   uint64 // down+up
	DownBytes uint64
	OverQuota bool
}

// Repairs counts what a Reconcile had to fix.
type Repairs struct {
	Rules   int // chains or jumps rebuilt
	Sets    int // sets re-created
	Entries int // set elements added, fixed or removed
}

// Total is the number of repairs of any kind.
func (r Repairs) Total() int { return r.Rules + r.Sets + r.Entries }

// Firewall is the behaviour the gateway needs.
type Firewall interface {
	// Setup creates the sets, own chains and one jump from each built-in
	// chain. Idempotent; never drops existing set elements.
	Setup(ctx context.Context) error
	// Allow authorises one client (or updates its grant, keeping counters).
	// O(1): set elements only.
	Allow(ctx context.Context, g Grant) error
	// Revoke makes clients captive again at once: set elements removed AND
	// their UDP/ICMP conntrack entries flushed (TCP entries stay, see the
	// README). Many clients in one call cost about what one costs. Revoking
	// an unknown client is not an error; an error names its client, and one
	// client's failure does not stop the others.
	Revoke(ctx context.Context, cs ...Client) error
	// Reconcile repairs drift (missing chains/jumps/sets, missing or extra
	// elements) so the kernel matches want. Harmless to repeat. With a
	// Guard, the kernel is read without it and repaired while holding it.
	Reconcile(ctx context.Context, want []Grant, g Guard) (Repairs, error)
	// Usage reads the kernel counters of every authorised client.
	Usage(ctx context.Context) (map[netip.Addr]Usage, error)
	// Teardown removes every chain, jump and set Setup made, and nothing
	// else. A missing one is fine.
	Teardown(ctx context.Context) error
}

// Guard lets a long Reconcile read the kernel without blocking allows and
// revokes. The caller takes want, then the kernel is read unlocked; the
// repairs are computed and applied between Lock and Unlock, which the
// caller's Allow and Revoke also respect. A client whose grant changed
// after want was taken is Stale: that round leaves it alone (its newer
// state is the caller's, not want's), and the next round checks it.
type Guard interface {
	Lock()
	Unlock()
	// Stale is called only between Lock and Unlock.
	Stale(ip netip.Addr) bool
}
