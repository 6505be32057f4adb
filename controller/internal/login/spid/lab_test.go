package spid_test

// SPID end to end in the lab: a real `controller run` with its spid block and
// a real SAML IdP (spidtest) in the lab's upstream namespace, the real
// gateway (`portal run`) in the gateway namespace, and a real headless
// Chromium (the lab's cwbrowse) in a client namespace that walks the whole
// login as a phone would: captive redirect, the landing page's SPID button,
// the controller's signed AuthnRequest, the IdP's signed answer posted to the
// controller's ACS, the gateway's /portal/spid/done, and on to the page it
// was opening upstream.
//
// Everything the phone reaches it reaches by name, through the gateway's
// dnsmasq: the IdP is garden.example.test and the controller's public side
// other.example.test (both on port 80, forwarded in the upstream to the IdP's
// and the controller's ports: the walled garden opens web ports only). The
// gateway's own walled garden is empty, so the garden the phone passes while
// captive is only the one the gateway makes for SPID from the controller's
// URL and the registry's IdPs, and it closes when the policy drops SPID.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login/spid/spidtest"
	"github.com/civicwifi/civicwifi/internal/lab"
)

// labBinaries builds the gateway and the controller once per test binary.
func labBinaries(t *testing.T) (portal, controller string) {
	return lab.Binary(t, "github.com/civicwifi/civicwifi/portal/cmd/portal"),
		lab.Binary(t, "github.com/civicwifi/civicwifi/controller/cmd/controller")
}

func TestMain(m *testing.M) {
	code := m.Run()
	lab.RemoveBinaries()
	os.Exit(code)
}

const (
	labIdPHost  = lab.GardenHost // 198.51.100.10: the IdP
	labCtlHost  = lab.OtherHost  // 198.51.100.11: the controller's public side and the gateways' API
	labIdPPort  = "8444"
	labOrigin   = "http://198.51.100.1/" // where the phone is going: the upstream's web server, not in any garden
	labPortal   = "http://10.20.0.1:2050"
	labUpstream = "upstream ok\n"
)

const labSites = `town:
  name: Comune di Prova
  ssid: Prova WiFi
  ipa_code: c_z999
  contacts: {email: urp@comune.prova.it, dpo: dpo@comune.prova.it}
  privacy: {it: Informativa sulla privacy}
  terms: {it: Condizioni d'uso}
policies:
  - name: residents
    down: 5mbit
    up: 5mbit
    session: 2h
    idle: 15m
    login:
      methods: %[2]s
      sms: {countries: [IT]}
      spid: {level: 2}
sites:
  - id: parco-a
    name: Parco A
    kind: park
    coordinates: {lat: 44.99, lon: 9.01}
    policy: residents
    client_network: {address: 10.20.0.1/22}
    gateways:
      - {id: gw-a, credential: "file:%[1]s/gw-a.pub"}
`

const labController = `listen: 0.0.0.0:8443
sites: %[1]s/sites.yaml
store: bolt:%[1]s/controller.db
signing_key: %[1]s/controller.key
state_dir: %[1]s/state
metrics_listen: "off"
reload_check: 1s
log_format: text
login:
  pepper_file: %[1]s/pepper
spid:
  entity_id: http://%[2]s/spid
  public_url: http://%[2]s/
  key: %[1]s/sp.key
  certificate: %[1]s/sp.crt
  idp_registry: %[1]s/spid-idps.xml
`

const labGateway = `site: parco-a
interfaces: {clients: br-cw, uplink: wan0, ifb: cwifb0}
client_network: {address: 10.20.0.1/22, dhcp_range: 10.20.0.100-10.20.0.200}
dns: {upstreams: [198.51.100.1]}
portal: {http_port: 2050, https_port: 2443, tls_cert: %[1]s/portal.pem, tls_key: %[1]s/portal-key.pem}
limits: {down: "0", up: "0", session: 2h, idle: 15m, quota: "0"}
state_dir: %[1]s/gw-state
control_socket: %[1]s/portal.sock
metrics_listen: 127.0.0.1:9102
controller:
  url: http://%[2]s:8443
  gateway_id: gw-a
  key_file: %[1]s/gw-a.key
  controller_key_file: %[1]s/controller.pub
  heartbeat: 2s
`

// curlAnswer is what curl in a namespace got: the status, the Location and the body.
type curlAnswer struct {
	code     int
	location string
	body     string
	err      error
}

func (a curlAnswer) String() string {
	return fmt.Sprintf("%d %q %.200q %v", a.code, a.location, a.body, a.err)
}

// curl fetches u from inside ns (names resolved there: by the gateway's dnsmasq for a client).
func curl(ns lab.NS, u string) curlAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := ns.Command(ctx, "curl", "-s", "-m", "3", "-o", "/dev/stdout", "-w", "\n%{http_code} %{redirect_url}", u).Output()
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return curlAnswer{err: fmt.Errorf("curl %s: %v: %q", u, err, s)}
	}
	var a curlAnswer
	fmt.Sscanf(s[i+1:], "%d %s", &a.code, &a.location)
	a.body, a.err = s[:i], err
	return a
}

func eventually(t *testing.T, d time.Duration, what string, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		good, last := ok()
		if good {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, d, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestSPIDLoginInTheLab(t *testing.T) {
	lab.Require(t, "iptables", "ip6tables", "ipset", "tc", "conntrack", "dnsmasq", "curl", "chromium")
	portalBin, ctlBin := labBinaries(t)
	browser := lab.BrowserBinary(t)
	l := lab.NewT(t, lab.Options{Clients: 1, Upstream: true})
	dir := l.Dir
	write := func(name string, b []byte, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"controller", "gw-a"} {
		if _, err := apiclient.Enroll(dir, name); err != nil {
			t.Fatal(err)
		}
	}
	pepper := make([]byte, 48)
	rand.Read(pepper)
	write("pepper", []byte(base64.StdEncoding.EncodeToString(pepper)), 0o600)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sp"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	write("sp.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	write("sp.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	sitesYAML := func(methods string) []byte { return []byte(fmt.Sprintf(labSites, dir, methods)) }
	write("sites.yaml", sitesYAML("[spid]"), 0o644)
	write("controller.yaml", []byte(fmt.Sprintf(labController, dir, labCtlHost)), 0o644)
	ca, err := lab.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Issue("portal", "10.20.0.1"); err != nil {
		t.Fatal(err)
	}
	write("portal.yaml", []byte(fmt.Sprintf(labGateway, dir, labCtlHost)), 0o644)

	// The upstream: port 80 of the IdP's and the controller's names goes to
	// their listeners.
	ctx := context.Background()
	for _, argv := range [][]string{
		{"iptables", "-t", "nat", "-A", "PREROUTING", "-d", l.GardenIP.String(), "-p", "tcp", "--dport", "80", "-j", "REDIRECT", "--to-ports", labIdPPort},
		{"iptables", "-t", "nat", "-A", "PREROUTING", "-d", l.OtherIP.String(), "-p", "tcp", "--dport", "80", "-j", "REDIRECT", "--to-ports", "8443"},
	} {
		if out, err := l.Upstream.Run(ctx, argv...); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	// The IdP, served by this process inside the upstream; it reads the
	// SP's metadata from the controller there.
	ln, err := l.Upstream.Listen("tcp", "0.0.0.0:"+labIdPPort)
	if err != nil {
		t.Fatal(err)
	}
	upHC := l.Upstream.HTTPClient(nil)
	idp := spidtest.Start(t, spidtest.Options{Listener: ln, URL: "http://" + labIdPHost, Name: "IdP del laboratorio",
		SPMetadata: func() ([]byte, error) {
			resp, err := upHC.Get("http://127.0.0.1:8443/spid/metadata")
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("SP metadata: %s", resp.Status)
			}
			return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		}})
	reg, err := spidtest.Registry(nil, idp)
	if err != nil {
		t.Fatal(err)
	}
	write("spid-idps.xml", reg, 0o644)

	_, err = l.Start(l.Upstream, "controller", ctlBin, "run", "-config", filepath.Join(dir, "controller.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the controller answers", func() (bool, string) {
		a := curl(l.Upstream, "http://127.0.0.1:8443/healthz")
		return a.code == 200, a.String()
	})
	if _, err := l.Start(l.Gateway, "portal", portalBin, "run", "-config", filepath.Join(dir, "portal.yaml"), "-log-format", "text"); err != nil {
		t.Fatal(err)
	}
	gwLog := func() string { b, _ := os.ReadFile(l.LogFile("portal")); return string(b) }
	ctlLog := func() string { b, _ := os.ReadFile(l.LogFile("controller")); return string(b) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log (tail):\n%s", tailOf(ctlLog(), 40))
			t.Logf("gateway log (tail):\n%s", tailOf(gwLog(), 40))
		}
	})

	phone := l.Clients[0]
	idpMeta := "http://" + labIdPHost + "/metadata"
	spMeta := "http://" + labCtlHost + "/spid/metadata"
	// While the policy offers SPID, the captive phone reaches the IdP and
	// the controller's SP by name, and nothing else.
	eventually(t, 45*time.Second, "the captive phone reaches the IdP's host", func() (bool, string) {
		a := curl(phone.NS, idpMeta)
		return a.code == 200 && strings.Contains(a.body, idp.EntityID()), a.String()
	})
	if a := curl(phone.NS, spMeta); a.code != 200 || !strings.Contains(a.body, "http://"+labCtlHost+"/spid") {
		t.Fatalf("the captive phone does not reach the controller's SP metadata: %v", a)
	}
	if a := curl(phone.NS, labOrigin); a.code != http.StatusFound || !strings.HasPrefix(a.location, labPortal+"/portal/") {
		t.Fatalf("the captive phone is not captive for the upstream: %v", a)
	}
	if strings.Contains(gwLog(), "SPID hosts given by address") {
		t.Error("the gateway found SPID hosts given by address; all are names here")
	}

	// The phone's browser: the page it opens lands on the portal; it ticks
	// the consent box and taps the IdP's button; the rest is redirects and
	// auto-posting forms, up to the page it was opening.
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	res, err := lab.Browse(bctx, phone.NS, browser, []string{"-timeout", "120s"},
		"navigate="+labOrigin, "wait=#accept-spid", "click=#accept-spid", "click=button.idp",
		"wait_text=upstream ok", "snapshot")
	if err != nil {
		t.Fatalf("Chromium's SPID login: %v\n%+v", err, res)
	}
	t.Logf("Chromium: from the first page to the upstream's answer: %v", time.Since(t0).Round(time.Millisecond))
	var docs []string
	for _, d := range res.Documents {
		docs = append(docs, fmt.Sprintf("%d %s", d.Status, strings.SplitN(d.URL, "?", 2)[0]))
	}
	want := []string{
		"200 " + labPortal + "/portal/",            // the captive redirect's landing page
		"200 http://" + labCtlHost + "/spid/login", // the controller's auto-posting AuthnRequest
		"200 http://" + labIdPHost + "/sso",        // the IdP's auto-posting answer to the ACS
		"200 " + labOrigin,                         // ACS 303 -> /portal/spid/done 303 -> where it was going
	}
	if got := strings.Join(docs, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("main documents:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if res.URL != labOrigin || strings.TrimSpace(res.Text) != strings.TrimSpace(labUpstream) {
		t.Errorf("Chromium ended at %s with %q, want %s with %q", res.URL, res.Text, labOrigin, labUpstream)
	}
	// The gateway went through /portal/spid/done and holds an SPID session.
	if !strings.Contains(ctlLog(), "spid") {
		t.Log("the controller's log does not mention spid")
	}
	sess := gatewaySession(t, l, portalBin, phone.IP.String())
	if sess.Method != "spid" || sess.UpRate != 5_000_000 {
		t.Errorf("gateway session %+v, want method spid at the policy's 5mbit", sess)
	}
	// And curl from the phone reaches the upstream.
	if a := curl(phone.NS, labOrigin); a.code != 200 || a.body != labUpstream {
		t.Fatalf("after the SPID login the phone's curl got %v, want 200 %q", a, labUpstream)
	}
	// The fiscal code never reached the gateway.
	fiscal := strings.TrimPrefix(spidtest.DefaultFiscalNumber, "TINIT-")
	if strings.Contains(gwLog(), fiscal) || strings.Contains(ctlLog(), fiscal) {
		t.Error("the fiscal code is in the gateway's or the controller's log")
	}

	// The policy drops SPID; logged out, the phone is captive again and the
	// IdP's and the controller's hosts are closed to it: the garden was open
	// for SPID logins only.
	tmp := filepath.Join(dir, "sites.yaml.new")
	if err := os.WriteFile(tmp, sitesYAML("[sms]"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "sites.yaml")); err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithTimeout(ctx, 10*time.Second)
	defer kcancel()
	if out, err := l.Gateway.Run(kctx, portalBin, "ctl", "--socket", filepath.Join(dir, "portal.sock"), "kick", "--ip", phone.IP.String()); err != nil {
		t.Fatalf("ctl kick: %v\n%s", err, out)
	}
	eventually(t, 30*time.Second, "the IdP's host is closed again", func() (bool, string) {
		a := curl(phone.NS, idpMeta)
		return a.code == http.StatusFound, a.String()
	})
	if a := curl(phone.NS, spMeta); a.code != http.StatusFound {
		t.Errorf("the controller's SP is still open to the captive phone: %v", a)
	}
	if a := curl(phone.NS, labOrigin); a.code != http.StatusFound {
		t.Errorf("the kicked phone is not captive: %v", a)
	}
}

type labSession struct {
	Method string `json:"method"`
	UpRate uint64 `json:"up_rate_bps"`
}

// gatewaySession is the phone's session as `portal ctl clients` reports it.
func gatewaySession(t *testing.T, l *lab.Lab, portalBin, ip string) labSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := l.Gateway.Run(ctx, portalBin, "ctl", "--socket", filepath.Join(l.Dir, "portal.sock"), "--json", "clients")
	if err != nil {
		t.Fatalf("ctl clients: %v\n%s", err, out)
	}
	var cs []struct {
		IP      string      `json:"ip"`
		Session *labSession `json:"session"`
	}
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatalf("ctl clients %q: %v", out, err)
	}
	for _, c := range cs {
		if c.IP == ip && c.Session != nil {
			return *c.Session
		}
	}
	t.Fatalf("no session for %s in %s", ip, out)
	return labSession{}
}

func tailOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
