package captive

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "civicwifi test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a server certificate for name to certFile and keyFile.
func (ca *testCA) issue(t *testing.T, serial int64, name, certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	// Write the key first: the reloader picks the pair up only when both
	// files load together.
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The API over real HTTPS on loopback, verified against the test CA by
// host name, and a renewed certificate picked up without a restart.
func TestHTTPSAndReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "portal.crt"), filepath.Join(dir, "portal.key")
	ca := newTestCA(t)
	ca.issue(t, 100, "portal.test", certFile, keyFile)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpsPort := tln.Addr().(*net.TCPAddr).Port
	tp := newTestPortal(t, func(c *Config) {
		c.GatewayIP = netip.MustParseAddr("127.0.0.1")
		c.APIURL = "https://portal.test:" + strconv.Itoa(httpsPort) + "/api/captive"
		c.TLSCert, c.TLSKey = certFile, keyFile
	})
	tp.s.cert.every = 0 // look at the files at every handshake
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tp.s.serve(ctx, ln, tln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	client := func() *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: ca.pool},
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+port)
			},
		}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	api := "https://portal.test:" + strconv.Itoa(httpsPort) + "/api/captive"
	get := func() (map[string]any, *tls.ConnectionState) {
		t.Helper()
		resp, err := client().Get(api)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/captive+json" {
			t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m, resp.TLS
	}
	m, st := get()
	if m["captive"] != true || m["user-portal-url"] != "https://portal.test:"+strconv.Itoa(httpsPort)+"/portal/" {
		t.Errorf("captive: %v", m)
	}
	if st.PeerCertificates[0].SerialNumber.Int64() != 100 {
		t.Errorf("serial %v", st.PeerCertificates[0].SerialNumber)
	}
	tp.gate.sessions[netip.MustParseAddr("127.0.0.1")] = Session{Started: t0, Expires: t0.Add(time.Hour)}
	if m, _ := get(); m["captive"] != false || m["seconds-remaining"] != float64(3600) {
		t.Errorf("after login: %v", m)
	}

	// The pages over HTTPS too, and plain HTTP on the other port.
	resp, err := client().Get("https://portal.test:" + strconv.Itoa(httpsPort) + "/portal/info")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTPS page: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = client().Get("http://www.example.it:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/x")
	if err != nil || resp.StatusCode != 302 {
		t.Fatalf("HTTP redirect: %v %v", resp, err)
	}
	resp.Body.Close()

	// Renewal: the next handshake gets the new certificate. A broken
	// rewrite keeps the old one.
	ca.issue(t, 101, "portal.test", certFile, keyFile)
	if _, st := get(); st.PeerCertificates[0].SerialNumber.Int64() != 101 {
		t.Errorf("after renewal: serial %v, want 101", st.PeerCertificates[0].SerialNumber)
	}
	os.WriteFile(certFile, []byte("not a certificate"), 0o644)
	if _, st := get(); st.PeerCertificates[0].SerialNumber.Int64() != 101 {
		t.Errorf("after a broken rewrite: serial %v, want 101 kept", st.PeerCertificates[0].SerialNumber)
	}
}

func TestCertificateErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("junk"), 0o600)
	for _, tc := range []struct{ name, cert, key, want string }{
		{"missing cert", filepath.Join(dir, "none.crt"), bad, "portal.tls_cert: stat " + filepath.Join(dir, "none.crt") + ": no such file"},
		{"missing key", bad, filepath.Join(dir, "none.key"), "portal.tls_key: stat"},
		{"garbage", bad, bad, "portal.tls_cert " + bad + " and portal.tls_key " + bad + ": loading"},
		{"key only", "", bad, "both are needed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckTLS(tc.cert, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckTLS: %v, want %q", err, tc.want)
			}
			_, err = New(Config{GatewayIP: netip.MustParseAddr("10.20.0.1"), TLSCert: tc.cert, TLSKey: tc.key, Key: make([]byte, 32)}, &fakeGate{}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadKey(dir)
	if err != nil || len(k1) != KeySize {
		t.Fatalf("%v %d", err, len(k1))
	}
	fi, _ := os.Stat(filepath.Join(dir, "portal-hmac.key"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode())
	}
	k2, _ := LoadKey(dir)
	if string(k1) != string(k2) {
		t.Error("the key changed between loads: signed URLs and forms would break at every restart")
	}
	os.WriteFile(filepath.Join(dir, "portal-hmac.key"), []byte("short"), 0o600)
	if _, err := LoadKey(dir); err == nil || !strings.Contains(err.Error(), "5 bytes, want 32") {
		t.Errorf("short key: %v", err)
	}
}

func TestLoadLogo(t *testing.T) {
	dir := t.TempDir()
	small, big := filepath.Join(dir, "logo.svg"), filepath.Join(dir, "big.png")
	os.WriteFile(small, []byte("<svg/>"), 0o644)
	os.WriteFile(big, make([]byte, maxLogo+1), 0o644)
	if b, typ, err := LoadLogo(small); err != nil || typ != "image/svg+xml" || string(b) != "<svg/>" {
		t.Errorf("svg: %q %q %v", b, typ, err)
	}
	if _, _, err := LoadLogo(big); err == nil || !strings.Contains(err.Error(), "keep it under 64 KB") {
		t.Errorf("big logo: %v", err)
	}
	if _, _, err := LoadLogo(filepath.Join(dir, "none.png")); err == nil || !strings.Contains(err.Error(), "portal.logo:") {
		t.Errorf("missing logo: %v", err)
	}
}
