// Command cwlab builds the civicwifi network-namespace lab by hand.
//
//	cwlab up [-clients N] [-dhcp]   build the lab and its upstream services, print how to use it,
//	                                wait for SIGINT/SIGTERM, then remove everything
//	cwlab demo -portal bin/portal   a whole site with the gateway running; walks through it
//	cwlab sweep                     delete namespaces left by labs whose owner process is gone
//
// It must run as root.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/template"

	"github.com/civicwifi/civicwifi/internal/lab"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("cwlab: ")
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "demo":
		err = demo(os.Args[2:])
	case "sweep":
		err = sweep()
	case "-h", "-help", "--help", "help":
		usage(os.Stdout)
		return
	default:
		usage(os.Stderr)
		os.Exit(2)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  cwlab up [-clients N] [-dhcp]   build the lab with upstream services; Ctrl-C removes it
  cwlab demo [-portal bin/portal] [-exit]  a site with the gateway running; a guided tour
  cwlab sweep                     delete namespaces of labs whose owner process is gone
`)
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	clients := fs.Int("clients", 2, "number of client namespaces")
	dhcp := fs.Bool("dhcp", false, "leave the clients without IPv4 (run a DHCP client yourself)")
	fs.Parse(args)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := lab.New(ctx, lab.Options{Clients: *clients, DHCP: *dhcp})
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
	if err := summary.Execute(os.Stdout, l); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Println("\ncleaning up lab", l.ID)
	return nil
}

var summary = template.Must(template.New("").Funcs(template.FuncMap{"join": strings.Join}).Parse(`lab {{.ID}} is up (logs and files in {{.Dir}})

upstream  {{.Upstream.Name}}  {{.UpstreamIf}} {{.WANPrefix}} (+ garden {{.GardenIP}}, other {{.OtherIP}}), {{.WANPrefix6}}
          HTTP :80 (/, /bytes?n=N, /stream, /ip, /generate_204), HTTPS :443 (CA {{.UpstreamCAFile}}),
          TCP :853, DNS {{.UpstreamIP}}:53 (www/garden/other.example.test), iperf3 :5201
gateway   {{.Gateway.Name}}  {{.WANIf}} {{.GatewayWANIP}}/24 {{.GatewayWANIP6}}/64 (default via {{.UpstreamIP}})
          {{.LANIf}} {{.ClientPrefix}} {{.ClientPrefix6}}, ports isolated; forwarding on, no NAT or firewall
{{range .Clients}}client{{.Index}}   {{.Name}}  eth0 {{.MAC}} {{if .IP.IsValid}}{{.IP}}/22{{else}}(no IPv4: DHCP){{end}} {{.IP6}}/64 -> {{.Port}}
{{end}}
try:
  ip netns exec {{.Gateway.Name}} curl -s http://garden.example.test/ip      # resolves through the upstream DNS
  ip netns exec {{.Gateway.Name}} curl -s --cacert {{.UpstreamCAFile}} --resolve www.example.test:443:{{.OtherIP}} https://www.example.test/
  ip netns exec {{.Gateway.Name}} iperf3 -c {{.UpstreamIP}} -t 3
  ip netns exec {{(index .Clients 0).Name}} ping -c1 {{.GatewayIP}}                 # needs iputils-ping
  ip netns exec {{(index .Clients 0).Name}} curl -s http://[{{.UpstreamIP6}}]/ip     # IPv6 is routed, no NAT
  ip netns exec {{.Gateway.Name}} iptables -t nat -A POSTROUTING -o {{.WANIf}} -j MASQUERADE   # then clients reach IPv4
  ip netns exec {{.Upstream.Name}} dig @{{.UpstreamIP}} www.example.test     # if dig is installed

Ctrl-C (or SIGTERM) removes the lab.
`))

func sweep() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	deleted, err := lab.Sweep(ctx)
	for _, ns := range deleted {
		fmt.Println("deleted", ns)
	}
	if len(deleted) == 0 && err == nil {
		fmt.Println("nothing to sweep")
	}
	return err
}
