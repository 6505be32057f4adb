//go:build !linux

package control

import (
	"errors"
	"net"
)

type peerCred struct {
	PID int32
	UID uint32
	GID uint32
}

// errPeerCredUnsupported: off Linux the socket's file permissions are the
// only check (the gateway runs on Linux; this keeps laptops building).
var errPeerCredUnsupported = errors.New("peer credentials are not supported on this system")

func readPeerCred(net.Conn) (peerCred, error) { return peerCred{}, errPeerCredUnsupported }
