// Package pepper holds the controller's secret pepper and the keyed hashes made with it: residents' pseudonyms
// (base32 of HMAC-SHA256(pepper, "phone:" + E.164) or ("spid:" + fiscal number)) and the store keys of one-time
// codes, vouchers and rate limits, so that no phone number, fiscal code or voucher code is ever kept in clear.
package pepper

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"os"
	"strings"
)

// MinLen is the shortest pepper accepted.
const MinLen = 32

// Pepper is the secret key of every keyed hash. The zero value is not usable.
type Pepper struct{ key []byte }

// New returns a Pepper for key, which must be at least MinLen bytes.
func New(key []byte) (Pepper, error) {
	if len(key) < MinLen {
		return Pepper{}, fmt.Errorf("pepper: %d bytes, want at least %d", len(key), MinLen)
	}
	return Pepper{key: append([]byte(nil), key...)}, nil
}

// Load reads a pepper file (surrounding white space is dropped). Like a key file, it must not be readable by group
// or others.
func Load(path string) (Pepper, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Pepper{}, fmt.Errorf("reading pepper: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Pepper{}, fmt.Errorf("pepper file %s: mode %v is readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Pepper{}, fmt.Errorf("reading pepper: %w", err)
	}
	key := []byte(strings.TrimSpace(string(data)))
	if len(key) < MinLen {
		return Pepper{}, fmt.Errorf("pepper file %s: %d bytes, want at least %d (make one with: head -c 48 /dev/urandom | base64 > %s)", path, len(key), MinLen, path)
	}
	p, err := New(key)
	if err != nil {
		return Pepper{}, err
	}
	return p, nil
}

// Valid reports whether p was made by New or Load.
func (p Pepper) Valid() bool { return len(p.key) >= MinLen }

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Pseudonym returns the user id of subject ("phone:+393331234567", "spid:TINIT-...", "voucher:..."): lower-case
// base32 of HMAC-SHA256(pepper, subject), 52 characters.
func (p Pepper) Pseudonym(subject string) string {
	return strings.ToLower(b32.EncodeToString(p.sum(subject)))
}

// Key returns a store-key-safe keyed hash of purpose and value (base32, 26 characters: 128 bits), for
// keys such as "sms/n/" + Key("number", e164).
func (p Pepper) Key(purpose, value string) string {
	return strings.ToLower(b32.EncodeToString(p.sum(purpose + "\x00" + value)[:16]))
}

// Sum returns HMAC-SHA256(pepper, data), e.g. of a one-time code with its request id.
func (p Pepper) Sum(data string) []byte { return p.sum(data) }

func (p Pepper) sum(data string) []byte {
	if !p.Valid() {
		panic("pepper: used before New or Load")
	}
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
