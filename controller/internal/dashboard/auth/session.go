package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// Errors of Login and Lookup.
var (
	ErrBadCredentials = errors.New("wrong account name or password")
	ErrRateLimited    = errors.New("too many login attempts: wait and try again")
	ErrNoSession      = errors.New("no session (signed out or expired)")
)

// Options configure a Manager. Store and AccountsPath are required
// (AccountsPath may name a file that does not exist yet).
type Options struct {
	Store        store.Ephemeral
	AccountsPath string // re-read at each login and session check: `controller admin add` needs no restart

	IdleTimeout time.Duration // a session unused this long ends; zero: 30 min
	MaxAge      time.Duration // a session ends this long after login whatever happens; zero: 8 h

	AccountAttempts int           // login attempts per account per Window; zero: 5
	AddressAttempts int           // login attempts per client address per Window; zero: 20
	Window          time.Duration // zero: 15 min

	Now func() time.Time // nil: time.Now
	Log *slog.Logger     // nil: discard
}

// Manager logs admins in and keeps their sessions.
type Manager struct {
	o      Options
	verify chan struct{} // one argon2id at a time: 64 MiB each
}

// Session is one signed-in admin.
type Session struct {
	User    string    `json:"user"` // account name, or "sso:" + the provider's name for the person
	Role    Role      `json:"role"`
	Via     string    `json:"via"`  // "password" or "oidc"
	CSRF    string    `json:"csrf"` // the token every form of this session carries
	Created time.Time `json:"created"`
	Touched time.Time `json:"touched"`
}

// NewManager returns a Manager.
func NewManager(o Options) (*Manager, error) {
	if o.Store == nil || o.AccountsPath == "" {
		return nil, errors.New("auth: Store and AccountsPath are required")
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Minute
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 8 * time.Hour
	}
	if o.AccountAttempts <= 0 {
		o.AccountAttempts = 5
	}
	if o.AddressAttempts <= 0 {
		o.AddressAttempts = 20
	}
	if o.Window <= 0 {
		o.Window = 15 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if _, err := LoadAccounts(o.AccountsPath); err != nil {
		return nil, err
	}
	return &Manager{o: o, verify: make(chan struct{}, 1)}, nil
}

const (
	keySession = "dashboard/session/" // + sha256(token): the token itself is never stored
	keyRLUser  = "dashboard/login/user/"
	keyRLAddr  = "dashboard/login/addr/"
)

// Login checks name and password from the client at addr and starts a
// session. Attempts are counted before the password is checked, per
// account and per address, so a guesser is stopped without costing a
// hash; a successful login clears its account's count.
func (m *Manager) Login(ctx context.Context, name, password, addr string) (token string, s Session, err error) {
	nu, err := m.o.Store.Incr(ctx, keyRLUser+hashKey(name), 1, m.o.Window)
	if err != nil {
		return "", s, fmt.Errorf("counting login attempts: %w", err)
	}
	na, err := m.o.Store.Incr(ctx, keyRLAddr+hashKey(addr), 1, m.o.Window)
	if err != nil {
		return "", s, fmt.Errorf("counting login attempts: %w", err)
	}
	if nu > int64(m.o.AccountAttempts) || na > int64(m.o.AddressAttempts) {
		m.o.Log.Warn("dashboard login rate limited", "account", name, "addr", addr, "account_attempts", nu, "addr_attempts", na)
		return "", s, ErrRateLimited
	}
	accts, err := LoadAccounts(m.o.AccountsPath)
	if err != nil {
		return "", s, err
	}
	var acct *Account
	for i := range accts {
		if accts[i].Name == name {
			acct = &accts[i]
		}
	}
	h := dummyHash()
	if acct != nil {
		h = acct.Hash
	}
	select {
	case m.verify <- struct{}{}:
	case <-ctx.Done():
		return "", s, ctx.Err()
	}
	ok, err := VerifyPassword(h, password)
	<-m.verify
	if err != nil {
		return "", s, err
	}
	if acct == nil || !ok {
		return "", s, ErrBadCredentials
	}
	if err := m.o.Store.Delete(ctx, keyRLUser+hashKey(name)); err != nil {
		m.o.Log.Warn("clearing login attempts", "err", err)
	}
	return m.Start(ctx, acct.Name, acct.Role, "password")
}

// Start begins a session for user with role (after a password or a
// sign-on) and returns its token, the cookie's value.
func (m *Manager) Start(ctx context.Context, user string, role Role, via string) (string, Session, error) {
	now := m.o.Now()
	s := Session{User: user, Role: role, Via: via, CSRF: randomToken(), Created: now, Touched: now}
	token := randomToken()
	if err := m.put(ctx, token, s); err != nil {
		return "", Session{}, err
	}
	return token, s, nil
}

func (m *Manager) put(ctx context.Context, token string, s Session) error {
	ttl := min(m.o.IdleTimeout, s.Created.Add(m.o.MaxAge).Sub(s.Touched))
	if ttl <= 0 {
		return ErrNoSession
	}
	b, _ := json.Marshal(s)
	if err := m.o.Store.Put(ctx, keySession+hashKey(token), b, ttl); err != nil {
		return fmt.Errorf("keeping the session: %w", err)
	}
	return nil
}

// touchEvery: a session's idle timer is pushed on at most once a minute
// (one store write a minute per admin, not one per request).
const touchEvery = time.Minute

// Lookup returns the session of token, renewing its idle timeout. A
// password account that was removed or whose role changed since ends its
// sessions or gets its new role at once.
func (m *Manager) Lookup(ctx context.Context, token string) (Session, error) {
	if token == "" {
		return Session{}, ErrNoSession
	}
	b, err := m.o.Store.Get(ctx, keySession+hashKey(token))
	if errors.Is(err, store.ErrNotFound) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, fmt.Errorf("reading the session: %w", err)
	}
	var s Session
	if err := json.Unmarshal(b, &s); err != nil {
		return Session{}, ErrNoSession
	}
	now := m.o.Now()
	// The store's TTL already ends idle sessions; the clock is checked too
	// (the store's sweep runs only now and then).
	if now.Sub(s.Touched) >= m.o.IdleTimeout || now.Sub(s.Created) >= m.o.MaxAge {
		m.Logout(ctx, token)
		return Session{}, ErrNoSession
	}
	if s.Via == "password" {
		accts, err := LoadAccounts(m.o.AccountsPath)
		if err != nil {
			return Session{}, err
		}
		found := false
		for _, a := range accts {
			if a.Name == s.User {
				found, s.Role = true, a.Role
			}
		}
		if !found {
			m.Logout(ctx, token)
			return Session{}, ErrNoSession
		}
	}
	if now.Sub(s.Touched) >= touchEvery {
		s.Touched = now
		if err := m.put(ctx, token, s); err != nil {
			return Session{}, err
		}
	}
	return s, nil
}

// Logout ends the session of token.
func (m *Manager) Logout(ctx context.Context, token string) {
	if token == "" {
		return
	}
	if err := m.o.Store.Delete(ctx, keySession+hashKey(token)); err != nil {
		m.o.Log.Warn("ending a session", "err", err)
	}
}

// CheckCSRF reports whether tok is the session's CSRF token.
func (s Session) CheckCSRF(tok string) bool {
	return s.CSRF != "" && subtle.ConstantTimeCompare([]byte(s.CSRF), []byte(tok)) == 1
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// RandomToken returns 32 random bytes, URL-safe base64.
func RandomToken() string { return randomToken() }

func hashKey(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:16])
}
