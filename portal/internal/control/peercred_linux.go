package control

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCred is who is on the other end of a unix socket connection, as the
// kernel saw it at connect(2) time (SO_PEERCRED); it cannot be forged.
type peerCred struct {
	PID int32
	UID uint32
	GID uint32
}

func readPeerCred(c net.Conn) (peerCred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peerCred{}, fmt.Errorf("reading peer credentials: %T is not a unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peerCred{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peerCred{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	if credErr != nil {
		return peerCred{}, fmt.Errorf("reading peer credentials: %w", credErr)
	}
	return peerCred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// errPeerCredUnsupported is never returned on Linux.
var errPeerCredUnsupported = errors.New("peer credentials are not supported on this system")
