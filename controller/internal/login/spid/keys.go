package spid

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// LoadKeyPair reads the SP's PEM private key (PKCS#1 or PKCS#8 RSA, 2048 bits or more, not readable by group or
// others) and its PEM certificate, and checks that they belong together.
func LoadKeyPair(keyPath, certPath string) (*rsa.PrivateKey, *x509.Certificate, error) {
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading SPID key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("SPID key %s: mode %v is readable by group or others (chmod 600)", keyPath, fi.Mode().Perm())
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading SPID key: %w", err)
	}
	key, err := parseKey(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("SPID key %s: %w", keyPath, err)
	}
	if n := key.N.BitLen(); n < minKeyBits {
		return nil, nil, fmt.Errorf("SPID key %s: %d bits, SPID wants RSA with at least %d", keyPath, n, minKeyBits)
	}
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading SPID certificate: %w", err)
	}
	block, _ := pem.Decode(cb)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("SPID certificate %s: no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("SPID certificate %s: %w", certPath, err)
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("SPID certificate %s is not the certificate of key %s", certPath, keyPath)
	}
	return key, cert, nil
}

func parseKey(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %T, SPID wants RSA", k)
		}
		return rk, nil
	}
	return nil, fmt.Errorf("PEM block %q, want RSA PRIVATE KEY or PRIVATE KEY", block.Type)
}
