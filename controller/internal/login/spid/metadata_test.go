package spid

import (
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/beevik/etree"
	"github.com/google/go-cmp/cmp"
	dsig "github.com/russellhaering/goxmldsig"
)

// TestMetadata fetches /spid/metadata and checks its signature and the SPID elements of a public body's SP.
func TestMetadata(t *testing.T) {
	h := newHarness(t)
	resp, err := http.Get(h.ctrl.URL + PathMetadata)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/samlmetadata+xml" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(body); err != nil {
		t.Fatal(err)
	}
	root := doc.Root()
	vc := dsig.NewDefaultValidationContext(&dsig.MemoryX509CertificateStore{Roots: []*x509.Certificate{h.spCert}})
	if _, err := vc.Validate(root.Copy()); err != nil {
		t.Errorf("metadata signature: %v", err)
	}
	text := func(path string) string {
		if e := root.FindElement(path); e != nil {
			return strings.TrimSpace(e.Text())
		}
		return "<missing>"
	}
	attr := func(path, a string) string {
		if e := root.FindElement(path); e != nil {
			return e.SelectAttrValue(a, "<none>")
		}
		return "<missing>"
	}
	ssp := "./SPSSODescriptor"
	var kdUses, reqAttrs []string
	for _, kd := range root.FindElements(ssp + "/KeyDescriptor") {
		kdUses = append(kdUses, kd.SelectAttrValue("use", ""))
	}
	for _, ra := range root.FindElements(ssp + "/AttributeConsumingService/RequestedAttribute") {
		reqAttrs = append(reqAttrs, ra.SelectAttrValue("Name", ""))
	}
	got := map[string]any{
		"first child":            root.ChildElements()[0].Tag,
		"entityID":               root.SelectAttrValue("entityID", ""),
		"AuthnRequestsSigned":    attr(ssp, "AuthnRequestsSigned"),
		"WantAssertionsSigned":   attr(ssp, "WantAssertionsSigned"),
		"KeyDescriptor uses":     kdUses,
		"ACS index":              attr(ssp+"/AssertionConsumerService", "index"),
		"ACS isDefault":          attr(ssp+"/AssertionConsumerService", "isDefault"),
		"ACS binding":            attr(ssp+"/AssertionConsumerService", "Binding"),
		"ACS location":           attr(ssp+"/AssertionConsumerService", "Location"),
		"SLO location":           attr(ssp+"/SingleLogoutService", "Location"),
		"NameIDFormat":           text(ssp + "/NameIDFormat"),
		"AttributeConsumingSvc":  attr(ssp+"/AttributeConsumingService", "index"),
		"ServiceName":            text(ssp + "/AttributeConsumingService/ServiceName"),
		"requested attributes":   reqAttrs,
		"OrganizationName":       text("./Organization/OrganizationName"),
		"ContactPerson type":     attr("./ContactPerson", "contactType"),
		"spid:IPACode":           text("./ContactPerson/Extensions/IPACode"),
		"spid:Public present":    root.FindElement("./ContactPerson/Extensions/Public") != nil,
		"spid namespace":         namespaceOf(root.FindElement("./ContactPerson/Extensions/IPACode")),
		"EmailAddress":           text("./ContactPerson/EmailAddress"),
		"TelephoneNumber":        text("./ContactPerson/TelephoneNumber"),
		"signature method":       attr("./Signature/SignedInfo/SignatureMethod", "Algorithm"),
		"contact after org":      indexOf(root, "ContactPerson") > indexOf(root, "Organization"),
		"org after SPSSO":        indexOf(root, "Organization") > indexOf(root, "SPSSODescriptor"),
		"encryption key offered": strings.Contains(string(body), `use="encryption"`),
	}
	want := map[string]any{
		"first child":            "Signature",
		"entityID":               "https://wifi.comune.prova.it/spid",
		"AuthnRequestsSigned":    "true",
		"WantAssertionsSigned":   "true",
		"KeyDescriptor uses":     []string{"signing"},
		"ACS index":              "0",
		"ACS isDefault":          "true",
		"ACS binding":            "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
		"ACS location":           h.ctrl.URL + PathACS,
		"SLO location":           h.ctrl.URL + PathSLO,
		"NameIDFormat":           "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
		"AttributeConsumingSvc":  "0",
		"ServiceName":            "Wi-Fi pubblico - Comune di Prova",
		"requested attributes":   []string{"fiscalNumber"},
		"OrganizationName":       "Comune di Prova",
		"ContactPerson type":     "other",
		"spid:IPACode":           "c_z999",
		"spid:Public present":    true,
		"spid namespace":         "https://spid.gov.it/saml-extensions",
		"EmailAddress":           "urp@comune.prova.it",
		"TelephoneNumber":        "+39 0383 000000",
		"signature method":       "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
		"contact after org":      true,
		"org after SPSSO":        true,
		"encryption key offered": false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	// A changed byte breaks the signature (the check above can fail).
	tampered := etree.NewDocument()
	tampered.ReadFromBytes([]byte(strings.Replace(string(body), "c_z999", "c_z998", 1)))
	if _, err := vc.Validate(tampered.Root()); err == nil {
		t.Error("tampered metadata validates")
	}
}

func namespaceOf(e *etree.Element) string {
	if e == nil {
		return "<missing>"
	}
	return e.NamespaceURI()
}

func indexOf(root *etree.Element, tag string) int {
	for i, c := range root.ChildElements() {
		if c.Tag == tag {
			return i
		}
	}
	return -1
}
