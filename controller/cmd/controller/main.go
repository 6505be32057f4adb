// Command controller is civicwifi's central controller. Its subcommands
// check and compare sites.yaml, the one file that describes every hotspot of
// a town; each subcommand lives in its own file and registers itself in
// commands below.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand. run returns errUsage for bad arguments and
// errReported when it has already printed the problem.
type command struct {
	name, args, summary string
	run                 func(ctx context.Context, env *env, args []string) error
}

// env is what a subcommand may touch, so tests can run them in-process.
type env struct {
	stdout, stderr io.Writer
}

var commands = []command{
	{"validate", "sites.yaml", "check sites.yaml and report every problem with file:line:col", validate},
	{"schema", "[-o file]", "write the JSON Schema of sites.yaml (for editors; the repo keeps sites.schema.json)", schema},
	{"plan", "sites.yaml [-config controller.yaml | --against old-sites.yaml]", "show what sites.yaml changes against the running controller (or another file), like terraform plan", plan},
	{"run", "[-config controller.yaml]", "run the controller: gateway and access point APIs, reloading sites.yaml", runDaemon},
	{"enroll", "-out dir -name gateway-id", "make a gateway's key pair (or the controller's, -name controller)", enroll},
	{"sessions", "[-config controller.yaml] [-site id] [-json]", "print each site's session totals from the store", sessions},
	{"privacy", "export|erase [-config controller.yaml] -phone N | -fiscal-code C [-actor name]", "a resident's GDPR request: export or erase everything tied to a phone number or fiscal code", privacy},
	{"forget-ap", "[-config controller.yaml] mac", "forget an access point's enrollment so that it enrolls again (after a factory reset)", forgetAP},
	{"vouchers", "-site id|-town -count n -out sheet.html [-duration 24h] [-data 1GB] [-devices n] [-valid 30d] [-portal url]", "create a batch of vouchers and write a printable sheet with QR codes", vouchers},
	{"report", "-month YYYY-MM [-site id] [-format csv|json] [-o file] [-config controller.yaml]", "the monthly usage report for the council: the town per site, or one site per day", report},
	{"admin", "add|list [-accounts file] [-role it|operator|auditor] name", "add or change a dashboard account (password on stdin), or list them", admin},
}

var (
	errUsage    = errors.New("usage")
	errReported = errors.New("reported")
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &env{stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run runs the subcommand named by args[0] and returns the exit code:
// 0 on success, 1 on failure, 2 on a usage error.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
			fmt.Fprintf(e.stderr, "usage: controller %s %s\n", c.name, c.args)
			return 2
		case errors.Is(err, errReported):
			return 1
		default:
			fmt.Fprintf(e.stderr, "controller %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "controller: unknown command %q\n", args[0])
	usage(e.stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: controller <command> [arguments]")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n  %9s %s\n", c.name, c.args, "", c.summary)
	}
}

// newFlags is a subcommand's flag set, quiet on errors (run prints usage).
func newFlags(name string, e *env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("plan sites.yaml --against old.yaml").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
