package dashboard

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/go-jose/go-jose/v4"
)

// fakeIdP is the town's OpenID Connect provider, speaking the real
// protocol over HTTPS: discovery, JWKS, the authorization endpoint (it
// signs the person in at once) and the token endpoint (code + PKCE
// checked, an ES256 ID token signed with its own key).
type fakeIdP struct {
	t      *testing.T
	srv    *httptest.Server
	key    *ecdsa.PrivateKey
	mu     sync.Mutex
	codes  map[string]grant
	claims map[string]any // the person's claims
	tamper func(map[string]any)
}

type grant struct{ nonce, challenge, redirect string }

func newFakeIdP(t *testing.T) *fakeIdP {
	p := &fakeIdP{t: t, codes: map[string]grant{}}
	var err error
	if p.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.srv = httptest.NewTLSServer(mux)
	t.Cleanup(p.srv.Close)
	iss := p.srv.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": iss, "authorization_endpoint": iss + "/authorize", "token_endpoint": iss + "/token", "jwks_uri": iss + "/jwks",
			"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"ES256"}, "code_challenge_methods_supported": []string{"S256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("client_id") != "dashboard" || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
			http.Error(w, "bad authorization request", 400)
			return
		}
		code := auth.RandomToken()
		p.mu.Lock()
		p.codes[code] = grant{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
		p.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.FormValue("client_id"), r.FormValue("client_secret")
		}
		p.mu.Lock()
		g, found := p.codes[r.FormValue("code")]
		delete(p.codes, r.FormValue("code"))
		p.mu.Unlock()
		sum := sha256.Sum256([]byte(r.FormValue("code_verifier")))
		if id != "dashboard" || secret != "s3cret" || !found || g.challenge != base64.RawURLEncoding.EncodeToString(sum[:]) || g.redirect != r.FormValue("redirect_uri") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
		now := time.Now()
		c := map[string]any{"iss": iss, "aud": "dashboard", "sub": "12345", "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "nonce": g.nonce}
		for k, v := range p.claims {
			c[k] = v
		}
		if p.tamper != nil {
			p.tamper(c)
		}
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: p.key}, (&jose.SignerOptions{}).WithHeader("kid", "k1").WithType("JWT"))
		if err != nil {
			t.Error(err)
			return
		}
		payload, _ := json.Marshal(c)
		jws, err := sig.Sign(payload)
		if err != nil {
			t.Error(err)
			return
		}
		idt, _ := jws.CompactSerialize()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": idt})
	})
	return p
}

func TestSingleSignOn(t *testing.T) {
	idp := newFakeIdP(t)
	h := newHarness(t, func(h *harness, o *Options, _ *auth.Options) {
		var err error
		o.OIDC, err = auth.NewOIDC(context.Background(), auth.OIDCOptions{
			Issuer: idp.srv.URL, ClientID: "dashboard", ClientSecret: "s3cret", RedirectURL: h.srv.URL + "/admin/oidc/callback",
			RoleClaim: "groups", Roles: map[string]auth.Role{"wifi-it": auth.IT, "wifi-ops": auth.Operator, "auditors": auth.Auditor},
			Client: idp.srv.Client(),
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	// signOn walks the browser's way: start -> provider -> callback, and returns the callback's answer.
	signOn := func(c *http.Client, mangle func(callback *url.URL)) resp {
		t.Helper()
		start := h.do(c, "GET", "/admin/oidc/start?next=/admin/reports", nil)
		if start.code != http.StatusSeeOther || !strings.HasPrefix(start.loc, idp.srv.URL+"/authorize?") {
			t.Fatalf("start: %d -> %s", start.code, start.loc)
		}
		pc := *idp.srv.Client()
		pc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		r, err := pc.Get(start.loc)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		cb, err := url.Parse(r.Header.Get("Location"))
		if err != nil || r.StatusCode != http.StatusFound || !strings.HasPrefix(cb.String(), h.srv.URL+"/admin/oidc/callback?") {
			t.Fatalf("provider: %d -> %s", r.StatusCode, cb)
		}
		if mangle != nil {
			mangle(cb)
		}
		return h.do(c, "GET", strings.TrimPrefix(cb.String(), h.srv.URL), nil)
	}

	t.Run("operator by group", func(t *testing.T) {
		idp.claims = map[string]any{"email": "ana@comune.example", "groups": []string{"staff", "wifi-ops"}}
		c := h.client()
		res := signOn(c, nil)
		if res.code != http.StatusOK || !strings.Contains(res.body, `url=/admin/reports`) {
			t.Fatalf("callback: %d %s", res.code, res.body)
		}
		if r := h.do(c, "GET", "/admin/overview", nil); r.code != http.StatusOK || !strings.Contains(r.body, "sso:ana@comune.example (operator)") {
			t.Errorf("overview after sign-on: %d", r.code)
		}
		if r := h.do(c, "GET", "/admin/audit", nil); r.code != http.StatusForbidden {
			t.Errorf("operator's audit page: %d", r.code)
		}
	})
	t.Run("strongest role wins", func(t *testing.T) {
		idp.claims = map[string]any{"email": "ivo@comune.example", "groups": []string{"auditors", "wifi-it"}}
		c := h.client()
		signOn(c, nil)
		if r := h.do(c, "GET", "/admin/sites/parco-pertini/poster", nil); r.code != http.StatusOK {
			t.Errorf("IT's poster: %d", r.code)
		}
	})
	refused := []struct {
		name   string
		claims map[string]any
		tamper func(map[string]any)
		mangle func(*url.URL)
		code   int
	}{
		{"no mapped group", map[string]any{"email": "eve@comune.example", "groups": []string{"staff"}}, nil, nil, http.StatusForbidden},
		{"wrong nonce", map[string]any{"groups": "wifi-it"}, func(c map[string]any) { c["nonce"] = "other" }, nil, http.StatusUnauthorized},
		{"wrong audience", map[string]any{"groups": "wifi-it"}, func(c map[string]any) { c["aud"] = "another-app" }, nil, http.StatusUnauthorized},
		{"expired token", map[string]any{"groups": "wifi-it"}, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }, nil, http.StatusUnauthorized},
		{"another browser's state", map[string]any{"groups": "wifi-it"}, nil, func(u *url.URL) {
			q := u.Query()
			q.Set("state", auth.RandomToken())
			u.RawQuery = q.Encode()
		}, http.StatusForbidden},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			idp.claims, idp.tamper = tc.claims, tc.tamper
			defer func() { idp.tamper = nil }()
			c := h.client()
			if res := signOn(c, tc.mangle); res.code != tc.code {
				t.Errorf("callback: %d, want %d: %.300s", res.code, tc.code, res.body)
			}
			if r := h.do(c, "GET", "/admin/reports", nil); r.code != http.StatusSeeOther {
				t.Errorf("signed in after a refused sign-on: %d", r.code)
			}
		})
	}
	var fails int
	for _, e := range auditOf(t, h) {
		if e.Action == "sso.fail" {
			fails++
		}
	}
	if fails != 4 {
		t.Errorf("%d sso.fail audit entries, want 4 (the state mismatch is refused before the provider is asked)", fails)
	}
}
