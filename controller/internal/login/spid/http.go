package spid

import (
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/crewjam/saml"
)

// Handler serves the browser-facing endpoints: GET /spid/login, POST /spid/acs, GET /spid/metadata and
// POST /spid/slo.
func (s *SP) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathLogin, s.serveLogin)
	mux.HandleFunc("POST "+PathACS, s.serveACS)
	mux.HandleFunc("GET "+PathMetadata, s.serveMetadata)
	mux.HandleFunc("POST "+PathSLO, s.serveSLO)
	return mux
}

// serveLogin turns a state from Start (single use) into a signed AuthnRequest to the chosen IdP.
func (s *SP) serveLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	state := r.URL.Query().Get("state")
	if !validToken(state) {
		s.page(w, http.StatusBadRequest, "bad_state")
		return
	}
	var p pending
	if err := s.get(ctx, keyState+state, true, &p); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			s.page(w, http.StatusGone, "expired")
			return
		}
		s.log.Error("reading SPID login state", "err", err)
		s.page(w, http.StatusServiceUnavailable, "unavailable")
		return
	}
	idp, ok := s.o.IdPs.Lookup(p.IdP)
	if !ok { // the registry was replaced since Start
		s.page(w, http.StatusGone, "unknown_idp")
		return
	}
	sp := s.spFor(idp, p.Level)
	binding, loc := saml.HTTPPostBinding, sp.GetSSOBindingLocation(saml.HTTPPostBinding)
	if loc == "" {
		binding, loc = saml.HTTPRedirectBinding, sp.GetSSOBindingLocation(saml.HTTPRedirectBinding)
	}
	req, err := s.authnRequest(sp, loc, binding)
	if err != nil {
		s.log.Error("making the SPID AuthnRequest", "idp", p.IdP, "err", err)
		s.page(w, http.StatusInternalServerError, "internal")
		return
	}
	p.RequestID, p.RequestAt = req.ID, req.IssueInstant
	if err := s.put(ctx, keyRequest+req.ID, p, StateTTL); err != nil {
		s.log.Error("storing SPID request", "err", err)
		s.page(w, http.StatusServiceUnavailable, "unavailable")
		return
	}
	s.log.Info("SPID login started", "site", p.Site, "gateway", p.Gateway, "idp", p.IdP, "level", p.Level, "request", req.ID)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if binding == saml.HTTPRedirectBinding {
		u, err := req.Redirect(state, sp)
		if err != nil {
			s.log.Error("signing the SPID redirect", "idp", p.IdP, "err", err)
			s.page(w, http.StatusInternalServerError, "internal")
			return
		}
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	}
	nonce := randomToken()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; form-action "+originOf(loc)+"; style-src 'unsafe-inline'")
	w.Write([]byte("<!doctype html><html><head><meta charset=\"utf-8\"><title>SPID</title></head><body>"))
	w.Write(req.PostWithNonce(state, nonce))
	w.Write([]byte("</body></html>"))
}

// authnRequest is crewjam's AuthnRequest made SPID's: Issuer with NameQualifier, AttributeConsumingServiceIndex,
// NameIDPolicy transient without AllowCreate; signed (enveloped for HTTP-POST; HTTP-Redirect signs the query).
func (s *SP) authnRequest(sp *saml.ServiceProvider, loc, binding string) (*saml.AuthnRequest, error) {
	req, err := sp.MakeAuthenticationRequest(loc, "", saml.HTTPPostBinding) // "" : unsigned, signed below
	if err != nil {
		return nil, err
	}
	req.Issuer.NameQualifier = s.o.EntityID
	req.AttributeConsumingServiceIndex = "0"
	req.NameIDPolicy.AllowCreate = nil
	if binding == saml.HTTPPostBinding {
		if err := sp.SignAuthnRequest(req); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// serveACS verifies the IdP's Response and sends the browser back to the gateway.
func (s *SP) serveACS(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 256<<10)
	if err := r.ParseForm(); err != nil {
		s.reject(w, "malformed", http.StatusBadRequest)
		return
	}
	raw, err := base64.StdEncoding.DecodeString(r.PostForm.Get("SAMLResponse"))
	if err != nil || len(raw) == 0 {
		s.reject(w, "malformed", http.StatusBadRequest)
		return
	}
	// Find the request this answers. The id is only a lookup key here; crewjam checks it after the signatures.
	inResponseTo, shapeErr := responseShape(raw)
	if inResponseTo == "" {
		s.reject(w, "unsolicited", http.StatusBadRequest)
		return
	}
	var p pending
	if err := s.get(ctx, keyRequest+inResponseTo, false, &p); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			s.reject(w, "unsolicited", http.StatusBadRequest)
			return
		}
		s.log.Error("reading SPID request", "err", err)
		s.page(w, http.StatusServiceUnavailable, "unavailable")
		return
	}
	if r.PostForm.Get("RelayState") != p.State {
		s.reject(w, "relay_state", http.StatusBadRequest)
		return
	}
	res := result{pending: p, At: time.Now()}
	code, reason := s.verify(raw, shapeErr, &p, &res)
	res.Code, res.Reason = code, reason
	// One answer per request, ever (kept as long as the request): a second one (a replay, a double post, even
	// after the gateway redeemed the first) never replaces or follows the first.
	fresh, err := s.o.Store.PutIfAbsent(ctx, keyAnswered+p.RequestID, []byte{1}, StateTTL)
	if err == nil && !fresh {
		if reason == "" {
			reason = "answered_twice"
		}
		s.reject(w, reason, http.StatusConflict)
		return
	}
	// The result goes under a new token that only this browser sees (in the redirect below), not under the start
	// state: whoever started the login (and could have sent its link to someone else to log in with their SPID)
	// cannot redeem it without being the browser that came back from the IdP.
	token := randomToken()
	if err == nil {
		err = s.put(ctx, keyResult+token, res, ResultTTL)
	}
	if err != nil {
		s.log.Error("storing SPID result", "err", err)
		s.page(w, http.StatusServiceUnavailable, "unavailable")
		return
	}
	outcome := "ok"
	if reason != "" {
		outcome = reason
		s.log.Warn("SPID response refused", "site", p.Site, "gateway", p.Gateway, "idp", p.IdP, "request", p.RequestID, "reason", reason)
	} else {
		s.log.Info("SPID login verified", "site", p.Site, "gateway", p.Gateway, "idp", p.IdP, "level", res.Got, "user", res.User)
	}
	s.outcomes.WithLabelValues(outcome).Inc()
	u, _ := url.Parse(p.ReturnURL)
	q := u.Query()
	q.Set("state", token)
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// verify checks raw for the login p and fills res; it returns the refusal code and reason, or "", "".
func (s *SP) verify(raw []byte, shapeErr error, p *pending, res *result) (string, string) {
	if shapeErr != nil {
		var se *shapeError
		if errors.As(shapeErr, &se) {
			return CodeFailed, se.reason
		}
		return CodeFailed, "malformed"
	}
	idp, ok := s.o.IdPs.Lookup(p.IdP)
	if !ok {
		return CodeFailed, "unknown_idp"
	}
	sp := s.spFor(idp, p.Level)
	a, err := sp.ParseXMLResponse(raw, []string{p.RequestID}, s.acsURL)
	if err != nil {
		reason := classify(err)
		code := CodeFailed
		if reason == "level" {
			code = CodeLevel
		}
		s.log.Debug("SPID response detail", "reason", reason, "err", privateErr(err))
		return code, reason
	}
	// SPID beyond SAML: Issuers in the entity format, nothing issued before the request.
	if a.Issuer.Format != entityFormat {
		return CodeFailed, "issuer_format"
	}
	if a.IssueInstant.Before(p.RequestAt.Add(-issueTolerance)) {
		return CodeFailed, "issue_instant"
	}
	if code, reason := responseChecks(raw, p.RequestAt); code != "" {
		return code, reason
	}
	got := 0
	for _, st := range a.AuthnStatements {
		if st.AuthnContext.AuthnContextClassRef != nil {
			got = max(got, levelOf(st.AuthnContext.AuthnContextClassRef.Value))
		}
	}
	if got < p.Level { // crewjam checked it already; kept as a second lock
		return CodeLevel, "level"
	}
	var values []string
	for _, st := range a.AttributeStatements {
		for _, at := range st.Attributes {
			if at.Name == AttributeFiscalNumber {
				for _, v := range at.Values {
					values = append(values, v.Value)
				}
			}
		}
	}
	if len(values) != 1 {
		return CodeFailed, "no_fiscal_number"
	}
	cf, ok := fiscalNumber(values[0])
	if !ok {
		return CodeFailed, "bad_fiscal_number"
	}
	res.User, res.Got = s.o.Pepper.Pseudonym("spid:"+cf), got
	return "", ""
}

// classify names the check a crewjam error comes from (a metric label and the Reason of the refusal).
func classify(err error) string {
	var bad saml.ErrBadStatus
	switch {
	case errors.As(err, &bad):
		return "status"
	case errors.Is(err, saml.ErrAssertionReplayed):
		return "replayed"
	case errors.Is(err, saml.ErrAuthnContextMismatch):
		return "level"
	case errors.Is(err, saml.ErrAudienceMismatch):
		return "audience"
	case errors.Is(err, saml.ErrDestinationMismatch):
		return "recipient"
	case errors.Is(err, saml.ErrRequestIDMismatch):
		return "unsolicited"
	case errors.Is(err, saml.ErrExpired), errors.Is(err, saml.ErrNotYetValid):
		return "expired"
	case errors.Is(err, saml.ErrIssuerMismatch):
		return "issuer"
	case errors.Is(err, saml.ErrInvalidSignature), errors.Is(err, saml.ErrUntrustedCertificate),
		errors.Is(err, saml.ErrCertificateNotValidNow):
		return "signature"
	case errors.Is(err, saml.ErrUnsupported):
		return "unsupported"
	default:
		return "invalid"
	}
}

func privateErr(err error) error {
	var ivr *saml.InvalidResponseError
	if errors.As(err, &ivr) {
		return ivr.PrivateErr
	}
	return err
}

type shapeError struct{ reason string }

func (e *shapeError) Error() string { return e.reason }

const (
	nsProtocol  = "urn:oasis:names:tc:SAML:2.0:protocol"
	nsAssertion = "urn:oasis:names:tc:SAML:2.0:assertion"
	nsDSig      = "http://www.w3.org/2000/09/xmldsig#"
)

// responseShape returns the Response's InResponseTo and checks what SPID requires beyond crewjam: exactly one
// Assertion (not encrypted), and an enveloped ds:Signature on both the Response and the Assertion (crewjam
// accepts either alone). Signatures are verified later, by crewjam.
func responseShape(raw []byte) (string, error) {
	doc := etree.NewDocument()
	doc.ReadSettings.ValidateInput = true
	if err := doc.ReadFromBytes(raw); err != nil || doc.Root() == nil {
		return "", &shapeError{"malformed"}
	}
	root := doc.Root()
	if root.Tag != "Response" || root.NamespaceURI() != nsProtocol {
		return "", &shapeError{"malformed"}
	}
	irt := root.SelectAttrValue("InResponseTo", "")
	var assertions []*etree.Element
	responseSigned := false
	for _, c := range root.ChildElements() {
		switch {
		case c.Tag == "Assertion" && c.NamespaceURI() == nsAssertion:
			assertions = append(assertions, c)
		case c.Tag == "EncryptedAssertion":
			return irt, &shapeError{"encrypted_assertion"}
		case c.Tag == "Signature" && c.NamespaceURI() == nsDSig:
			responseSigned = true
		}
	}
	if !responseSigned {
		return irt, &shapeError{"unsigned_response"}
	}
	if len(assertions) > 1 {
		return irt, &shapeError{"assertions"}
	}
	if len(assertions) == 1 {
		signed := false
		for _, c := range assertions[0].ChildElements() {
			if c.Tag == "Signature" && c.NamespaceURI() == nsDSig {
				signed = true
			}
		}
		if !signed {
			return irt, &shapeError{"unsigned_assertion"}
		}
	}
	return irt, nil
}

// reject answers a refusal that cannot be handed to the gateway (no known login to attach it to).
func (s *SP) reject(w http.ResponseWriter, reason string, status int) {
	s.outcomes.WithLabelValues(reason).Inc()
	s.log.Warn("SPID response refused", "reason", reason)
	s.page(w, status, reason)
}

var pageTmpl = template.Must(template.New("p").Parse(`<!doctype html><html lang="it"><head><meta charset="utf-8">` +
	`<meta name="viewport" content="width=device-width,initial-scale=1"><title>SPID</title></head><body>` +
	`<h1>Accesso con SPID non riuscito</h1><p>Torna alla pagina del Wi-Fi e riprova. / SPID login failed: go back to the Wi-Fi page and try again.</p>` +
	`<p><small>{{.}}</small></p></body></html>`))

func (s *SP) page(w http.ResponseWriter, status int, reason string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Spid-Reason", reason)
	w.WriteHeader(status)
	pageTmpl.Execute(w, reason)
}

func originOf(loc string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return "'none'"
	}
	return u.Scheme + "://" + u.Host
}

// serveMetadata serves the SP's signed metadata.
func (s *SP) serveMetadata(w http.ResponseWriter, r *http.Request) {
	data, err := s.Metadata()
	if err != nil {
		s.log.Error("making SPID metadata", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	w.Write(data)
}

// Metadata returns the SP's metadata signed with its key (RSA-SHA256): crewjam's SPSSODescriptor (signing key
// only, ACS index 0 HTTP-POST, SLO, transient NameID) plus an AttributeConsumingService asking for fiscalNumber
// only, the Organization (the town's name from sites.yaml) and the public-body ContactPerson with the
// spid:IPACode (sites.yaml town.ipa_code) and spid:Public extensions.
func (s *SP) Metadata() ([]byte, error) {
	town := s.o.Sites().Town
	if town.IPACode == "" {
		return nil, errors.New("sites.yaml town.ipa_code is missing: SPID metadata of a public body needs it")
	}
	ed := s.base.Metadata()
	ed.ID = "_" + randomToken()
	ssp := &ed.SPSSODescriptors[0]
	var kds []saml.KeyDescriptor
	for _, kd := range ssp.KeyDescriptors {
		if kd.Use == "signing" {
			kds = append(kds, kd)
		}
	}
	ssp.KeyDescriptors = kds
	yes := true
	for i := range ssp.AssertionConsumerServices {
		ssp.AssertionConsumerServices[i].Index = i
	}
	ssp.AssertionConsumerServices[0].IsDefault = &yes
	ssp.AttributeConsumingServices = []saml.AttributeConsumingService{{
		Index: 0, ServiceNames: []saml.LocalizedName{{Lang: "it", Value: "Wi-Fi pubblico - " + town.Name}},
		RequestedAttributes: []saml.RequestedAttribute{{Attribute: saml.Attribute{
			Name: AttributeFiscalNumber, NameFormat: "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"}}},
	}}
	names := []saml.LocalizedName{{Lang: "it", Value: town.Name}}
	ed.Organization = &saml.Organization{OrganizationNames: names, OrganizationDisplayNames: names,
		OrganizationURLs: []saml.LocalizedURI{{Lang: "it", Value: s.o.OrganizationURL}}}
	buf, err := xml.Marshal(ed)
	if err != nil {
		return nil, err
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(buf); err != nil {
		return nil, err
	}
	root := doc.Root()
	root.CreateAttr("xmlns:spid", "https://spid.gov.it/saml-extensions")
	cp := root.CreateElement("md:ContactPerson")
	cp.CreateAttr("xmlns:md", "urn:oasis:names:tc:SAML:2.0:metadata")
	cp.CreateAttr("contactType", "other")
	ext := cp.CreateElement("md:Extensions")
	ext.CreateElement("spid:IPACode").SetText(town.IPACode)
	ext.CreateElement("spid:Public")
	cp.CreateElement("md:EmailAddress").SetText(town.Contacts.Email)
	if town.Contacts.Phone != "" {
		cp.CreateElement("md:TelephoneNumber").SetText(town.Contacts.Phone)
	}
	sc, err := saml.GetSigningContext(&s.base)
	if err != nil {
		return nil, err
	}
	// Re-read so the signature is computed over exactly what is served.
	body, err := doc.WriteToBytes()
	if err != nil {
		return nil, err
	}
	doc = etree.NewDocument()
	if err := doc.ReadFromBytes(body); err != nil {
		return nil, err
	}
	sig, err := sc.ConstructSignature(doc.Root(), true)
	if err != nil {
		return nil, fmt.Errorf("signing metadata: %w", err)
	}
	doc.Root().InsertChildAt(0, sig) // the schema wants ds:Signature first; the enveloped transform removes it
	doc.WriteSettings.CanonicalEndTags = true
	return doc.WriteToBytes()
}

// serveSLO answers an IdP's LogoutRequest (HTTP-POST binding, as the metadata says) with a signed LogoutResponse
// of status Success: the SP keeps no session of its own (a Wi-Fi session is the gateway's, bounded by the policy,
// and is not ended by a SPID logout), so there is nothing left to end here.
func (s *SP) serveSLO(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		s.page(w, http.StatusBadRequest, "malformed")
		return
	}
	raw, err := base64.StdEncoding.DecodeString(r.PostForm.Get("SAMLRequest"))
	if err != nil {
		s.page(w, http.StatusBadRequest, "malformed")
		return
	}
	// The Issuer picks the IdP whose certificates check the signature; crewjam then checks it matches.
	doc := etree.NewDocument()
	doc.ReadSettings.ValidateInput = true
	if err := doc.ReadFromBytes(raw); err != nil || doc.Root() == nil || doc.Root().Tag != "LogoutRequest" {
		s.page(w, http.StatusBadRequest, "malformed")
		return
	}
	issuer := doc.Root().FindElement("./Issuer")
	if issuer == nil {
		s.page(w, http.StatusBadRequest, "malformed")
		return
	}
	idp, ok := s.o.IdPs.Lookup(strings.TrimSpace(issuer.Text()))
	if !ok {
		s.page(w, http.StatusBadRequest, "unknown_idp")
		return
	}
	sp := s.spFor(idp, 1)
	lr, err := sp.ValidateLogoutRequest(r)
	if err != nil {
		reason := classify(err)
		s.log.Warn("SPID logout request refused", "idp", idp.EntityID, "reason", reason, "err", privateErr(err))
		s.page(w, http.StatusBadRequest, "logout_"+reason)
		return
	}
	relay := r.PostForm.Get("RelayState")
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if sp.GetSLOBindingLocation(saml.HTTPPostBinding) != "" {
		form, err := sp.MakePostLogoutResponse(lr.ID, relay)
		if err != nil {
			s.log.Error("making the SPID LogoutResponse", "idp", idp.EntityID, "err", err)
			s.page(w, http.StatusInternalServerError, "internal")
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<!doctype html><html><head><meta charset=\"utf-8\"><title>SPID</title></head><body>"))
		w.Write(form)
		w.Write([]byte("</body></html>"))
		return
	}
	if sp.GetSLOBindingLocation(saml.HTTPRedirectBinding) != "" {
		u, err := sp.MakeRedirectLogoutResponse(lr.ID, relay)
		if err != nil {
			s.log.Error("making the SPID LogoutResponse", "idp", idp.EntityID, "err", err)
			s.page(w, http.StatusInternalServerError, "internal")
			return
		}
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	}
	s.page(w, http.StatusBadRequest, "no_slo")
}

// responseChecks are the SPID checks of the Response element itself, read after crewjam verified its signature
// (the root element is what the signature covers: crewjam refuses a signature that references another element).
func responseChecks(raw []byte, requestAt time.Time) (string, string) {
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil || doc.Root() == nil {
		return CodeFailed, "malformed"
	}
	root := doc.Root()
	if iss := root.FindElement("./Issuer"); iss != nil && iss.SelectAttrValue("Format", entityFormat) != entityFormat {
		return CodeFailed, "issuer_format"
	}
	at, err := time.Parse(time.RFC3339Nano, root.SelectAttrValue("IssueInstant", ""))
	if err != nil {
		return CodeFailed, "malformed"
	}
	if at.Before(requestAt.Add(-issueTolerance)) {
		return CodeFailed, "issue_instant"
	}
	return "", ""
}
