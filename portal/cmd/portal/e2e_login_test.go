package main

// Resident login end to end: a real `controller run` with its login block
// (SMS through the webhook provider, whose HTTP API the test plays inside
// the upstream namespace and reads the code from), a real gateway, and a
// phone in a client namespace that walks the portal's plain forms (no
// cookies, no JavaScript) and then reaches the internet.

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
	"html"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/internal/lab"
)

const loginSites = `town:
  name: Comune di Prova
  ssid: Prova WiFi
  contacts: {email: urp@comune.prova.it, dpo: dpo@comune.prova.it}
  privacy: {it: Informativa sulla privacy}
  terms: {it: Condizioni d'uso}
policies:
  - name: residents
    down: 5mbit
    up: 5mbit
    session: 2h
    idle: 15m
    remember_device_days: 30
    login:
      methods: [sms, voucher]
      sms: {countries: [IT]}
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

// smsText is one message the provider was asked to send.
type smsText struct {
	To, Text, RequestID string
}

func TestResidentLoginThroughController(t *testing.T) {
	lab.Require(t, "iptables", "ipset", "tc", "dnsmasq", "curl")
	dir := t.TempDir()
	for _, name := range []string{"controller", "gw-a"} {
		if _, err := apiclient.Enroll(dir, name); err != nil {
			t.Fatal(err)
		}
	}
	pepper := make([]byte, 48)
	rand.Read(pepper)
	if err := os.WriteFile(filepath.Join(dir, "pepper"), []byte(base64.StdEncoding.EncodeToString(pepper)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sites.yaml"), []byte(fmt.Sprintf(loginSites, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	tw := &town{t: t, dir: dir, bin: controllerBinary(t), conf: filepath.Join(dir, "controller.yaml")}
	conf := fmt.Sprintf(`listen: 0.0.0.0:8443
sites: %[1]s/sites.yaml
store: bolt:%[1]s/controller.db
signing_key: %[1]s/controller.key
state_dir: %[1]s/state
metrics_listen: "off"
log_format: text
login:
  pepper_file: %[1]s/pepper
  sms:
    provider: webhook
    url: http://127.0.0.1:8099/sms
    attempts: 1
    timeout: 2s
`, dir)
	if err := os.WriteFile(tw.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// The SMS provider: its webhook API, inside the upstream namespace.
	texts := make(chan smsText, 8)
	var voucherCode string
	s := newSiteWith(t, 1, gatewayYAML(dir, "gw-a"), func(l *lab.Lab) {
		renameSite(t, l, "parco-a")
		tw.l, tw.ns = l, l.Upstream
		if _, err := l.Upstream.Run(context.Background(), "ip", "addr", "add", controllerAddr+"/30", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		ln, err := l.Upstream.Listen("tcp", "127.0.0.1:8099")
		if err != nil {
			t.Fatal(err)
		}
		provider := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var m struct{ To, Text, Request_ID string }
			b, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
			if err := json.Unmarshal(b, &m); err != nil || r.URL.Path != "/sms" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			texts <- smsText{To: m.To, Text: m.Text, RequestID: m.Request_ID}
			w.WriteHeader(http.StatusAccepted)
		})}
		go provider.Serve(ln)
		t.Cleanup(func() { provider.Close() })
		// A front desk prints a voucher (before the controller runs: the
		// embedded store is locked while it does).
		sheet := filepath.Join(dir, "sheet.html")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if out, err := l.Upstream.Run(ctx, tw.bin, "vouchers", "-config", tw.conf, "-site", "parco-a", "-count", "1",
			"-out", sheet, "-portal", "http://10.20.0.1:2050"); err != nil {
			t.Fatalf("controller vouchers: %v\n%s", err, out)
		}
		b, err := os.ReadFile(sheet)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`<div class="code">([^<]+)</div>`).FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("no voucher code on the sheet:\n%s", b)
		}
		voucherCode = html.UnescapeString(m[1])
		tw.start()
		t.Cleanup(tw.stop)
	})
	eventually(t, 20*time.Second, "gateway follows the controller's policy", func() (bool, string) {
		return strings.Contains(s.log(), "site policy applied"), "no 'site policy applied' in the log"
	})

	phone := s.l.Clients[0]
	hc := phone.NS.HTTPClient(nil)
	get := func(u string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Accept-Language", "it-IT,it")
		return do(t, hc, req)
	}
	post := func(path string, f url.Values) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://10.20.0.1:2050"+path, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept-Language", "it-IT,it")
		return do(t, hc, req)
	}
	orig := "http://" + s.l.OtherIP.String() + "/"

	// Captive: the phone's request lands on the portal, which offers the
	// policy's methods (no click-through: the policy does not have it).
	code, loc, _ := get(orig)
	if code != http.StatusFound || !strings.HasPrefix(loc, "http://10.20.0.1:2050/portal/?url=") {
		t.Fatalf("captive request: %d %q", code, loc)
	}
	code, _, land := get(loc)
	if code != 200 || !strings.Contains(land, `action="/portal/sms"`) || !strings.Contains(land, `action="/portal/voucher"`) || strings.Contains(land, `action="/portal/grant"`) {
		t.Fatalf("landing %d does not follow the policy:\n%s", code, land)
	}

	// The number: the controller asks the provider to text a code.
	f := hiddenFields(t, land, "/portal/sms")
	f.Set("phone", "333 123 4567")
	f.Set("accept", "1")
	code, _, codePage := post("/portal/sms", f)
	if code != 200 || !strings.Contains(codePage, `autocomplete="one-time-code"`) {
		t.Fatalf("code page %d:\n%s", code, codePage)
	}
	var text smsText
	select {
	case text = <-texts:
	case <-time.After(10 * time.Second):
		t.Fatal("the provider received no message")
	}
	if text.To != "+393331234567" {
		t.Errorf("texted to %q, want +393331234567", text.To)
	}
	otp := regexp.MustCompile(`\b[0-9]{6}\b`).FindString(text.Text)
	if otp == "" {
		t.Fatalf("no code in %q", text.Text)
	}

	// A wrong code first: refused, translated, nothing opens.
	v := hiddenFields(t, codePage, "/portal/sms/verify")
	wrong := "000000"
	if otp == wrong {
		wrong = "111111"
	}
	v.Set("code", wrong)
	code, _, page := post("/portal/sms/verify", v)
	if code != http.StatusBadRequest || !strings.Contains(page, "Il codice non è corretto.") {
		t.Fatalf("wrong code: %d\n%s", code, page)
	}
	if r := fetch(phone.NS, 3*time.Second, orig); r.upstream() {
		t.Fatal("a wrong code let the phone out")
	}
	// The right code: the session opens and the phone goes on to where it
	// was going.
	v.Set("code", otp)
	t0 := time.Now()
	code, loc, _ = post("/portal/sms/verify", v)
	if code != http.StatusSeeOther || loc != orig {
		t.Fatalf("code accepted: %d %q, want 303 to %q", code, loc, orig)
	}
	eventually(t, 5*time.Second, "the phone reaches the internet", func() (bool, string) {
		r := fetch(phone.NS, 2*time.Second, orig)
		return r.upstream(), r.String()
	})
	t.Logf("from submitting the code to the upstream's answer: %v", time.Since(t0).Round(time.Millisecond))
	sess := phoneSession(t, s, phone.IP.String())
	if sess.Method != "sms" || sess.UpRate != 5_000_000 {
		t.Errorf("session %+v: want method sms and the policy's 5mbit", sess)
	}
	// The same code again: single use at the controller, nothing new here.
	if code, _, _ := post("/portal/sms/verify", v); code < 400 {
		t.Errorf("the code was accepted twice: %d", code)
	}

	// Log out; the device is remembered: one tap lets it in again.
	logout := func() {
		t.Helper()
		_, _, status := get("http://10.20.0.1:2050/portal/status")
		if code, _, _ := post("/portal/logout", hiddenFields(t, status, "/portal/logout")); code != 200 {
			t.Fatalf("logout: %d", code)
		}
	}
	logout()
	eventually(t, 5*time.Second, "the phone is captive again", func() (bool, string) {
		r := fetch(phone.NS, 2*time.Second, orig)
		return r.Code == http.StatusFound, r.String()
	})
	_, _, land = get("http://10.20.0.1:2050/portal/")
	code, loc, _ = post("/portal/remembered", hiddenFields(t, land, "/portal/remembered"))
	if code != http.StatusSeeOther {
		t.Fatalf("remembered: %d %q", code, loc)
	}
	eventually(t, 5*time.Second, "the remembered phone reaches the internet", func() (bool, string) {
		r := fetch(phone.NS, 2*time.Second, orig)
		return r.upstream(), r.String()
	})
	again := phoneSession(t, s, phone.IP.String())
	if again.Method != "remembered" || again.UpRate != 5_000_000 {
		t.Errorf("remembered session %+v, want method remembered and the policy's 5mbit", again)
	}
	// A visitor's voucher: the printed QR code's URL fills the field; the
	// terms accepted, the session opens.
	logout()
	code, _, land = get("http://10.20.0.1:2050/portal/?voucher=" + url.QueryEscape(voucherCode))
	if code != 200 || !strings.Contains(land, `value="`+voucherCode+`"`) {
		t.Fatalf("the voucher's QR URL: %d, code %q not in its field", code, voucherCode)
	}
	f = hiddenFields(t, land, "/portal/voucher")
	f.Set("voucher", strings.ToLower(voucherCode))
	f.Set("accept", "1")
	code, loc, page = post("/portal/voucher", f)
	if code != http.StatusSeeOther {
		t.Fatalf("voucher: %d %q\n%s", code, loc, page)
	}
	eventually(t, 5*time.Second, "the voucher's phone reaches the internet", func() (bool, string) {
		r := fetch(phone.NS, 2*time.Second, orig)
		return r.upstream(), r.String()
	})
	if vs := phoneSession(t, s, phone.IP.String()); vs.Method != "voucher" {
		t.Errorf("voucher session %+v", vs)
	}

	// Nowhere in the gateway's log is the number.
	if strings.Contains(s.log(), "3331234567") || strings.Contains(s.log(), "333 123 4567") {
		t.Error("the phone number is in the gateway's log")
	}
}

func do(t *testing.T, hc *http.Client, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// hiddenFields are the hidden inputs of the form posting to action.
func hiddenFields(t *testing.T, page, action string) url.Values {
	t.Helper()
	i := strings.Index(page, `action="`+action+`"`)
	if i < 0 {
		t.Fatalf("no form for %s in:\n%s", action, page)
	}
	end := strings.Index(page[i:], "</form>")
	v := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(page[i:i+end], -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	return v
}

type phoneSess struct {
	Method string
	UpRate uint64
}

func phoneSession(t *testing.T, s *site, ip string) phoneSess {
	t.Helper()
	for _, c := range s.clients() {
		if c.IP == ip && c.Session != nil {
			return phoneSess{Method: c.Session.Method, UpRate: c.Session.UpRate}
		}
	}
	t.Fatalf("no session for %s", ip)
	return phoneSess{}
}

// SPID through the gateway, up to the identity provider, against a real
// controller with its SPID block: the landing page lists the registry's
// IdPs; while the policy offers SPID the captive phone reaches the IdP's
// host by name (the walled garden, filled by dnsmasq) and the controller
// (walled_garden.networks: it is given by address here, and the garden
// opens web ports only, so its public side is port 80); the IdP button
// sends the phone to the controller's SP, whose page posts the signed
// AuthnRequest to the IdP. When the policy drops SPID, the IdP's host is
// closed again. (The lab's IdP host is the upstream's plain web server: the
// SAML exchange itself is the controller's tests'.)
func TestSPIDWalledGarden(t *testing.T) {
	lab.Require(t, "iptables", "ipset", "tc", "dnsmasq", "curl")
	dir := t.TempDir()
	for _, name := range []string{"controller", "gw-a"} {
		if _, err := apiclient.Enroll(dir, name); err != nil {
			t.Fatal(err)
		}
	}
	pepper := make([]byte, 48)
	rand.Read(pepper)
	write := func(name string, b []byte, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
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
	// The registry: the controller's example file, its lab IdP moved to a
	// host the lab's DNS knows.
	reg, err := os.ReadFile("../../../controller/internal/login/spid/testdata/spid-idps-example.xml")
	if err != nil {
		t.Fatal(err)
	}
	write("spid-idps.xml", []byte(strings.ReplaceAll(string(reg), "idp.lab.civicwifi.test", lab.OtherHost)), 0o644)
	spidSites := func(methods string) []byte {
		s := strings.Replace(fmt.Sprintf(loginSites, dir), "methods: [sms, voucher]", "methods: "+methods+"\n      spid: {level: 2}", 1)
		return []byte(strings.Replace(s, "  ssid: Prova WiFi\n", "  ssid: Prova WiFi\n  ipa_code: c_z999\n", 1))
	}
	write("sites.yaml", spidSites("[sms, spid]"), 0o644)
	tw := &town{t: t, dir: dir, bin: controllerBinary(t), conf: filepath.Join(dir, "controller.yaml")}
	write("controller.yaml", []byte(fmt.Sprintf(`listen: 0.0.0.0:8443
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
`, dir, controllerAddr)), 0o644)
	s := newSiteWith(t, 1, gatewayYAML(dir, "gw-a"), func(l *lab.Lab) {
		renameSite(t, l, "parco-a")
		p := filepath.Join(l.Dir, "portal.yaml")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		conf := strings.Replace(string(b), "walled_garden: {domains: [garden.example.test]}",
			"walled_garden: {domains: [garden.example.test], networks: ["+controllerAddr+"/32]}", 1)
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		tw.l, tw.ns = l, l.Upstream
		for _, argv := range [][]string{
			{"ip", "addr", "add", controllerAddr + "/30", "dev", "lo"},
			// The controller's public side on port 80 (its reverse proxy's
			// 443 in a town): the garden opens web ports only.
			{"iptables", "-t", "nat", "-A", "PREROUTING", "-d", controllerAddr, "-p", "tcp", "--dport", "80", "-j", "REDIRECT", "--to-ports", "8443"},
		} {
			if out, err := l.Upstream.Run(context.Background(), argv...); err != nil {
				t.Fatalf("%v: %v\n%s", argv, err, out)
			}
		}
		tw.start()
		t.Cleanup(tw.stop)
	})
	phone := s.l.Clients[0]
	idpURL := "http://" + lab.OtherHost + "/"
	elsewhere := "http://" + s.l.UpstreamIP.String() + "/"
	eventually(t, 30*time.Second, "the captive phone reaches the IdP's host", func() (bool, string) {
		r := fetch(phone.NS, 2*time.Second, idpURL)
		return r.upstream(), r.String()
	})
	if r := fetch(phone.NS, 3*time.Second, elsewhere); r.Code != http.StatusFound {
		t.Fatalf("the captive phone is not captive elsewhere: %v", r)
	}
	if !strings.Contains(s.log(), "SPID hosts given by address") {
		t.Error("no warning that the controller, given by address, cannot be in the garden by name")
	}

	hc := phone.NS.HTTPClient(nil)
	get := func(u string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		return do(t, hc, req)
	}
	code, _, land := get("http://10.20.0.1:2050/portal/")
	entity := "https://" + lab.OtherHost + "/metadata"
	if code != 200 || !strings.Contains(land, `name="idp" value="`+entity+`"`) {
		t.Fatalf("landing %d has no button for %s:\n%s", code, entity, land)
	}
	f := hiddenFields(t, land, "/portal/spid")
	f.Set("idp", entity)
	f.Set("accept", "1")
	req, _ := http.NewRequest("POST", "http://10.20.0.1:2050/portal/spid", strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	code, loc, body := do(t, hc, req)
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "http://"+controllerAddr+"/spid/login?") {
		t.Fatalf("SPID start: %d %q\n%s", code, loc, body)
	}
	// The captive phone reaches the controller's SP, which sends it on to
	// the IdP with a signed AuthnRequest.
	code, _, sp := get(loc)
	if code != 200 || !strings.Contains(sp, "https://"+lab.OtherHost+"/sso") || !strings.Contains(sp, "SAMLRequest") {
		t.Fatalf("the controller's SPID page: %d\n%.2000s", code, sp)
	}

	// The policy drops SPID: the IdP's host is closed to captive phones.
	tmp := filepath.Join(dir, "sites.yaml.new")
	if err := os.WriteFile(tmp, spidSites("[sms]"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "sites.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the IdP's host is closed again", func() (bool, string) {
		r := fetch(phone.NS, 2*time.Second, idpURL)
		return r.Code == http.StatusFound, r.String()
	})
	if _, _, land := get("http://10.20.0.1:2050/portal/"); strings.Contains(land, `action="/portal/spid"`) {
		t.Error("SPID still offered after the policy dropped it")
	}
}
