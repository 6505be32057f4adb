// Command ctlbench measures one controller process on Redis, the way a town's
// fleet uses it (`make bench` runs it after the gateway's benchmark): the real
// `controller run` binary and a real redis-server on loopback, a sites.yaml of
// 1,000 sites with 10,000 gateways, and simulated gateways speaking the real
// signed protocol through controller/apiclient. It writes a markdown table.
//
// Measured: the controller's CPU (utime+stime of its process, from /proc)
// while 10,000 gateways send a heartbeat every 30 s; the session events per
// second it records; and the time from a sites.yaml edit to the new policy
// reaching long-polling gateways.
package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/lab"
)

type options struct {
	controller string
	out        string
	sites      int
	perSite    int
	interval   time.Duration
	window     time.Duration
	watchers   int
	rounds     int
}

func main() {
	var o options
	flag.StringVar(&o.controller, "controller", "bin/controller", "the controller binary")
	flag.StringVar(&o.out, "out", "bench/controller.md", "where to write the results (markdown)")
	flag.IntVar(&o.sites, "sites", 1000, "sites in the generated sites.yaml")
	flag.IntVar(&o.perSite, "gateways-per-site", 10, "gateways per site")
	flag.DurationVar(&o.interval, "interval", 30*time.Second, "each gateway's heartbeat interval")
	flag.DurationVar(&o.window, "window", 30*time.Second, "how long the heartbeat load runs")
	flag.IntVar(&o.watchers, "watchers", 1000, "gateways long-polling the policy during the propagation test")
	flag.IntVar(&o.rounds, "rounds", 5, "sites.yaml edits in the propagation test")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "ctlbench:", err)
		os.Exit(1)
	}
}

type row struct{ what, result, target, ok string }

type bench struct {
	o       options
	dir     string
	base    string
	key     ed25519.PrivateKey
	ctlKey  ed25519.PublicKey
	hc      *http.Client
	ctl     *exec.Cmd
	redis   *exec.Cmd
	rows    []row
	started time.Time
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(o options) error {
	b := &bench{o: o, started: time.Now()}
	raiseFileLimit()
	dir, err := os.MkdirTemp("", "cw-ctlbench-")
	if err != nil {
		return err
	}
	b.dir = dir
	defer os.RemoveAll(dir)
	defer b.stop()
	if err := b.setup(); err != nil {
		return err
	}
	for _, step := range []func() error{b.heartbeats, b.events, b.propagation} {
		if err := step(); err != nil {
			return err
		}
	}
	return b.write()
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// setup starts redis-server and the controller with a generated town.
func (b *bench) setup() error {
	for _, name := range []string{"controller", "gateway"} {
		if _, err := apiclient.Enroll(b.dir, name); err != nil {
			return err
		}
	}
	var err error
	if b.key, err = apiclient.LoadPrivateKey(filepath.Join(b.dir, "gateway.key")); err != nil {
		return err
	}
	if b.ctlKey, err = apiclient.LoadPublicKey(filepath.Join(b.dir, "controller.pub")); err != nil {
		return err
	}
	if err := b.writeSites("5mbit"); err != nil {
		return err
	}
	rport, err := freePort()
	if err != nil {
		return err
	}
	b.redis = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(rport), "--dir", b.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
	b.redis.Stdout, b.redis.Stderr = nil, nil
	b.redis.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.redis.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nsites: %s/sites.yaml\nstore: redis://127.0.0.1:%d/0\nsigning_key: %s/controller.key\nstate_dir: %s/state\nmetrics_listen: \"off\"\nlog_format: text\n",
		port, b.dir, rport, b.dir, b.dir)
	if err := os.WriteFile(filepath.Join(b.dir, "controller.yaml"), []byte(conf), 0o644); err != nil {
		return err
	}
	logf("starting the controller: %d sites, %d gateways", b.o.sites, b.o.sites*b.o.perSite)
	log, err := os.Create(filepath.Join(b.dir, "controller.log"))
	if err != nil {
		return err
	}
	t0 := time.Now()
	b.ctl = exec.Command(b.o.controller, "run", "-config", filepath.Join(b.dir, "controller.yaml"))
	b.ctl.Stdout, b.ctl.Stderr = log, log
	b.ctl.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.ctl.Start(); err != nil {
		return fmt.Errorf("starting the controller: %w", err)
	}
	b.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 4096, 4096
	b.hc = &http.Client{Transport: tr}
	for deadline := time.Now().Add(60 * time.Second); ; {
		resp, err := b.hc.Get(b.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			return fmt.Errorf("the controller did not answer /healthz: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.rows = append(b.rows, row{fmt.Sprintf("start with a sites.yaml of %d sites, %d gateways (exec → /healthz answers)", b.o.sites, b.o.sites*b.o.perSite),
		time.Since(t0).Round(time.Millisecond).String(), "—", "—"})
	return nil
}

func (b *bench) stop() {
	for _, c := range []*exec.Cmd{b.ctl, b.redis} {
		if c != nil && c.Process != nil {
			c.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.Process.Kill()
				<-done
			}
		}
	}
}

func site(i int) string        { return fmt.Sprintf("site-%04d", i) }
func gateway(i, j int) string  { return fmt.Sprintf("gw-%04d-%02d", i, j) }
func (b *bench) gateways() int { return b.o.sites * b.o.perSite }

// writeSites writes the town's sites.yaml with the parks policy's down rate.
func (b *bench) writeSites(down string) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, `town:
  name: Comune di Prova
  ssid: Prova WiFi
  contacts: {email: urp@comune.prova.it, dpo: dpo@comune.prova.it}
  privacy: {it: Informativa}
  terms: {it: Condizioni}
policies:
  - name: parks
    down: %s
    up: 2mbit
    login: {methods: [click-through]}
sites:
`, down)
	for i := range b.o.sites {
		fmt.Fprintf(&sb, "  - id: %s\n    name: Sito %d\n    kind: park\n    coordinates: {lat: %.4f, lon: %.4f}\n    policy: parks\n    client_network: {address: 10.20.0.1/22}\n    gateways:\n",
			site(i), i, 44.9+float64(i%100)*0.001, 9.0+float64(i/100)*0.001)
		for j := range b.o.perSite {
			fmt.Fprintf(&sb, "      - {id: %s, credential: \"file:%s/gateway.pub\"}\n", gateway(i, j), b.dir)
		}
	}
	tmp := filepath.Join(b.dir, "sites.yaml.new")
	if err := os.WriteFile(tmp, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(b.dir, "sites.yaml"))
}

func (b *bench) client(i, j int) (*apiclient.Client, error) {
	return apiclient.New(apiclient.Config{
		BaseURL: b.base, Site: site(i), GatewayID: gateway(i, j), Key: b.key, ControllerKey: b.ctlKey,
		HTTPClient: b.hc, Wait: 30 * time.Second,
	})
}

// cpu returns a process's utime+stime.
func cpu(pid int) (time.Duration, error) {
	c, err := lab.ProcessCPU(pid)
	return c.Self, err
}

func pct(busy, over time.Duration) string {
	return fmt.Sprintf("%.1f %%", 100*busy.Seconds()/over.Seconds())
}

func quantiles(d []time.Duration) (p50, p99, max time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return at(0.50), at(0.99), d[len(d)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// heartbeats: every gateway sends one heartbeat per interval, spread evenly.
func (b *bench) heartbeats() error {
	n := b.gateways()
	clients := make([]*apiclient.Client, 0, n)
	for i := range b.o.sites {
		for j := range b.o.perSite {
			c, err := b.client(i, j)
			if err != nil {
				return err
			}
			clients = append(clients, c)
		}
	}
	rate := float64(n) / b.o.interval.Seconds()
	total := int(rate * b.o.window.Seconds())
	logf("heartbeats: %d gateways every %v = %.0f/s, for %v (%d heartbeats)", n, b.o.interval, rate, b.o.window, total)
	jobs := make(chan int, 1024)
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				err := clients[k%n].Heartbeat(ctx, apiclient.Heartbeat{Version: "bench", UptimeSeconds: 100, ClientsOnline: k % 50})
				d := time.Since(t0)
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	c0, err := cpu(b.ctl.Process.Pid)
	if err != nil {
		return err
	}
	r0, _ := cpu(b.redis.Process.Pid)
	t0 := time.Now()
	for k := range total {
		if wait := time.Until(t0.Add(time.Duration(float64(k) / rate * float64(time.Second)))); wait > 0 {
			time.Sleep(wait)
		}
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(t0)
	c1, _ := cpu(b.ctl.Process.Pid)
	r1, _ := cpu(b.redis.Process.Pid)
	p50, p99, max := quantiles(lat)
	ctlShare := (c1 - c0).Seconds() / elapsed.Seconds()
	ok := "yes"
	if ctlShare >= 0.20 || failed.Load() > 0 {
		ok = "**NO**"
	}
	res := fmt.Sprintf("controller %s of one core, redis-server %s; %d sent in %v (%.0f/s), %d failed; latency p50 %s, p99 %s, max %s",
		pct(c1-c0, elapsed), pct(r1-r0, elapsed), total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), failed.Load(), ms(p50), ms(p99), ms(max))
	if e := firstErr.Load(); e != nil {
		res += "; first error: " + e.(string)
	}
	b.rows = append(b.rows, row{fmt.Sprintf("heartbeats: %d gateways every %v (signed, Redis store)", n, b.o.interval), res, "< 20 % of one core", ok})
	logf("heartbeats: %s", res)
	return nil
}

// events: as many session events as 16 senders get recorded in 10 s, in
// batches of 50 (start, interim, stop of distinct sessions).
func (b *bench) events() error {
	const senders, batch = 16, 48
	dur := 10 * time.Second
	logf("events: %d senders, batches of %d, %v", senders, batch, dur)
	var recorded, failed atomic.Int64
	var wg sync.WaitGroup
	c0, _ := cpu(b.ctl.Process.Pid)
	r0, _ := cpu(b.redis.Process.Pid)
	t0 := time.Now()
	end := t0.Add(dur)
	for s := range senders {
		c, err := b.client(s%b.o.sites, 0)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := time.Now().Add(-time.Hour).UTC()
			for time.Now().Before(end) {
				evs := make([]apiclient.SessionEvent, 0, batch)
				for range batch / 3 {
					sid := apiclient.NewEventID()
					mac := fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", s, len(evs)%256, time.Now().Nanosecond()%256, 1)
					for k, kind := range []apiclient.EventKind{apiclient.EventStart, apiclient.EventInterim, apiclient.EventStop} {
						ev := apiclient.SessionEvent{ID: apiclient.NewEventID(), Kind: kind, SessionID: sid, Start: at, At: at.Add(time.Duration(k) * time.Minute),
							ClientMAC: mac, Method: "click-through", BytesDown: uint64(k) * 1000, BytesUp: uint64(k) * 100}
						if kind == apiclient.EventStop {
							ev.Reason = "idle"
						}
						evs = append(evs, ev)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				ack, err := c.SendEvents(ctx, evs)
				cancel()
				if err != nil {
					failed.Add(int64(len(evs)))
					continue
				}
				recorded.Add(int64(len(ack.Recorded)))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	c1, _ := cpu(b.ctl.Process.Pid)
	r1, _ := cpu(b.redis.Process.Pid)
	res := fmt.Sprintf("%.0f events/s recorded (%d in %v, %d failed); controller %s of one core, redis-server %s",
		float64(recorded.Load())/elapsed.Seconds(), recorded.Load(), elapsed.Round(time.Millisecond), failed.Load(), pct(c1-c0, elapsed), pct(r1-r0, elapsed))
	b.rows = append(b.rows, row{fmt.Sprintf("session events, %d senders, batches of %d (start/interim/stop), Redis store", senders, batch), res, "— (report)", "—"})
	logf("events: %s", res)
	if recorded.Load() == 0 {
		return errors.New("no event was recorded")
	}
	return nil
}

// propagation: watchers long-poll the policy; each round edits sites.yaml
// (the parks policy's down rate) and times its arrival at every watcher.
func (b *bench) propagation() error {
	w := min(b.o.watchers, b.gateways())
	logf("propagation: %d watchers, %d rounds", w, b.o.rounds)
	type watcher struct {
		c    *apiclient.Client
		have string
	}
	ws := make([]*watcher, 0, w)
	for k := range w {
		i, j := k%b.o.sites, (k/b.o.sites)%b.o.perSite
		c, err := b.client(i, j)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		p, _, err := c.FetchPolicy(ctx, "", 0)
		cancel()
		if err != nil {
			return fmt.Errorf("first policy of watcher %d: %w", k, err)
		}
		ws = append(ws, &watcher{c: c, have: p.Version})
	}
	var all []time.Duration
	var lost int
	rates := []string{"4mbit", "3mbit", "6mbit", "7mbit", "8mbit", "9mbit", "10mbit"}
	for r := range b.o.rounds {
		arrived := make([]time.Duration, w)
		var wg sync.WaitGroup
		var t0 atomic.Int64
		ready := make(chan struct{})
		for k, x := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				for ctx.Err() == nil {
					p, changed, err := x.c.FetchPolicy(ctx, x.have, 30*time.Second)
					if err != nil {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					if changed {
						x.have = p.Version
						arrived[k] = time.Duration(time.Now().UnixNano() - t0.Load())
						return
					}
				}
				arrived[k] = -1
			}()
		}
		close(ready)
		time.Sleep(2 * time.Second) // every long poll is held at the controller
		t0.Store(time.Now().UnixNano())
		if err := b.writeSites(rates[r%len(rates)]); err != nil {
			return err
		}
		wg.Wait()
		for _, d := range arrived {
			if d < 0 {
				lost++
				continue
			}
			all = append(all, d)
		}
		_, p99, _ := quantiles(slices.Clone(arrived))
		logf("propagation round %d: p99 %v", r+1, p99)
	}
	p50, p99, max := quantiles(all)
	ok := "yes"
	if p99 >= 5*time.Second || lost > 0 {
		ok = "**NO**"
	}
	res := fmt.Sprintf("p50 %s, p99 %s, max %s over %d arrivals (%d watchers × %d edits), %d never arrived", ms(p50), ms(p99), ms(max), len(all), w, b.o.rounds, lost)
	b.rows = append(b.rows, row{fmt.Sprintf("config propagation: sites.yaml edit (%d sites, %d gateways) → new policy at %d long-polling gateways", b.o.sites, b.gateways(), w),
		res, "p99 < 5 s", ok})
	logf("propagation: %s", res)
	return nil
}

func (b *bench) write() error {
	var sb strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&sb, "# Controller benchmark\n\n`make bench` (`go run ./controller/cmd/ctlbench`), run %s UTC.\n\n", b.started.UTC().Format("2006-01-02 15:04"))
	fmt.Fprintf(&sb, "- Machine: %d CPUs, %s; the benchmark's own simulated gateways run on the same cores\n", runtime.NumCPU(), host)
	fmt.Fprintf(&sb, "- One `controller run` process on one `redis-server` (appendonly, fsync every second), both on loopback; CPU is the process's utime+stime from /proc over the measured window\n\n")
	sb.WriteString("| metric | result | target | ok |\n|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", r.what, r.result, r.target, r.ok)
	}
	if err := os.MkdirAll(filepath.Dir(b.o.out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(b.o.out, []byte(sb.String()), 0o644)
}
