package discovery

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// TestPacketSocketLab proves, with real traffic on the lab's client bridge,
// what the socket and its filter keep: a client's ARP and DHCP-port UDP
// whole (a first fragment too), other client IPv4 cut to headerSnap bytes
// (later fragments of a DHCP-port datagram too), of the gateway's own
// frames only UDP from port 67, and nothing but ARP and IPv4.
func TestPacketSocketLab(t *testing.T) {
	l := lab.NewT(t, lab.Options{Clients: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c1 := l.Clients[0]
	if out, err := c1.Run(ctx, "ip", "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	sock := openLab(t, l, filter)
	gwMAC := sock.mac

	// The client sends 1000 bytes to the discard port, 1000 to port 67 and
	// 3000 (three fragments) to port 68; the gateway 1000 bytes from port 67
	// and 1000 from port 9999. Nobody listens but the gateway's port 67, so
	// ICMP port unreachables go both ways too.
	payload := bytes.Repeat([]byte{0xa5}, 3000)
	for _, s := range []struct {
		port string
		n    int
	}{{"9", 1000}, {"67", 1000}, {"68", 3000}} {
		c, err := c1.Dial(ctx, "udp4", l.GatewayIP.String()+":"+s.port)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(payload[:s.n]); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	to := &net.UDPAddr{IP: c1.IP.AsSlice(), Port: 68}
	for _, port := range []string{"67", "9999"} {
		pc, err := l.Gateway.ListenPacket("udp4", l.GatewayIP.String()+":"+port)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo(payload[:1000], to); err != nil {
			t.Fatal(err)
		}
		pc.Close()
	}

	// Everything the socket queued, until 500 ms pass without a frame.
	got := map[string][]int{} // kind -> captured lengths
	if n := readQuiet(t, sock, 500*time.Millisecond, 1000, func(f []byte) {
		k := frameKind(f, gwMAC)
		got[k] = append(got[k], len(f))
	}); n == 1000 {
		t.Fatalf("1000 frames captured without a pause: %v", got)
	}
	t.Logf("captured: %v", got)

	want := map[string][]int{
		"in udp to 9":            {headerSnap},
		"in udp to 67":           {14 + 20 + 8 + 1000},
		"in udp to 68":           {14 + 1500},
		"in later fragment":      {headerSnap, headerSnap},
		"out udp from 67 to 68":  {14 + 20 + 8 + 1000},
		"in arp from the client": nil, // one or two (request, reply), each whole: checked below
	}
	for k, lens := range got {
		switch {
		case k == "in arp from the client":
			for _, n := range lens {
				if n != 42 {
					t.Errorf("ARP frame of %d bytes captured, want 42 (whole)", n)
				}
			}
		case k == "in icmp":
			for _, n := range lens {
				if n > headerSnap {
					t.Errorf("client ICMP captured with %d bytes, want at most %d", n, headerSnap)
				}
			}
		case want[k] == nil && k != "in arp from the client":
			t.Errorf("captured %q (%v), which the filter should drop", k, lens)
		}
	}
	if len(got["in arp from the client"]) == 0 {
		t.Errorf("no ARP frame from the client captured")
	}
	for k, lens := range want {
		if lens != nil && fmt.Sprint(got[k]) != fmt.Sprint(lens) {
			t.Errorf("%s: captured lengths %v, want %v", k, got[k], lens)
		}
	}
}

// TestPacketSocketInterruptLab proves that interrupt wakes a read blocked
// on a socket that receives nothing, so Run returns as soon as its context
// ends rather than at the next frame or timeout.
func TestPacketSocketInterruptLab(t *testing.T) {
	l := lab.NewT(t, lab.Options{Clients: 1})
	sock := openLab(t, l, mustAssemble([]bpf.Instruction{bpf.RetConstant{Val: 0}}))
	done := make(chan error, 1)
	go func() {
		_, err := sock.read()
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	sock.interrupt()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read after interrupt: %v, want %v", err, os.ErrDeadlineExceeded)
		}
		t.Logf("read returned %s after interrupt", time.Since(start))
	case <-time.After(2 * time.Second):
		t.Fatal("read still blocked 2s after interrupt")
	}
	if _, err := sock.read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after interrupt: %v, want %v", err, os.ErrDeadlineExceeded)
	}
}

// readQuiet hands f every frame the socket gives until quiet passes
// without one, or max frames; it returns how many it read.
func readQuiet(t *testing.T, sock *packetSocket, quiet time.Duration, max int, f func([]byte)) int {
	t.Helper()
	n := 0
	for ; n < max; n++ {
		sock.f.SetReadDeadline(time.Now().Add(quiet))
		frame, err := sock.read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		f(frame)
	}
	return n
}

// openLab opens a packet socket on the lab's client bridge, in the
// gateway's namespace, closed at the end of the test.
func openLab(t *testing.T, l *lab.Lab, prog []bpf.RawInstruction) *packetSocket {
	t.Helper()
	var sock *packetSocket
	err := l.Gateway.Do(func() (err error) {
		sock, err = openPacketSocket(l.LANIf, prog, fullSnap)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return sock
}

// frameKind names a captured frame for TestPacketSocketLab: direction (by
// the gateway's MAC as source) and what it is.
func frameKind(f []byte, gwMAC net.HardwareAddr) string {
	dir := "in"
	if len(f) >= 12 && bytes.Equal(f[6:12], gwMAC) {
		dir = "out"
	}
	if len(f) < 14 {
		return dir + " runt"
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0806:
		if dir == "in" && len(f) >= 14+14 && bytes.Equal(f[14+8:14+14], f[6:12]) {
			return "in arp from the client"
		}
		return dir + " other arp"
	case 0x0800:
	default:
		return fmt.Sprintf("%s ethertype %#04x", dir, binary.BigEndian.Uint16(f[12:14]))
	}
	if len(f) < 14+20 {
		return dir + " short ipv4"
	}
	ip := f[14:]
	if binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
		return dir + " later fragment"
	}
	hl := int(ip[0]&0x0f) * 4
	switch ip[9] {
	case 1:
		return dir + " icmp"
	case 17:
		if len(ip) < hl+4 {
			return dir + " short udp"
		}
		sport, dport := binary.BigEndian.Uint16(ip[hl:]), binary.BigEndian.Uint16(ip[hl+2:])
		if dir == "out" {
			return fmt.Sprintf("out udp from %d to %d", sport, dport)
		}
		return fmt.Sprintf("in udp to %d", dport)
	}
	return fmt.Sprintf("%s ip protocol %d", dir, ip[9])
}

// TestPacketSocketRingLab proves the receive ring's two promises: frames
// that arrive while nobody reads wait for the reader (1500 sent at once;
// the socket's default buffer held ~100), and a steady stream is handed
// over in blocks, at most one per ringWait, not one wake-up per frame.
// (The ring holds ~3,000 frames cut to headerSnap.)
func TestPacketSocketRingLab(t *testing.T) {
	l := lab.NewT(t, lab.Options{Clients: 1})
	c1 := l.Clients[0]
	sock := openLab(t, l, filter)
	pc, err := c1.ListenPacket("udp4", c1.IP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to := &net.UDPAddr{IP: l.GatewayIP.AsSlice(), Port: 9}
	payload := bytes.Repeat([]byte{0x5a}, 1000)
	// count reads until 300 ms pass without a frame: the frames to port 9,
	// and the blocks they came in.
	count := func() (frames, blocks int) {
		b0 := sock.blocksRead
		readQuiet(t, sock, 300*time.Millisecond, 10000, func(f []byte) {
			if frameKind(f, sock.mac) == "in udp to 9" && len(f) == headerSnap {
				frames++
			}
		})
		return frames, sock.blocksRead - b0
	}

	const burst = 1500
	for i := range burst {
		if _, err := pc.WriteTo(payload, to); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n, blocks := count(); n != burst {
		t.Errorf("%d of the %d frames sent while nobody read reached the reader (%d blocks), want all", n, burst, blocks)
	}

	const stream = 1000
	t0 := time.Now()
	go func() {
		for range stream {
			pc.WriteTo(payload, to)
			time.Sleep(500 * time.Microsecond)
		}
	}()
	n, blocks := count()
	took := time.Since(t0) - 300*time.Millisecond
	t.Logf("%d frames in %v came in %d blocks", n, took.Round(time.Millisecond), blocks)
	if n != stream {
		t.Errorf("%d of the %d frames of the stream read, want all", n, stream)
	}
	if max := int(took/(ringWait*time.Millisecond)) + 5; blocks > max {
		t.Errorf("the stream came in %d blocks over %v: more than one per %d ms (%d)", blocks, took.Round(time.Millisecond), ringWait, max)
	}
}
