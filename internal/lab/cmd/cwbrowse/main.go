// Command cwbrowse drives a headless Chromium through a short script, as a
// resident's phone would, and prints what happened as JSON. It is meant to
// run inside a lab client namespace:
//
//	ip netns exec cwc1-<id> cwbrowse -cacert lab-ca.pem -lang it-IT,it \
//	    navigate=http://198.51.100.11/ screenshot=/tmp/landing.png \
//	    click='button[name=accept]' wait_url=198.51.100.11 snapshot
//
// Chromium (and its DevTools pipe) then lives in that namespace, whose only
// route is the gateway: it reaches nothing outside the lab.
//
// Steps, in order (op=argument):
//
//	navigate=URL       load URL and wait for the load event (redirects followed)
//	click=SELECTOR     click the first visible element the CSS selector finds
//	type=SELECTOR=TEXT type TEXT (key presses; no '=' in it) into the first visible element the selector finds
//	wait=SELECTOR      wait until the element is visible
//	wait_url=TEXT      wait until the page's URL contains TEXT
//	wait_text=TEXT     wait until the body's text contains TEXT
//	screenshot=PATH    the viewport as a PNG (phone size by default)
//	snapshot           record the URL, title and body text in the step's result
//
// The output: the final URL, title, <html lang>, body text and every step
// with the URL it ended on; every main-document response (URL, status);
// error, if a step failed (exit status 1).
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// A phone: Chrome on Android.
const defaultUA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36"

type options struct {
	chromium string
	caFile   string
	hosts    string // Chromium's --host-resolver-rules
	lang     string
	ua       string
	width    int64
	height   int64
	scale    float64
	timeout  time.Duration
	stepWait time.Duration
}

type (
	// Step is one scripted action and where it left the page.
	Step = lab.BrowseStep
	// Result is what cwbrowse prints.
	Result = lab.BrowseResult
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cwbrowse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.chromium, "chromium", "/usr/bin/chromium", "the Chromium binary")
	fs.StringVar(&o.caFile, "cacert", "", "PEM CA certificate to trust (e.g. the lab CA); the server must present it in its chain")
	fs.StringVar(&o.hosts, "host-rules", "", "Chromium --host-resolver-rules, e.g. \"MAP www.example.it 127.0.0.1\" (tests on loopback)")
	fs.StringVar(&o.lang, "lang", "it-IT,it", "preferred languages, best first: Accept-Language (Chromium adds the q-values) and navigator.languages")
	fs.StringVar(&o.ua, "ua", defaultUA, "user agent")
	fs.Int64Var(&o.width, "width", 390, "viewport width, CSS pixels")
	fs.Int64Var(&o.height, "height", 844, "viewport height, CSS pixels")
	fs.Float64Var(&o.scale, "scale", 2, "device scale factor")
	fs.DurationVar(&o.timeout, "timeout", 90*time.Second, "the whole run")
	fs.DurationVar(&o.stepWait, "step-timeout", 30*time.Second, "each step")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cwbrowse [flags] op=arg ... (navigate, click, wait, wait_url, wait_text, screenshot, snapshot)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	steps, err := parseSteps(fs.Args())
	if err != nil {
		fmt.Fprintln(stderr, "cwbrowse:", err)
		return 2
	}
	res, err := browse(context.Background(), o, steps)
	if err != nil {
		res.Error = err.Error()
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.Encode(res)
	if err != nil {
		return 1
	}
	return 0
}

var ops = map[string]bool{"navigate": true, "click": true, "type": true, "wait": true, "wait_url": true, "wait_text": true, "screenshot": true, "snapshot": false}

// parseSteps reads op=arg words; an op is followed by "=" only if it takes
// an argument (the argument may itself contain "=").
func parseSteps(words []string) ([]Step, error) {
	if len(words) == 0 {
		return nil, errors.New("no steps")
	}
	var steps []Step
	for i, w := range words {
		op, arg, hasArg := strings.Cut(w, "=")
		needs, known := ops[op]
		switch {
		case !known:
			return nil, fmt.Errorf("step %d %q: unknown op %q", i+1, w, op)
		case needs && (!hasArg || arg == ""):
			return nil, fmt.Errorf("step %d %q: %s needs an argument (%s=...)", i+1, w, op, op)
		case !needs && hasArg:
			return nil, fmt.Errorf("step %d %q: %s takes no argument", i+1, w, op)
		}
		steps = append(steps, Step{Op: op, Arg: arg})
	}
	return steps, nil
}

func browse(parent context.Context, o options, steps []Step) (Result, error) {
	res := Result{Steps: []Step{}, Documents: []lab.BrowseDocument{}}
	dataDir, err := os.MkdirTemp("", "cwbrowse-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dataDir)

	// Chromium writes the q-values of its language list itself.
	var tags []string
	for _, t := range strings.Split(o.lang, ",") {
		if t, _, _ = strings.Cut(t, ";"); strings.TrimSpace(t) != "" {
			tags = append(tags, strings.TrimSpace(t))
		}
	}
	o.lang = strings.Join(tags, ",")
	flags := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(o.chromium),
		chromedp.UserDataDir(dataDir),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		// A captive network assistant loads exactly the http URL it is
		// given: no automatic https upgrade, no translation offer.
		chromedp.Flag("disable-features", "HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,Translate,MediaRouter,OptimizationHints"),
		chromedp.WindowSize(int(o.width), int(o.height)),
	}
	if len(tags) > 0 {
		flags = append(flags, chromedp.Flag("lang", tags[0]))
	}
	if o.hosts != "" {
		flags = append(flags, chromedp.Flag("host-resolver-rules", o.hosts))
	}
	if o.caFile != "" {
		hashes, err := spkiHashes(o.caFile)
		if err != nil {
			return res, err
		}
		// Honoured together with --user-data-dir: trust exactly this CA.
		flags = append(flags, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(hashes, ",")))
	}
	ctx, cancel := context.WithTimeout(parent, o.timeout)
	defer cancel()
	actx, acancel := chromedp.NewExecAllocator(ctx, flags...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	var mu sync.Mutex
	if err := chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*network.EventResponseReceived); ok && e.Type == network.ResourceTypeDocument && e.Response != nil {
			mu.Lock()
			defer mu.Unlock()
			res.Documents = append(res.Documents, lab.BrowseDocument{URL: e.Response.URL, Status: e.Response.Status})
		}
	}); err != nil {
		return res, fmt.Errorf("starting chromium: %w", err)
	}

	// Phone: viewport, touch, mobile user agent, language.
	if err := chromedp.Do(bctx,
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{
				UserAgent: o.ua, AcceptLanguage: o.lang, Platform: "Linux armv8l",
			})
			return err
		}),
		chromedp.EmulateViewport(o.width, o.height, chromedp.EmulateScale(o.scale), chromedp.EmulateMobile, chromedp.EmulateTouch),
	); err != nil {
		return res, fmt.Errorf("emulating a phone: %w", err)
	}

	var runErr error
	for i, s := range steps {
		start := time.Now()
		sctx, scancel := context.WithTimeout(bctx, o.stepWait)
		err := doStep(sctx, &s)
		scancel()
		s.MS = time.Since(start).Milliseconds()
		if u, uerr := chromedp.Run(bctx, chromedp.Location()); uerr == nil {
			s.URL = u
		}
		res.Steps = append(res.Steps, s)
		if err != nil {
			runErr = fmt.Errorf("step %d %s=%s: %w", i+1, s.Op, s.Arg, err)
			break
		}
	}
	// The final state, also after a failed step (it says where it got stuck).
	fctx, fcancel := context.WithTimeout(bctx, 10*time.Second)
	defer fcancel()
	res.URL, _ = chromedp.Run(fctx, chromedp.Location())
	res.Title, _ = chromedp.Run(fctx, chromedp.Title())
	res.Lang, _ = chromedp.Run(fctx, chromedp.Evaluate[string](`document.documentElement.lang || ""`))
	res.Text, _ = chromedp.Run(fctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	mu.Lock()
	defer mu.Unlock()
	return res, runErr
}

func doStep(ctx context.Context, s *Step) error {
	switch s.Op {
	case "navigate":
		// Chromium fails a load with ERR_NETWORK_CHANGED when the links
		// or addresses of its namespace change under it (seen once in CI
		// on a lab built a moment before: IPv6 addresses leaving DAD). A
		// browser reloads; so does this, twice at most.
		var err error
		for range 3 {
			err = chromedp.Do(ctx, chromedp.Navigate(s.Arg))
			if err == nil || !strings.Contains(err.Error(), "ERR_NETWORK_CHANGED") {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(300 * time.Millisecond):
			}
		}
		return err
	case "click":
		return chromedp.Do(ctx, chromedp.Click(s.Arg, chromedp.NodeVisible))
	case "type":
		i := strings.LastIndexByte(s.Arg, '=') // selectors may hold '=' ([type=tel]); TEXT may not
		if i < 1 {
			return errors.New("want type=SELECTOR=TEXT")
		}
		return chromedp.Do(ctx, chromedp.SendKeys(s.Arg[:i], s.Arg[i+1:], chromedp.NodeVisible))
	case "wait":
		return chromedp.Do(ctx, chromedp.WaitVisible(s.Arg))
	case "wait_url":
		return waitFor(ctx, chromedp.Location(), func(v string) bool { return strings.Contains(v, s.Arg) })
	case "wait_text":
		return waitFor(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`), func(v string) bool { return strings.Contains(v, s.Arg) })
	case "screenshot":
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			return err
		}
		return os.WriteFile(s.Arg, png, 0o644)
	case "snapshot":
		var err error
		if s.Title, err = chromedp.Run(ctx, chromedp.Title()); err != nil {
			return err
		}
		s.Text, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		return err
	}
	return fmt.Errorf("unknown op %q", s.Op)
}

// waitFor polls a until ok holds or ctx ends (the last value in the error).
func waitFor(ctx context.Context, a chromedp.Action[string], ok func(string) bool) error {
	var last string
	for {
		v, err := chromedp.Run(ctx, a)
		if err == nil {
			if ok(v) {
				return nil
			}
			last = v
		}
		select {
		case <-ctx.Done():
			if len(last) > 200 {
				last = last[:200] + "..."
			}
			return fmt.Errorf("%w (last: %q)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// spkiHashes reads every certificate of a PEM file and returns the base64
// SHA-256 of each public key.
func spkiHashes(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	var out []string
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA file %s: %w", path, err)
		}
		out = append(out, lab.SPKIHash(c))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("CA file %s: no certificate", path)
	}
	return out, nil
}
