package lab

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestCA issues a portal certificate and proves a client trusting only the
// CA accepts it for the portal's name and address, over a real TLS
// handshake on loopback, and refuses any other name.
func TestCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.Issue("portal", "portal.lab.test", "10.20.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file %s: %v, mode %v, want 0600", keyFile, err, fi.Mode().Perm())
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(ca.CertFile)
	block, _ := pem.Decode(caPEM)
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("CA file: %v", err)
	}
	if SPKIHash(caCert) != ca.SPKIHash() || len(ca.SPKIHash()) != 44 {
		t.Errorf("SPKIHash %q does not describe the CA file", ca.SPKIHash())
	}

	for _, tt := range []struct {
		host string
		ok   bool
	}{{"portal.lab.test", true}, {"10.20.0.1", true}, {"other.lab.test", false}, {"10.20.0.2", false}} {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: tt.host, Roots: ca.Pool()})
		if (err == nil) != tt.ok {
			t.Errorf("verify for %s: %v, want ok=%v", tt.host, err, tt.ok)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "portal.lab.test", Roots: x509.NewCertPool()}); err == nil {
		t.Error("verified without the CA")
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	client := func(serverName string) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: serverName},
		}}
	}
	resp, err := client("portal.lab.test").Get("https://127.0.0.1:" + port + "/")
	if err != nil {
		t.Fatalf("handshake as portal.lab.test: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Errorf("body %q", body)
	}
	if _, err := client("evil.lab.test").Get("https://127.0.0.1:" + port + "/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("handshake as evil.lab.test: %v, want a certificate error", err)
	}
}
