package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/civicwifi/civicwifi/portal/internal/control"
)

// Logout ends the session of the client at ip because the resident asked
// to (the portal's logout button). No session is not an error: the page
// says "logged out" either way. A logout never locks the device out.
func (g *Gateway) Logout(ctx context.Context, ip netip.Addr) error {
	_, err := g.Close(ctx, nil, ip.Unmap(), "logout")
	if errors.Is(err, control.ErrNotFound) {
		return nil
	}
	return err
}

// Identify returns the MAC of the client the gateway sees at ip (from DHCP
// and the sniffer, else the neighbour table): the resident login tells the
// controller which device is asking.
func (g *Gateway) Identify(ip netip.Addr) (net.HardwareAddr, error) {
	mac, _, err := g.identify(nil, ip)
	return mac, err
}
