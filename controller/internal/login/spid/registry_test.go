package spid

import (
	"strings"
	"testing"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/google/go-cmp/cmp"
)

func TestRegistryExample(t *testing.T) {
	r, err := LoadRegistry("testdata/spid-idps-example.xml")
	if err != nil {
		t.Fatal(err)
	}
	want := []apiclient.SPIDIdP{
		{EntityID: "https://cie.lab.civicwifi.test/idp", Name: "Entra con CIE (lab)"},
		{EntityID: "https://idp.lab.civicwifi.test/metadata", Name: "Lab SPID"},
	}
	if diff := cmp.Diff(want, r.IdPs()); diff != "" {
		t.Errorf("IdPs (-want +got):\n%s", diff)
	}
	if ed, ok := r.Lookup("https://cie.lab.civicwifi.test/idp"); !ok || len(ed.IDPSSODescriptors[0].SingleSignOnServices) != 1 {
		t.Errorf("Lookup: %v", ok)
	}
}

func TestRegistryErrors(t *testing.T) {
	const head = `<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#">`
	const cert = `<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>MIIB</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>`
	const sso = `<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://a.example/sso"/>`
	idp := func(id, inner string) string {
		return `<md:EntityDescriptor entityID="` + id + `"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">` + inner + `</md:IDPSSODescriptor></md:EntityDescriptor>`
	}
	for _, tc := range []struct{ name, data, want string }{
		{"not xml metadata", `<html/>`, `reg.xml: not SAML metadata (root element "html"`},
		{"no sso", head + idp("https://a.example", cert) + `</md:EntitiesDescriptor>`, `reg.xml: IdP "https://a.example": no SingleSignOnService`},
		{"no cert", head + idp("https://a.example", sso) + `</md:EntitiesDescriptor>`, `reg.xml: IdP "https://a.example": no signing certificate`},
		{"twice", head + idp("https://a.example", cert+sso) + idp("https://a.example", cert+sso) + `</md:EntitiesDescriptor>`, `reg.xml: IdP "https://a.example": listed twice`},
		{"none", head + `</md:EntitiesDescriptor>`, `reg.xml: no identity provider`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRegistry("reg.xml", []byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzParseRegistry(f *testing.F) {
	f.Add([]byte(`<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"/>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRegistry("f.xml", data)
		if err == nil && len(r.IdPs()) == 0 {
			t.Error("a registry without IdPs accepted")
		}
	})
}

func FuzzResponseShape(f *testing.F) {
	f.Add([]byte(`<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" InResponseTo="x"/>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		responseShape(data) // must not panic
	})
}
