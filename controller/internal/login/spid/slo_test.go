package spid

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
)

// logoutRequest is a LogoutRequest from the test IdP to the controller's SLO endpoint, signed with the IdP's key
// unless unsigned.
func (h *harness) logoutRequest(t *testing.T, id string, unsigned bool) url.Values {
	t.Helper()
	lr := saml.LogoutRequest{
		ID: id, Version: "2.0", IssueInstant: time.Now().UTC(), Destination: h.ctrl.URL + PathSLO,
		Issuer: &saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: h.idpID()},
		NameID: &saml.NameID{Format: string(saml.TransientNameIDFormat), Value: "_" + randomToken()},
	}
	if !unsigned {
		ks := dsig.TLSCertKeyStore(tls.Certificate{PrivateKey: h.idp.IDP.Key.(*rsa.PrivateKey), Certificate: [][]byte{h.idp.IDP.Certificate.Raw}})
		sc := dsig.NewDefaultSigningContext(ks)
		if err := sc.SetSignatureMethod(dsig.RSASHA256SignatureMethod); err != nil {
			t.Fatal(err)
		}
		signed, err := sc.SignEnveloped(lr.Element())
		if err != nil {
			t.Fatal(err)
		}
		lr.Signature = signed.ChildElements()[len(signed.ChildElements())-1]
	}
	doc := etree.NewDocument()
	doc.SetRoot(lr.Element())
	raw, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return url.Values{"SAMLRequest": {base64.StdEncoding.EncodeToString(raw)}, "RelayState": {"rs-1"}}
}

func TestSingleLogout(t *testing.T) {
	h := newHarness(t)
	b := newBrowser(t)
	form := h.logoutRequest(t, "id-logout-1", false)
	resp, err := b.c.PostForm(h.ctrl.URL+PathSLO, form)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SLO answered %d %s", resp.StatusCode, resp.Header.Get("X-Spid-Reason"))
	}
	action, vals := postForm([]byte(body))
	if action != h.idp.URL+"/slo" || vals.Get("RelayState") != "rs-1" {
		t.Errorf("form to %q with RelayState %q", action, vals.Get("RelayState"))
	}
	raw, _ := base64.StdEncoding.DecodeString(vals.Get("SAMLResponse"))
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		t.Fatal(err)
	}
	root := doc.Root()
	vc := dsig.NewDefaultValidationContext(&dsig.MemoryX509CertificateStore{Roots: []*x509.Certificate{h.spCert}})
	if _, err := vc.Validate(root.Copy()); err != nil {
		t.Errorf("LogoutResponse signature: %v", err)
	}
	got := []string{root.Tag, root.SelectAttrValue("InResponseTo", ""), root.SelectAttrValue("Destination", ""),
		root.FindElement("./Status/StatusCode").SelectAttrValue("Value", ""), strings.TrimSpace(root.FindElement("./Issuer").Text())}
	want := []string{"LogoutResponse", "id-logout-1", h.idp.URL + "/slo", saml.StatusSuccess, "https://wifi.comune.prova.it/spid"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("LogoutResponse field %d: %q, want %q", i, got[i], want[i])
		}
	}
	// The same request again, and an unsigned one, are refused.
	for _, tc := range []struct {
		name   string
		form   url.Values
		reason string
	}{
		{"replayed", form, "logout_replayed"},
		{"unsigned", h.logoutRequest(t, "id-logout-2", true), "logout_invalid"},
	} {
		p := b.post(h.ctrl.URL+PathSLO, tc.form)
		if p.status != http.StatusBadRequest || p.reason != tc.reason {
			t.Errorf("%s: %d %q, want 400 %q", tc.name, p.status, p.reason, tc.reason)
		}
		if !strings.Contains(h.logs.String(), "SPID logout request refused") {
			t.Errorf("%s: not logged", tc.name)
		}
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}
