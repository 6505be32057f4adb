package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// BrowseStep is one step of a cwbrowse script and the URL it ended on.
type BrowseStep struct {
	Op    string `json:"op"`
	Arg   string `json:"arg,omitempty"`
	URL   string `json:"url"`
	MS    int64  `json:"ms"`
	Title string `json:"title,omitempty"` // snapshot only
	Text  string `json:"text,omitempty"`  // snapshot only
}

// BrowseDocument is one main-document HTTP response Chromium received.
type BrowseDocument struct {
	URL    string `json:"url"`
	Status int64  `json:"status"`
}

// BrowseResult is what cwbrowse prints: the final page and every step.
type BrowseResult struct {
	URL       string           `json:"url"`
	Title     string           `json:"title"`
	Lang      string           `json:"lang"` // <html lang>
	Text      string           `json:"text"` // document.body.innerText
	Steps     []BrowseStep     `json:"steps"`
	Documents []BrowseDocument `json:"documents"`
	Error     string           `json:"error,omitempty"`
}

// BrowserBinary builds internal/lab/cmd/cwbrowse once per test process
// (see Binary) and returns its path. It requires chromium (see Require).
func BrowserBinary(t testing.TB) string {
	t.Helper()
	Require(t, "chromium")
	return Binary(t, "github.com/civicwifi/civicwifi/internal/lab/cmd/cwbrowse")
}

// Browse runs cwbrowse (bin) inside ns (the zero NS: in the caller's own) with flags (e.g. "-cacert", file,
// "-lang", "en-GB,en") and steps ("navigate=http://...", "snapshot").
// A failed step is an error; the result still says where the page was.
func Browse(ctx context.Context, ns NS, bin string, flags []string, steps ...string) (BrowseResult, error) {
	argv := append(append([]string{bin}, flags...), steps...)
	var cmd *exec.Cmd
	if ns.Name == "" { // the caller's own namespace: a browser on loopback
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "LC_ALL=C")
	} else {
		cmd = ns.Command(ctx, argv...)
	}
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var res BrowseResult
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("running cwbrowse in %s: %v (output %q, stderr %q)", ns.Name, runErr, out, stderr.String())
	}
	if runErr != nil || res.Error != "" {
		return res, fmt.Errorf("cwbrowse in %s: %s (%v); at %s; stderr %q", ns.Name, res.Error, runErr, res.URL, stderr.String())
	}
	return res, nil
}

// limitedBuffer keeps the last 8 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.b = append(l.b, p...)
	if len(l.b) > 8<<10 {
		l.b = l.b[len(l.b)-8<<10:]
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
