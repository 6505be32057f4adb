package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Capture settings.
const (
	headerSnap = 14 + 60 // Ethernet + the largest IPv4 header
	fullSnap   = 2048    // ARP and DHCP frames are kept whole
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// Sniffer watches the client interface and feeds Table.
type Sniffer struct {
	Interface string       // e.g. "br-cw"
	Subnet    netip.Prefix // the client network, e.g. 10.20.0.0/22
	Table     *Table
	Log       *slog.Logger // nil: discard
}

// Run captures until ctx is cancelled (then it returns nil). When the
// socket fails (interface gone, down...) it reopens it with back-off.
//
// The AF_PACKET socket lives in the network namespace of the thread that
// opens it: to watch an interface in another namespace, call Run on a
// thread switched into it.
func (s *Sniffer) Run(ctx context.Context) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "discovery", "interface", s.Interface)
	if s.Table == nil {
		return errors.New("running sniffer: nil Table")
	}
	backoff := minBackoff
	for {
		start := time.Now()
		err := s.capture(ctx, log)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = minBackoff
		}
		log.Warn("capturing", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (s *Sniffer) capture(ctx context.Context, log *slog.Logger) error {
	sock, err := openPacketSocket(s.Interface, filter, fullSnap)
	if err != nil {
		return fmt.Errorf("opening %s: %w", s.Interface, err)
	}
	defer sock.Close()
	defer context.AfterFunc(ctx, sock.interrupt)() // a blocked read returns at once on cancel
	log.Info("capturing", "subnet", s.Subnet, "mac", sock.mac.String())
	for {
		if ctx.Err() != nil {
			return nil
		}
		frame, err := sock.read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading %s: %w", s.Interface, err)
		}
		for _, host := range Parse(frame, s.Subnet, time.Now()) {
			if bytes.Equal(host.MAC, sock.mac) {
				continue
			}
			s.Table.Observe(host)
		}
	}
}

// packetSocket is an AF_PACKET socket bound to one interface, with a
// socket filter, read through the Go runtime's poller: a read parks the
// goroutine instead of blocking a thread, and interrupt (or Close) wakes it.
type packetSocket struct {
	f    *os.File
	rc   syscall.RawConn
	mac  net.HardwareAddr // the interface's own address
	buf  []byte           // frames longer than the buffer are cut short
	n    int              // result of the last recv
	err  error            // (set by recv)
	recv func(fd uintptr) bool
}

// openPacketSocket opens a packet socket that receives the frames of
// ifname that prog accepts (all of them, both directions, before prog),
// cut to snap bytes. It lives in the network namespace of the calling
// thread.
func openPacketSocket(ifname string, prog []bpf.RawInstruction, snap int) (*packetSocket, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	// Protocol 0: the socket receives nothing until bind, so no frame
	// arrives before the filter is attached.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	ins := make([]unix.SockFilter, len(prog))
	for i, r := range prog {
		ins[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attaching socket filter: %w", os.NewSyscallError("setsockopt", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	s := &packetSocket{f: os.NewFile(uintptr(fd), "packet:"+ifname), mac: ifi.HardwareAddr, buf: make([]byte, snap)}
	if s.rc, err = s.f.SyscallConn(); err != nil {
		s.f.Close()
		return nil, err
	}
	s.recv = s.recvOnce
	return s, nil
}

// read returns the next frame, valid until the next read.
func (s *packetSocket) read() ([]byte, error) {
	if err := s.rc.Read(s.recv); err != nil {
		return nil, err
	}
	if s.err != nil {
		return nil, os.NewSyscallError("recv", s.err)
	}
	return s.buf[:s.n], nil
}

// recvOnce reads one frame; false asks the poller to wait for the next.
func (s *packetSocket) recvOnce(fd uintptr) bool {
	for {
		s.n, s.err = unix.Read(int(fd), s.buf)
		if s.err != unix.EINTR {
			return s.err != unix.EAGAIN
		}
	}
}

// interrupt makes a blocked read, and every later one, fail at once.
func (s *packetSocket) interrupt() { s.f.SetReadDeadline(time.Unix(1, 0)) }

func (s *packetSocket) Close() error { return s.f.Close() }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// filter is the socket filter. Of the frames arriving from clients it keeps
// ARP and IPv4 UDP to ports 67/68 (DHCP) whole, and only the Ethernet and
// IPv4 headers of other IPv4 frames. Of the frames the gateway sends itself
// (PACKET_OUTGOING) it keeps only DHCP server replies (UDP from port 67),
// whose ACKs confirm a client's address.
var filter = mustAssemble([]bpf.Instruction{
	/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
	/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 14}, // to 16
	/* 2 */ bpf.LoadAbsolute{Off: 12, Size: 2},
	/* 3 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0806, SkipTrue: 10}, // ARP: 14
	/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipFalse: 10}, // not IPv4: 15
	/* 5 */ bpf.LoadAbsolute{Off: 23, Size: 1}, // IP protocol
	/* 6 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipFalse: 6}, // not UDP: 13
	/* 7 */ bpf.LoadAbsolute{Off: 20, Size: 2}, // flags + fragment offset
	/* 8 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4}, // a later fragment: 13
	/* 9 */ bpf.LoadMemShift{Off: 14}, // X = IP header length
	/* 10 */ bpf.LoadIndirect{Off: 14 + 2, Size: 2}, // UDP destination port
	/* 11 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 67, SkipTrue: 2}, // 14
	/* 12 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 68, SkipTrue: 1}, // 14
	/* 13 */ bpf.RetConstant{Val: headerSnap},
	/* 14 */ bpf.RetConstant{Val: fullSnap},
	/* 15 */ bpf.RetConstant{Val: 0},
	// Outgoing frames.
	/* 16 */ bpf.LoadAbsolute{Off: 12, Size: 2},
	/* 17 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipFalse: 7}, // 25
	/* 18 */ bpf.LoadAbsolute{Off: 23, Size: 1},
	/* 19 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipFalse: 5}, // 25
	/* 20 */ bpf.LoadAbsolute{Off: 20, Size: 2},
	/* 21 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 3}, // 25
	/* 22 */ bpf.LoadMemShift{Off: 14},
	/* 23 */ bpf.LoadIndirect{Off: 14, Size: 2}, // UDP source port
	/* 24 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 67, SkipTrue: 1}, // 26
	/* 25 */ bpf.RetConstant{Val: 0},
	/* 26 */ bpf.RetConstant{Val: fullSnap},
})

func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err)
	}
	return raw
}
