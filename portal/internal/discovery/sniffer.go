package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"github.com/google/gopacket/pcapgo"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Capture settings.
const (
	readTimeout = 250 * time.Millisecond // how soon Run notices cancellation
	headerSnap  = 14 + 60                // Ethernet + the largest IPv4 header
	fullSnap    = 2048                   // ARP and DHCP frames are kept whole
	minBackoff  = 500 * time.Millisecond
	maxBackoff  = 30 * time.Second
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
	h, err := pcapgo.NewEthernetHandle(s.Interface)
	if err != nil {
		return fmt.Errorf("opening %s: %w", s.Interface, err)
	}
	defer h.Close()
	if err := h.SetCaptureLength(fullSnap); err != nil {
		return fmt.Errorf("opening %s: %w", s.Interface, err)
	}
	if err := h.SetBPF(filter); err != nil {
		return fmt.Errorf("setting filter on %s: %w", s.Interface, err)
	}
	if err := setReadTimeout(h, readTimeout); err != nil {
		return fmt.Errorf("opening %s: %w", s.Interface, err)
	}
	own := h.LocalAddr()
	log.Info("capturing", "subnet", s.Subnet, "mac", own.String())
	eagain := unix.EAGAIN.Error()
	for {
		if ctx.Err() != nil {
			return nil
		}
		data, ci, err := h.ZeroCopyReadPacketData()
		if err != nil {
			// pcapgo formats the errno with %s, so errors.Is cannot see it.
			if strings.Contains(err.Error(), eagain) || strings.Contains(err.Error(), unix.EINTR.Error()) {
				continue
			}
			return fmt.Errorf("reading %s: %w", s.Interface, err)
		}
		now := ci.Timestamp
		if now.IsZero() {
			now = time.Now()
		}
		for _, host := range Parse(data, s.Subnet, now) {
			if bytes.Equal(host.MAC, own) {
				continue
			}
			s.Table.Observe(host)
		}
	}
}

// setReadTimeout gives the handle's socket SO_RCVTIMEO so that a read
// returns now and then and Run can notice cancellation: pcapgo's
// EthernetHandle blocks in recvmsg and exposes no deadline, and closing a
// socket does not wake a thread blocked on it. The descriptor is read from
// the handle's unexported fd field (gopacket v1.1.19, pinned in go.mod).
func setReadTimeout(h *pcapgo.EthernetHandle, d time.Duration) error {
	f := reflect.ValueOf(h).Elem().FieldByName("fd")
	if !f.IsValid() || !f.CanInt() {
		return errors.New("setting read timeout: pcapgo.EthernetHandle has no fd field (gopacket changed?)")
	}
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(int(f.Int()), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("setting read timeout: %w", err)
	}
	return nil
}

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
