package spid

import (
	"crypto/x509"
	"net/http"
	"net/url"
	"testing"

	"github.com/beevik/etree"
	"github.com/civicwifi/civicwifi/controller/internal/login/spid/spidtest"
	"github.com/crewjam/saml"
	"github.com/google/go-cmp/cmp"
	dsig "github.com/russellhaering/goxmldsig"
)

// TestAuthnRequest checks the AuthnRequest the controller sends against the SPID rules, for an L2 site and an L1
// site, after the test IdP accepted it (its signature verified against the SP metadata).
func TestAuthnRequest(t *testing.T) {
	for _, tc := range []struct {
		gateway string
		level   string
		force   string // ForceAuthn attribute; "" : absent
	}{
		{"parco-gw1", LevelL2, "true"},
		{"biblio-gw1", LevelL1, ""},
	} {
		t.Run(tc.gateway, func(t *testing.T) {
			h := newHarness(t)
			h.idp.Set(spidtest.Scenario{Level: tc.level})
			b := newBrowser(t)
			end := b.walk(h.start(tc.gateway))
			if end.url.Path != "/portal/spid/done" || len(b.requests) != 1 {
				t.Fatalf("walk ended at %s (%s) after %d requests", end.url, end.reason, len(b.requests))
			}
			if _, err := h.grant(tc.gateway, stateOf(end)); err != nil {
				t.Fatalf("grant: %v", err)
			}
			doc := etree.NewDocument()
			if err := doc.ReadFromBytes(b.requests[0]); err != nil {
				t.Fatal(err)
			}
			root := doc.Root()
			// The signature is the SP key's (RSA-SHA256 over SHA-256 digests), enveloped, over the whole request.
			vc := dsig.NewDefaultValidationContext(&dsig.MemoryX509CertificateStore{Roots: []*x509.Certificate{h.spCert}})
			if _, err := vc.Validate(root.Copy()); err != nil {
				t.Errorf("signature: %v", err)
			}
			sig := root.FindElement("./Signature")
			got := map[string]string{
				"SignatureMethod":                sig.FindElement("./SignedInfo/SignatureMethod").SelectAttrValue("Algorithm", ""),
				"DigestMethod":                   sig.FindElement("./SignedInfo/Reference/DigestMethod").SelectAttrValue("Algorithm", ""),
				"Reference":                      sig.FindElement("./SignedInfo/Reference").SelectAttrValue("URI", ""),
				"Signature position":             root.ChildElements()[1].Tag, // right after Issuer
				"Version":                        root.SelectAttrValue("Version", ""),
				"Destination":                    root.SelectAttrValue("Destination", ""),
				"ForceAuthn":                     root.SelectAttrValue("ForceAuthn", ""),
				"IsPassive":                      root.SelectAttrValue("IsPassive", ""),
				"AssertionConsumerServiceIndex":  root.SelectAttrValue("AssertionConsumerServiceIndex", ""),
				"AssertionConsumerServiceURL":    root.SelectAttrValue("AssertionConsumerServiceURL", ""),
				"AttributeConsumingServiceIndex": root.SelectAttrValue("AttributeConsumingServiceIndex", ""),
				"Issuer":                         root.FindElement("./Issuer").Text(),
				"Issuer Format":                  root.FindElement("./Issuer").SelectAttrValue("Format", ""),
				"Issuer NameQualifier":           root.FindElement("./Issuer").SelectAttrValue("NameQualifier", ""),
				"NameIDPolicy Format":            root.FindElement("./NameIDPolicy").SelectAttrValue("Format", ""),
				"NameIDPolicy AllowCreate":       root.FindElement("./NameIDPolicy").SelectAttrValue("AllowCreate", ""),
				"Comparison":                     root.FindElement("./RequestedAuthnContext").SelectAttrValue("Comparison", ""),
				"AuthnContextClassRef":           root.FindElement("./RequestedAuthnContext/AuthnContextClassRef").Text(),
				"ID starts with a letter":        map[bool]string{true: "yes", false: "no"}[len(root.SelectAttrValue("ID", "")) > 0 && root.SelectAttrValue("ID", "")[0] >= 'a'],
			}
			want := map[string]string{
				"SignatureMethod":                "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
				"DigestMethod":                   "http://www.w3.org/2001/04/xmlenc#sha256",
				"Reference":                      "#" + root.SelectAttrValue("ID", ""),
				"Signature position":             "Signature",
				"Version":                        "2.0",
				"Destination":                    h.idp.IDP.SSOURL.String(),
				"ForceAuthn":                     tc.force,
				"AssertionConsumerServiceIndex":  "0",
				"AttributeConsumingServiceIndex": "0",
				"Issuer":                         "https://wifi.comune.prova.it/spid",
				"Issuer Format":                  "urn:oasis:names:tc:SAML:2.0:nameid-format:entity",
				"Issuer NameQualifier":           "https://wifi.comune.prova.it/spid",
				"NameIDPolicy Format":            "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
				"Comparison":                     "minimum",
				"AuthnContextClassRef":           tc.level,
				"ID starts with a letter":        "yes",
			}
			for k, v := range got {
				if v == "" {
					delete(got, k)
				}
			}
			for k, v := range want {
				if v == "" {
					delete(want, k)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("AuthnRequest (-want +got):\n%s", diff)
			}
			// The key is RSA and at least 2048 bits.
			if n := h.sp.o.Key.N.BitLen(); n < 2048 {
				t.Errorf("SP key %d bits", n)
			}
		})
	}
}

// TestLoginPageHeaders: the auto-posting form is served with a nonce CSP, no caching, no referrer.
func TestLoginPageHeaders(t *testing.T) {
	h := newHarness(t)
	resp, err := http.Get(h.start("parco-gw1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for k, want := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp == "" || !contains(csp, "script-src 'nonce-") || !contains(csp, "form-action "+h.idp.URL) {
		t.Errorf("CSP %q", csp)
	}
}

// TestRedirectBinding: with an IdP that offers only HTTP-Redirect (as CIE's), the request goes in the query,
// deflated, signed with RSA-SHA256 over the query (SigAlg, Signature); the IdP verifies it and the login completes.
func TestRedirectBinding(t *testing.T) {
	h := newHarness(t, func(ed *saml.EntityDescriptor) {
		d := &ed.IDPSSODescriptors[0]
		var keep []saml.Endpoint
		for _, e := range d.SingleSignOnServices {
			if e.Binding == saml.HTTPRedirectBinding {
				keep = append(keep, e)
			}
		}
		d.SingleSignOnServices = keep
	})
	b := newBrowser(t)
	end := b.walk(h.start("parco-gw1"))
	if end.url.Path != "/portal/spid/done" {
		t.Fatalf("walk ended at %d %s (%s)", end.status, end.url, end.reason)
	}
	if _, err := h.grant("parco-gw1", stateOf(end)); err != nil {
		t.Fatalf("grant: %v", err)
	}
	if len(b.requests) != 0 {
		t.Errorf("%d requests went by HTTP-POST", len(b.requests))
	}
	var q url.Values
	for _, u := range b.visited {
		if u.Query().Has("SAMLRequest") {
			q = u.Query()
		}
	}
	if q == nil {
		t.Fatalf("no redirect carried a SAMLRequest: %v", b.visited)
	}
	if got := q.Get("SigAlg"); got != "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" {
		t.Errorf("SigAlg %q", got)
	}
	if q.Get("Signature") == "" || q.Get("RelayState") == "" {
		t.Errorf("Signature or RelayState missing: %v", q)
	}
}
