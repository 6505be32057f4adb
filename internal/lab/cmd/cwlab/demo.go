package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// demoConfig is the gateway's file for the demo site: click-through allowed,
// 10/2 Mbit/s per resident, 1 h sessions, 500 MB quota.
const demoConfig = `site: demo-parco-pertini
interfaces: {clients: %[2]s, uplink: %[3]s, ifb: cwifb0}
client_network: {address: %[4]s, dhcp_range: 10.20.0.100-10.20.3.200}
dns: {upstreams: [%[5]s]}
portal: {http_port: 2050, https_port: 2443, api_url: "https://10.20.0.1:2443/api/captive", click_through: true, tls_cert: %[1]s/portal.pem, tls_key: %[1]s/portal-key.pem}
walled_garden: {domains: [garden.example.test]}
limits: {down: 10mbit, up: 2mbit, session: 1h, idle: 15m, quota: 500MB}
state_dir: %[1]s/state
control_socket: %[1]s/portal.sock
metrics_listen: 127.0.0.1:9102
controller: {url: "http://%[5]s:8443", gateway_id: pertini-gw1, key_file: %[1]s/keys/pertini-gw1.key, controller_key_file: %[1]s/keys/controller.pub, heartbeat: 5s}
`

// demoSites is the town's file: one park whose policy the tour edits.
const demoSites = `town:
  name: Comune di Voghera
  ssid: Voghera Free WiFi
  contacts: {email: urp@comune.voghera.pv.it, dpo: dpo@comune.voghera.pv.it}
  privacy: {it: Informativa sul trattamento dei dati personali., en: Privacy notice.}
  terms: {it: Condizioni d'uso del servizio., en: Terms of use.}
policies:
  - name: parks
    down: %[2]s
    up: 2mbit
    session: 1h
    idle: 15m
    daily_quota: 500MB
    login: {methods: [click-through]}
sites:
  - id: demo-parco-pertini
    name: Parco Pertini
    kind: park
    coordinates: {lat: 44.9952, lon: 9.0125}
    policy: parks
    client_network: {address: 10.20.0.1/22}
    gateways:
      - {id: pertini-gw1, credential: "file:%[1]s/keys/pertini-gw1.pub"}
`

// demoController is the controller's own file, on its embedded store.
const demoController = `listen: 0.0.0.0:8443
sites: %[1]s/sites.yaml
store: bolt:%[1]s/controller.db
signing_key: %[1]s/keys/controller.key
state_dir: %[1]s/controller-state
metrics_listen: "off"
reload_check: 1s
log_format: text
`

// demo builds a whole site, runs the gateway in it, walks through what a
// resident and an operator see, then waits for Ctrl-C (or exits with -exit).
func demo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	portal := fs.String("portal", "bin/portal", "the portal binary")
	controller := fs.String("controller", "bin/controller", "the controller binary")
	exit := fs.Bool("exit", false, "exit after the tour instead of waiting for Ctrl-C")
	fs.Parse(args)
	bin, err := filepath.Abs(*portal)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("portal binary: %w (run make build)", err)
	}
	ctlBin, err := filepath.Abs(*controller)
	if err != nil {
		return err
	}
	if _, err := os.Stat(ctlBin); err != nil {
		return fmt.Errorf("controller binary: %w (run make build)", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := lab.New(ctx, lab.Options{Clients: 2})
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			log.Print(err)
		}
	}()
	if err := l.StartUpstream(ctx); err != nil {
		return err
	}
	// The portal's HTTPS certificate from a throwaway lab CA
	// (Dir/lab-ca.pem: curl --cacert it to read the RFC 8908 API).
	ca, err := lab.NewCA(l.Dir)
	if err != nil {
		return err
	}
	if _, _, err := ca.Issue("portal", l.GatewayIP.String()); err != nil {
		return err
	}
	// The town's controller, on its embedded store, in the "internet"
	// (the gateway calls out to it, as from behind a NAT).
	for _, name := range []string{"controller", "pertini-gw1"} {
		if _, err := l.Upstream.Run(ctx, ctlBin, "enroll", "-out", filepath.Join(l.Dir, "keys"), "-name", name); err != nil {
			return fmt.Errorf("enrolling %s: %w", name, err)
		}
	}
	sitesPath := filepath.Join(l.Dir, "sites.yaml")
	if err := os.WriteFile(sitesPath, []byte(fmt.Sprintf(demoSites, l.Dir, "10mbit")), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.Dir, "sites-5mbit.yaml"), []byte(fmt.Sprintf(demoSites, l.Dir, "5mbit")), 0o644); err != nil {
		return err
	}
	ctlCfg := filepath.Join(l.Dir, "controller.yaml")
	if err := os.WriteFile(ctlCfg, []byte(fmt.Sprintf(demoController, l.Dir)), 0o644); err != nil {
		return err
	}
	if _, err := l.Start(l.Upstream, "controller", ctlBin, "run", "-config", ctlCfg); err != nil {
		return err
	}
	if err := waitFor(ctx, 20*time.Second, func() bool {
		_, err := l.Upstream.Run(ctx, "curl", "-sf", "http://127.0.0.1:8443/healthz")
		return err == nil
	}); err != nil {
		return fmt.Errorf("controller did not start; see %s", l.LogFile("controller"))
	}
	cfg := filepath.Join(l.Dir, "portal.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(demoConfig, l.Dir, l.LANIf, l.WANIf, l.ClientPrefix, l.UpstreamIP)), 0o644); err != nil {
		return err
	}
	daemon, err := l.Start(l.Gateway, "portal", bin, "run", "-config", cfg, "-log-format", "text")
	if err != nil {
		return err
	}
	defer func() {
		daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.Exited(daemon):
		case <-time.After(10 * time.Second):
		}
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if out, err := l.Gateway.Run(tctx, bin, "teardown", "-config", cfg); err != nil {
			log.Printf("teardown: %v\n%s", err, out)
		}
	}()
	sock := filepath.Join(l.Dir, "portal.sock")
	ctl := func(args ...string) []string { return append([]string{bin, "ctl", "--socket", sock}, args...) }
	if err := waitFor(ctx, 20*time.Second, func() bool {
		_, err := l.Gateway.Run(ctx, ctl("status")...)
		return err == nil
	}); err != nil {
		return fmt.Errorf("gateway did not start; see %s", l.LogFile("portal"))
	}

	p1, p2 := l.Clients[0], l.Clients[1]
	in := func(ns lab.NS) string { return "ip netns exec " + ns.Name + " " }
	fmt.Printf(`civicwifi demo: the site %q runs in network namespaces (lab %s)

  upstream "internet"  %s   %s (www.example.test), %s (garden.example.test, walled garden)
                              the town's controller on %s:8443 (sites.yaml: %s); log: %s
  gateway              %s   portal daemon on %s; log: %s
  phone 1              %s  %s %s
  phone 2              %s  %s %s

A walk through it (each command is run for you; run them again yourself):
`, "demo-parco-pertini", l.ID, l.Upstream.Name, l.OtherIP, l.GardenIP, l.UpstreamIP, sitesPath, l.LogFile("controller"),
		l.Gateway.Name, l.LANIf, l.LogFile("portal"),
		p1.Name, p1.IP, p1.MAC, p2.Name, p2.IP, p2.MAC)

	other := "http://" + l.OtherIP.String() + "/"
	steps := []struct {
		say  string
		argv []string
		ns   lab.NS
	}{
		{"Phone 1 is captive: any web page is redirected to the portal", []string{"curl", "-s", "-o", "/dev/null", "-w", "%{http_code} -> %{redirect_url}\n", other}, p1.NS},
		{"HTTPS fails at once (reset), no hanging", []string{"sh", "-c", "curl -sS -m 3 -k https://" + l.OtherIP.String() + "/ 2>&1 || true"}, p1.NS},
		{"The walled garden is open before login", []string{"curl", "-s", "http://garden.example.test/"}, p1.NS},
		{"The operator sees the phones on the wire", ctl("clients"), l.Gateway},
		{"Let phone 1 in (what a login does)", ctl("allow", "--ip", p1.IP.String()), l.Gateway},
		{"Phone 1 reaches the internet", []string{"curl", "-s", other}, p1.NS},
		{"Phone 1 is shaped to 10 Mbit/s down (the park's policy in sites.yaml)", []string{"sh", "-c", "iperf3 -c " + l.UpstreamIP.String() + " -R -t 3 | grep receiver"}, p1.NS},
		{"IT staff plan a change of sites.yaml: parks down to 5 Mbit/s", []string{ctlBin, "plan", filepath.Join(l.Dir, "sites-5mbit.yaml"), "-config", ctlCfg}, l.Upstream},
		{"... and apply it: the controller reloads, the gateway follows within a second, phone 1 keeps its session", []string{"sh", "-c",
			"cp " + filepath.Join(l.Dir, "sites-5mbit.yaml") + " " + sitesPath + " && sleep 3 && grep -h 'site policy applied' " + l.LogFile("portal") + " | tail -n 1 | grep -o 'down=[^ ]*'"}, l.Upstream},
		{"Phone 1 is shaped to 5 Mbit/s now", []string{"sh", "-c", "iperf3 -c " + l.UpstreamIP.String() + " -R -t 3 | grep receiver"}, p1.NS},
		{"Phone 2 uses the click-through button on the portal page (the redirect, the landing page's form, its CSRF token)", []string{"sh", "-c", clickThrough(other)}, p2.NS},
		{"Phone 2 is in too", []string{"curl", "-s", other}, p2.NS},
		{"Sessions, with time and data used", ctl("clients"), l.Gateway},
		{"Kick phone 2: it is captive again at once", ctl("kick", "--ip", p2.IP.String()), l.Gateway},
		{"Phone 2 gets the portal again", []string{"curl", "-s", "-o", "/dev/null", "-w", "%{http_code} -> %{redirect_url}\n", other}, p2.NS},
		{"The gateway's link to the controller: policy version, session events delivered", ctl("status"), l.Gateway},
		{"Gateway metrics (Prometheus), on the management side only", []string{"sh", "-c", "curl -s http://127.0.0.1:9102/metrics | grep '^civicwifi_gateway_clients\\|^civicwifi_gateway_authorisations'"}, l.Gateway},
	}
	for i, s := range steps {
		fmt.Printf("\n%d. %s\n   $ %s%s\n", i+1, s.say, in(s.ns), shellJoin(s.argv))
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		out, err := s.ns.Run(cctx, s.argv...)
		cancel()
		fmt.Print(indent(out))
		if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
			fmt.Printf("   (%v)\n", err)
		}
	}
	if *exit {
		return nil
	}
	fmt.Printf(`
Try it yourself (another terminal), for example:
  %sportal ctl --socket %s status
  %scurl -v %s
  %[1]siptables -S cw-fwd; %[1]sipset list cw-auth; %[1]stc class show dev %[5]s

Ctrl-C stops the gateway, removes its rules and the whole lab.
`, in(l.Gateway), sock, in(p2.NS), other, l.LANIf)
	<-ctx.Done()
	fmt.Println("\nstopping the demo")
	return nil
}

func waitFor(ctx context.Context, d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("timed out")
}

func shellJoin(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if strings.ContainsAny(a, " '\"|&;<>*?$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "   " + strings.ReplaceAll(s, "\n", "\n   ") + "\n"
}

// clickThrough is the shell for a resident's click-through: follow the
// redirect to the landing page, read its form's hidden fields (CSRF token,
// language, signed original URL) and post them with accept=1.
func clickThrough(orig string) string {
	return `landing=$(curl -s -o /dev/null -w '%{redirect_url}' ` + orig + `)
page=$(curl -s "$landing")
field() { printf '%s' "$page" | grep -o "name=\"$1\" value=\"[^\"]*\"" | head -n 1 | sed 's/.*value="//; s/"$//'; }
curl -s -o /dev/null -w '%{http_code} -> %{redirect_url}\n' --data-urlencode "csrf=$(field csrf)" \
  --data-urlencode "lang=$(field lang)" --data-urlencode "url=$(field url)" --data-urlencode "sig=$(field sig)" \
  -d accept=1 http://10.20.0.1:2050/portal/grant`
}
