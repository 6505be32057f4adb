package shaper

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// runner runs one command, feeding it stdin, and returns its standard
// output. It is the only way this package touches the OS, so unit tests
// can replace it with a fake that records the commands.
type runner interface {
	run(ctx context.Context, stdin string, argv ...string) ([]byte, error)
}

// execRunner runs commands with LC_ALL=C, optionally inside a named network
// namespace (through `ip netns exec`).
type execRunner struct {
	netns string
}

func (r execRunner) run(ctx context.Context, stdin string, argv ...string) ([]byte, error) {
	if r.netns != "" {
		argv = append([]string{"ip", "netns", "exec", r.netns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		out := stderr.String()
		if stdout.Len() > 0 {
			out = stdout.String() + out
		}
		if len(argv) > 0 && stdin != "" {
			out += excerpt(stdin, out)
		}
		return stdout.Bytes(), fmt.Errorf("running %q: %w\n%s", argv, err, out)
	}
	return stdout.Bytes(), nil
}

// excerpt adds the failing batch line to an error, when tc names it with
// "Command failed -:N".
func excerpt(stdin, out string) string {
	i := strings.LastIndex(out, "Command failed -:")
	if i < 0 {
		return ""
	}
	var n int
	if _, err := fmt.Sscanf(out[i+len("Command failed -:"):], "%d", &n); err != nil || n < 1 {
		return ""
	}
	lines := strings.Split(stdin, "\n")
	if n > len(lines) {
		return ""
	}
	return fmt.Sprintf("\nbatch line %d: %s", n, lines[n-1])
}
