package spid

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login/spid/spidtest"
	"github.com/crewjam/saml"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRejections: each bad answer from the IdP is refused, for the reason named, and no grant comes of it. Answers
// tied to a pending login reach the gateway as a refusal of spid/grant (code and reason); the others stop at the
// ACS with an error page.
func TestRejections(t *testing.T) {
	past := func(a *saml.Assertion, _ *saml.IdpAuthnRequest) {
		old := time.Now().Add(-10 * time.Minute)
		a.Conditions.NotOnOrAfter = old
		for i := range a.Subject.SubjectConfirmations {
			a.Subject.SubjectConfirmations[i].SubjectConfirmationData.NotOnOrAfter = old
		}
	}
	for _, tc := range []struct {
		name     string
		gateway  string
		sc       spidtest.Scenario
		tamper   func([]byte) []byte
		code     string // refusal of spid/grant
		reason   string
		acsError int // or: the ACS answers this status and no redirect
	}{
		{name: "tampered assertion", gateway: "parco-gw1", tamper: func(b []byte) []byte {
			return []byte(strings.Replace(string(b), "RSSMRA80A01H501U", "VRDGPP80A01H501X", 1))
		}, code: CodeFailed, reason: "signature"},
		{name: "unsigned response", gateway: "parco-gw1", tamper: dropResponseSignature, code: CodeFailed, reason: "unsigned_response"},
		{name: "signature wrapping", gateway: "parco-gw1", tamper: wrapSignature, code: CodeFailed, reason: "signature"},
		{name: "expired", gateway: "parco-gw1", sc: spidtest.Scenario{Mutate: past}, code: CodeFailed, reason: "expired"},
		{name: "wrong audience", gateway: "parco-gw1", sc: spidtest.Scenario{Mutate: func(a *saml.Assertion, _ *saml.IdpAuthnRequest) {
			a.Conditions.AudienceRestrictions = []saml.AudienceRestriction{{Audience: saml.Audience{Value: "https://other-sp.example/"}}}
		}}, code: CodeFailed, reason: "audience"},
		{name: "wrong recipient", gateway: "parco-gw1", sc: spidtest.Scenario{Mutate: func(a *saml.Assertion, _ *saml.IdpAuthnRequest) {
			a.Subject.SubjectConfirmations[0].SubjectConfirmationData.Recipient = "https://other-sp.example/acs"
		}}, code: CodeFailed, reason: "recipient"},
		{name: "L1 answer to an L2 request", gateway: "parco-gw1", sc: spidtest.Scenario{Level: LevelL1}, code: CodeLevel, reason: "level"},
		{name: "unknown InResponseTo", gateway: "parco-gw1", sc: spidtest.Scenario{Mutate: func(a *saml.Assertion, req *saml.IdpAuthnRequest) {
			req.Request.ID = "id-" + strings.Repeat("f", 40)
			a.Subject.SubjectConfirmations[0].SubjectConfirmationData.InResponseTo = req.Request.ID
		}}, reason: "unsolicited", acsError: http.StatusBadRequest},
		{name: "assertion Issuer not in the entity format", gateway: "parco-gw1", sc: spidtest.Scenario{Mutate: func(a *saml.Assertion, _ *saml.IdpAuthnRequest) {
			a.Issuer.Format = "urn:oasis:names:tc:SAML:2.0:nameid-format:unspecified"
		}}, code: CodeFailed, reason: "issuer_format"},
		{name: "assertion issued before the request", gateway: "parco-gw1", sc: spidtest.Scenario{Mutate: func(a *saml.Assertion, req *saml.IdpAuthnRequest) {
			a.IssueInstant = req.Request.IssueInstant.Add(-time.Minute) // within crewjam's 90 s, before the request
		}}, code: CodeFailed, reason: "issue_instant"},
		{name: "no fiscal number", gateway: "parco-gw1", sc: spidtest.Scenario{Mutate: func(a *saml.Assertion, _ *saml.IdpAuthnRequest) {
			a.AttributeStatements = nil
		}}, code: CodeFailed, reason: "no_fiscal_number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.idp.Set(tc.sc)
			b := newBrowser(t)
			b.tamper = tc.tamper
			end := b.walk(h.start(tc.gateway))
			if tc.acsError != 0 {
				if end.status != tc.acsError || end.reason != tc.reason || end.url.Path != PathACS {
					t.Fatalf("ACS answered %d %q at %s, want %d %q", end.status, end.reason, end.url, tc.acsError, tc.reason)
				}
			} else {
				if end.url.Path != "/portal/spid/done" {
					t.Fatalf("walk ended at %d %s (%s), want the gateway's done page", end.status, end.url, end.reason)
				}
				_, err := h.grant(tc.gateway, stateOf(end))
				le := wantCode(t, err, tc.code)
				if le.Message != tc.reason {
					t.Errorf("reason %q, want %q", le.Message, tc.reason)
				}
			}
			if got := testutil.ToFloat64(h.sp.outcomes.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("metric result=%s = %v, want 1", tc.reason, got)
			}
			if got := testutil.ToFloat64(h.sp.outcomes.WithLabelValues("ok")); got != 0 {
				t.Errorf("metric result=ok = %v, want 0", got)
			}
			assertNoFiscalCode(t, h)
		})
	}
}

// dropResponseSignature removes the Response's own ds:Signature, keeping the Assertion's: crewjam alone would
// accept that; SPID wants both.
func dropResponseSignature(raw []byte) []byte {
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		panic(err)
	}
	for _, c := range doc.Root().ChildElements() {
		if c.Tag == "Signature" {
			doc.Root().RemoveChild(c)
		}
	}
	out, _ := doc.WriteToBytes()
	return out
}

// wrapSignature is an XML signature wrapping attack: a forged Response (another fiscal code, the same ID and
// signatures) that carries the genuine signed Response inside an Extensions element, hoping the signature check
// finds the genuine element by its ID while the forged one is read.
func wrapSignature(raw []byte) []byte {
	genuine := etree.NewDocument()
	if err := genuine.ReadFromBytes(raw); err != nil {
		panic(err)
	}
	forged := etree.NewDocument()
	if err := forged.ReadFromBytes([]byte(strings.Replace(string(raw), "RSSMRA80A01H501U", "VRDGPP80A01H501X", 1))); err != nil {
		panic(err)
	}
	ext := etree.NewElement("samlp:Extensions")
	ext.AddChild(genuine.Root().Copy())
	forged.Root().InsertChildAt(0, ext)
	out, _ := forged.WriteToBytes()
	return out
}

// TestUnsignedResponseAcceptedByCrewjam shows why the SPID check is needed: crewjam's own parser accepts the
// Response whose only signature is the Assertion's.
func TestUnsignedResponseAcceptedByCrewjam(t *testing.T) {
	h := newHarness(t)
	b := newBrowser(t)
	b.tamper = dropResponseSignature
	b.walk(h.start("parco-gw1"))
	if len(b.acsForms) != 1 {
		t.Fatalf("%d ACS posts", len(b.acsForms))
	}
	var p pending
	raw := mustB64(t, b.acsForms[0].Get("SAMLResponse"))
	irt, _ := responseShape(raw)
	if err := h.sp.get(context.Background(), keyRequest+irt, false, &p); err != nil {
		t.Fatal(err)
	}
	idp, _ := h.sp.o.IdPs.Lookup(p.IdP)
	sp := h.sp.spFor(idp, p.Level)
	sp.ReplayCache = nil
	if _, err := sp.ParseXMLResponse(raw, []string{p.RequestID}, h.sp.acsURL); err != nil {
		t.Fatalf("crewjam refused it too (%v): the test no longer shows the gap", privateErr(err))
	}
}

func TestReplayedResponse(t *testing.T) {
	h := newHarness(t)
	b := newBrowser(t)
	end := b.walk(h.start("parco-gw1"))
	if end.url.Path != "/portal/spid/done" || len(b.acsForms) != 1 {
		t.Fatalf("walk ended at %s (%s), %d ACS posts", end.url, end.reason, len(b.acsForms))
	}
	again := b.post(h.ctrl.URL+PathACS, b.acsForms[0])
	if again.status != http.StatusConflict || again.reason != "replayed" {
		t.Errorf("replay answered %d %q, want 409 replayed", again.status, again.reason)
	}
	// The first answer stands.
	if _, err := h.grant("parco-gw1", stateOf(end)); err != nil {
		t.Errorf("grant after the replay: %v", err)
	}
	// After it is redeemed, a replay still gets nothing.
	again = b.post(h.ctrl.URL+PathACS, b.acsForms[0])
	if again.reason != "replayed" {
		t.Errorf("late replay: %d %q", again.status, again.reason)
	}
	if _, err := h.grant("parco-gw1", stateOf(end)); err == nil {
		t.Error("a second grant after a replay")
	}
}

func TestIdPInitiatedRefused(t *testing.T) {
	h := newHarness(t)
	b := newBrowser(t)
	end := b.walk(h.idp.URL + "/initiated?sp=" + url.QueryEscape(h.sp.o.EntityID))
	if len(b.acsForms) != 1 {
		t.Fatalf("the IdP posted %d responses (%d %s %.200s)", len(b.acsForms), end.status, end.url, end.body)
	}
	if end.status != http.StatusBadRequest || end.reason != "unsolicited" {
		t.Errorf("ACS answered %d %q, want 400 unsolicited", end.status, end.reason)
	}
}

func TestStateUsedTwice(t *testing.T) {
	h := newHarness(t)
	redirect := h.start("parco-gw1")
	b := newBrowser(t)
	if end := b.walk(redirect); end.url.Path != "/portal/spid/done" {
		t.Fatalf("first use ended at %s", end.url)
	}
	again := newBrowser(t).walk(redirect)
	if again.status != http.StatusGone || again.reason != "expired" || len(again.url.Path) == 0 {
		t.Errorf("second use answered %d %q, want 410 expired", again.status, again.reason)
	}
}

func TestGrantForAnotherClient(t *testing.T) {
	h := newHarness(t)
	end := newBrowser(t).walk(h.start("parco-gw1"))
	other := apiclient.SPIDGrantRequest{State: stateOf(end), ClientMAC: "02:aa:bb:cc:dd:02", ClientIP: testIPs["parco"]}
	_, err := h.client("parco-gw1").SPIDGrant(context.Background(), other)
	wantCode(t, err, apiclient.CodeNotConnected)
	// Another site's gateway cannot redeem it either (and cannot claim to be parco's: its key is biblio's).
	_, err = h.client("biblio-gw1").SPIDGrant(context.Background(), apiclient.SPIDGrantRequest{State: stateOf(end), ClientMAC: testMAC, ClientIP: testIPs["biblio"]})
	wantCode(t, err, apiclient.CodeNotConnected)
	// The resident's own gateway still can: the wrong attempts did not burn the login.
	if _, err := h.grant("parco-gw1", stateOf(end)); err != nil {
		t.Errorf("grant: %v", err)
	}
}

func TestStartRefusals(t *testing.T) {
	h := newHarness(t)
	good := func() apiclient.SPIDStartRequest {
		return apiclient.SPIDStartRequest{ClientMAC: testMAC, ClientIP: testIPs["parco"], IdPEntityID: h.idpID(),
			Consent: true, ReturnURL: h.returnTo}
	}
	for _, tc := range []struct {
		name    string
		gateway string
		change  func(*apiclient.SPIDStartRequest)
		code    string
	}{
		{"no consent", "parco-gw1", func(r *apiclient.SPIDStartRequest) { r.Consent = false }, apiclient.CodeNoConsent},
		{"site without spid", "museo-gw1", func(r *apiclient.SPIDStartRequest) { r.ClientIP = testIPs["museo"] }, apiclient.CodeMethodNotAllowed},
		{"unknown idp", "parco-gw1", func(r *apiclient.SPIDStartRequest) { r.IdPEntityID = "https://evil.example/idp" }, apiclient.CodeBadRequest},
		{"client outside the site", "parco-gw1", func(r *apiclient.SPIDStartRequest) { r.ClientIP = "10.99.0.5" }, apiclient.CodeNotConnected},
		{"bad mac", "parco-gw1", func(r *apiclient.SPIDStartRequest) { r.ClientMAC = "nope" }, apiclient.CodeBadRequest},
		{"return url not http", "parco-gw1", func(r *apiclient.SPIDStartRequest) { r.ReturnURL = "javascript:alert(1)" }, apiclient.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.change(&r)
			_, err := h.client(tc.gateway).StartSPID(context.Background(), r)
			wantCode(t, err, tc.code)
		})
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := b64(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStartStateCannotRedeem: the start state (in the redirect URL that whoever started the login knows, and could
// send to someone else to log in with their SPID) does not redeem the login; only the token the ACS gave the
// browser that came back from the IdP does.
func TestStartStateCannotRedeem(t *testing.T) {
	h := newHarness(t)
	redirect := h.start("parco-gw1")
	startState := mustParse(redirect).Query().Get("state")
	end := newBrowser(t).walk(redirect)
	if stateOf(end) == startState || stateOf(end) == "" {
		t.Fatalf("the return URL carries the start state")
	}
	_, err := h.grant("parco-gw1", startState)
	wantCode(t, err, apiclient.CodeExpired)
	if _, err := h.grant("parco-gw1", stateOf(end)); err != nil {
		t.Errorf("grant with the ACS token: %v", err)
	}
}

func TestResponseChecks(t *testing.T) {
	req := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	resp := func(issueInstant, issuerFormat string) []byte {
		f := ""
		if issuerFormat != "" {
			f = ` Format="` + issuerFormat + `"`
		}
		return []byte(`<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" IssueInstant="` +
			issueInstant + `"><saml:Issuer` + f + `>https://idp.example</saml:Issuer></samlp:Response>`)
	}
	for _, tc := range []struct {
		name, raw, reason string
	}{
		{"good", string(resp("2026-11-25T10:00:05Z", entityFormat)), ""},
		{"issuer without format", string(resp("2026-11-25T10:00:05Z", "")), ""},
		{"within the tolerance", string(resp("2026-11-25T09:59:40Z", entityFormat)), ""},
		{"before the request", string(resp("2026-11-25T09:59:00Z", entityFormat)), "issue_instant"},
		{"issuer format", string(resp("2026-11-25T10:00:05Z", "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified")), "issuer_format"},
		{"no instant", string(resp("", entityFormat)), "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, reason := responseChecks([]byte(tc.raw), req); reason != tc.reason {
				t.Errorf("reason %q, want %q", reason, tc.reason)
			}
		})
	}
}
