package firewall

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// runner runs one command, feeding it stdin, and returns its combined
// output. A non-zero exit is an error naming the command and its output.
type runner interface {
	Run(ctx context.Context, stdin string, argv ...string) (string, error)
}

// execRunner runs commands on this machine, in the calling thread's network
// namespace, with LC_ALL=C so messages parse the same everywhere.
type execRunner struct {
	// prefix is prepended to every argv, e.g. {"ip", "netns", "exec", "gw"}.
	prefix []string
}

func (r execRunner) Run(ctx context.Context, stdin string, argv ...string) (string, error) {
	full := append(append([]string{}, r.prefix...), argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("running %q: %w\n%s", full, err, out.String())
	}
	return out.String(), nil
}
