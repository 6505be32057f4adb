package login

import (
	"net/url"
	"strings"
	"testing"

	"github.com/civicwifi/civicwifi/controller/apiclient"
)

// Whatever a form holds (with a valid CSRF token), the login pages answer
// without a server error, never ask the controller without consent, and
// pass on only a number, code or voucher of the shape they accept.
func FuzzLoginForms(f *testing.F) {
	for _, s := range [][3]string{
		{"/portal/sms", "3331234567", "1"}, {"/portal/sms", "+39 (333) 123-4567", ""}, {"/portal/sms/verify", "123456", "1"},
		{"/portal/voucher", "abcd-2345", "1"}, {"/portal/voucher", "<script>", "1"}, {"/portal/spid", "https://posteid.poste.it", "1"},
		{"/portal/remembered", "", ""}, {"/portal/sms", strings.Repeat("9", 40), "1"},
	} {
		f.Add(s[0], s[1], s[2], "r1", "0", "0", "st")
	}
	h := newHarness(f)
	csrf := h.get("/portal/").hidden(f, "/portal/sms").Get("csrf")
	f.Fuzz(func(t *testing.T, path, value, accept, rid, resendAt, expires, state string) {
		switch path {
		case "/portal/sms", "/portal/sms/verify", "/portal/voucher", "/portal/spid", "/portal/remembered":
		default:
			path = "/portal/sms"
		}
		form := url.Values{"csrf": {csrf}, "accept": {accept}, "phone": {value}, "code": {value}, "voucher": {value}, "idp": {value},
			"rid": {rid}, "resend_at": {resendAt}, "expires": {expires}, "state": {state}}
		n := len(h.ctl.requests())
		p := h.post(path, form)
		if p.code >= 500 {
			t.Fatalf("%s: status %d", path, p.code)
		}
		for _, r := range h.ctl.requests()[n:] {
			switch r := r.(type) {
			case apiclient.SMSStartRequest:
				if !r.Consent || accept != "1" || strings.Trim(r.Phone, "+0123456789 -.()/") != "" || len(r.Phone) > 32 {
					t.Fatalf("sms/start %+v (accept %q)", r, accept)
				}
			case apiclient.SMSVerifyRequest:
				if len(r.Code) != 6 || strings.Trim(r.Code, "0123456789") != "" {
					t.Fatalf("sms/verify %+v", r)
				}
			case apiclient.VoucherRequest:
				if !r.Consent || accept != "1" || strings.Trim(r.Code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
					t.Fatalf("voucher %+v", r)
				}
			case apiclient.SPIDStartRequest:
				if !r.Consent || accept != "1" || (r.IdPEntityID != "https://posteid.poste.it" && r.IdPEntityID != "https://id.lepida.it/idp/shibboleth") {
					t.Fatalf("spid/start %+v", r)
				}
			}
		}
	})
}
