// Package shaper limits each client's bandwidth with tc: HTB classes on the
// client interface for download, and on an IFB device (fed by an ingress
// mirred redirect) for upload, one HTB qdisc per /24 of the client subnet
// under the root (creating an HTB class costs time that grows with the
// classes of its qdisc). A client's class is found in O(1) with u32 hash
// tables keyed on the client's IP (third octet, then fourth), never by
// walking one filter per client. Changes and reads go through rtnetlink;
// the tc command does the rest (Setup, repairs of the tree).
package shaper

import (
	"context"
	"net/netip"

	"github.com/civicwifi/civicwifi/internal/quantity"
)

// Limit is one client's rates. A zero rate leaves that direction unshaped.
type Limit struct {
	IP   netip.Addr
	Down quantity.Rate
	Up   quantity.Rate
}

// Shaper is the behaviour the gateway needs.
type Shaper interface {
	// Setup installs the root qdiscs, the IFB device and the hash tables.
	// Idempotent; keeps existing client classes.
	Setup(ctx context.Context) error
	// Set adds or changes one client's classes and filters. O(1).
	Set(ctx context.Context, l Limit) error
	// Remove deletes one client's classes and filters; unknown IPs are fine.
	Remove(ctx context.Context, ip netip.Addr) error
	// Reconcile repairs drift so tc matches want; returns the repairs made.
	// It reads every class and filter: costly with thousands of clients,
	// so with a Guard that read happens unlocked.
	Reconcile(ctx context.Context, want []Limit, g Guard) (int, error)
	// Intact is a cheap check that the qdiscs and the IFB device are in
	// place; when it says no, Reconcile is due at once.
	Intact(ctx context.Context) (bool, error)
	// Teardown removes the qdiscs and the IFB device it made, nothing else.
	Teardown(ctx context.Context) error
}

// Guard lets Reconcile read tc without blocking Set and Remove: the caller
// takes want, tc is read unlocked, and the repairs are planned and applied
// between Lock and Unlock, which the caller's Set and Remove also respect.
// A client whose limit changed after want was taken is Stale and left to
// the next round. (The same contract as firewall.Guard.)
type Guard interface {
	Lock()
	Unlock()
	// Stale is called only between Lock and Unlock.
	Stale(ip netip.Addr) bool
}
