package apapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// requireTools skips unless every tool is on PATH; under CI=true a missing
// tool fails the test instead.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true, so this is a failure)")
	}
	t.Skip(msg)
}

// sites is the test's DesiredSource: what sites.yaml would say.
type sites struct {
	mu sync.Mutex
	m  map[string]Config
}

func (s *sites) DesiredAP(mac string) (Config, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[mac]
	c.Radios = append([]RadioConfig(nil), c.Radios...)
	return c, ok
}

func (s *sites) edit(mac string, fn func(*Config)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.m[mac]
	fn(&c)
	s.m[mac] = c
}

func parkConfig() Config {
	return Config{
		SSID:    "Voghera Free WiFi",
		Radios:  []RadioConfig{{Device: "radio0", Channel: "6", TxPowerDBm: 20}, {Device: "radio1", Channel: "36", TxPowerDBm: 0}},
		Network: "cw",
		Bridge:  "br-cw",
		VLAN:    20,
	}
}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuf collects the server's log lines for the test to read.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const enrollToken = "install-2026-voghera-9f3c1e"

type controller struct {
	srv   *Server
	sites *sites
	reg   *MemRegistry
	clock *clock
	log   *logBuf
	url   string
	ca    string // PEM file of the server's certificate
}

// startController serves a Server over TLS on ln, with a certificate for ip.
func startController(t *testing.T, ln net.Listener, ip net.IP, o Options) *controller {
	t.Helper()
	c := &controller{
		sites: &sites{m: map[string]Config{}},
		reg:   NewMemRegistry(),
		clock: &clock{t: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)},
		log:   &logBuf{},
	}
	o.Desired, o.Registry, o.Enroll = c.sites, c.reg, NewEnrollTokens(enrollToken)
	o.Log = slog.New(slog.NewTextHandler(c.log, nil))
	o.Now = c.clock.Now
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	c.srv = srv
	cert, pemBytes := selfSigned(t, ip)
	c.ca = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(c.ca, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	tlsLn := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	go hs.Serve(tlsLn)
	t.Cleanup(func() { hs.Close() })
	c.url = "https://" + ln.Addr().String()
	return c
}

func selfSigned(t *testing.T, ip net.IP) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "civicwifi test controller"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{ip},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ap is one simulated OpenWrt access point: the real scripts under busybox
// ash, stand-ins for uci, wifi, ubus, iwinfo, uclient-fetch and logger.
type ap struct {
	t    *testing.T
	dir  string // CW_DIR (/etc/civicwifi)
	stub string // CW_STUB_DIR: uci.state, calls.log, syslog
	env  []string
	ns   *lab.NS // run inside this namespace, if set
}

var scriptDir, _ = filepath.Abs("../../../firmware-scripts/ap")

func TestMain(m *testing.M) {
	code := m.Run()
	if appletsMade.Load() {
		if dir, err := applets(); err == nil {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

var appletsMade atomic.Bool

// applets makes a directory of busybox applet links, so the scripts run
// with busybox's sed, awk, grep... as on OpenWrt, not Debian's.
var applets = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "cw-busybox-")
	if err != nil {
		return "", err
	}
	appletsMade.Store(true)
	out, err := exec.Command("busybox", "--list").Output()
	if err != nil {
		return "", err
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", err
	}
	for _, name := range strings.Fields(string(out)) {
		switch name {
		case "logger", "ip", "sh", "ash", "wget":
			continue // stand-in, the real iproute2, or not an OpenWrt concern
		}
		if err := os.Symlink(bb, filepath.Join(dir, name)); err != nil {
			return "", err
		}
	}
	return dir, nil
})

// uciDefaults is the uci state of a fresh OpenWrt AP plus /etc/config/civicwifi.
const uciDefaults = `network.loopback=interface
network.loopback.device=lo
network.loopback.proto=static
network.lan=interface
network.lan.device=br-lan
network.lan.proto=dhcp
wireless.radio0=wifi-device
wireless.radio0.type=mac80211
wireless.radio0.channel=1
wireless.radio0.band=2g
wireless.radio0.disabled=1
wireless.radio1=wifi-device
wireless.radio1.type=mac80211
wireless.radio1.channel=36
wireless.radio1.band=5g
wireless.radio1.disabled=1
civicwifi.main=agent
civicwifi.main.uplink=eth0
`

func newAP(t *testing.T, c *controller, mac string, ns *lab.NS) *ap {
	t.Helper()
	requireTools(t, "busybox", "curl")
	bbDir, err := applets()
	if err != nil {
		t.Fatalf("making busybox applet links: %v", err)
	}
	root := t.TempDir()
	a := &ap{t: t, dir: filepath.Join(root, "etc-civicwifi"), stub: filepath.Join(root, "stub"), ns: ns}
	for _, d := range []string{a.dir, a.stub} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := uciDefaults + "civicwifi.main.url=" + c.url + "\ncivicwifi.main.ca=" + c.ca + "\n"
	if mac != "" {
		state += "civicwifi.main.mac=" + mac + "\n"
	}
	a.write(filepath.Join(a.stub, "uci.state"), state)
	a.write(filepath.Join(root, "openwrt_release"), "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.5'\nDISTRIB_DESCRIPTION='OpenWrt 23.05.5 r24106-10cc5fcd00'\n")
	a.write(filepath.Join(root, "sysinfo", "model"), "TP-Link \"EAP225\" \\ Outdoor v3\n")
	a.write(filepath.Join(a.dir, "enroll-token"), enrollToken+"\n")
	a.env = []string{
		"PATH=" + filepath.Join(scriptDir, "testdata", "bin") + ":" + bbDir + ":/usr/sbin:/usr/bin:/sbin:/bin",
		"LC_ALL=C",
		"CW_LIB=" + filepath.Join(scriptDir, "cw-ap-lib.sh"),
		"CW_DIR=" + a.dir,
		"CW_STUB_DIR=" + a.stub,
		"CW_RELEASE_FILE=" + filepath.Join(root, "openwrt_release"),
		"CW_SYSINFO_DIR=" + filepath.Join(root, "sysinfo"),
	}
	return a
}

func (a *ap) write(path, s string) {
	a.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		a.t.Fatal(err)
	}
}

func (a *ap) read(path string) string {
	a.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		a.t.Fatal(err)
	}
	return string(b)
}

// run runs one script under busybox ash and returns its exit status and
// output. The stand-ins' call log is emptied first, so calls() shows only
// this run's calls.
func (a *ap) run(script string, args ...string) (int, string) {
	a.t.Helper()
	a.write(filepath.Join(a.stub, "calls.log"), "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	argv := append([]string{"busybox", "ash", filepath.Join(scriptDir, script)}, args...)
	var cmd *exec.Cmd
	if a.ns != nil {
		cmd = a.ns.Command(ctx, argv...)
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	cmd.Env = a.env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	default:
		a.t.Fatalf("running %s: %v\n%s", script, err, out)
		return -1, ""
	}
}

// mustRun runs a script that must succeed.
func (a *ap) mustRun(script string) string {
	a.t.Helper()
	rc, out := a.run(script)
	if rc != 0 {
		a.t.Fatalf("%s exited %d:\n%s\nsyslog:\n%s", script, rc, out, a.read(filepath.Join(a.stub, "syslog")))
	}
	return out
}

// calls returns the stand-in calls of the last run by the named tools,
// leaving out read-only uci calls (get) when tool is "uci!".
func (a *ap) calls(tools ...string) []string {
	a.t.Helper()
	var out []string
	for _, line := range strings.Split(a.read(filepath.Join(a.stub, "calls.log")), "\n") {
		for _, tool := range tools {
			switch {
			case tool == "uci!" && strings.HasPrefix(line, "uci "):
				if !strings.Contains(line, " [get] ") {
					out = append(out, line)
				}
			case strings.HasPrefix(line, tool+" "):
				out = append(out, line)
			}
		}
	}
	return out
}

func (a *ap) uci(path string) string {
	a.t.Helper()
	prefix := path + "="
	for _, line := range strings.Split(a.read(filepath.Join(a.stub, "uci.state")), "\n") {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimPrefix(line, prefix)
		}
	}
	return "<absent>"
}

func (a *ap) syslog() string { return a.read(filepath.Join(a.stub, "syslog")) }

func (a *ap) secret() string {
	return strings.TrimSpace(a.read(filepath.Join(a.dir, "secret")))
}
