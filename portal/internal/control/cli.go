package control

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Exit codes of `portal ctl`.
const (
	ExitOK     = 0
	ExitFailed = 1 // the daemon could not be reached, or failed or refused the request
	ExitUsage  = 2 // bad command line; nothing was sent to the daemon
)

// Main runs `portal ctl`; args are the arguments after "ctl". It returns the
// process exit code: 0 success, 1 daemon error, 2 usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{
		stdout: stdout,
		stderr: stderr,
		now:    time.Now,
		loc:    time.Local,
		dial:   func(path string) Service { return NewClient(path) },
	}
	return c.run(ctx, args)
}

type cli struct {
	stdout, stderr io.Writer
	now            func() time.Time
	loc            *time.Location
	dial           func(socket string) Service

	socket string
	json   bool
}

// usageError is a command-line mistake: exit 2, with a pointer to help.
type usageError struct {
	cmd string // "" for the global level
	msg string
}

func (e *usageError) Error() string { return e.msg }

type command struct {
	name     string
	synopsis string
	summary  string
	// setup defines the command's flags on fs and returns what runs it.
	setup func(c *cli, fs *flag.FlagSet) func(ctx context.Context, svc Service) error
}

var commands = []command{
	{"status", "status", "show the gateway's health summary", (*cli).statusCmd},
	{"clients", "clients", "list the devices seen on the client network", (*cli).clientsCmd},
	{"allow", "allow (--mac M | --ip A) [--duration 2h] [--idle 15m] [--quota 500MB] [--down 10mbit] [--up 2mbit]",
		"authorise a device (zero or missing limits take the site's defaults)", (*cli).allowCmd},
	{"kick", "kick (--mac M | --ip A) [--reason R]", "end a device's session", (*cli).kickCmd},
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// globalFlags defines --socket and --json on fs (the top level and every
// command accept them); applyGlobals copies those given into c.
func globalFlags(fs *flag.FlagSet) {
	fs.String("socket", DefaultSocket, "`PATH` of the daemon's control socket")
	fs.Bool("json", false, "print the API's JSON answer instead of a table")
}

func (c *cli) applyGlobals(fs *flag.FlagSet) {
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "socket":
			c.socket = f.Value.String()
		case "json":
			c.json = f.Value.String() == "true"
		}
	})
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by run, usage by help
	fs.Usage = func() {}
	return fs
}

func (c *cli) run(ctx context.Context, args []string) int {
	c.socket = DefaultSocket
	err := c.dispatch(ctx, args)
	var ue *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		prefix, help := "portal ctl", "portal ctl help"
		if ue.cmd != "" {
			prefix += " " + ue.cmd
			help += " " + ue.cmd
		}
		fmt.Fprintf(c.stderr, "%s: %s\nRun '%s' for usage.\n", prefix, ue.msg, help)
		return ExitUsage
	default:
		fmt.Fprintf(c.stderr, "portal ctl: %s\n", err)
		return ExitFailed
	}
}

func (c *cli) dispatch(ctx context.Context, args []string) error {
	gfs := newFlagSet("portal ctl")
	globalFlags(gfs)
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(c.stdout)
			return nil
		}
		return &usageError{msg: flagMessage(err)}
	}
	c.applyGlobals(gfs)
	rest := gfs.Args()
	if len(rest) == 0 {
		c.usage(c.stderr)
		return &usageError{msg: "missing command"}
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		return c.help(rest)
	}
	cmd := findCommand(name)
	if cmd == nil {
		return &usageError{msg: fmt.Sprintf("unknown command %q (commands: status, clients, allow, kick, help)", name)}
	}
	fs := newFlagSet("portal ctl " + name)
	globalFlags(fs)
	runCmd := cmd.setup(c, fs)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.commandUsage(c.stdout, cmd, fs)
			return nil
		}
		return &usageError{cmd: name, msg: flagMessage(err)}
	}
	c.applyGlobals(fs)
	if fs.NArg() > 0 {
		return &usageError{cmd: name, msg: fmt.Sprintf("unexpected argument %q (flags are written --name value)", fs.Arg(0))}
	}
	if c.socket == "" {
		return &usageError{cmd: name, msg: "--socket is empty"}
	}
	return runCmd(ctx, c.dial(c.socket))
}

// flagMessage rewrites the flag package's single-dash spelling.
func flagMessage(err error) string {
	msg := err.Error()
	msg = strings.Replace(msg, ": -", ": --", 1)
	return msg
}

func (c *cli) help(args []string) error {
	if len(args) == 0 {
		c.usage(c.stdout)
		return nil
	}
	cmd := findCommand(args[0])
	if cmd == nil {
		return &usageError{msg: fmt.Sprintf("no help for unknown command %q", args[0])}
	}
	fs := newFlagSet("portal ctl " + cmd.name)
	globalFlags(fs)
	cmd.setup(c, fs)
	c.commandUsage(c.stdout, cmd, fs)
	return nil
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: portal ctl [--socket PATH] [--json] COMMAND [FLAGS]\n\n")
	fmt.Fprintf(w, "Talks to the running portal daemon over its control socket.\n\nCommands:\n")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-8s  %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, "  %-8s  %s\n", "help", "list commands, or show one command's flags: help COMMAND")
	fmt.Fprintf(w, "\nGlobal flags (before or after the command):\n")
	fmt.Fprintf(w, "  --socket PATH  control socket (default %s)\n", DefaultSocket)
	fmt.Fprintf(w, "  --json         print the API's JSON answer instead of a table\n")
	fmt.Fprintf(w, "\nExit status: 0 success, 1 the daemon failed or refused, 2 usage error.\n")
}

func (c *cli) commandUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: portal ctl %s\n\n%s.\n\nFlags:\n", cmd.synopsis, upperFirst(cmd.summary))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if name != "" {
			left += " " + name
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  %s\t%s%s\n", left, usage, def)
	})
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func (c *cli) statusCmd(fs *flag.FlagSet) func(context.Context, Service) error {
	return func(ctx context.Context, svc Service) error {
		st, err := svc.Status(ctx)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(st)
		}
		return c.renderStatus(st)
	}
}

func (c *cli) clientsCmd(fs *flag.FlagSet) func(context.Context, Service) error {
	return func(ctx context.Context, svc Service) error {
		cs, err := svc.Clients(ctx)
		if err != nil {
			return err
		}
		if c.json {
			if cs == nil {
				cs = []Client{}
			}
			return c.printJSON(cs)
		}
		return c.renderClients(cs)
	}
}

func (c *cli) allowCmd(fs *flag.FlagSet) func(context.Context, Service) error {
	var req AllowRequest
	fs.StringVar(&req.MAC, "mac", "", "`MAC` address of the device, e.g. aa:bb:cc:dd:ee:ff")
	fs.StringVar(&req.IP, "ip", "", "`IP` address of the device, e.g. 10.0.0.23")
	fs.StringVar(&req.Duration, "duration", "", "session `LENGTH`, e.g. 2h or 45m")
	fs.StringVar(&req.Idle, "idle", "", "`TIME` without traffic that ends the session, e.g. 15m")
	fs.StringVar(&req.Quota, "quota", "", "data allowance (`SIZE`), e.g. 500MB or 2GiB")
	fs.StringVar(&req.Down, "down", "", "download `RATE` limit, e.g. 10mbit")
	fs.StringVar(&req.Up, "up", "", "upload `RATE` limit, e.g. 2mbit")
	return func(ctx context.Context, svc Service) error {
		req.Method = "ctl"
		norm, err := checkTarget("allow", req.MAC, req.IP, func() (any, error) { return req.Normalized() })
		if err != nil {
			return err
		}
		sess, err := svc.Allow(ctx, norm.(AllowRequest))
		if err != nil {
			return fmt.Errorf("allowing %s: %w", target(req.MAC, req.IP), err)
		}
		if c.json {
			return c.printJSON(sess)
		}
		return c.renderSession("allowed", sess)
	}
}

func (c *cli) kickCmd(fs *flag.FlagSet) func(context.Context, Service) error {
	var req KickRequest
	fs.StringVar(&req.MAC, "mac", "", "`MAC` address of the device, e.g. aa:bb:cc:dd:ee:ff")
	fs.StringVar(&req.IP, "ip", "", "`IP` address of the device, e.g. 10.0.0.23")
	fs.StringVar(&req.Reason, "reason", "", "why, as free `TEXT` for the log")
	return func(ctx context.Context, svc Service) error {
		norm, err := checkTarget("kick", req.MAC, req.IP, func() (any, error) { return req.Normalized() })
		if err != nil {
			return err
		}
		sess, err := svc.Kick(ctx, norm.(KickRequest))
		if err != nil {
			return fmt.Errorf("kicking %s: %w", target(req.MAC, req.IP), err)
		}
		if c.json {
			return c.printJSON(sess)
		}
		return c.renderSession("kicked", sess)
	}
}

// checkTarget validates a request locally, turning field errors into usage
// errors that name the flag, before anything is sent to the daemon.
func checkTarget(cmd, mac, ip string, normalize func() (any, error)) (any, error) {
	if strings.TrimSpace(mac) == "" && strings.TrimSpace(ip) == "" {
		return nil, &usageError{cmd: cmd, msg: "one of --mac or --ip is required"}
	}
	v, err := normalize()
	var fe *FieldError
	if errors.As(err, &fe) {
		return nil, &usageError{cmd: cmd, msg: fmt.Sprintf("--%s: %s", fe.Field, fe.Reason)}
	}
	return v, err
}

func target(mac, ip string) string {
	switch {
	case mac != "" && ip != "":
		return mac + " (" + ip + ")"
	case mac != "":
		return mac
	}
	return ip
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
