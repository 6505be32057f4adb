package main

// The captive portal server's own figures (issue 3): the pre-auth probe and
// redirect throughput with wrk from a client namespace, with the daemon's
// CPU and RSS over the run, and the landing page's time to first byte at a
// steady 100 requests/s from a paced Go client dialling from inside the
// client namespace (wrk2 is not packaged here).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The OS probe the throughput row replays: iOS's, the most common phone in
// an Italian park, to a dedicated probe host (resolved by the gateway's
// dnsmasq to the gateway, DNATed to the portal's HTTP port).
const (
	probeURL = "http://captive.apple.com/hotspot-detect.html"
	probeUA  = "CaptiveNetworkSupport-481.0.1 wispr"
)

// wrkResult is what the bench reads from `wrk --latency`.
type wrkResult struct {
	rps             float64
	p50, p99        time.Duration
	non2xx3xx, errs string
	cpuPct, rssMB   float64
}

func (r wrkResult) String() string {
	s := fmt.Sprintf("%.0f req/s, p50 %s, p99 %s; daemon %.0f%% of one core, RSS %.1f MB",
		r.rps, fmtDur(r.p50), fmtDur(r.p99), r.cpuPct, r.rssMB)
	if r.non2xx3xx != "" {
		s += ", non-2xx/3xx answers: " + r.non2xx3xx
	}
	if r.errs != "" {
		s += ", socket errors: " + r.errs
	}
	return s
}

// wrk runs wrk -t2 -c64 -d10s --latency from the captive client and reads
// the daemon's CPU (utime+stime of /proc/<pid>/stat, children included)
// over the run and its RSS at the end.
func (b *bench) wrk(ctx context.Context, args ...string) (wrkResult, error) {
	var r wrkResult
	pid := b.daemon.Process.Pid
	c0, err := cpuTime(pid)
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	argv := append([]string{"wrk", "-t", "2", "-c", "64", "-d", "10s", "--latency", "--timeout", "5s"}, args...)
	out, err := b.captive.Run(wctx, argv...)
	if err != nil {
		return r, err
	}
	c1, err := cpuTime(pid)
	if err != nil {
		return r, err
	}
	r.cpuPct = (c1 - c0).Seconds() / time.Since(t0).Seconds() * 100
	st, err := procStatus(pid)
	if err != nil {
		return r, err
	}
	r.rssMB = float64(st["VmRSS"]) / 1024
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			r.p50, _ = time.ParseDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99, _ = time.ParseDuration(f[1])
		case len(f) > 0 && f[0] == "Non-2xx":
			r.non2xx3xx = f[len(f)-1]
		case len(f) > 0 && f[0] == "Socket":
			r.errs = strings.Join(f[2:], " ")
		}
	}
	if r.rps == 0 || r.p99 == 0 {
		return r, fmt.Errorf("reading wrk output:\n%s", out)
	}
	return r, nil
}

// portal measures the portal server: the probe storm, then the landing page.
func (b *bench) portal(ctx context.Context) error {
	out, err := b.captive.Run(ctx, "curl", "-sS", "-o", "/dev/null", "-A", probeUA,
		"-w", "%{http_code} %{remote_ip} %{redirect_url}", "--max-time", "5", probeURL)
	f := strings.Fields(out)
	if err != nil || len(f) != 3 || f[0] != "302" || f[1] != b.l.GatewayIP.String() {
		return fmt.Errorf("captive client's iOS probe: got %q, %v; want a 302 from the gateway %s", out, err, b.l.GatewayIP)
	}
	landing := f[2]
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.note("Load average (1, 5, 15 min) when the portal rows started: %s.", strings.Join(strings.Fields(string(la))[:3], ", "))
	}
	b.logf("wrk -t2 -c64 -d10s --latency %s (iOS probe) from a captive client", probeURL)
	r, err := b.wrk(ctx, "-H", "User-Agent: "+probeUA, probeURL)
	if err != nil {
		return err
	}
	b.add(row{"pre-auth OS probe → 302 (iOS hotspot-detect via the gateway's DNS), wrk 2 threads 64 conns 10 s", "0 (captive)",
		r.String(), "≥ 15,000 req/s, p99 < 10 ms", okMark(r.rps >= 15000 && r.p99 < 10*time.Millisecond && r.non2xx3xx == "" && r.errs == "")})

	ttfb, failed, cpuPct, err := b.pacedTTFB(ctx, landing, 100, 10*time.Second)
	if err != nil {
		return err
	}
	s := summarise(ttfb)
	res := fmt.Sprintf("p50 %s, p99 %s, max %s over %d requests; daemon %.0f%% of one core", fmtDur(s.p50), fmtDur(s.p99), fmtDur(s.max), s.n, cpuPct)
	if failed > 0 {
		res += fmt.Sprintf(", %d failed or not 200", failed)
	}
	b.add(row{"landing page time to first byte at 100 req/s (paced, 10 s, keep-alive, from a client namespace)", "0 (captive)",
		res, "p99 < 5 ms", okMark(s.n > 0 && s.p99 < 5*time.Millisecond && failed == 0)})
	b.note("Portal rows: `portal.rate_limit: 0` in the bench's config. The per-client limit (20 requests/s by default, bursts of 40) would otherwise answer one namespace's load with 429s; one client namespace stands in for a park full of phones. The probe row's name resolves through the gateway's dnsmasq (captive.apple.com → 10.20.0.1) and its tcp/80 is DNATed to the portal; probe redirects keep the connection alive. The landing page is the one the probe's 302 names (signed original URL); its TTFB is from the request's start (a new connection when the pool has none) to the first response byte, requests started every 10 ms whatever the previous ones do.")
	return nil
}

// pacedTTFB requests page from inside the captive client's namespace at a
// fixed rate for d (open loop: one request every 1/rate whether or not the
// earlier ones have answered) and returns each 200's time to first byte,
// the number of failures and the daemon's CPU over the run.
func (b *bench) pacedTTFB(ctx context.Context, page string, rate int, d time.Duration) ([]time.Duration, int, float64, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return b.captive.Dial(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 32,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(ctx context.Context) (time.Duration, error) {
		var first time.Time
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }})
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, page, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148")
		req.Header.Set("Accept-Language", "it-IT,it;q=0.9")
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return first.Sub(t0), nil
	}
	// Warm-up: the page renders once per language and original URL.
	for range 5 {
		if _, err := get(ctx); err != nil {
			return nil, 0, 0, fmt.Errorf("landing page %s: %w", page, err)
		}
	}
	b.logf("landing page %s at %d req/s for %s from a captive client", page, rate, d)
	pid := b.daemon.Process.Pid
	c0, err := cpuTime(pid)
	if err != nil {
		return nil, 0, 0, err
	}
	n := rate * int(d/time.Second)
	var (
		mu   sync.Mutex
		ttfb []time.Duration
		wg   sync.WaitGroup
	)
	rctx, cancel := context.WithTimeout(ctx, d+15*time.Second)
	defer cancel()
	start := time.Now()
	every := time.Second / time.Duration(rate)
	for i := range n {
		if err := sleepCtx(rctx, time.Until(start.Add(time.Duration(i)*every))); err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t, err := get(rctx)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ttfb = append(ttfb, t)
			}
		}()
	}
	wg.Wait()
	c1, err := cpuTime(pid)
	if err != nil {
		return nil, 0, 0, err
	}
	cpu := (c1 - c0).Seconds() / time.Since(start).Seconds() * 100
	return ttfb, n - len(ttfb), cpu, nil
}
