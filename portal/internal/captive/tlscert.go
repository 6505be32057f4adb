package captive

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// CheckTLS loads a certificate and key pair the way the server will, so
// `portal validate` and the daemon's start report a bad file by name.
func CheckTLS(certFile, keyFile string) error {
	_, err := loadPair(certFile, keyFile)
	return err
}

func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("portal.tls_cert and portal.tls_key: both are needed for HTTPS")
	}
	for _, f := range []struct{ key, path string }{{"tls_cert", certFile}, {"tls_key", keyFile}} {
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("portal.%s: %w", f.key, err)
		}
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("portal.tls_cert %s and portal.tls_key %s: loading: %w", certFile, keyFile, err)
	}
	return &c, nil
}

// certReloader serves the certificate and picks up a renewed one (both files
// rewritten) without a restart: it looks at the files' times at most every
// few seconds, and keeps the old pair if the new one does not load.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	every             time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	c, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &certReloader{certFile: certFile, keyFile: keyFile, log: log, every: 5 * time.Second, cert: c, stamp: fileStamp(certFile, keyFile), checked: time.Now()}, nil
}

func fileStamp(files ...string) string {
	s := ""
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%d.%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return s
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= r.every {
		r.checked = time.Now()
		if st := fileStamp(r.certFile, r.keyFile); st != r.stamp {
			c, err := loadPair(r.certFile, r.keyFile)
			if err != nil {
				r.log.Error("reloading the portal certificate; keeping the previous one", "err", err)
			} else {
				r.cert, r.stamp = c, st
				r.log.Info("portal certificate reloaded", "file", r.certFile)
			}
		}
	}
	return r.cert, nil
}

// maxLogo bounds the logo file: it is sent with every page view.
const maxLogo = 64 << 10

// LoadLogo reads the site's logo and its media type (from the extension).
func LoadLogo(path string) ([]byte, string, error) {
	typ := map[string]string{".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}[strings.ToLower(filepath.Ext(path))]
	if typ == "" {
		return nil, "", fmt.Errorf("portal.logo: %s is not a .png, .jpg or .svg file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("portal.logo: %w", err)
	}
	if len(b) > maxLogo {
		return nil, "", fmt.Errorf("portal.logo: %s is %d KB; keep it under %d KB (pages must stay small)", path, len(b)>>10, maxLogo>>10)
	}
	return b, typ, nil
}
