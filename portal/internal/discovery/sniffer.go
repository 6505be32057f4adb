package discovery

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

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
//
// The frames arrive in a TPACKET_V3 ring shared with the kernel: it fills
// a block of frames and wakes the reader only when the block is full or
// ringWait has passed since its first frame, never per frame. A client's
// 5,000 frames/s, each waking the daemon through the poller, took 15% of a
// core; in blocks they cost ~100 wake-ups a second, none when nothing
// arrives.
type packetSocket struct {
	f    *os.File
	rc   syscall.RawConn
	mac  net.HardwareAddr // the interface's own address
	snap int              // frames longer than this are cut short
	ring []byte           // ringBlocks blocks of ringBlockSize bytes
	// block is the block read next (or now, when held); off and left say
	// where its next frame is and how many remain.
	block      int
	held       bool
	off        int
	left       uint32
	ready      func(fd uintptr) bool
	err        error // the socket's error (set by take)
	blocksRead int   // blocks taken from the kernel (tests)
}

// The ring: 4 blocks of 128 KiB (512 KiB of the daemon's RSS once
// touched). A frame cut to headerSnap takes ~170 bytes of a block (its
// tpacket3_hdr and sockaddr_ll first), so the ring holds ~3,000 of them:
// 30 ms of a busy site's 100,000 frames/s, three times ringWait. ARP and
// DHCP frames take up to fullSnap.
const (
	ringBlockSize = 128 << 10
	ringBlocks    = 4
	ringFrameSize = 2048 // only checked by the kernel: V3 frames take what they need
	ringWait      = 10   // ms: a block is handed over at most this long after its first frame
)

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
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("choosing TPACKET_V3: %w", os.NewSyscallError("setsockopt", err))
	}
	req := unix.TpacketReq3{Block_size: ringBlockSize, Block_nr: ringBlocks, Frame_size: ringFrameSize,
		Frame_nr: ringBlockSize / ringFrameSize * ringBlocks, Retire_blk_tov: ringWait}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setting up the receive ring: %w", os.NewSyscallError("setsockopt", err))
	}
	ring, err := unix.Mmap(fd, 0, ringBlockSize*ringBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mapping the receive ring: %w", os.NewSyscallError("mmap", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Munmap(ring)
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	s := &packetSocket{f: os.NewFile(uintptr(fd), "packet:"+ifname), mac: ifi.HardwareAddr, snap: snap, ring: ring}
	if s.rc, err = s.f.SyscallConn(); err != nil {
		s.Close()
		return nil, err
	}
	s.ready = s.take
	return s, nil
}

// blockStatus is the status word of block i (struct tpacket_block_desc:
// version, offset_to_priv, then tpacket_hdr_v1's block_status).
func (s *packetSocket) blockStatus(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&s.ring[i*ringBlockSize+8]))
}

// read returns the next frame, valid until the next read.
func (s *packetSocket) read() ([]byte, error) {
	for {
		if s.held && s.left > 0 {
			return s.next()
		}
		if s.held { // done with it: back to the kernel
			atomic.StoreUint32(s.blockStatus(s.block), unix.TP_STATUS_KERNEL)
			s.held, s.block = false, (s.block+1)%ringBlocks
		}
		if err := s.rc.Read(s.ready); err != nil {
			return nil, err
		}
		if s.err != nil {
			return nil, os.NewSyscallError("recv", s.err)
		}
	}
}

// take takes the block due if the kernel has handed it over; false asks
// the poller to wait (the kernel signals each block it hands over, and an
// error such as ENETDOWN when the interface goes).
func (s *packetSocket) take(fd uintptr) bool {
	if atomic.LoadUint32(s.blockStatus(s.block))&unix.TP_STATUS_USER == 0 {
		e, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			s.err = err
		case e != 0:
			s.err = unix.Errno(e)
		}
		return s.err != nil
	}
	b := s.ring[s.block*ringBlockSize:]
	s.left = binary.NativeEndian.Uint32(b[12:16])                             // num_pkts
	s.off = s.block*ringBlockSize + int(binary.NativeEndian.Uint32(b[16:20])) // offset_to_first_pkt
	s.held = true
	s.blocksRead++
	return true
}

// next returns the frame at off in the held block (struct tpacket3_hdr:
// tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status,
// tp_mac). A header pointing out of its block ends the block.
func (s *packetSocket) next() ([]byte, error) {
	end := (s.block + 1) * ringBlockSize
	h := s.ring[s.off:end]
	if len(h) < 26 {
		s.left = 0
		return nil, errors.New("reading the receive ring: a frame header out of its block")
	}
	nextOff := int(binary.NativeEndian.Uint32(h[0:4]))
	snap := int(binary.NativeEndian.Uint32(h[12:16]))
	mac := int(binary.NativeEndian.Uint16(h[24:26]))
	if mac+snap > len(h) || (s.left > 1 && (nextOff <= 0 || nextOff >= len(h))) {
		s.left = 0
		return nil, errors.New("reading the receive ring: a frame out of its block")
	}
	s.left--
	s.off += nextOff
	snap = min(snap, s.snap)
	return h[mac : mac+snap : mac+snap], nil
}

// interrupt makes a blocked read, and every later one, fail at once.
func (s *packetSocket) interrupt() { s.f.SetReadDeadline(time.Unix(1, 0)) }

func (s *packetSocket) Close() error {
	err := s.f.Close()
	if s.ring != nil {
		unix.Munmap(s.ring)
		s.ring = nil
	}
	return err
}

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
