package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/google/go-cmp/cmp"
)

// TestSPIDWiring: a controller.yaml with login and spid blocks mounts the SPID endpoints: the signed metadata on
// the API's listener, spid/idps and spid/start on the gateway API, and the login page that posts a signed
// AuthnRequest to the chosen IdP. Without the login block the controller refuses to start.
func TestSPIDWiring(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	pub, gwKey, _ := ed25519.GenerateKey(rand.Reader)
	write("parco-gw1.pub", []byte(apiclient.MarshalPublicKey(pub)+"\n"), 0o644)
	sitesYAML := strings.Replace(strings.Replace(sitesYAML, "login: {methods: [click-through]}", "login: {methods: [spid], spid: {level: 2}}", 1),
		"  ssid: Prova WiFi\n", "  ssid: Prova WiFi\n  ipa_code: c_z999\n", 1)
	write("sites.yaml", []byte(strings.ReplaceAll(sitesYAML, "DIR", dir)), 0o644)
	write("pepper", []byte(strings.Repeat("k", 48)), 0o600)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sp"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rsaKey.PublicKey, rsaKey)
	write("sp.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), 0o600)
	write("sp.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	reg, err := os.ReadFile("../login/spid/testdata/spid-idps-example.xml")
	if err != nil {
		t.Fatal(err)
	}
	write("idps.xml", reg, 0o644)
	yaml := "sites: sites.yaml\nsigning_key: k\nlogin:\n  pepper_file: pepper\n" +
		"spid:\n  entity_id: https://wifi.comune.prova.it/spid\n  public_url: https://wifi.comune.prova.it\n" +
		"  key: sp.key\n  certificate: sp.crt\n  idp_registry: idps.xml\n"
	cfg, err := ParseConfig(filepath.Join(dir, "controller.yaml"), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	st, err := boltstore.Open(filepath.Join(dir, "c.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, ctrlKey, _ := ed25519.GenerateKey(rand.Reader)
	opts := Options{SitesPath: filepath.Join(dir, "sites.yaml"), Store: st, SigningKey: ctrlKey, Login: cfg.Login, SPID: cfg.SPID,
		Log: slog.New(slog.DiscardHandler)}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	resp, err := http.Get(ts.URL + "/spid/metadata")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `entityID="https://wifi.comune.prova.it/spid"`) ||
		!strings.Contains(string(body), ">c_z999</spid:IPACode>") {
		t.Errorf("metadata: %d %s", resp.StatusCode, body)
	}

	c, err := apiclient.New(apiclient.Config{BaseURL: ts.URL, Site: "parco", GatewayID: "parco-gw1", Key: gwKey,
		ControllerKey: ctrlKey.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	idps, err := c.SPIDIdPs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []apiclient.SPIDIdP{
		{EntityID: "https://cie.lab.civicwifi.test/idp", Name: "Entra con CIE (lab)"},
		{EntityID: "https://idp.lab.civicwifi.test/metadata", Name: "Lab SPID"},
	}
	if diff := cmp.Diff(want, idps); diff != "" {
		t.Errorf("idps (-want +got):\n%s", diff)
	}
	a, err := c.StartSPID(ctx, apiclient.SPIDStartRequest{ClientMAC: "02:aa:bb:cc:dd:01", ClientIP: "10.20.0.57",
		IdPEntityID: "https://idp.lab.civicwifi.test/metadata", Consent: true, ReturnURL: "http://10.20.0.1/portal/spid/done"})
	if err != nil {
		t.Fatal(err)
	}
	path, ok := strings.CutPrefix(a.RedirectURL, "https://wifi.comune.prova.it/spid/login?state=")
	if !ok {
		t.Fatalf("redirect_url %q", a.RedirectURL)
	}
	resp, err = http.Get(ts.URL + "/spid/login?state=" + path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `action="https://idp.lab.civicwifi.test/sso"`) ||
		!strings.Contains(string(body), `name="SAMLRequest"`) {
		t.Errorf("login page: %d %.300s", resp.StatusCode, body)
	}

	opts.Login = cfg.Login
	opts.Login.PepperFile = ""
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "login block") {
		t.Errorf("SPID without login: %v", err)
	}
}
