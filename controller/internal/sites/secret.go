package sites

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// SecretRef says where a secret is kept: in the controller's environment
// (env:NAME) or in a file (file:/absolute/path). sites.yaml holds only such
// references, never a secret itself, because it lives in git.
type SecretRef struct {
	Source string // "env" or "file"
	Name   string // the variable's name or the file's absolute path
}

func (r SecretRef) String() string { return r.Source + ":" + r.Name }

// Read returns the secret: the variable's value or the file's contents,
// without surrounding white space.
func (r SecretRef) Read() ([]byte, error) {
	switch r.Source {
	case "env":
		s, ok := os.LookupEnv(r.Name)
		if !ok || strings.TrimSpace(s) == "" {
			return nil, fmt.Errorf("reading secret %s: the variable is not set", r)
		}
		return []byte(strings.TrimSpace(s)), nil
	case "file":
		b, err := os.ReadFile(r.Name)
		if err != nil {
			return nil, fmt.Errorf("reading secret %s: %w", r, err)
		}
		return []byte(strings.TrimSpace(string(b))), nil
	}
	return nil, fmt.Errorf("reading secret %s: unknown source %q", r, r.Source)
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// errInlineSecret marks a value that looks like a secret written inline.
var errInlineSecret = errors.New("looks like a secret written inline: secrets never go in sites.yaml (it is kept in git); " +
	"put it in a file and write file:/absolute/path, or in the controller's environment and write env:NAME, " +
	"and replace this secret, since it has been exposed")

// ParseSecretRef parses "env:NAME" or "file:/absolute/path". Its errors
// never repeat the value, which may be a secret.
func ParseSecretRef(s string) (SecretRef, error) {
	src, name, ok := strings.Cut(strings.TrimSpace(s), ":")
	switch {
	case ok && src == "env":
		if !envNameRE.MatchString(name) {
			return SecretRef{}, errors.New("env: wants a variable name (letters, digits and _), e.g. env:CW_GW_PERTINI_KEY")
		}
		return SecretRef{"env", name}, nil
	case ok && src == "file":
		if !filepath.IsAbs(name) || filepath.Clean(name) != name {
			return SecretRef{}, errors.New("file: wants a clean absolute path, e.g. file:/etc/civicwifi/gateways/pertini-gw1.pub")
		}
		return SecretRef{"file", name}, nil
	}
	t := strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(t, "/") && !strings.ContainsAny(t, " \t"):
		return SecretRef{}, fmt.Errorf("is a path without its source: write file:%s", t)
	case envStyleRE.MatchString(strings.Trim(t, "${}")):
		return SecretRef{}, fmt.Errorf("is a variable name without its source: write env:%s", strings.Trim(t, "${}"))
	case looksSecret(t):
		return SecretRef{}, errInlineSecret
	}
	return SecretRef{}, errors.New("is not a reference to a secret (write env:NAME or file:/absolute/path)")
}

// envStyleRE is how environment variables are named by convention.
var envStyleRE = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$`)

var hexRE = regexp.MustCompile(`^[0-9a-fA-F]{32,}$`)

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9+/=_\-.~]{16,}$`)

// looksSecret reports whether s looks like key material or a token rather
// than a mistyped reference.
func looksSecret(s string) bool {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "-----BEGIN") || strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-") {
		return true
	}
	if !tokenRE.MatchString(s) {
		return false
	}
	var upper, lower, digit bool
	for _, c := range s {
		switch {
		case c >= 'A' && c <= 'Z':
			upper = true
		case c >= 'a' && c <= 'z':
			lower = true
		case c >= '0' && c <= '9':
			digit = true
		}
	}
	return (digit && upper && lower) || hexRE.MatchString(s)
}
