package spid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKeyPair(t *testing.T) {
	dir := t.TempDir()
	key, cert := newKeyCert(t, "sp")
	_, other := newKeyCert(t, "other")
	write := func(name string, mode os.FileMode, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ec)
	k1 := write("k1", 0o600, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	k8 := write("k8", 0o600, "PRIVATE KEY", pkcs8)
	kOpen := write("kopen", 0o644, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	kEC := write("kec", 0o600, "PRIVATE KEY", ec8)
	c := write("c", 0o644, "CERTIFICATE", cert.Raw)
	cOther := write("co", 0o644, "CERTIFICATE", other.Raw)
	for _, tc := range []struct{ name, key, cert, err string }{
		{"pkcs1", k1, c, ""},
		{"pkcs8", k8, c, ""},
		{"group readable", kOpen, c, "readable by group or others"},
		{"not rsa", kEC, c, "SPID wants RSA"},
		{"other certificate", k1, cOther, "is not the certificate of key"},
		{"missing", filepath.Join(dir, "nope"), c, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, ct, err := LoadKeyPair(tc.key, tc.cert)
			if tc.err == "" {
				if err != nil || !k.Equal(key) || !ct.Equal(cert) {
					t.Fatalf("LoadKeyPair: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %v, want %q", err, tc.err)
			}
		})
	}
}
