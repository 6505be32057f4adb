// Command loginbench measures resident logins per second through the full
// SMS verify path, on this machine: the real `controller run` on a real
// redis-server, the real gateway (`portal run`) in a lab site, and phones in
// client namespaces that walk the portal's plain forms. Each login: the
// phone asks for a code (the controller texts it through its webhook
// provider, which this program plays inside the upstream namespace), then
// submits the code to the gateway, which relays it to the controller, gets
// the signed grant and opens the firewall; the phone then sends UDP packets
// to the upstream until one arrives there. Measured per login: from
// submitting the code to the first forwarded packet.
//
// Two measures: sustained streams, -stream logins from as many devices
// (macvlans in the phones' namespaces, each its own MAC and address)
// whose code submissions are paced at each of -stream-rates a second,
// -streams times each; and the capacity, rounds in which every phone
// submits at once. Sessions are kicked between streams and rounds, and the
// code requests before them are not timed. It writes a markdown table
// (also printed to stdout). While the lab lives, the host's neighbour
// table limits (one table for all namespaces) are raised to fit the
// devices, and put back after.
//
//	sudo go run ./portal/cmd/loginbench -portal bin/portal -controller bin/controller -out bench/login.md
//
// Every loop is bounded in count and time; the lab (namespaces and every
// process in them) is removed on return, on error and on Ctrl-C. Needs
// root, iptables, ipset, tc, dnsmasq and redis-server.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/lab"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"golang.org/x/sys/unix"
)

type options struct {
	portal, controller, out string
	clients, rounds, rate   int
	rates                   []int // of the streams
	stream, streams         int
	direct                  int
	timeout                 time.Duration
	perfFIFO                string
}

func main() {
	var o options
	flag.StringVar(&o.portal, "portal", "", "portal binary (built from ./portal/cmd/portal if empty)")
	flag.StringVar(&o.controller, "controller", "", "controller binary (built from ./controller/cmd/controller if empty)")
	flag.StringVar(&o.out, "out", "", "write the markdown results here too (e.g. bench/login.md)")
	flag.IntVar(&o.clients, "clients", 100, "phones (client namespaces), 1..200: each logs in once a round")
	flag.IntVar(&o.rounds, "rounds", 10, "rounds, 1..100")
	flag.IntVar(&o.rate, "rate", 1000, "code submissions a second: the target, and the controller's share")
	rates := flag.String("stream-rates", "800,1000", "comma-separated code submissions a second of the streams")
	flag.IntVar(&o.stream, "stream", 3000, "logins in a stream, each from its own device, 0..7000 (0: no stream)")
	flag.IntVar(&o.streams, "streams", 2, "streams at each rate, 1..10")
	flag.IntVar(&o.direct, "controller-logins", 1000, "logins for the controller's share (signed sms/verify straight to the controller, as gateway gw-a), 0..5000")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "abort (and clean up) after this long")
	flag.StringVar(&o.perfFIFO, "perf-fifo", "", "write enable/disable to this perf --control fifo around each timed stream (profile only the stream)")
	flag.Parse()
	for _, f := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r < 1 || r > 100_000 {
			fmt.Fprintf(os.Stderr, "loginbench: -stream-rates: %q is not a rate 1..100000\n", f)
			os.Exit(2)
		}
		o.rates = append(o.rates, r)
	}
	if o.clients < 1 || o.clients > 200 || o.rounds < 1 || o.rounds > 100 || o.rate < 1 || o.rate > 100_000 ||
		o.stream < 0 || o.stream > 7000 || o.streams < 1 || o.streams > 10 || o.direct < 0 || o.direct > 5000 {
		fmt.Fprintln(os.Stderr, "loginbench: -clients 1..200, -rounds 1..100, -rate 1..100000, -stream 0..7000, -streams 1..10, -controller-logins 0..5000")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loginbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

const sitesYAML = `town:
  name: Comune di Prova
  ssid: Prova WiFi
  contacts: {email: urp@comune.prova.it, dpo: dpo@comune.prova.it}
  privacy: {it: Informativa sulla privacy}
  terms: {it: Condizioni d'uso}
policies:
  - name: residents
    down: 5mbit
    up: 5mbit
    session: 2h
    idle: 15m
    login:
      methods: [sms]
      sms: {countries: [IT]}
sites:
  - id: parco-a
    name: Parco A
    kind: park
    coordinates: {lat: 44.99, lon: 9.01}
    policy: residents
    client_network: {address: 10.20.0.1/19}
    gateways:
      - {id: gw-a, credential: "file:%[1]s/gw-a.pub"}
`

// The anti-pumping limits are off (0): every phone asks for a code each round.
const controllerYAML = `listen: 0.0.0.0:8443
sites: %[1]s/sites.yaml
store: redis://127.0.0.1:6379/0
signing_key: %[1]s/controller.key
state_dir: %[1]s/state
metrics_listen: "off"
log_format: text
login:
  pepper_file: %[1]s/pepper
  sms:
    provider: webhook
    url: http://127.0.0.1:8099/sms
    attempts: 1
    timeout: 5s
    limits: {per_number: 0, per_mac: 0, per_site: 0, per_prefix: 0, daily_budget: 0, resend_after: 0s}
`

const portalYAML = `site: parco-a
interfaces: {clients: br-cw, uplink: wan0, ifb: cwifb0}
client_network: {address: 10.20.0.1/19, dhcp_range: 10.20.0.10-10.20.31.254}
dns: {upstreams: [198.51.100.1]}
portal: {http_port: 2050, https_port: 2443, rate_limit: 0, tls_cert: %[1]s/portal.pem, tls_key: %[1]s/portal-key.pem}
limits: {down: "0", up: "0", session: 2h, idle: 15m, quota: "0"}
state_dir: %[1]s/gw-state
control_socket: %[1]s/portal.sock
metrics_listen: 127.0.0.1:9102
controller:
  url: http://198.51.100.1:8443
  gateway_id: gw-a
  key_file: %[1]s/gw-a.key
  controller_key_file: %[1]s/controller.pub
  heartbeat: 10s
`

const (
	portalBase = "http://10.20.0.1:2050"
	udpSink    = "198.51.100.1:9999"
)

// phone is one resident's device (a client namespace's eth0, or a
// macvlan in one) and what it logs in with.
type phone struct {
	i      int    // index in bench.gen and co.
	ip     string // its IPv4 address
	hc     *http.Client
	number string // E.164, as the provider receives it
	udp    net.PacketConn
	codes  chan string
	verify url.Values // the code page's form, code filled in
}

type bench struct {
	o      options
	l      *lab.Lab
	phones []*phone // the client namespaces: capacity rounds
	devs   []*phone // macvlans in them: the streams
	byNum  map[string]*phone
	ctl    *control.APIClient
	direct []*phone // the controller's share: synthetic clients

	shed atomic.Int64 // 503 answers to code submissions, since the last report

	// The processes whose CPU time a stream is charged: gateway,
	// controller, Redis and this program (the phones, the provider, the
	// sink), in that order (see cpuRoles).
	pids [4]int

	mu      sync.Mutex
	gen     []uint32    // per phone: the round whose packet is awaited (0: none)
	arrived []time.Time // per phone: when it arrived
	signal  []chan struct{}
}

func run(ctx context.Context, o options) error {
	portalBin, ctlBin, cleanup, err := binaries(o)
	if err != nil {
		return err
	}
	defer cleanup()
	logf("building a lab site with %d phones", o.clients)
	l, err := lab.New(ctx, lab.Options{Clients: o.clients, Upstream: true, ClientBits: 19})
	if err != nil {
		return err
	}
	defer l.Close()
	b := &bench{o: o, l: l, byNum: map[string]*phone{}}
	if err := b.setup(ctx, portalBin, ctlBin); err != nil {
		return err
	}
	var res []series
	gen := uint32(0)
	for _, rate := range o.rates {
		if len(b.devs) == 0 {
			break
		}
		sr := series{rate: rate, stream: true}
		for r := 1; r <= o.streams; r++ {
			gen++
			logf("stream %d at %d/s: %d devices ask for a code (not timed)", r, rate, len(b.devs))
			if err := b.requestCodes(ctx, b.devs, 50); err != nil {
				return fmt.Errorf("stream %d: %w", r, err)
			}
			b.perf("enable")
			c0 := b.cpuTimes()
			l, a, f, got, err := b.verifyRound(ctx, b.devs, gen, rate)
			c1 := b.cpuTimes()
			b.perf("disable")
			if err != nil {
				return fmt.Errorf("stream %d: %w", r, err)
			}
			sr.add(l, a, f, got)
			for i := range c1 {
				sr.cpu[i] += c1[i] - c0[i]
			}
			sr.logins += len(l)
			sr.shed += int(b.shed.Swap(0))
			last := percentile(l[max(0, len(l)-rate):], 0.99)
			sr.lastP99 = append(sr.lastP99, last)
			logf("stream %d (offered %d/s): %d logins, completed at %.0f/s, p99 %v (first second %v, last %v; the 303 %v), %d failed", r, rate, len(l), got,
				percentile(l, 0.99), percentile(l[:min(len(l), rate)], 0.99), last, percentile(a, 0.99), f)
			logf("stream %d: kicking %d sessions (not timed)", r, len(b.devs))
			if err := b.kickAll(ctx, b.devs); err != nil {
				return fmt.Errorf("stream %d: %w", r, err)
			}
		}
		res = append(res, sr)
	}
	sr := series{} // capacity: all phones at once
	for r := 1; r <= o.rounds; r++ {
		gen++
		if err := b.requestCodes(ctx, b.phones, 20); err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		l, a, f, got, err := b.verifyRound(ctx, b.phones, gen, 0)
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		sr.add(l, a, f, got)
		sr.shed += int(b.shed.Swap(0))
		logf("round %d (all at once): %d logins, completed at %.0f/s, p99 %v (the 303 %v), %d failed", r, len(l), got, percentile(l, 0.99), percentile(a, 0.99), f)
		if err := b.kickAll(ctx, b.phones); err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
	}
	res = append(res, sr)
	var share []series
	for _, rate := range []int{b.o.rate, 0} {
		if o.direct == 0 {
			break
		}
		sr, err := b.controllerShare(ctx, rate)
		if err != nil {
			return fmt.Errorf("the controller's share: %w", err)
		}
		share = append(share, sr)
	}
	return b.report(res, share)
}

// series is the streams, or the rounds, at one offered rate.
type series struct {
	rate    int              // code submissions a second; 0: all phones at once
	stream  bool             // a stream of devices, not rounds of phones
	cpu     [4]time.Duration // CPU time of the timed streams, per role (cpuRoles)
	logins  int              // logins the cpu is shared by
	lat     []time.Duration  // to the first forwarded packet
	ans     []time.Duration  // to the gateway's 303
	lastP99 []time.Duration  // per stream: p99 of its last second
	rates   []float64
	failed  int
	shed    int // of failed: 503s, logins the gateway shed as busy
}

func (s *series) add(lat, ans []time.Duration, failed int, rate float64) {
	s.lat, s.ans, s.failed, s.rates = append(s.lat, lat...), append(s.ans, ans...), s.failed+failed, append(s.rates, rate)
}

func offered(rate int) string {
	if rate == 0 {
		return "all at once"
	}
	return fmt.Sprintf("%d/s", rate)
}

// binaries are the given ones or built now.
func binaries(o options) (portal, controller string, cleanup func(), err error) {
	cleanup = func() {}
	if o.portal != "" && o.controller != "" {
		return o.portal, o.controller, cleanup, nil
	}
	dir, err := os.MkdirTemp("", "cw-loginbench-bin-")
	if err != nil {
		return "", "", cleanup, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	portal, controller = o.portal, o.controller
	for _, x := range []struct {
		p   *string
		pkg string
	}{{&portal, "./portal/cmd/portal"}, {&controller, "./controller/cmd/controller"}} {
		if *x.p != "" {
			continue
		}
		*x.p = filepath.Join(dir, filepath.Base(x.pkg))
		if out, err := exec.Command("go", "build", "-o", *x.p, x.pkg).CombinedOutput(); err != nil {
			return "", "", cleanup, fmt.Errorf("running go build %s: %w\n%s", x.pkg, err, out)
		}
	}
	return portal, controller, cleanup, nil
}

func (b *bench) setup(ctx context.Context, portalBin, ctlBin string) error {
	l, dir := b.l, b.l.Dir
	for _, name := range []string{"controller", "gw-a"} {
		if _, err := apiclient.Enroll(dir, name); err != nil {
			return err
		}
	}
	pepper := make([]byte, 48)
	rand.Read(pepper)
	files := map[string]string{
		"pepper":          base64.StdEncoding.EncodeToString(pepper),
		"sites.yaml":      fmt.Sprintf(sitesYAML, dir),
		"controller.yaml": fmt.Sprintf(controllerYAML, dir),
		"portal.yaml":     fmt.Sprintf(portalYAML, dir),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	ca, err := lab.NewCA(dir)
	if err != nil {
		return err
	}
	if _, _, err := ca.Issue("portal", "10.20.0.1"); err != nil {
		return err
	}

	// The phones, their devices, and the SMS provider that hands each its code.
	for _, c := range l.Clients {
		p := &phone{i: len(b.phones), ip: c.IP.String(), hc: c.NS.HTTPClient(nil), number: fmt.Sprintf("+3933310%05d", len(b.phones)), codes: make(chan string, 4)}
		if p.udp, err = c.NS.ListenPacket("udp4", c.IP.String()+":0"); err != nil {
			return err
		}
		b.phones = append(b.phones, p)
	}
	if b.o.stream > 0 {
		logf("adding %d devices to the phones' namespaces", b.o.stream)
	}
	per := (b.o.stream + len(l.Clients) - 1) / len(l.Clients)
	for _, c := range l.Clients {
		n := min(per, b.o.stream-len(b.devs))
		if n <= 0 {
			break
		}
		devs, err := l.AddDevices(ctx, c, n)
		if err != nil {
			return err
		}
		for _, d := range devs {
			i := len(b.phones) + len(b.devs)
			p := &phone{i: i, ip: d.IP.String(), hc: d.HTTPClient(nil), number: fmt.Sprintf("+3933311%05d", i), codes: make(chan string, 4)}
			if p.udp, err = d.ListenPacket("udp4", ":0"); err != nil {
				return err
			}
			b.devs = append(b.devs, p)
		}
	}
	if err := roomForNeighbours(l, 1<<(32-l.ClientPrefix.Bits())+1024); err != nil {
		return err
	}
	n := len(b.phones) + len(b.devs)
	b.gen, b.arrived, b.signal = make([]uint32, n), make([]time.Time, n), make([]chan struct{}, n)
	for _, p := range append(slices.Clone(b.phones), b.devs...) {
		b.byNum[p.number] = p
		b.signal[p.i] = make(chan struct{}, 1)
	}
	for i := range b.o.direct {
		p := &phone{i: -1, number: fmt.Sprintf("+3933320%05d", i), codes: make(chan string, 4)}
		b.direct = append(b.direct, p)
		b.byNum[p.number] = p
	}
	l.AddCloser(func() error {
		for _, p := range append(slices.Clone(b.phones), b.devs...) {
			p.udp.Close()
		}
		return nil
	})
	codeRE := regexp.MustCompile(`\b[0-9]{6}\b`)
	ln, err := l.Upstream.Listen("tcp", "127.0.0.1:8099")
	if err != nil {
		return err
	}
	provider := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct{ To, Text string }
		body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		if err := json.Unmarshal(body, &m); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		p, code := b.byNum[m.To], codeRE.FindString(m.Text)
		if p == nil || code == "" {
			http.Error(w, "unknown number or no code", http.StatusBadRequest)
			return
		}
		select {
		case p.codes <- code:
		default:
		}
		w.WriteHeader(http.StatusAccepted)
	})}
	go provider.Serve(ln)
	l.AddCloser(provider.Close)

	// The upstream end of the phones' packets: phone index and round.
	sink, err := l.Upstream.ListenPacket("udp4", udpSink)
	if err != nil {
		return err
	}
	l.AddCloser(sink.Close)
	// A queue for a burst of first packets (the default holds ~300).
	if err := forceReadBuffer(sink, 8<<20); err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := sink.ReadFrom(buf)
			if err != nil {
				return
			}
			now := time.Now()
			if n < 6 {
				continue
			}
			i, gen := int(binary.BigEndian.Uint16(buf)), binary.BigEndian.Uint32(buf[2:])
			b.mu.Lock()
			if i < len(b.gen) && gen != 0 && b.gen[i] == gen && b.arrived[i].IsZero() {
				b.arrived[i] = now
				select {
				case b.signal[i] <- struct{}{}:
				default:
				}
			}
			b.mu.Unlock()
		}
	}()

	logf("starting redis-server, the controller and the gateway")
	redis, err := l.Start(l.Upstream, "redis", "redis-server", "--bind", "127.0.0.1", "--port", "6379", "--dir", dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := lab.WaitListening(wctx, l.Upstream, "tcp", 6379); err != nil {
		return fmt.Errorf("waiting for redis-server: %w", err)
	}
	ctl, err := l.Start(l.Upstream, "controller", ctlBin, "run", "-config", filepath.Join(dir, "controller.yaml"))
	if err != nil {
		return err
	}
	if err := lab.WaitListening(wctx, l.Upstream, "tcp", 8443); err != nil {
		return fmt.Errorf("waiting for the controller: %w\n%s", err, tail(l.LogFile("controller")))
	}
	gw, err := l.Start(l.Gateway, "portal", portalBin, "run", "-config", filepath.Join(dir, "portal.yaml"), "-log-format", "text")
	if err != nil {
		return err
	}
	b.pids = [4]int{gw.Process.Pid, ctl.Process.Pid, redis.Process.Pid, os.Getpid()}
	b.ctl = control.NewClient(filepath.Join(dir, "portal.sock"))
	// Ready when the gateway has made its shaper classes ahead for the
	// DHCP range (8,000 addresses: a few seconds) and the first phone's
	// landing page offers SMS (the site policy came from the controller).
	if err := waitLog(ctx, l.LogFile("portal"), "shaper classes made ahead", 3*time.Minute); err != nil {
		return err
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		if page, err := b.get(ctx, b.phones[0], portalBase+"/portal/"); err == nil && strings.Contains(page, `action="/portal/sms"`) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the gateway offers no SMS login after 45 s\n%s", tail(l.LogFile("portal")))
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// roomForNeighbours raises the kernel's neighbour table limits, which are
// the host's (one table for every namespace: 1,024 entries by default), to
// hold n entries while the lab lives, and puts them back when it closes.
// The gateway daemon raises them itself to fit its client network, but in
// the lab's namespace they are not visible to it.
func roomForNeighbours(l *lab.Lab, n int) error {
	for _, f := range []string{"gc_thresh2", "gc_thresh3"} {
		path := "/proc/sys/net/ipv4/neigh/default/" + f
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		old := strings.TrimSpace(string(b))
		if cur, err := strconv.Atoi(old); err != nil || cur >= n {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(n)), 0o644); err != nil {
			return fmt.Errorf("setting %s: %w", path, err)
		}
		l.AddCloser(func() error { return os.WriteFile(path, []byte(old), 0o644) })
	}
	return nil
}

// waitLog waits until the log file has a line containing s.
func waitLog(ctx context.Context, path, s string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), s) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q in %s after %v\n%s", s, path, limit, tail(path))
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

func (b *bench) get(ctx context.Context, p *phone, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return "", err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(body), nil
}

func (b *bench) post(ctx context.Context, p *phone, path string, f url.Values) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", portalBase+path, strings.NewReader(f.Encode()))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), nil
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// form is the hidden inputs of the form posting to action.
func form(page, action string) (url.Values, error) {
	i := strings.Index(page, `action="`+action+`"`)
	if i < 0 {
		return nil, fmt.Errorf("no form for %s on the page", action)
	}
	end := strings.Index(page[i:], "</form>")
	if end < 0 {
		return nil, fmt.Errorf("the form for %s does not end", action)
	}
	v := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(page[i:i+end], -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	return v, nil
}

// requestCodes has every phone ask for a code and fills its verify form
// (not timed), par phones at a time.
func (b *bench) requestCodes(ctx context.Context, phones []*phone, par int) error {
	return each(ctx, phones, par, func(ctx context.Context, p *phone) error {
		land, err := b.get(ctx, p, portalBase+"/portal/")
		if err != nil {
			return err
		}
		f, err := form(land, "/portal/sms")
		if err != nil {
			return err
		}
		f.Set("phone", p.number)
		f.Set("accept", "1")
		code, page, err := b.post(ctx, p, "/portal/sms", f)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("phone %d: code request: %d\n%.500s", p.i, code, page)
		}
		v, err := form(page, "/portal/sms/verify")
		if err != nil {
			return fmt.Errorf("phone %d: %w", p.i, err)
		}
		select {
		case otp := <-p.codes:
			v.Set("code", otp)
		case <-time.After(10 * time.Second):
			return fmt.Errorf("phone %d: no code texted within 10 s", p.i)
		case <-ctx.Done():
			return ctx.Err()
		}
		p.verify = v
		return nil
	})
}

// each runs fn for every phone, at most par at once; the first error wins.
func each(ctx context.Context, phones []*phone, par int, fn func(context.Context, *phone) error) error {
	sem := make(chan struct{}, par)
	errs := make(chan error, len(phones))
	for _, p := range phones {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- fn(ctx, p)
		}()
	}
	var first error
	for range phones {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// verifyRound submits every phone's code, paced at the rate (0: all at
// once), and measures each from the submission to its first packet at the
// upstream. lat is in the order of submission.
func (b *bench) verifyRound(ctx context.Context, phones []*phone, gen uint32, offered int) (lat, ans []time.Duration, failed int, rate float64, err error) {
	b.mu.Lock()
	for _, p := range phones {
		b.gen[p.i], b.arrived[p.i] = gen, time.Time{}
		select {
		case <-b.signal[p.i]:
		default:
		}
	}
	b.mu.Unlock()
	type result struct {
		k      int
		d, ans time.Duration // to the first packet; to the 303
		end    time.Time
		err    error
		shed   bool // a 503: the gateway refused it as busy
	}
	results := make(chan result, len(phones))
	var interval time.Duration
	if offered > 0 {
		interval = time.Second / time.Duration(offered)
	}
	start := time.Now()
	for k, p := range phones {
		if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
			time.Sleep(d)
		}
		go func() {
			t0 := time.Now()
			code, page, err := b.post(ctx, p, "/portal/sms/verify", p.verify)
			if err == nil && code != http.StatusSeeOther {
				err = fmt.Errorf("phone %d: code submitted: %d\n%.300s", p.i, code, page)
			}
			if err != nil {
				results <- result{err: err, shed: code == http.StatusServiceUnavailable}
				return
			}
			ans := time.Since(t0)
			msg := make([]byte, 6)
			binary.BigEndian.PutUint16(msg, uint16(p.i))
			binary.BigEndian.PutUint32(msg[2:], gen)
			dst, _ := net.ResolveUDPAddr("udp4", udpSink)
			deadline := time.Now().Add(5 * time.Second)
			// Again after 1 ms, then backing off to every 10 ms: a late
			// packet is measured late by at most that (never early), and
			// thousands of phones waiting do not flood the sink and the
			// gateway (every 1 ms, a slow second turned into a storm of
			// packets that drowned the sink's queue and kept itself going).
			wait := time.Millisecond
			for {
				p.udp.WriteTo(msg, dst) // refused while captive: expected
				select {
				case <-b.signal[p.i]:
					b.mu.Lock()
					at := b.arrived[p.i]
					b.mu.Unlock()
					results <- result{k: k, d: at.Sub(t0), ans: ans, end: at}
					return
				case <-time.After(wait):
				}
				wait = min(2*wait, 10*time.Millisecond)
				if time.Now().After(deadline) {
					results <- result{err: fmt.Errorf("phone %d: no packet forwarded within 5 s of the 303", p.i)}
					return
				}
			}
		}()
	}
	var first, last time.Time
	byK := make([]time.Duration, len(phones))
	for range phones {
		r := <-results
		if r.shed {
			b.shed.Add(1)
		}
		if r.err != nil {
			failed++
			if failed <= 3 {
				logf("  %v", r.err)
			}
			continue
		}
		byK[r.k] = r.d
		ans = append(ans, r.ans)
		if r.end.After(last) {
			last = r.end
		}
		if first.IsZero() || r.end.Before(first) {
			first = r.end
		}
	}
	for _, d := range byK {
		if d > 0 {
			lat = append(lat, d)
		}
	}
	// The completion rate: logins after the first over the time from the
	// first first-packet to the last (paced submissions add no idle time).
	if len(lat) > 1 && last.After(first) {
		rate = float64(len(lat)-1) / last.Sub(first).Seconds()
	}
	return lat, ans, failed, rate, nil
}

// perf writes cmd to the perf control fifo, if any.
func (b *bench) perf(cmd string) {
	if b.o.perfFIFO == "" {
		return
	}
	if err := os.WriteFile(b.o.perfFIFO, []byte(cmd+"\n"), 0); err != nil {
		logf("perf control: %v", err)
	}
}

// kickAll ends every phone's session.
func (b *bench) kickAll(ctx context.Context, phones []*phone) error {
	err := each(ctx, phones, 20, func(ctx context.Context, p *phone) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := b.ctl.Kick(cctx, control.KickRequest{IP: p.ip}); err != nil && !strings.Contains(err.Error(), "no session") {
			return fmt.Errorf("kicking phone %d: %w", p.i, err)
		}
		return nil
	})
	return err
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (b *bench) report(res, share []series) error {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Resident login throughput (SMS verify path)\n\n")
	fmt.Fprintf(&sb, "%s, %s\n\n", time.Now().UTC().Format(time.RFC3339), hostLine())
	fmt.Fprintf(&sb, "| metric | result | target | ok |\n|---|---|---|---|\n")
	for _, sr := range res {
		if len(sr.lat) == 0 {
			return fmt.Errorf("no login succeeded at %s", offered(sr.rate))
		}
		rates := slices.Clone(sr.rates)
		slices.Sort(rates)
		median := rates[len(rates)/2]
		p50, p99, worst := percentile(sr.lat, 0.50), percentile(sr.lat, 0.99), percentile(sr.lat, 1)
		ok := "✅"
		if median < 0.99*float64(b.o.rate) || p99 >= 50*time.Millisecond || sr.failed > 0 {
			ok = "❌"
		}
		what := fmt.Sprintf("%d phones × %d rounds, submissions all at once", b.o.clients, b.o.rounds)
		of, more, target := "rounds", "", fmt.Sprintf("≥ %d/s, p99 < 50 ms", b.o.rate)
		if sr.stream {
			what = fmt.Sprintf("streams of %d logins from %d devices, submissions paced at **%d/s** (%.1f s); %d streams", len(b.devs), len(b.devs), sr.rate, float64(len(b.devs))/float64(sr.rate), b.o.streams)
			of = "streams"
			lp := slices.Clone(sr.lastP99)
			slices.Sort(lp)
			more = fmt.Sprintf("; p99 of a stream's last second %s (median)", ms(lp[len(lp)/2]))
			var per []string
			for i, role := range cpuRoles {
				per = append(per, fmt.Sprintf("%s %.2f ms", role, float64(sr.cpu[i])/1e6/float64(max(1, sr.logins))))
			}
			more += "; CPU per login: " + strings.Join(per, ", ")
			if sr.rate < b.o.rate {
				target, ok = fmt.Sprintf("p99 < 50 ms (below the %d/s target)", b.o.rate), "✅"
				if p99 >= 50*time.Millisecond || sr.failed > 0 || median < 0.99*float64(sr.rate) {
					ok = "❌"
				}
			}
		}
		fmt.Fprintf(&sb, "| SMS logins, code submitted at the gateway → controller (Redis) → signed grant → firewall open → first forwarded packet; %s | completed at %.0f logins/s (median of %s; min %.0f, max %.0f); latency p50 %s, p99 %s, max %s (n=%d, %d failed, of which %d shed as busy: 503)%s | %s | %s |\n",
			what, median, of, rates[0], rates[len(rates)-1], ms(p50), ms(p99), ms(worst), len(sr.lat), sr.failed, sr.shed, more, target, ok)
	}
	for _, sr := range share {
		p50, p99, worst := percentile(sr.lat, 0.50), percentile(sr.lat, 0.99), percentile(sr.lat, 1)
		ok := "✅"
		if sr.rates[0] < 990 || p99 >= 50*time.Millisecond || sr.failed > 0 {
			ok = "❌"
		}
		fmt.Fprintf(&sb, "| the controller's share: signed `sms/verify` (as gateway gw-a, %d synthetic clients) → Redis → signed grant (checked with `apiclient.VerifyGrant`), submissions %s, 64 connections | %.0f grants/s; latency p50 %s, p99 %s, max %s (n=%d, %d failed) | ≥ 1,000/s, p99 < 50 ms | %s |\n",
			b.o.direct, offered(sr.rate), sr.rates[0], ms(p50), ms(p99), ms(worst), len(sr.lat), sr.failed, ok)
	}
	fmt.Fprintf(&sb, "\n- The stream is the rate and latency figure: every login from its own device (a macvlan with its own MAC and address in one of the %d phones' namespaces), submissions paced at the offered rate. Completion rate of a stream or round: its logins after the first over the time from its first first-packet to its last; a gateway that falls behind shows as a lower rate and a p99 growing along the stream. The code requests (SMS start, texted through the controller's webhook provider) come before each stream or round and are not timed; sessions are kicked between them. Classes of the devices' addresses were made ahead by the gateway (its DHCP range, up to 4,096 addresses) before the first stream.\n", b.o.clients)
	fmt.Fprintf(&sb, "- CPU per login (streams): user and system time of each process during the timed streams (from /proc/<pid>/stat, 10 ms ticks) over the streams' logins; the phones' program is this one (the phones, the SMS provider, the packet sink, with the kernel's work for their packets); kernel worker threads are not counted. It moves less than the rate on a shared machine.\n")
	fmt.Fprintf(&sb, "- \"all at once\" rows measure capacity: every submission starts together, so their latency includes the queue of the burst.\n")
	fmt.Fprintf(&sb, "- Latency: from the POST of the code (the phone's own connection to the gateway, from its namespace) to the arrival upstream of the first UDP packet the phone sends after the 303 (again after 1, 2, 4 and 8 ms, then every 10 ms, until one arrives).\n")
	fmt.Fprintf(&sb, "- One `portal run` in the lab's gateway namespace; one `controller run` on one `redis-server` (appendonly, fsync every second) in the upstream namespace; the 5mbit policy shapes every session (tc); this program (phones, provider, packet sink) shares the machine.\n")
	fmt.Print(sb.String())
	if b.o.out != "" {
		if err := os.MkdirAll(filepath.Dir(b.o.out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(b.o.out, []byte(sb.String()), 0o644)
	}
	return nil
}

func hostLine() string {
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	out, _ := exec.Command("nproc").Output()
	return fmt.Sprintf("%s, %s cores", cpu, strings.TrimSpace(string(out)))
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// controllerShare asks the controller for a code for each synthetic client
// (as gateway gw-a, not timed), then submits them all at the offered rate
// straight to the controller and times each signed sms/verify to its grant.
func (b *bench) controllerShare(ctx context.Context, rate int) (series, error) {
	dir := b.l.Dir
	key, err := apiclient.LoadPrivateKey(filepath.Join(dir, "gw-a.key"))
	if err != nil {
		return series{}, err
	}
	ctlKey, err := apiclient.LoadPublicKey(filepath.Join(dir, "controller.pub"))
	if err != nil {
		return series{}, err
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: b.l.Upstream.Dial, MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	ac, err := apiclient.New(apiclient.Config{BaseURL: "http://127.0.0.1:8443", Site: "parco-a", GatewayID: "gw-a", Key: key, ControllerKey: ctlKey, HTTPClient: hc})
	if err != nil {
		return series{}, err
	}
	type pending struct {
		mac, ip string
		req     apiclient.SMSVerifyRequest
	}
	todo := make([]pending, len(b.direct))
	logf("the controller's share: %d codes asked for (not timed)", len(b.direct))
	sem := make(chan struct{}, 32)
	errs := make(chan error, len(b.direct))
	for i, p := range b.direct {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			// Synthetic clients in the site's network (10.20.0.0/22), away
			// from the lab's phones: 10.20.1.1 to 10.20.3.250, each MAC its own.
			mac := fmt.Sprintf("02:02:00:00:%02x:%02x", i>>8, i&0xff)
			ip := fmt.Sprintf("10.20.%d.%d", 1+(i/250)%3, 1+i%250)
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			a, err := ac.StartSMS(cctx, apiclient.SMSStartRequest{ClientMAC: mac, ClientIP: ip, Phone: p.number, Lang: "it", Consent: true})
			if err != nil {
				errs <- fmt.Errorf("sms/start for %s: %w", ip, err)
				return
			}
			select {
			case code := <-p.codes:
				todo[i] = pending{mac: mac, ip: ip, req: apiclient.SMSVerifyRequest{RequestID: a.RequestID, ClientMAC: mac, ClientIP: ip, Code: code}}
				errs <- nil
			case <-time.After(10 * time.Second):
				errs <- fmt.Errorf("no code texted for %s within 10 s", ip)
			}
		}()
	}
	for range b.direct {
		if err := <-errs; err != nil {
			return series{}, err
		}
	}
	sr := series{rate: rate}
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	type result struct {
		d   time.Duration
		end time.Time
		err error
	}
	results := make(chan result, len(todo))
	start := time.Now()
	for k, p := range todo {
		if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
			time.Sleep(d)
		}
		go func() {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			t0 := time.Now()
			g, err := ac.VerifySMS(cctx, p.req)
			end := time.Now()
			if err == nil {
				err = apiclient.VerifyGrant(g, ctlKey, "parco-a", "gw-a", p.mac, p.ip, end)
			}
			results <- result{d: end.Sub(t0), end: end, err: err}
		}()
	}
	var last time.Time
	for range todo {
		r := <-results
		if r.err != nil {
			sr.failed++
			if sr.failed <= 3 {
				logf("  %v", r.err)
			}
			continue
		}
		sr.lat = append(sr.lat, r.d)
		if r.end.After(last) {
			last = r.end
		}
	}
	if len(sr.lat) == 0 {
		return sr, fmt.Errorf("no sms/verify succeeded (%d failed)", sr.failed)
	}
	sr.rates = []float64{float64(len(sr.lat)) / last.Sub(start).Seconds()}
	logf("the controller's share (offered %s): %d grants at %.0f/s, p99 %v, %d failed", offered(rate), len(sr.lat), sr.rates[0], percentile(sr.lat, 0.99), sr.failed)
	return sr, nil
}

// forceReadBuffer sets a socket's receive buffer past net.core.rmem_max
// (SO_RCVBUFFORCE: loginbench runs as root).
func forceReadBuffer(c net.PacketConn, bytes int) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return fmt.Errorf("sink: %T has no raw socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bytes)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("sink: SO_RCVBUFFORCE: %w", serr)
	}
	return nil
}

// cpuRoles name the processes of bench.pids.
var cpuRoles = [4]string{"gateway", "controller", "Redis", "phones' program"}

// cpuTimes reads the user+system CPU time of each of b.pids (0 for one
// that is gone).
func (b *bench) cpuTimes() [4]time.Duration {
	var out [4]time.Duration
	for i, pid := range b.pids {
		if c, err := lab.ProcessCPU(pid); err == nil {
			out[i] = c.Self
		}
	}
	return out
}
