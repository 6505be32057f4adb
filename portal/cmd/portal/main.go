// Command portal is the civicwifi on-site gateway daemon and its tools:
//
//	portal run -config /etc/civicwifi/portal.yaml   the daemon (root)
//	portal validate /etc/civicwifi/portal.yaml      check a config file, change nothing
//	portal ctl status|clients|allow|kick ...        the local control interface
//	portal teardown -config ...                     remove every rule, set, qdisc and process the gateway made
//	portal poster -config ... > poster.html         the site's printable poster (QR code that joins the Wi-Fi)
//	portal version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/httpserve"
	"github.com/civicwifi/civicwifi/portal/internal/captive"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"github.com/civicwifi/civicwifi/portal/internal/discovery"
	"github.com/civicwifi/civicwifi/portal/internal/dnsmasq"
	"github.com/civicwifi/civicwifi/portal/internal/firewall"
	"github.com/civicwifi/civicwifi/portal/internal/gateway"
	"github.com/civicwifi/civicwifi/portal/internal/login"
	"github.com/civicwifi/civicwifi/portal/internal/memlimit"
	"github.com/civicwifi/civicwifi/portal/internal/shaper"
	"github.com/civicwifi/civicwifi/portal/internal/uplink"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

const defaultConfig = "/etc/civicwifi/portal.yaml"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: portal <command> [flags]

commands:
  run       [-config FILE] [-log-format json|text]   run the gateway daemon
  validate  [FILE]                                   check a gateway config file
  ctl       status|clients|allow|kick|help ...       talk to the running daemon
  teardown  [-config FILE]                           remove everything the gateway made
  poster    [-config FILE]                           print the site's poster (HTML, QR code) to stdout
  version                                            print the version
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "validate":
		path := defaultConfig
		if len(args) > 1 {
			path = args[1]
		}
		cfg, err := config.Load(path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := checkPortalFiles(cfg); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", path)
		return 0
	case "ctl":
		return control.Main(ctx, args[1:], stdout, stderr)
	case "teardown":
		return cmdTeardown(ctx, args[1:], stderr)
	case "poster":
		return cmdPoster(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "portal: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func newLogger(w io.Writer, format string) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

// parts are the gateway's OS-facing pieces, built from the config.
type parts struct {
	fw  *firewall.Kernel
	sh  *shaper.TC
	dns *dnsmasq.Server
}

func build(cfg *config.Config, log *slog.Logger) (*parts, error) {
	fw, err := firewall.New(firewall.Config{
		ClientIf: cfg.ClientIf, UplinkIf: cfg.UplinkIf, Subnet: cfg.ClientSubnet, GatewayIP: cfg.GatewayIP,
		PortalHTTPPort: cfg.PortalHTTPPort, PortalHTTPSPort: cfg.PortalHTTPSPort, GardenNets: cfg.GardenNetworks,
	}, log.With("component", "firewall"))
	if err != nil {
		return nil, err
	}
	sh, err := shaper.New(shaper.Config{ClientIf: cfg.ClientIf, IFB: cfg.IFB, Subnet: cfg.ClientSubnet}, log.With("component", "shaper"))
	if err != nil {
		return nil, err
	}
	dns, err := dnsmasq.New(dnsmasq.Config{
		Interface: cfg.ClientIf, Address: cfg.GatewayIP, Subnet: cfg.ClientSubnet,
		RangeStart: cfg.DHCPStart, RangeEnd: cfg.DHCPEnd, LeaseTime: cfg.LeaseTime,
		Upstreams: cfg.DNSUpstreams, CaptivePortalURL: cfg.PortalURL, GardenDomains: cfg.GardenDomains,
		GardenSet: firewall.GardenSet, StateDir: cfg.StateDir + "/dnsmasq",
	}, log.With("component", "dnsmasq"))
	if err != nil {
		return nil, err
	}
	return &parts{fw: fw, sh: sh, dns: dns}, nil
}

// checkUplink refuses a client network that overlaps the uplink's addresses.
func checkUplink(cfg *config.Config) error {
	ifi, err := net.InterfaceByName(cfg.UplinkIf)
	if err != nil {
		return fmt.Errorf("uplink interface %q: %w", cfg.UplinkIf, err)
	}
	if _, err := net.InterfaceByName(cfg.ClientIf); err != nil {
		return fmt.Errorf("clients interface %q: %w", cfg.ClientIf, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return fmt.Errorf("reading addresses of %s: %w", cfg.UplinkIf, err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ones, _ := ipn.Mask.Size()
		ip, _ := netip.AddrFromSlice(ipn.IP)
		p := netip.PrefixFrom(ip.Unmap(), ones)
		if p.Addr().Is4() && p.Overlaps(cfg.ClientSubnet) {
			return fmt.Errorf("client network %s overlaps the uplink %s's network %s", cfg.ClientSubnet, cfg.UplinkIf, p.Masked())
		}
	}
	return nil
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfig, "gateway config file")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLogger(stderr, *logFormat)
	// No reload yet: a stray SIGHUP must not kill the gateway.
	signal.Ignore(syscall.SIGHUP)
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := daemon(ctx, cfg, log); err != nil {
		log.Error("gateway stopped", "err", err)
		return 1
	}
	log.Info("gateway stopped; rules left in place (portal teardown removes them)")
	return 0
}

func controllerStatus(l *uplink.Link) func() *control.ControllerStatus {
	if l == nil {
		return nil
	}
	return l.Status
}

// gatewayRef lets the controller link be made before the gateway it
// drives (the gateway takes the link's event sink).
type gatewayRef struct{ gw **gateway.Gateway }

func (r gatewayRef) SetPolicy(ctx context.Context, l config.Limits) error {
	return (*r.gw).SetPolicy(ctx, l)
}

func (r gatewayRef) Close(ctx context.Context, mac net.HardwareAddr, ip netip.Addr, reason string) (*gateway.Session, error) {
	return (*r.gw).Close(ctx, mac, ip, reason)
}

func (r gatewayRef) Extend(ctx context.Context, mac net.HardwareAddr, d time.Duration) (*gateway.Session, error) {
	return (*r.gw).Extend(ctx, mac, d)
}

func (r gatewayRef) Status(ctx context.Context) (control.Status, error) { return (*r.gw).Status(ctx) }

func (r gatewayRef) SetSchedule(s *gateway.Schedule) { (*r.gw).SetSchedule(s) }

// gate adapts the gateway for the portal server.
type gate struct{ gw *gateway.Gateway }

func (g gate) Session(ip netip.Addr) (captive.Session, bool) {
	s, ok := g.gw.SessionFor(ip)
	if !ok {
		return captive.Session{}, false
	}
	return captive.Session{Started: s.Started, Expires: s.Expires, QuotaBytes: s.QuotaBytes, UsedBytes: s.BytesDown + s.BytesUp}, true
}

func (g gate) Logout(ctx context.Context, ip netip.Addr) error { return g.gw.Logout(ctx, ip) }

func (g gate) ClickThrough(ctx context.Context, ip netip.Addr) error {
	_, err := g.gw.ClickThrough(ctx, ip)
	if errors.Is(err, gateway.ErrRefused) {
		return errors.Join(captive.ErrRefused, err)
	}
	return err
}

func daemon(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	// The soft memory limit first (restoring sessions allocates), unless
	// GOMEMLIMIT sets one: low while the portal is quiet, lifted during a
	// burst (see memlimit).
	var gov *memlimit.Governor
	if os.Getenv("GOMEMLIMIT") == "" {
		gov = &memlimit.Governor{Idle: memlimit.DefaultIdle, Busy: memlimit.DefaultBusy, Rate: memlimit.DefaultRate,
			Hold: memlimit.DefaultHold, Set: debug.SetMemoryLimit, Log: log.With("component", "memlimit")}
		gov.Step(time.Now())
	}
	if err := checkUplink(cfg); err != nil {
		return err
	}
	p, err := build(cfg, log)
	if err != nil {
		return err
	}
	store, err := gateway.OpenStore(cfg.StateDir)
	if err != nil {
		return err
	}
	defer store.Close()
	store.Corrupt = func(id string, err error) {
		log.Error("skipping an unreadable session record", "session", id, "err", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hosts := discovery.NewTable()
	// The controller link, when the site has a controller: it needs the
	// gateway (commands, policy) and the gateway needs it (events).
	var link *uplink.Link
	var events func([]gateway.Event) error
	var gw *gateway.Gateway
	if cfg.Controller.URL != "" {
		link, err = uplink.New(uplink.Config{
			URL: cfg.Controller.URL, Site: cfg.Site, GatewayID: cfg.Controller.GatewayID,
			KeyFile: cfg.Controller.KeyFile, ControllerKeyFile: cfg.Controller.ControllerKeyFile,
			StateDir: cfg.StateDir, HeartbeatInterval: cfg.Controller.HeartbeatInterval, Version: version,
		}, gatewayRef{&gw}, log.With("component", "uplink"))
		if err != nil {
			return err
		}
		defer link.Close()
		events = link.Events
		if l, ok := link.CachedLimits(); ok {
			cfg.Limits = l // the defaults the restored sessions followed
		}
	}
	// The portal's plain-HTTP connections: a login closes the ones the
	// firewall translated to the portal before it.
	conns := captive.NewConns()
	gw = gateway.New(gateway.Options{
		Config: cfg, Version: version, FW: p.fw, Shaper: p.sh, Store: store, Hosts: hosts,
		Opened:     func(ip netip.Addr) { conns.Cut(ip) },
		Neighbors:  func() ([]discovery.Host, error) { return discovery.Neighbors(cfg.ClientIf) },
		DNSRunning: p.dns.Running,
		// Forwarding goes on only once the firewall is in place: fail
		// closed at boot (keep net.ipv4.ip_forward=0 in /etc/sysctl.conf).
		FirewallReady: func() error { return tuneKernel(log, "/proc/sys", cfg.ClientSubnet) },
		Metrics:       gateway.NewMetrics(reg),
		Events:        events,
		Controller:    controllerStatus(link),
		Log:           log.With("component", "gateway"),
	})
	// Resident login (SMS, voucher, remembered device, SPID) relays through
	// the controller; without one the portal offers click-through only.
	var logins *login.Service
	if link != nil {
		if logins, err = newLogin(cfg, link, gw, log.With("component", "login")); err != nil {
			return err
		}
	}
	// The portal's files (certificate, logo, key) are checked before the
	// gateway touches the kernel: a bad one stops the start cleanly.
	srv, err := newPortal(cfg, gate{gw}, logins, conns, gov, log.With("component", "captive"))
	if err != nil {
		return err
	}
	// The walled garden: portal.yaml's, the policy's and, while SPID is
	// offered, the controller's and the IdPs' hosts (one place decides).
	garden := &policyGarden{cfg: cfg, dns: p.dns, fw: p.fw, log: log}
	if link != nil {
		// The landing page offers the methods of the site's policy.
		lp := &loginPolicy{srv: srv, logins: logins, link: link, garden: garden, log: log.With("component", "login")}
		link.OnPolicy(func(sp apiclient.SitePolicy) { lp.apply(ctx, sp) })
	}
	if err := gw.Start(ctx); err != nil {
		return err
	}
	if link != nil {
		// The walled garden follows the site's policy (with the names of
		// portal.yaml, e.g. the controller's own host, kept).
		link.OnPolicy(func(sp apiclient.SitePolicy) { garden.apply(ctx, sp) })
		// The site's policy: the controller's, or the cached one while the
		// controller is unreachable; never a reason not to start.
		if err := link.Boot(ctx); err != nil {
			log.Error("site policy", "err", err)
		}
	}
	log.Info("gateway running", "site", cfg.Site, "version", version, "clients", cfg.ClientIf, "uplink", cfg.UplinkIf)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return gw.Run(ctx) })
	if link != nil {
		g.Go(func() error { return link.Run(ctx) })
	}
	g.Go(func() error { return p.dns.Run(ctx) })
	g.Go(func() error {
		s := &discovery.Sniffer{Interface: cfg.ClientIf, Subnet: cfg.ClientSubnet, Table: hosts, Log: log.With("component", "discovery")}
		return s.Run(ctx)
	})
	g.Go(func() error {
		return control.NewServer(gw, log.With("component", "control")).Serve(ctx, cfg.ControlSocket)
	})
	g.Go(func() error { return srv.Run(ctx) })
	if gov != nil {
		g.Go(func() error { return gov.Run(ctx) })
	}
	g.Go(func() error {
		// Shaper classes for the DHCP range, made ahead in the background
		// so that a login changes a class instead of making one.
		start := time.Now()
		n, err := p.sh.Warm(ctx, cfg.DHCPStart, cfg.DHCPEnd)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("making shaper classes ahead", "err", err)
		case n > 0:
			log.Info("shaper classes made ahead", "component", "shaper", "classes", n, "from", cfg.DHCPStart, "to", cfg.DHCPEnd, "took", time.Since(start).Round(time.Millisecond))
		}
		return nil
	})
	if cfg.MetricsListen != "" {
		g.Go(func() error { return serveMetrics(ctx, cfg.MetricsListen, reg) })
	}
	err = g.Wait()
	// Logins that ended while the gateway's loop stopped may have start
	// events still lingering: into the outbox before it closes.
	gw.Drain()
	return err
}

// portalConfig is the captive server's configuration from the gateway's,
// with the files it names read (logo, HMAC key).
func portalConfig(cfg *config.Config) (captive.Config, error) {
	pc := captive.Config{
		GatewayIP: cfg.GatewayIP, HTTPPort: cfg.PortalHTTPPort, HTTPSPort: cfg.PortalHTTPSPort,
		APIURL: cfg.PortalURL, TLSCert: cfg.PortalTLSCert, TLSKey: cfg.PortalTLSKey,
		SiteName: cfg.PortalName, Town: cfg.PortalTown, ClickThrough: cfg.ClickThrough, Rate: cfg.PortalRate,
	}
	if cfg.PortalLogo != "" {
		logo, typ, err := captive.LoadLogo(cfg.PortalLogo)
		if err != nil {
			return pc, err
		}
		pc.Logo, pc.LogoType = logo, typ
	}
	return pc, nil
}

func newPortal(cfg *config.Config, g captive.Gate, logins *login.Service, conns *captive.Conns, gov *memlimit.Governor, log *slog.Logger) (*captive.Server, error) {
	pc, err := portalConfig(cfg)
	if err != nil {
		return nil, err
	}
	pc.Conns = conns
	if gov != nil {
		pc.OnRequest = gov.Note
	}
	if logins != nil {
		pc.Login = logins
	}
	if pc.Key, err = captive.LoadKey(cfg.StateDir); err != nil {
		return nil, err
	}
	return captive.New(pc, g, log)
}

// newLogin makes the resident login service (spent grant ids go into the
// gateway's session store).
func newLogin(cfg *config.Config, link *uplink.Link, gw *gateway.Gateway, log *slog.Logger) (*login.Service, error) {
	ckey, err := apiclient.LoadPublicKey(cfg.Controller.ControllerKeyFile)
	if err != nil {
		return nil, fmt.Errorf("resident login: %w", err)
	}
	return login.New(login.Config{Site: cfg.Site, GatewayID: cfg.Controller.GatewayID, ControllerKey: ckey, StateDir: cfg.StateDir},
		link.Client(), gw, log)
}

// loginPolicy makes the portal follow the site policy's login part.
type loginPolicy struct {
	srv    *captive.Server
	logins *login.Service
	link   *uplink.Link
	garden *policyGarden
	log    *slog.Logger
}

// apply offers the policy's login methods and remembered devices at once;
// SPID once the identity providers are known (asked of the controller in
// the background, so a slow controller never holds up the policy), with
// the walled garden opened to the controller's and the IdPs' hosts.
func (lp *loginPolicy) apply(ctx context.Context, sp apiclient.SitePolicy) {
	offer := func(sp apiclient.SitePolicy, idps []captive.IdP) captive.Offer {
		return captive.Offer{Methods: sp.LoginMethods, RememberDevice: sp.RememberDeviceDays > 0, IdPs: idps}
	}
	lp.srv.SetOffer(offer(sp, nil))
	if !slices.Contains(sp.LoginMethods, captive.MethodSPID) {
		lp.garden.setSPID(nil) // the garden's own hook, after this one, applies it
		return
	}
	go func() {
		// Until the controller answers (it may be down at boot): every
		// 30 s, while the policy still offers SPID.
		for wait := time.Duration(0); ; wait = 30 * time.Second {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			cur, _ := lp.link.Policy() // the policy may have changed meanwhile
			if !slices.Contains(cur.LoginMethods, captive.MethodSPID) {
				return
			}
			idps, err := lp.logins.IdPs(ctx)
			if err != nil || len(idps) == 0 {
				lp.log.Warn("SPID not offered yet: no identity providers", "err", err, "retry_in", "30s")
				continue
			}
			hosts, skipped := login.SPIDGarden(lp.garden.cfg.Controller.URL, idps)
			if len(skipped) > 0 {
				lp.log.Warn("SPID hosts given by address cannot be in the walled garden by name: add them to walled_garden.networks", "hosts", skipped)
			}
			lp.garden.setSPID(hosts)
			lp.garden.apply(ctx, cur)
			lp.srv.SetOffer(offer(cur, idps))
			return
		}
	}()
}

// policyGarden keeps dnsmasq's walled garden to portal.yaml's domains, the
// site policy's and, while the policy offers SPID, the controller's and the
// IdPs' hosts. Only captive clients (those still logging in) need the
// garden; a logged-in client reaches everything anyway.
type policyGarden struct {
	cfg  *config.Config
	dns  *dnsmasq.Server
	fw   *firewall.Kernel
	log  *slog.Logger
	mu   sync.Mutex
	spid []string
}

func (g *policyGarden) setSPID(hosts []string) {
	g.mu.Lock()
	g.spid = slices.Clone(hosts)
	g.mu.Unlock()
}

func (g *policyGarden) apply(ctx context.Context, sp apiclient.SitePolicy) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var spid []string
	if slices.Contains(sp.LoginMethods, captive.MethodSPID) {
		spid = g.spid
	}
	var garden []string
	for _, d := range slices.Concat(g.cfg.GardenDomains, sp.WalledGarden, spid) {
		if d != "" && !slices.Contains(garden, d) {
			garden = append(garden, d)
		}
	}
	if slices.Equal(g.dns.Config().GardenDomains, garden) {
		return
	}
	// dnsmasq's state directory exists once it has run; the first policy
	// may come before that.
	if err := os.MkdirAll(g.dns.Config().StateDir, 0o755); err != nil {
		g.log.Error("walled garden of the site policy; keeping the running one", "err", err)
		return
	}
	if err := g.dns.SetGardenDomains(ctx, garden); err != nil {
		g.log.Error("walled garden of the site policy; keeping the running one", "err", err)
		return
	}
	if err := g.fw.FlushGarden(ctx); err != nil {
		g.log.Error("walled garden of the site policy", "err", err)
	}
}

// checkPortalFiles is validate's check of the files the portal reads.
func checkPortalFiles(cfg *config.Config) error {
	var errs []error
	if _, err := portalConfig(cfg); err != nil {
		errs = append(errs, err)
	}
	if cfg.PortalTLSCert != "" {
		errs = append(errs, captive.CheckTLS(cfg.PortalTLSCert, cfg.PortalTLSKey))
	}
	if cfg.Controller.URL != "" {
		if _, err := apiclient.LoadPrivateKey(cfg.Controller.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("controller.key_file: %w", err))
		}
		if _, err := apiclient.LoadPublicKey(cfg.Controller.ControllerKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("controller.controller_key_file: %w", err))
		}
	}
	return errors.Join(errs...)
}

func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for metrics: %w", err)
	}
	return httpserve.Serve(ctx, ln, mux)
}

// cmdPoster prints the poster for IT staff to print: made from the config
// on the management side, never served to residents.
func cmdPoster(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("poster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfig, "gateway config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := captive.WritePoster(stdout, captive.PosterConfig{SSID: cfg.SSID, SiteName: cfg.PortalName, Town: cfg.PortalTown}); err != nil {
		fmt.Fprintf(stderr, "portal poster: %v\n", err)
		return 1
	}
	return 0
}

func cmdTeardown(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("teardown", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfig, "gateway config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLogger(stderr, "text")
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// A running daemon would put everything back at its next reconcile.
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = control.NewClient(cfg.ControlSocket).Status(sctx)
	cancel()
	if err == nil {
		fmt.Fprintf(stderr, "portal teardown: the gateway daemon is running (it answers on %s); stop it first (systemctl stop civicwifi-portal)\n", cfg.ControlSocket)
		return 1
	}
	p, err := build(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var errs []error
	if err := p.dns.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stopping dnsmasq: %w", err))
	}
	if err := p.sh.Teardown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("removing shaping: %w", err))
	}
	if err := p.fw.Teardown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("removing firewall: %w", err))
	}
	// Without the gateway's rules, forwarding would route clients out
	// unfiltered: turn it off again (the daemon turned it on).
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644); err != nil {
		errs = append(errs, fmt.Errorf("turning IPv4 forwarding off: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stderr, "portal: removed every chain, set, qdisc and process the gateway made and turned IPv4 forwarding off; sessions are kept in", cfg.StateDir)
	return 0
}
