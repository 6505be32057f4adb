package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromeOptions shape a Chrome.
type ChromeOptions struct {
	// NS, if set, is the namespace Chromium runs in (`ip netns exec`
	// execs it, keeping the DevTools pipe's descriptors).
	NS *NS
	// Flags are added to the common ones (headless, no sandbox, no
	// background networking...), e.g. which certificates to trust.
	Flags []chromedp.ExecAllocatorOption
	// Timeout bounds the whole session (default 2 minutes).
	Timeout time.Duration
	// Shots is where Shot writes (default: $CW_ARTIFACTS, else a temp dir).
	Shots string
}

// Chrome is a headless Chromium (Debian's) driven over the DevTools
// protocol by a test: every failure names what was being done, where the
// browser was and what the page said.
type Chrome struct {
	t     testing.TB
	ctx   context.Context
	shots string
}

// NewChrome starts Chromium at desktop size (1280x900); it is stopped when
// the test ends. Under CI=true a missing chromium fails the test.
func NewChrome(t testing.TB, o ChromeOptions) *Chrome {
	t.Helper()
	Require(t, "chromium")
	bin, _ := exec.LookPath("chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.UserDataDir(t.TempDir()), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.WindowSize(1280, 900),
	}
	if o.NS != nil {
		ipBin, err := exec.LookPath("ip")
		if err != nil {
			t.Fatal(err)
		}
		ns := o.NS.Name
		opts = append(opts, chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{"ip", "netns", "exec", ns, cmd.Path}, cmd.Args[1:]...)
			cmd.Path = ipBin
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}))
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), append(opts, o.Flags...)...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	bctx, tcancel := context.WithTimeout(bctx, o.Timeout)
	t.Cleanup(tcancel)
	shots := o.Shots
	if shots == "" {
		shots = os.Getenv("CW_ARTIFACTS")
	}
	if shots == "" {
		shots = t.TempDir()
	}
	return &Chrome{t: t, ctx: bctx, shots: shots}
}

// Context is the browser's context, for chromedp calls of the test's own.
func (c *Chrome) Context() context.Context { return c.ctx }

// Fail ends the test with what was being done, the browser's location and
// the start of the page's text.
func (c *Chrome) Fail(what string, err error) {
	c.t.Helper()
	loc, _ := chromedp.Run(c.ctx, chromedp.Location())
	body, _ := chromedp.Run(c.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	c.t.Fatalf("%s: %v (at %s: %.500s)", what, err, loc, body)
}

// Do runs actions, failing the test (see Fail) if one fails.
func (c *Chrome) Do(what string, acts ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	if err := chromedp.Do(c.ctx, acts...); err != nil {
		c.Fail(what, err)
	}
}

// Text is the trimmed text of the element sel.
func (c *Chrome) Text(sel string) string {
	c.t.Helper()
	v, err := chromedp.Run(c.ctx, chromedp.Text(sel))
	if err != nil {
		c.Fail("text of "+sel, err)
	}
	return strings.TrimSpace(v)
}

// Location is the page's URL.
func (c *Chrome) Location() string {
	c.t.Helper()
	v, err := chromedp.Run(c.ctx, chromedp.Location())
	if err != nil {
		c.Fail("location", err)
	}
	return v
}

// Shot writes a full-page screenshot named name and returns its size.
func (c *Chrome) Shot(name string) int {
	c.t.Helper()
	png, err := chromedp.Run(c.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		c.Fail("screenshot "+name, err)
	}
	p := filepath.Join(c.shots, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("screenshot: %s (%d bytes)", p, len(png))
	return len(png)
}

// Shots is the directory Shot writes to.
func (c *Chrome) Shots() string { return c.shots }
