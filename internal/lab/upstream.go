package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Upstream hosts: names the upstream's dnsmasq answers, and their addresses.
const (
	WWWHost    = "www.example.test"    // 198.51.100.11 and 2001:db8:100::1
	GardenHost = "garden.example.test" // 198.51.100.10: a walled-garden host
	OtherHost  = "other.example.test"  // 198.51.100.11
)

// ProbeHosts are the host names operating systems probe for connectivity
// (Apple, Android/ChromeOS, Windows, Firefox, NetworkManager). The
// upstream's DNS answers each as the real internet would (A OtherIP, AAAA
// UpstreamIP6), and its HTTP serves Apple's and Android's answers, so a
// test can tell a gateway that answers a probe itself (its own address)
// from one that lets it through.
var ProbeHosts = []string{
	"captive.apple.com", "www.apple.com",
	"connectivitycheck.gstatic.com", "connectivitycheck.android.com", "www.gstatic.com",
	"clients3.google.com", "www.google.com",
	"www.msftconnecttest.com", "www.msftncsi.com",
	"detectportal.firefox.com", "nmcheck.gnome.org",
}

// Upstream service ports.
const (
	HTTPPort   = 80
	HTTPSPort  = 443
	DoTPort    = 853 // a plain TCP listener: it accepts and discards, so "DoT would connect"
	DNSPort    = 53
	IperfPort  = 5201
	StreamTick = 100 * time.Millisecond // /stream sends StreamChunk bytes this often
	StreamMax  = 60 * time.Second       // and for at most this long
)

// StreamChunk is what /stream sends every StreamTick.
const StreamChunk = 1024

// MaxBytes bounds /bytes?n=N.
const MaxBytes = 1 << 30

type upstream struct {
	servers   []*http.Server
	conns     *connSet
	lns       []net.Listener
	roots     *x509.CertPool
	closeLast io.Closer // the servers' error log
}

func (u *upstream) close() {
	for _, s := range u.servers {
		s.Close() // Close, not Shutdown: /stream connections must die now
	}
	for _, ln := range u.lns {
		ln.Close()
	}
	u.conns.closeAll()
	if u.closeLast != nil {
		u.closeLast.Close()
	}
}

// StartUpstream starts "the internet" in the upstream namespace:
//   - HTTP on :80 (see UpstreamHandler), HTTPS on :443 with a self-signed
//     certificate for the example.test names and the upstream addresses
//     (UpstreamCAFile, Lab.UpstreamRoots),
//   - a TCP listener on :853 that accepts and discards,
//   - dnsmasq on 198.51.100.1:53 and [2001:db8:100::1]:53 answering
//     www/garden/other.example.test (NXDOMAIN for other .test names) and
//     the OS probe hosts (ProbeHosts),
//   - iperf3 -s on 5201 (StartIperf3 starts more).
//
// The listeners are served from this process; dnsmasq and iperf3 are
// processes started with Start. Close stops all of them.
func (l *Lab) StartUpstream(ctx context.Context) error {
	l.mu.Lock()
	if l.upstream != nil {
		l.mu.Unlock()
		return errors.New("starting upstream: already started")
	}
	u := &upstream{conns: &connSet{m: map[net.Conn]struct{}{}}}
	l.upstream = u
	l.mu.Unlock()
	if err := l.startUpstream(ctx, u); err != nil {
		return fmt.Errorf("starting upstream: %w", err)
	}
	return nil
}

func (l *Lab) startUpstream(ctx context.Context, u *upstream) error {
	cert, pemBytes, err := selfSigned()
	if err != nil {
		return err
	}
	l.UpstreamCAFile = filepath.Join(l.Dir, "upstream-ca.pem")
	if err := os.WriteFile(l.UpstreamCAFile, pemBytes, 0o644); err != nil {
		return err
	}
	u.roots = x509.NewCertPool()
	u.roots.AppendCertsFromPEM(pemBytes)

	handler := UpstreamHandler()
	httpLn, err := l.Upstream.Listen("tcp", ":"+strconv.Itoa(HTTPPort))
	if err != nil {
		return err
	}
	u.lns = append(u.lns, httpLn)
	httpsLn, err := l.Upstream.Listen("tcp", ":"+strconv.Itoa(HTTPSPort))
	if err != nil {
		return err
	}
	u.lns = append(u.lns, httpsLn)
	dotLn, err := l.Upstream.Listen("tcp", ":"+strconv.Itoa(DoTPort))
	if err != nil {
		return err
	}
	u.lns = append(u.lns, dotLn)

	errLog, logFile := l.logger("upstream-http")
	u.closeLast = logFile
	plain := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	secure := &http.Server{
		Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	u.servers = append(u.servers, plain, secure)
	go plain.Serve(httpLn)
	go secure.Serve(tls.NewListener(httpsLn, secure.TLSConfig))
	go u.conns.discard(dotLn)

	if err := l.startDNS(ctx); err != nil {
		return err
	}
	return l.StartIperf3(ctx, l.Upstream, IperfPort)
}

// logger returns a log.Logger appending to <Dir>/<name>.log, and the file
// to close after its last use.
func (l *Lab) logger(name string) (*log.Logger, io.Closer) {
	f, err := os.OpenFile(l.LogFile(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return log.New(io.Discard, "", 0), io.NopCloser(nil)
	}
	return log.New(f, "", log.LstdFlags|log.Lmicroseconds), f
}

// UpstreamRoots returns the CA pool that trusts the upstream's HTTPS
// server, or nil before StartUpstream.
func (l *Lab) UpstreamRoots() *x509.CertPool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.upstream == nil {
		return nil
	}
	return l.upstream.roots
}

// HTTPClient returns an HTTP client that connects from inside ns and
// trusts the upstream's HTTPS certificate (see NS.HTTPClient).
func (l *Lab) HTTPClient(ns NS) *http.Client { return ns.HTTPClient(l.UpstreamRoots()) }

// startDNS runs dnsmasq in the upstream namespace and waits until it answers.
func (l *Lab) startDNS(ctx context.Context) error {
	argv := []string{
		"dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--no-resolv", "--no-hosts", "--bind-interfaces",
		"--listen-address=" + upstreamIP.String(), "--listen-address=" + upstreamIP6.String(),
		"--port=" + strconv.Itoa(DNSPort), "--user=root", "--group=root",
		"--pid-file=" + filepath.Join(l.Dir, "dnsmasq-upstream.pid"),
		"--log-facility=" + l.LogFile("dnsmasq-upstream"), "--log-queries",
		"--local=/test/",
		"--host-record=" + WWWHost + "," + otherIP.String() + "," + upstreamIP6.String(),
		"--host-record=" + GardenHost + "," + gardenIP.String(),
		"--host-record=" + OtherHost + "," + otherIP.String(),
	}
	for _, h := range ProbeHosts {
		argv = append(argv, "--host-record="+h+","+otherIP.String()+","+upstreamIP6.String())
	}
	cmd, err := l.Start(l.Upstream, "dnsmasq-upstream-stdout", argv...)
	if err != nil {
		return err
	}
	r := l.Upstream.Resolver(net.JoinHostPort(upstreamIP.String(), strconv.Itoa(DNSPort)))
	return l.waitUntil(ctx, cmd, "dnsmasq answering", func(ctx context.Context) error {
		_, err := r.LookupNetIP(ctx, "ip4", WWWHost)
		return err
	})
}

// StartIperf3 starts `iperf3 -s -p port` in ns and waits until it listens.
func (l *Lab) StartIperf3(ctx context.Context, ns NS, port int) error {
	name := fmt.Sprintf("iperf3-%s-%d", ns.Name, port)
	cmd, err := l.Start(ns, name, "iperf3", "-s", "-p", strconv.Itoa(port), "--forceflush")
	if err != nil {
		return err
	}
	return l.waitUntil(ctx, cmd, name+" listening", func(ctx context.Context) error {
		return WaitListening(ctx, ns, "tcp", port)
	})
}

// WaitListening returns nil once something in ns listens on port (tcp or
// udp), polling `ss` every 20 ms until ctx ends.
func WaitListening(ctx context.Context, ns NS, proto string, port int) error {
	flag := "-Hltn"
	if proto == "udp" {
		flag = "-Hlun"
	}
	for {
		out, err := ns.Run(ctx, "ss", flag, "sport = :"+strconv.Itoa(port))
		if err == nil && strings.TrimSpace(out) != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s port %d in %s: %w", proto, port, ns.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitUntil polls ready every 50 ms for up to 10 s, failing early when cmd
// exits; the error then carries the tail of its log.
func (l *Lab) waitUntil(ctx context.Context, cmd *exec.Cmd, what string, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	exited := l.Exited(cmd)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := ready(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-exited:
			return fmt.Errorf("waiting for %s: %s exited (%v); see %s", what, cmd.Path, cmd.ProcessState, l.Dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// UpstreamHandler serves the upstream's HTTP and HTTPS:
//
//	/                 "upstream ok\n"
//	/bytes?n=N        exactly N bytes (N <= MaxBytes), with Content-Length
//	/stream?s=S       StreamChunk bytes every StreamTick for S seconds (at most and by default 60)
//	/ip               the client's address as the upstream sees it, e.g. "198.51.100.2\n"
//	/generate_204, /gen_204  204, as Android's connectivity check expects on the open internet
//	/hotspot-detect.html, /library/test/success.html  Apple's "Success" page
func UpstreamHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream ok\n")
	})
	mux.HandleFunc("GET /ip", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host+"\n")
	})
	mux.HandleFunc("GET /generate_204", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /gen_204", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	appleSuccess := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n")
	}
	mux.HandleFunc("GET /hotspot-detect.html", appleSuccess)
	mux.HandleFunc("GET /library/test/success.html", appleSuccess)
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > MaxBytes {
			http.Error(w, fmt.Sprintf("n must be 0..%d", MaxBytes), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		if r.Method == http.MethodHead {
			return
		}
		buf := make([]byte, 32<<10)
		for i := range buf {
			buf[i] = 'x'
		}
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		d := StreamMax
		if s := r.URL.Query().Get("s"); s != "" {
			secs, err := strconv.Atoi(s)
			if err != nil || secs <= 0 || time.Duration(secs)*time.Second > StreamMax {
				http.Error(w, "s must be 1..60", http.StatusBadRequest)
				return
			}
			d = time.Duration(secs) * time.Second
		}
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "application/octet-stream")
		chunk := make([]byte, StreamChunk)
		for i := range chunk {
			chunk[i] = 's'
		}
		end := time.After(d)
		tick := time.NewTicker(StreamTick)
		defer tick.Stop()
		for {
			rc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-end:
				return
			case <-tick.C:
			}
		}
	})
	return mux
}

// selfSigned makes an ECDSA certificate for the upstream names and
// addresses, valid for a day; it is its own CA.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: WWWHost, Organization: []string{"civicwifi lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{WWWHost, GardenHost, OtherHost},
		IPAddresses:           []net.IP{upstreamIP.AsSlice(), gardenIP.AsSlice(), otherIP.AsSlice(), upstreamIP6.AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pemBytes, nil
}

// connSet tracks accepted connections so Close can cut them.
type connSet struct {
	mu     sync.Mutex
	m      map[net.Conn]struct{}
	closed bool
}

// discard accepts on ln until it closes, reading and dropping whatever
// each connection sends for up to StreamMax.
func (s *connSet) discard(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !s.add(c) {
			c.Close()
			return
		}
		go func() {
			defer s.remove(c)
			c.SetDeadline(time.Now().Add(StreamMax))
			io.Copy(io.Discard, c)
		}()
	}
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.m[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
	c.Close()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		c.Close()
	}
}
