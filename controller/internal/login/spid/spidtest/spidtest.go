// Package spidtest runs a real SAML 2.0 identity provider for SPID tests and labs: crewjam/saml's
// IdentityProvider with its own RSA-2048 key, signing both the Response and the Assertion (RSA-SHA256), answering
// each AuthnRequest of the SP (whose metadata it reads, so it checks the request's signature) with a transient
// NameID, the scenario's SPID level and a fiscalNumber attribute. A Scenario's Mutate changes the assertion before
// it is signed, to play a misbehaving IdP. Registry writes the IdP's metadata as AgID's registry file.
//
// It is for tests and the lab only: anyone who reaches it logs in as the scenario's person.
package spidtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crewjam/saml"
)

// Defaults of a Scenario.
const (
	DefaultLevel        = "https://www.spid.gov.it/SpidL2"
	DefaultFiscalNumber = "TINIT-RSSMRA80A01H501U"
)

// Scenario is what the IdP answers.
type Scenario struct {
	Level        string                                             // AuthnContextClassRef; "": DefaultLevel
	FiscalNumber string                                             // "": DefaultFiscalNumber
	Mutate       func(a *saml.Assertion, req *saml.IdpAuthnRequest) // after the assertion is made, before it is signed
}

// Options configure an IdP.
type Options struct {
	// SPMetadata returns the SP's metadata (e.g. fetched from the controller's /spid/metadata); the IdP reads it at
	// each request, so it needs the SP's certificate to check the request's signature.
	SPMetadata func() ([]byte, error)
	// Listener, if set, is where the IdP serves (e.g. inside a lab namespace); nil: a loopback port.
	Listener net.Listener
	// Name is the IdP's display name in the registry; "": "IdP di prova".
	Name string
	// URL, if set, is the base URL the IdP names in its metadata (entity id, SSO, SLO): e.g. a host name the lab's
	// DNS answers, forwarded to Listener; "": the listener's address.
	URL string
}

// IdP is a running identity provider. Its endpoints: /metadata (also its entity id), /sso (HTTP-POST and
// HTTP-Redirect), /slo, and /initiated?sp=ENTITY-ID (an unsolicited login).
type IdP struct {
	IDP *saml.IdentityProvider
	URL string // base URL

	srv  *httptest.Server
	o    Options
	mu   sync.Mutex
	sc   Scenario
	name string
}

// Start starts an IdP for t; it stops when t ends.
func Start(t testing.TB, o Options) *IdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "spidtest IdP", Country: []string{"IT"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	i := &IdP{o: o, name: o.Name}
	if i.name == "" {
		i.name = "IdP di prova"
	}
	mux := http.NewServeMux()
	i.srv = httptest.NewUnstartedServer(mux)
	if o.Listener != nil {
		i.srv.Listener.Close()
		i.srv.Listener = o.Listener
	}
	i.srv.Start()
	t.Cleanup(i.srv.Close)
	i.URL = i.srv.URL
	if o.URL != "" {
		i.URL = strings.TrimSuffix(o.URL, "/")
	}
	base, err := url.Parse(i.URL)
	if err != nil {
		t.Fatal(err)
	}
	at := func(p string) url.URL { u := *base; u.Path = p; return u }
	i.IDP = &saml.IdentityProvider{
		Key: key, Signer: key, Certificate: cert,
		MetadataURL: at("/metadata"), SSOURL: at("/sso"), LogoutURL: at("/slo"), LogoutBindings: []string{saml.HTTPPostBinding},
		ServiceProviderProvider: i, SessionProvider: i, AssertionMaker: i,
		SignatureMethod: "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
	}
	h := i.IDP.Handler()
	mux.Handle("/metadata", h)
	mux.Handle("/sso", h)
	mux.Handle("/slo", h)
	mux.HandleFunc("/initiated", func(w http.ResponseWriter, r *http.Request) {
		i.IDP.ServeIDPInitiated(w, r, r.URL.Query().Get("sp"), "")
	})
	return i
}

// EntityID is the IdP's entity id.
func (i *IdP) EntityID() string { return i.IDP.MetadataURL.String() }

// Set makes s the answer from now on.
func (i *IdP) Set(s Scenario) {
	i.mu.Lock()
	i.sc = s
	i.mu.Unlock()
}

// Metadata is the IdP's metadata with its display name.
func (i *IdP) Metadata() *saml.EntityDescriptor {
	ed := i.IDP.Metadata()
	ed.Organization = &saml.Organization{OrganizationDisplayNames: []saml.LocalizedName{{Lang: "it", Value: i.name}}}
	return ed
}

// Registry returns a registry file of AgID's shape (an md:EntitiesDescriptor) listing the IdPs' metadata, each
// changed by mods if given (e.g. to leave out a binding).
func Registry(mods func(*saml.EntityDescriptor), idps ...*IdP) ([]byte, error) {
	var all saml.EntitiesDescriptor
	for _, i := range idps {
		ed := i.Metadata()
		if mods != nil {
			mods(ed)
		}
		all.EntityDescriptors = append(all.EntityDescriptors, *ed)
	}
	return xml.Marshal(all)
}

// GetServiceProvider implements saml.ServiceProviderProvider with Options.SPMetadata.
func (i *IdP) GetServiceProvider(_ *http.Request, id string) (*saml.EntityDescriptor, error) {
	data, err := i.o.SPMetadata()
	if err != nil {
		return nil, err
	}
	var ed saml.EntityDescriptor
	if err := xml.Unmarshal(data, &ed); err != nil {
		return nil, err
	}
	if ed.EntityID != id {
		return nil, os.ErrNotExist
	}
	return &ed, nil
}

// GetSession implements saml.SessionProvider: every request is a person already logged in at the scenario's level.
func (i *IdP) GetSession(_ http.ResponseWriter, _ *http.Request, _ *saml.IdpAuthnRequest) *saml.Session {
	i.mu.Lock()
	level := i.sc.Level
	i.mu.Unlock()
	if level == "" {
		level = DefaultLevel
	}
	return &saml.Session{
		ID: "s-" + token(), CreateTime: time.Now(), ExpireTime: time.Now().Add(time.Hour),
		NameID: "_" + token(), NameIDFormat: string(saml.TransientNameIDFormat), AuthnContextClassRef: level,
	}
}

// MakeAssertion implements saml.AssertionMaker: crewjam's assertion with the fiscalNumber attribute, then Mutate.
func (i *IdP) MakeAssertion(req *saml.IdpAuthnRequest, s *saml.Session) error {
	if err := (saml.DefaultAssertionMaker{}).MakeAssertion(req, s); err != nil {
		return err
	}
	i.mu.Lock()
	sc := i.sc
	i.mu.Unlock()
	fiscal := sc.FiscalNumber
	if fiscal == "" {
		fiscal = DefaultFiscalNumber
	}
	req.Assertion.AttributeStatements = []saml.AttributeStatement{{Attributes: []saml.Attribute{{
		Name: "fiscalNumber", NameFormat: "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
		Values: []saml.AttributeValue{{Type: "xs:string", Value: fiscal}},
	}}}}
	if sc.Mutate != nil {
		sc.Mutate(req.Assertion, req)
	}
	return nil
}

// FetchMetadata returns a Options.SPMetadata that GETs url (the SP's /spid/metadata).
func FetchMetadata(url string) func() ([]byte, error) {
	return func() ([]byte, error) {
		resp, err := http.Get(url)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetching SP metadata: %s", resp.Status)
		}
		return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
}

func token() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
