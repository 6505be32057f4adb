package apiclient

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// PublicKeyPrefix starts the one-line text form of a public key: "ed25519:" then the 32 key bytes in standard
// base64. This line is what a public key file holds and what an operator pastes into sites.yaml's key file.
const PublicKeyPrefix = "ed25519:"

// Enrollment is what Enroll made.
type Enrollment struct {
	KeyFile       string // private key, PKCS#8 PEM, mode 0600
	PublicKeyFile string // one line, MarshalPublicKey form, mode 0644
	PublicKeyLine string // the same line, to print
}

// Enroll makes a new Ed25519 key pair for a gateway (or for the controller's own response-signing key) as
// dir/name.key and dir/name.pub. It refuses to overwrite an existing key file: a new key means re-enrolling, and
// losing the old one by a typo would lock the gateway out. dir is created with mode 0700 if missing.
func Enroll(dir, name string) (Enrollment, error) {
	if !ValidID(name) {
		return Enrollment{}, fmt.Errorf("enrolling %q: name must be 1 to 64 of a-z 0-9 . _ -", name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Enrollment{}, fmt.Errorf("enrolling %q: %w", name, err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Enrollment{}, fmt.Errorf("enrolling %q: generating key: %w", name, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return Enrollment{}, fmt.Errorf("enrolling %q: encoding key: %w", name, err)
	}
	e := Enrollment{
		KeyFile:       filepath.Join(dir, name+".key"),
		PublicKeyFile: filepath.Join(dir, name+".pub"),
		PublicKeyLine: MarshalPublicKey(pub),
	}
	if err := writeNew(e.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return Enrollment{}, fmt.Errorf("enrolling %q: %w", name, err)
	}
	if err := writeNew(e.PublicKeyFile, []byte(e.PublicKeyLine+"\n"), 0o644); err != nil {
		os.Remove(e.KeyFile)
		return Enrollment{}, fmt.Errorf("enrolling %q: %w", name, err)
	}
	return e, nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	return f.Close()
}

// MarshalPublicKey returns the one-line text form of pub.
func MarshalPublicKey(pub ed25519.PublicKey) string {
	return PublicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey parses the one-line text form.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, PublicKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("public key %q: want %s<base64>", abbrev(s), PublicKeyPrefix)
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("public key %q: %w", abbrev(s), err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key %q: %d bytes, want %d", abbrev(s), len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

func abbrev(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// LoadPublicKey reads a public key file: its first line that is neither empty nor a # comment.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading public key: %w", err)
	}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pub, err := ParsePublicKey(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("%s: no public key in the file", path)
}

// ErrKeyFileMode is returned for a private key file that group or others may read.
var ErrKeyFileMode = errors.New("private key file is accessible by group or others (chmod 600)")

// LoadPrivateKey reads a PKCS#8 PEM Ed25519 private key. Like ssh, it refuses a file group or others can access.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %04o: %w", path, st.Mode().Perm(), ErrKeyFileMode)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	block, _ := pem.Decode(buf.Bytes())
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, want an Ed25519 key", path, k)
	}
	return priv, nil
}
