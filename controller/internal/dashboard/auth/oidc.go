package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDCOptions configure single sign-on with the town's OpenID Connect
// provider. The client secret comes from a file or the environment, never
// from a config file.
type OIDCOptions struct {
	Issuer       string // https://login.comune.example/realms/staff
	ClientID     string
	ClientSecret string
	RedirectURL  string // https://controller.example/admin/oidc/callback
	// RoleClaim is the ID-token claim (a string or a list of strings, e.g.
	// "groups") whose values Roles maps to a role; with several matches
	// the strongest role wins (it, then operator, then auditor). A person
	// with no mapped value is refused.
	RoleClaim string
	Roles     map[string]Role
	NameClaim string // the claim that names the person in the audit log; "" : email, else sub
	Label     string // the sign-on button; "": "Sign in with the town's account"
	Client    *http.Client
}

// OIDC is a configured provider.
type OIDC struct {
	o        OIDCOptions
	verifier *oidc.IDTokenVerifier
	conf     oauth2.Config
}

// NewOIDC discovers the provider (its /.well-known/openid-configuration).
func NewOIDC(ctx context.Context, o OIDCOptions) (*OIDC, error) {
	if o.Issuer == "" || o.ClientID == "" || o.RedirectURL == "" || o.RoleClaim == "" || len(o.Roles) == 0 {
		return nil, errors.New("oidc: issuer, client id, redirect url, role claim and roles are required")
	}
	for v, r := range o.Roles {
		if _, err := ParseRole(string(r)); err != nil {
			return nil, fmt.Errorf("oidc: claim value %q: %w", v, err)
		}
	}
	if o.Label == "" {
		o.Label = "Sign in with the town's account"
	}
	if o.Client != nil {
		ctx = oidc.ClientContext(ctx, o.Client)
	}
	p, err := oidc.NewProvider(ctx, o.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discovering the OIDC provider %s: %w", o.Issuer, err)
	}
	return &OIDC{
		o:        o,
		verifier: p.Verifier(&oidc.Config{ClientID: o.ClientID}),
		conf: oauth2.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, RedirectURL: o.RedirectURL,
			Endpoint: p.Endpoint(), Scopes: []string{oidc.ScopeOpenID, "email", "profile"}},
	}, nil
}

// Label is the sign-on button's text.
func (p *OIDC) Label() string { return p.o.Label }

// AuthCodeURL is where the browser goes to sign in: the code flow with
// state, nonce and PKCE (S256).
func (p *OIDC) AuthCodeURL(state, nonce, verifier string) string {
	return p.conf.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
}

// GenerateVerifier returns a PKCE code verifier.
func GenerateVerifier() string { return oauth2.GenerateVerifier() }

// ErrNoRole is returned by Finish for a person the role mapping does not cover.
var ErrNoRole = errors.New("signed in, but no dashboard role is mapped to this account")

// Finish exchanges the code, verifies the ID token (signature, issuer,
// audience, expiry, nonce) and maps the role claim to a role.
func (p *OIDC) Finish(ctx context.Context, code, nonce, verifier string) (user string, role Role, err error) {
	if p.o.Client != nil {
		ctx = oidc.ClientContext(ctx, p.o.Client)
	}
	tok, err := p.conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return "", "", fmt.Errorf("exchanging the code: %w", err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok {
		return "", "", errors.New("the provider sent no id_token")
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		return "", "", fmt.Errorf("verifying the id token: %w", err)
	}
	if idt.Nonce != nonce {
		return "", "", errors.New("verifying the id token: nonce does not match")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return "", "", fmt.Errorf("reading the id token: %w", err)
	}
	user = idt.Subject
	nc := p.o.NameClaim
	if nc == "" {
		nc = "email"
	}
	if s, ok := claims[nc].(string); ok && s != "" {
		user = s
	}
	var vals []string
	switch v := claims[p.o.RoleClaim].(type) {
	case string:
		vals = []string{v}
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				vals = append(vals, s)
			}
		}
	}
	best := -1
	for _, v := range vals {
		r, ok := p.o.Roles[v]
		if !ok {
			continue
		}
		for i, x := range Roles { // it, operator, auditor: strongest first
			if x == r && (best < 0 || i < best) {
				best = i
			}
		}
	}
	if best < 0 {
		return user, "", ErrNoRole
	}
	return user, Roles[best], nil
}
