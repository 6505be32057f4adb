// Package auth is who may use the operators' dashboard and what they may
// do: admin accounts with roles kept in a file of password hashes
// (argon2id), server-side sessions in the store's Ephemeral keys, CSRF
// tokens, login rate limiting per account and per address, and optional
// single sign-on with the town's OpenID Connect provider.
package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// Role is what an admin account is for.
type Role string

// The roles.
const (
	IT       Role = "it"       // the town's IT staff: everything
	Operator Role = "operator" // watches the network: read and kick
	Auditor  Role = "auditor"  // reports and the audit log only
)

// Roles are all roles.
var Roles = []Role{IT, Operator, Auditor}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q (one of it, operator, auditor)", s)
}

// Perm is one thing a role may do.
type Perm string

// The permissions.
const (
	SeeNetwork Perm = "network"  // overview, site pages, live sessions (personal data: MACs)
	Kick       Perm = "kick"     // disconnect a client
	Extend     Perm = "extend"   // extend a client's session
	Vouchers   Perm = "vouchers" // create and print voucher batches
	Poster     Perm = "poster"   // a site's poster
	Reports    Perm = "reports"  // charts and aggregate statistics
	Exports    Perm = "exports"  // CSV/JSON exports and the monthly report
	AuditLog   Perm = "audit"    // the audit log
)

var perms = map[Role][]Perm{
	IT:       {SeeNetwork, Kick, Extend, Vouchers, Poster, Reports, Exports, AuditLog},
	Operator: {SeeNetwork, Kick, Reports},
	Auditor:  {Reports, Exports, AuditLog},
}

// Can reports whether the role has permission p.
func (r Role) Can(p Perm) bool {
	for _, x := range perms[r] {
		if x == p {
			return true
		}
	}
	return false
}

// Account is one admin account as kept in the accounts file.
type Account struct {
	Name string
	Role Role
	Hash string // argon2id in PHC form: $argon2id$v=19$m=...,t=...,p=...$salt$key
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._@-]{0,63}$`)

// CheckName reports whether name can be an account name.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("account name %q: use 1-64 of a-z 0-9 . _ @ - starting with a letter or digit", name)
	}
	return nil
}

// ParseAccounts reads an accounts file: one account a line,
// "name:role:hash", blank lines and # comments ignored. Every problem is
// reported at once as file:line:col.
func ParseAccounts(file string, data []byte) ([]Account, error) {
	var out []Account
	var probs []string
	seen := map[string]int{}
	for i, line := range strings.Split(string(data), "\n") {
		ln := i + 1
		line = strings.TrimRight(line, "\r")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			probs = append(probs, fmt.Sprintf("%s:%d:1: want name:role:hash, got %d fields", file, ln, len(f)))
			continue
		}
		a := Account{Name: f[0], Role: Role(f[1]), Hash: f[2]}
		if err := CheckName(a.Name); err != nil {
			probs = append(probs, fmt.Sprintf("%s:%d:1: %v", file, ln, err))
		}
		if _, err := ParseRole(f[1]); err != nil {
			probs = append(probs, fmt.Sprintf("%s:%d:%d: %v", file, ln, len(f[0])+2, err))
		}
		if _, err := parseHash(a.Hash); err != nil {
			probs = append(probs, fmt.Sprintf("%s:%d:%d: %v", file, ln, len(f[0])+len(f[1])+3, err))
		}
		if prev, ok := seen[a.Name]; ok {
			probs = append(probs, fmt.Sprintf("%s:%d:1: account %q already on line %d", file, ln, a.Name, prev))
		}
		seen[a.Name] = ln
		out = append(out, a)
	}
	if len(probs) > 0 {
		return nil, errors.New(strings.Join(probs, "\n"))
	}
	return out, nil
}

// LoadAccounts reads the accounts file at path. A missing file is no
// accounts (sign-on only, or nobody yet). A file others may read is
// refused: it holds hashes that an attacker could try offline.
func LoadAccounts(path string) ([]Account, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading accounts: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("reading accounts: %s is mode %#o: make it 0600 (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading accounts: %w", err)
	}
	return ParseAccounts(path, data)
}

// SetAccount adds a (or replaces the account of that name) in the file at
// path, writing a new file (mode 0600) and renaming it over the old one.
// The rest of the file, comments included, is kept.
func SetAccount(path string, a Account) error {
	if err := CheckName(a.Name); err != nil {
		return err
	}
	if _, err := ParseRole(string(a.Role)); err != nil {
		return err
	}
	if _, err := parseHash(a.Hash); err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading accounts: %w", err)
	}
	if _, err := ParseAccounts(path, old); err != nil {
		return fmt.Errorf("refusing to rewrite a file with problems:\n%w", err)
	}
	var b bytes.Buffer
	if len(old) == 0 {
		b.WriteString("# civicwifi dashboard accounts: name:role:argon2id-hash (controller admin add)\n")
	}
	line := a.Name + ":" + string(a.Role) + ":" + a.Hash
	replaced := false
	for _, l := range strings.SplitAfter(string(old), "\n") {
		if l == "" {
			continue
		}
		if name, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && name == a.Name && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(line + "\n")
			replaced = true
			continue
		}
		b.WriteString(l)
		if !strings.HasSuffix(l, "\n") {
			b.WriteByte('\n')
		}
	}
	if !replaced {
		b.WriteString(line + "\n")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".accounts-*")
	if err != nil {
		return fmt.Errorf("writing accounts: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing accounts: %w", err)
	}
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("writing accounts: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing accounts: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing accounts: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing accounts: %w", err)
	}
	return nil
}

// Params are argon2id's cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

// DefaultParams are RFC 9106's second recommended option with 2 lanes
// (64 MiB, 3 passes): about 0.1-0.2 s on one core here. Logins are
// serialised (see Manager), so memory stays bounded under a login flood.
var DefaultParams = Params{Memory: 64 * 1024, Time: 3, Threads: 2}

// HashPassword hashes pw with DefaultParams and a random salt.
func HashPassword(pw string) (string, error) { return HashPasswordWith(pw, DefaultParams) }

// HashPasswordWith hashes pw with p (tests use cheap parameters).
func HashPasswordWith(pw string, p Params) (string, error) {
	if pw == "" {
		return "", errors.New("empty password")
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, 32)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

type hash struct {
	p         Params
	salt, key []byte
}

func parseHash(s string) (hash, error) {
	var h hash
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return h, errors.New("not an argon2id hash ($argon2id$v=19$m=...,t=...,p=...$salt$key): make one with controller admin add")
	}
	var v int
	if _, err := fmt.Sscanf(f[2], "v=%d", &v); err != nil || v != argon2.Version {
		return h, fmt.Errorf("argon2id version %q: want v=%d", f[2], argon2.Version)
	}
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &h.p.Memory, &h.p.Time, &h.p.Threads); err != nil ||
		h.p.Memory < 8*1024 || h.p.Memory > 1<<21 || h.p.Time < 1 || h.p.Time > 20 || h.p.Threads < 1 {
		return h, fmt.Errorf("argon2id parameters %q out of range (m 8192..2097152 KiB, t 1..20, p >= 1)", f[3])
	}
	var err error
	enc := base64.RawStdEncoding
	if h.salt, err = enc.DecodeString(f[4]); err != nil || len(h.salt) < 8 {
		return h, errors.New("argon2id salt: not base64 of at least 8 bytes")
	}
	if h.key, err = enc.DecodeString(f[5]); err != nil || len(h.key) < 16 {
		return h, errors.New("argon2id key: not base64 of at least 16 bytes")
	}
	return h, nil
}

// VerifyPassword reports whether pw matches the hash (in constant time).
func VerifyPassword(encoded, pw string) (bool, error) {
	h, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	key := argon2.IDKey([]byte(pw), h.salt, h.p.Time, h.p.Memory, h.p.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1, nil
}

// dummyHash is verified against when the account does not exist, so that
// a wrong name costs as much time as a wrong password.
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("civicwifi-no-such-account")
	return h
})
