// Package spid is the controller's SAML 2.0 service provider for SPID (and CIE) login, following AgID's SPID
// technical rules (Regole tecniche SPID and the later Avvisi SPID).
//
// The flow (see notes/login-protocol.md): a gateway asks Start for a login on behalf of a client (MAC, IP, chosen
// IdP, its own return URL) and gets a redirect URL carrying an opaque, single-use, short-lived state; the browser
// goes to /spid/login, which answers a signed AuthnRequest to the IdP (HTTP-POST binding, or HTTP-Redirect when the
// IdP offers only that); the IdP posts its Response to /spid/acs, which verifies it and redirects the browser to the
// gateway's return URL with the state; the gateway then calls spid/grant, and Redeem hands back the verified login
// (a pseudonym, never the fiscal code) for the grant. /spid/metadata serves the SP's signed metadata.
//
// github.com/crewjam/saml does the SAML: building and signing the AuthnRequest, the XML signature checks (through
// github.com/russellhaering/goxmldsig), Destination, Issuer, InResponseTo, Recipient, NotBefore/NotOnOrAfter,
// Audience, the requested AuthnContextClassRef and the replay cache hook. This package adds the SPID specifics:
// both the Response and the Assertion must be signed (crewjam accepts either), SHA-1 refused, the SpidL1/L2/L3
// levels with "minimum" comparison and ForceAuthn above L1, the Issuer's NameQualifier, the
// AttributeConsumingServiceIndex and a metadata AttributeConsumingService asking only for fiscalNumber, the
// public-body ContactPerson extensions (spid:IPACode, spid:Public), the IdP list from AgID's registry file, the
// replay cache and all login state in the Store's Ephemeral keys (so any replica can answer any step), and the
// keyed-hash pseudonym.
package spid

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/crewjam/saml"
	"github.com/prometheus/client_golang/prometheus"
	dsig "github.com/russellhaering/goxmldsig"
)

// The SPID authentication levels (AuthnContextClassRef values).
const (
	LevelL1 = "https://www.spid.gov.it/SpidL1"
	LevelL2 = "https://www.spid.gov.it/SpidL2"
	LevelL3 = "https://www.spid.gov.it/SpidL3"
)

var levelURIs = []string{1: LevelL1, 2: LevelL2, 3: LevelL3}

func levelOf(uri string) int {
	for i, u := range levelURIs {
		if i > 0 && u == uri {
			return i
		}
	}
	return 0
}

// Paths of the browser-facing endpoints, under Options.PublicURL.
const (
	PathLogin    = "/spid/login"
	PathACS      = "/spid/acs"
	PathMetadata = "/spid/metadata"
	PathSLO      = "/spid/slo" // single logout (HTTP-POST): SPID requires one in the metadata
)

// AttributeFiscalNumber is the one attribute the SP asks for.
const AttributeFiscalNumber = "fiscalNumber"

// Lifetimes of the login state.
const (
	StateTTL   = 10 * time.Minute // from Start to the IdP's answer
	ResultTTL  = 2 * time.Minute  // from the ACS to the gateway's spid/grant
	minKeyBits = 2048

	// issueTolerance is how much earlier than the AuthnRequest an answer's IssueInstant may be (IdP clock skew);
	// SPID wants answers issued before the request refused.
	issueTolerance = 30 * time.Second
)

const entityFormat = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"

// Options configure an SP. All but Log, Registerer and OrganizationURL are required.
type Options struct {
	EntityID        string   // the SP's entity id, e.g. https://wifi.comune.voghera.pv.it/spid
	PublicURL       *url.URL // where browsers reach the controller; the ACS is PublicURL + /spid/acs
	OrganizationURL string   // the metadata's OrganizationURL; "" : PublicURL
	Key             *rsa.PrivateKey
	Certificate     *x509.Certificate
	IdPs            *Registry
	Store           store.Ephemeral
	Sites           func() *sites.Config // the running sites.yaml (policy level, town name, IPA code, contacts)
	Pepper          pepper.Pepper        // the pseudonym key
	Login           *login.Server        // grants, consent records and client checks of spid/start and spid/grant
	Log             *slog.Logger
	Registerer      prometheus.Registerer
}

// SP is the SPID service provider.
type SP struct {
	o        Options
	log      *slog.Logger
	base     saml.ServiceProvider
	acsURL   url.URL
	outcomes *prometheus.CounterVec
}

// New checks o and returns an SP.
func New(o Options) (*SP, error) {
	var errs []error
	if o.EntityID == "" {
		errs = append(errs, errors.New("entity id missing"))
	}
	if o.PublicURL == nil || (o.PublicURL.Scheme != "https" && o.PublicURL.Scheme != "http") || o.PublicURL.Host == "" {
		errs = append(errs, errors.New("public URL missing or not http(s)://host"))
	}
	if o.Key == nil || o.Key.N.BitLen() < minKeyBits {
		errs = append(errs, fmt.Errorf("SP key missing or shorter than %d bits (SPID wants RSA-2048 or more)", minKeyBits))
	}
	if o.Certificate == nil {
		errs = append(errs, errors.New("SP certificate missing"))
	} else if o.Key != nil {
		if pub, ok := o.Certificate.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&o.Key.PublicKey) {
			errs = append(errs, errors.New("SP certificate is not the key's"))
		}
	}
	if o.IdPs == nil || o.Store == nil || o.Sites == nil {
		errs = append(errs, errors.New("IdP registry, Store and Sites are required"))
	}
	if !o.Pepper.Valid() {
		errs = append(errs, errors.New("pepper missing"))
	}
	if o.Login == nil {
		errs = append(errs, errors.New("login server missing"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("spid: %w", errors.Join(errs...))
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.OrganizationURL == "" {
		o.OrganizationURL = o.PublicURL.String()
	}
	s := &SP{o: o, log: o.Log}
	s.acsURL = endpoint(o.PublicURL, PathACS)
	acsIndex := 0
	s.base = saml.ServiceProvider{
		EntityID:                         o.EntityID,
		Key:                              o.Key,
		Certificate:                      o.Certificate,
		MetadataURL:                      endpoint(o.PublicURL, PathMetadata),
		AcsURL:                           s.acsURL,
		AcsIndex:                         &acsIndex,
		SloURL:                           endpoint(o.PublicURL, PathSLO),
		LogoutBindings:                   []string{saml.HTTPPostBinding},
		AssertionConsumerServiceBindings: []string{saml.HTTPPostBinding},
		AuthnNameIDFormat:                saml.TransientNameIDFormat,
		SignatureMethod:                  dsig.RSASHA256SignatureMethod,
		ValidateAuthnContextClassRef:     true,
		AuthnContextClassRefComparator:   compareLevels,
		RejectSHA1Signatures:             true,
		ReplayCache:                      replayCache{o.Store},
		MetadataValidDuration:            365 * 24 * time.Hour,
	}
	s.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "civicwifi_controller_spid_logins_total",
		Help: "SPID answers at the assertion consumer service, by result (ok, or the reason of a refusal).",
	}, []string{"result"})
	if o.Registerer != nil {
		if err := o.Registerer.Register(s.outcomes); err != nil {
			return nil, fmt.Errorf("spid: registering metrics: %w", err)
		}
	}
	return s, nil
}

// compareLevels is the SPID ordering for the "minimum" comparison: an answer at the requested level or above.
func compareLevels(comparison string, requested []string, got string) bool {
	if comparison != "minimum" || len(requested) != 1 {
		return false
	}
	want, have := levelOf(requested[0]), levelOf(got)
	return want > 0 && have >= want
}

// spFor is the base SP set up for one IdP and level.
func (s *SP) spFor(idp *saml.EntityDescriptor, level int) *saml.ServiceProvider {
	sp := s.base
	sp.IDPMetadata = idp
	sp.RequestedAuthnContext = &saml.RequestedAuthnContext{Comparison: "minimum", AuthnContextClassRefs: []string{levelURIs[level]}}
	if level > 1 { // SPID: ForceAuthn="true" above L1; omitted at L1 (an existing IdP session will do)
		force := true
		sp.ForceAuthn = &force
	}
	return &sp
}

// IdPs is the spid/idps answer.
func (s *SP) IdPs() []apiclient.SPIDIdP { return s.o.IdPs.IdPs() }

// Refusal codes beyond apiclient's (the gateway shows its generic message for a code it does not know).
const (
	CodeFailed = "spid_failed" // the IdP's answer was refused, or carried no login (cancelled, wrong password...)
	CodeLevel  = "spid_level"  // the IdP authenticated at a lower level than the site requires
)

// refuse is a refusal: code is a LoginError code, the message (for logs and tests, never personal data) says
// which check.
func refuse(status int, code, format string, args ...any) *apiclient.LoginError {
	return &apiclient.LoginError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Verified is a completed SPID login, to be turned into a grant (method "spid") for that client.
type Verified struct {
	Site, GatewayID string
	ClientMAC       string
	ClientIP        string
	User            string    // pseudonym: base32(HMAC-SHA256(pepper, "spid:" + fiscal code)), lower case
	Level           int       // the level the IdP asserted
	IdP             string    // its entity id
	ConsentAt       time.Time // when the gateway relayed the resident's consent (spid/start)
	Authenticated   time.Time // when the ACS accepted the IdP's answer
}

// pending is a login between Start and the ACS. Keyed by state ("spid/state/"), then, after /spid/login, by the
// AuthnRequest id ("spid/req/").
type pending struct {
	State     string    `json:"state"`
	Site      string    `json:"site"`
	Gateway   string    `json:"gateway"`
	MAC       string    `json:"mac"`
	IP        string    `json:"ip"`
	IdP       string    `json:"idp"`
	Level     int       `json:"level"`
	ReturnURL string    `json:"return_url"`
	Lang      string    `json:"lang"`
	ConsentAt time.Time `json:"consent_at"`
	RequestID string    `json:"request_id,omitempty"`
	RequestAt time.Time `json:"request_at,omitempty"` // the AuthnRequest's IssueInstant
}

// result is what the ACS found, kept for Redeem under "spid/result/" + a token made at the ACS (the state of the
// gateway's return URL).
type result struct {
	pending
	User   string    `json:"user,omitempty"`
	Got    int       `json:"got,omitempty"`
	At     time.Time `json:"at"`
	Code   string    `json:"code,omitempty"` // a refusal
	Reason string    `json:"reason,omitempty"`
}

const (
	keyState     = "spid/state/"
	keyRequest   = "spid/req/"
	keyResult    = "spid/result/"
	keyAssertion = "spid/assertion/"
	keyAnswered  = "spid/answered/"
)

// Start begins a login for a client of gateway gatewayID at site (both from the gateway's verified signature).
func (s *SP) Start(ctx context.Context, site, gatewayID string, r apiclient.SPIDStartRequest) (apiclient.SPIDStartAnswer, error) {
	if !r.Consent {
		return apiclient.SPIDStartAnswer{}, refuse(http.StatusBadRequest, apiclient.CodeNoConsent, "no consent")
	}
	st := s.o.Sites().Site(site)
	if st == nil || !st.Policy.Login.Allows(sites.SPID) {
		return apiclient.SPIDStartAnswer{}, refuse(http.StatusForbidden, apiclient.CodeMethodNotAllowed, "site %q does not offer spid", site)
	}
	mac, ip, err := client(r.ClientMAC, r.ClientIP)
	if err != nil {
		return apiclient.SPIDStartAnswer{}, err
	}
	if _, ok := s.o.IdPs.Lookup(r.IdPEntityID); !ok {
		return apiclient.SPIDStartAnswer{}, refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "idp_entity_id %q is not in the registry", printable(r.IdPEntityID))
	}
	ret, err := url.Parse(r.ReturnURL)
	if err != nil || (ret.Scheme != "http" && ret.Scheme != "https") || ret.Host == "" || ret.User != nil || ret.Fragment != "" {
		return apiclient.SPIDStartAnswer{}, refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "return_url %q is not an http(s) URL of the gateway", printable(r.ReturnURL))
	}
	level := st.Policy.Login.SPID.Level
	if level < 1 || level > 3 {
		level = 2
	}
	state := randomToken()
	p := pending{State: state, Site: site, Gateway: gatewayID, MAC: mac, IP: ip, IdP: r.IdPEntityID, Level: level,
		ReturnURL: ret.String(), Lang: r.Lang, ConsentAt: time.Now()}
	if err := s.put(ctx, keyState+state, p, StateTTL); err != nil {
		return apiclient.SPIDStartAnswer{}, err
	}
	u := endpoint(s.o.PublicURL, PathLogin)
	u.RawQuery = url.Values{"state": {state}}.Encode()
	return apiclient.SPIDStartAnswer{RedirectURL: u.String()}, nil
}

// Redeem hands back the login found at the ACS, once, for the state the ACS put in the gateway's return URL (not the
// start state): for the site, gateway, MAC and IP that started it.
func (s *SP) Redeem(ctx context.Context, site, gatewayID string, r apiclient.SPIDGrantRequest) (Verified, error) {
	if !validToken(r.State) {
		return Verified{}, refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "state is not a state")
	}
	mac, ip, err := client(r.ClientMAC, r.ClientIP)
	if err != nil {
		return Verified{}, err
	}
	// Checked before it is taken: a request for another client cannot burn the resident's login.
	var res result
	if err := s.get(ctx, keyResult+r.State, false, &res); errors.Is(err, store.ErrNotFound) {
		return Verified{}, refuse(http.StatusGone, apiclient.CodeExpired, "state unknown, used or expired")
	} else if err != nil {
		return Verified{}, fmt.Errorf("spid: reading the login result: %w", err)
	}
	if res.Site != site || res.Gateway != gatewayID || res.MAC != mac || res.IP != ip {
		return Verified{}, refuse(http.StatusForbidden, apiclient.CodeNotConnected, "state was started for another site, gateway or client")
	}
	if _, err := s.o.Store.Take(ctx, keyResult+r.State); errors.Is(err, store.ErrNotFound) {
		return Verified{}, refuse(http.StatusGone, apiclient.CodeExpired, "state unknown, used or expired")
	} else if err != nil {
		return Verified{}, fmt.Errorf("spid: taking the login result: %w", err)
	}
	if res.Code != "" {
		return Verified{}, refuse(http.StatusForbidden, res.Code, "%s", res.Reason)
	}
	return Verified{Site: res.Site, GatewayID: res.Gateway, ClientMAC: res.MAC, ClientIP: res.IP, User: res.User,
		Level: res.Got, IdP: res.IdP, ConsentAt: res.ConsentAt, Authenticated: res.At}, nil
}

func (s *SP) put(ctx context.Context, key string, v any, ttl time.Duration) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.o.Store.Put(ctx, key, data, ttl); err != nil {
		return fmt.Errorf("spid: storing login state: %w", err)
	}
	return nil
}

func (s *SP) get(ctx context.Context, key string, take bool, v any) error {
	var data []byte
	var err error
	if take {
		data, err = s.o.Store.Take(ctx, key)
	} else {
		data, err = s.o.Store.Get(ctx, key)
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// fiscalNumber normalises a fiscalNumber attribute value to "TINIT-" + the upper-case code (16 characters for a
// person, 11 digits for a legal person's VAT-like code); a value without the prefix gets it.
func fiscalNumber(v string) (string, bool) {
	v = strings.ToUpper(strings.TrimSpace(v))
	v = strings.TrimPrefix(v, "TINIT-")
	if len(v) != 16 && len(v) != 11 {
		return "", false
	}
	for _, c := range v {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return "", false
		}
	}
	return "TINIT-" + v, true
}

func client(mac, ip string) (string, string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", "", refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "client_mac %q is not a MAC address", printable(mac))
	}
	a := net.ParseIP(ip)
	if a == nil {
		return "", "", refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "client_ip %q is not an IP address", printable(ip))
	}
	return hw.String(), a.String(), nil
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func validToken(t string) bool {
	b, err := base64.RawURLEncoding.DecodeString(t)
	return err == nil && len(b) == 32
}

// printable cuts s for an error message and drops control characters.
func printable(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// replayCache keeps each accepted assertion id until its expiry in the Store (shared by all replicas).
type replayCache struct{ eph store.Ephemeral }

func (c replayCache) Consume(id string, expiresAt time.Time) error {
	ttl := time.Until(expiresAt)
	if ttl < time.Second {
		ttl = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fresh, err := c.eph.PutIfAbsent(ctx, keyAssertion+id, []byte{1}, ttl)
	if err != nil {
		return fmt.Errorf("recording the assertion id: %w", err)
	}
	if !fresh {
		return saml.ErrAssertionReplayed
	}
	return nil
}

// endpoint is base with path appended to its path.
func endpoint(base *url.URL, path string) url.URL {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return u
}

// FiscalNumber normalises a fiscal code as SPID identity providers send it
// (TINIT-RSSMRA80A01H501U), so that `controller privacy` finds the resident's
// pseudonym from a code typed by an operator ("rssmra80a01h501u").
func FiscalNumber(v string) (string, bool) { return fiscalNumber(v) }
