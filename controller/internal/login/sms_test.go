package login_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login/sms"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	mac1 = "02:00:00:00:00:01"
	ip1  = "10.20.0.10"
)

// mobile returns the i-th of distinct Italian mobile numbers, each in its own number range (prefix).
func mobile(i int) string { return fmt.Sprintf("+39 3%02d %03d 4567", 20+i%70, 100+i/70) }

func TestSMSLoginPerProvider(t *testing.T) {
	for _, p := range []string{"twilio", "skebby", "webhook", "log"} {
		t.Run(p, func(t *testing.T) {
			e := newEnv(t, envOpts{provider: p})
			g, err := e.smsLogin("parco", mac1, ip1, "333 123 4567")
			if err != nil {
				t.Fatalf("sms login: %v", err)
			}
			want := apiclient.Grant{Site: "parco", GatewayID: "parco-gw1", ClientMAC: mac1, ClientIP: ip1,
				User: e.pepper.Pseudonym("phone:+393331234567"), Method: "sms", DownBPS: 5_000_000, UpBPS: 1_000_000,
				Session: apiclient.Duration(2 * time.Hour), Idle: apiclient.Duration(15 * time.Minute), QuotaBytes: 1_000_000_000}
			got := g
			got.ID, got.IssuedAt, got.ExpiresAt, got.Signature = "", time.Time{}, time.Time{}, ""
			if d := cmp.Diff(want, got, cmpopts.IgnoreUnexported(apiclient.Grant{})); d != "" {
				t.Errorf("grant (-want +got):\n%s", d)
			}
			if d := g.ExpiresAt.Sub(g.IssuedAt); d != apiclient.GrantTTL {
				t.Errorf("grant valid for %s, want %s", d, apiclient.GrantTTL)
			}
			if p != "log" {
				sent, _ := e.provider.count()
				if sent != 1 || e.provider.sent[0].To != "+393331234567" || !strings.Contains(e.provider.sent[0].Text, "codice") {
					t.Errorf("provider received %+v, want one Italian SMS to +393331234567", e.provider.sent)
				}
			}
		})
	}
}

func TestSkebbySessionRenewed(t *testing.T) {
	e := newEnv(t, envOpts{provider: "skebby"})
	if _, err := e.smsLogin("parco", mac1, ip1, mobile(1)); err != nil {
		t.Fatal(err)
	}
	e.provider.mu.Lock()
	e.provider.logins++ // the provider expires the session: the next send gets 401, logs in again and succeeds
	e.provider.mu.Unlock()
	if _, err := e.smsLogin("parco", "02:00:00:00:00:02", "10.20.0.11", mobile(2)); err != nil {
		t.Fatal(err)
	}
	if e.provider.logins != 3 {
		t.Errorf("%d logins, want 3 (first, the bumped one, the renewal)", e.provider.logins)
	}
}

func TestSMSWrongCodes(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	c := e.gw["parco"]
	st, err := c.StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: "3331234567", Consent: true})
	if err != nil {
		t.Fatal(err)
	}
	code := e.provider.code(t, st.RequestID)
	wrong := fmt.Sprintf("%06d", (atoi(code)+1)%1_000_000)
	var got []string
	for range 6 {
		_, err := c.VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: st.RequestID, ClientMAC: mac1, ClientIP: ip1, Code: wrong})
		le, _ := err.(*apiclient.LoginError)
		if le == nil {
			t.Fatalf("wrong code: %v", err)
		}
		got = append(got, fmt.Sprintf("%s/%d/%d", le.Code, le.TriesLeft, le.Status))
	}
	// The right code after that is refused too.
	_, err = c.VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: st.RequestID, ClientMAC: mac1, ClientIP: ip1, Code: code})
	got = append(got, loginErr(err))
	want := []string{"wrong_code/4/422", "wrong_code/3/422", "wrong_code/2/422", "wrong_code/1/422", "wrong_code/0/422",
		"too_many_tries/0/429", "too_many_tries"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("answers (-want +got):\n%s", d)
	}
}

// A guess at a request id writes nothing to the store: tries are counted
// only for a request that exists.
func TestSMSUnknownIDWritesNothing(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	id := strings.Repeat("ab", 16)
	_, err := e.gw["parco"].VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: id, ClientMAC: mac1, ClientIP: ip1, Code: "123456"})
	if got := loginErr(err); got != "expired" {
		t.Fatalf("unknown id: %s, want expired", got)
	}
	if _, err := e.st.Get(ctx, "sms/tries/"+id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a try at an unknown id left a counter: %v", err)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestSMSExpiryAndReuse(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	c := e.gw["parco"]
	start := func(phone string) (string, string) {
		st, err := c.StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: phone, Consent: true})
		if err != nil {
			t.Fatal(err)
		}
		if st.ExpiresS != 600 {
			t.Errorf("expires_s %d, want 600", st.ExpiresS)
		}
		return st.RequestID, e.provider.code(t, st.RequestID)
	}
	verify := func(id, code string) string {
		_, err := c.VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: id, ClientMAC: mac1, ClientIP: ip1, Code: code})
		return loginErr(err)
	}
	// Reuse: a right code works once.
	id, code := start(mobile(1))
	if got := verify(id, code); got != "" {
		t.Fatalf("first use: %s", got)
	}
	if got := verify(id, code); got != "expired" {
		t.Errorf("second use: %q, want expired", got)
	}
	// Expiry: valid for 9m59s, not at 10m.
	id, code = start(mobile(2))
	e.clock.Advance(sms.CodeTTL - time.Second)
	id2, code2 := start(mobile(3))
	e.clock.Advance(time.Second)
	if got := verify(id, code); got != "expired" {
		t.Errorf("after 10 minutes: %q, want expired", got)
	}
	if got := verify(id2, code2); got != "" {
		t.Errorf("a code 1 s old: %q", got)
	}
	// A request is bound to its device.
	id, code = start(mobile(4))
	_, err := c.VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: id, ClientMAC: "02:00:00:00:00:99", ClientIP: ip1, Code: code})
	if loginErr(err) != "wrong_code" {
		t.Errorf("another device's request: %v, want wrong_code", err)
	}
	if got := verify("0123456789abcdef0123456789abcdef", "123456"); got != "expired" {
		t.Errorf("unknown request: %q, want expired", got)
	}
}

func TestSMSRefusals(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	for _, tc := range []struct {
		name, site, mac, ip, phone string
		consent                    bool
		want                       string
		status                     int
	}{
		{"no consent", "parco", mac1, ip1, "3331234567", false, "no_consent", 403},
		{"landline", "parco", mac1, ip1, "0383 336111", true, "not_mobile", 422},
		{"not a number", "parco", mac1, ip1, "12", true, "bad_number", 422},
		{"letters", "parco", mac1, ip1, "call me maybe", true, "bad_number", 422},
		{"country not allowed", "parco", mac1, ip1, "+44 7400 123456", true, "country_not_allowed", 422},
		{"swiss mobile allowed", "parco", mac1, ip1, "+41 78 123 45 67", true, "", 200},
		{"IT only at the library", "biblio", mac1, "10.20.4.9", "+41 78 123 45 67", true, "country_not_allowed", 422},
		{"method not allowed", "museo", mac1, "10.20.8.9", "3331234567", true, "method_not_allowed", 403},
		{"client outside the site's network", "parco", mac1, "10.20.4.9", "3331234567", true, "not_connected", 403},
		{"the gateway's own address", "parco", mac1, "10.20.0.1", "3331234567", true, "not_connected", 403},
		{"multicast MAC", "parco", "01:00:5e:00:00:01", ip1, "3331234567", true, "not_connected", 403},
		{"not a MAC", "parco", "nope", ip1, "3331234567", true, "bad_request", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := e.provider.count()
			_, err := e.gw[tc.site].StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: tc.mac, ClientIP: tc.ip, Phone: tc.phone, Consent: tc.consent})
			if got := loginErr(err); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if le, ok := err.(*apiclient.LoginError); ok && le.Status != tc.status {
				t.Errorf("status %d, want %d", le.Status, tc.status)
			}
			after, _ := e.provider.count()
			if wantSent := map[bool]int{true: 1, false: 0}[tc.want == ""]; after-before != wantSent {
				t.Errorf("%d SMS sent, want %d", after-before, wantSent)
			}
		})
	}
}

func TestSMSFloods(t *testing.T) {
	const limit = 3
	for _, tc := range []struct {
		name   string
		limits sms.Limits
		req    func(i int) (mac, ip, phone string)
	}{
		{"per number", sms.Limits{PerNumber: limit}, func(i int) (string, string, string) {
			return fmt.Sprintf("02:00:00:00:01:%02x", i), fmt.Sprintf("10.20.1.%d", i+1), "333 123 4567"
		}},
		{"per MAC", sms.Limits{PerMAC: limit}, func(i int) (string, string, string) { return mac1, ip1, mobile(i) }},
		{"per prefix", sms.Limits{PerPrefix: limit}, func(i int) (string, string, string) {
			return fmt.Sprintf("02:00:00:00:01:%02x", i), fmt.Sprintf("10.20.1.%d", i+1), fmt.Sprintf("+39 333 123 %04d", i*37)
		}},
		{"per site", sms.Limits{PerSite: limit}, func(i int) (string, string, string) {
			return fmt.Sprintf("02:00:00:00:01:%02x", i), fmt.Sprintf("10.20.1.%d", i+1), mobile(i)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.limits.Window = time.Hour
			e := newEnv(t, envOpts{limits: tc.limits})
			var got []string
			for i := range 2 * limit {
				mac, ip, phone := tc.req(i)
				_, err := e.gw["parco"].StartSMS(context.Background(), apiclient.SMSStartRequest{ClientMAC: mac, ClientIP: ip, Phone: phone, Consent: true})
				got = append(got, loginErr(err))
			}
			want := []string{"", "", "", "rate_limited", "rate_limited", "rate_limited"}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("answers (-want +got):\n%s", d)
			}
			if sent, _ := e.provider.count(); sent != limit {
				t.Errorf("%d SMS sent, want %d", sent, limit)
			}
			// Another site is not limited by this one's per-site count; the other limits still apply to it.
			if tc.name == "per site" {
				_, err := e.gw["biblio"].StartSMS(context.Background(), apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: "10.20.4.9", Phone: mobile(50), Consent: true})
				if err != nil {
					t.Errorf("another site: %v", err)
				}
			}
		})
	}
}

func TestSMSResendCooldown(t *testing.T) {
	e := newEnv(t, envOpts{limits: sms.Limits{Window: time.Hour, ResendAfter: time.Minute}})
	ctx := context.Background()
	req := apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: "3331234567", Consent: true}
	st, err := e.gw["parco"].StartSMS(ctx, req)
	if err != nil || st.ResendAfterS != 60 {
		t.Fatalf("first: %+v %v", st, err)
	}
	_, err = e.gw["parco"].StartSMS(ctx, req)
	le, _ := err.(*apiclient.LoginError)
	if le == nil || le.Code != "rate_limited" || le.RetryAfterSeconds < 55 || le.RetryAfterSeconds > 60 {
		t.Fatalf("at once: %v (%+v), want rate_limited with retry after ~60 s", err, le)
	}
	req.Phone = "3331234568" // another number is not held back
	if _, err := e.gw["parco"].StartSMS(ctx, req); err != nil {
		t.Fatalf("another number: %v", err)
	}
}

func TestSMSDailyBudget(t *testing.T) {
	e := newEnv(t, envOpts{limits: sms.Limits{Window: time.Hour, DailyBudget: 4}, smsCost: 0.05})
	var got []string
	for i := range 6 {
		_, err := e.gw["parco"].StartSMS(context.Background(), apiclient.SMSStartRequest{
			ClientMAC: fmt.Sprintf("02:00:00:00:01:%02x", i), ClientIP: fmt.Sprintf("10.20.1.%d", i+1), Phone: mobile(i), Consent: true})
		got = append(got, loginErr(err))
	}
	want := []string{"", "", "", "", "budget_exhausted", "budget_exhausted"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("answers (-want +got):\n%s", d)
	}
	if sent, _ := e.provider.count(); sent != 4 {
		t.Errorf("%d SMS sent, want 4", sent)
	}
	if n := strings.Count(e.log.String(), "ALERT: the town's daily SMS budget is used up"); n != 1 {
		t.Errorf("%d budget alerts in the log, want 1:\n%s", n, e.log.String())
	}
	if v := gauge(t, e, "civicwifi_controller_sms_daily_budget_exhausted"); v != 1 {
		t.Errorf("budget gauge %v, want 1", v)
	}
	// The operators' metrics: today's count against the budget, and what the four SMS cost.
	if used, limit := gauge(t, e, "civicwifi_controller_sms_daily_budget_used"), gauge(t, e, "civicwifi_controller_sms_daily_budget_limit"); used != 4 || limit != 4 {
		t.Errorf("budget used %v of %v, want 4 of 4", used, limit)
	}
	if cost := metric(t, e, "civicwifi_controller_sms_cost_euros_total", ""); cost < 0.1999 || cost > 0.2001 {
		t.Errorf("SMS cost %v euros, want 4 x 0.05", cost)
	}
}

func gauge(t *testing.T, e *env, name string) float64 { return metric(t, e, name, "") }

// metric sums the values of name's series that have a label with value label ("" for all).
func metric(t *testing.T, e *env, name, label string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == label
			}
			if match {
				sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestSMSProviderFailures(t *testing.T) {
	for _, tc := range []struct {
		name         string
		fail         int
		delay        time.Duration
		want         string
		wantRequests int
	}{
		{"500 once, then sent", 1, 0, "", 2},
		{"500 always", 100, 0, "provider_failed", 3},
		{"timeouts", 0, time.Second, "provider_failed", 3},
	} {
		for _, p := range []string{"twilio", "skebby", "webhook"} {
			t.Run(tc.name+"/"+p, func(t *testing.T) {
				e := newEnv(t, envOpts{provider: p, sender: sms.Sender{Attempts: 3, Timeout: 200 * time.Millisecond}})
				e.provider.fail, e.provider.delay = tc.fail, tc.delay
				began := time.Now()
				_, err := e.gw["parco"].StartSMS(context.Background(), apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: "3331234567", Consent: true})
				took := time.Since(began)
				if got := loginErr(err); got != tc.want {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
				if le, ok := err.(*apiclient.LoginError); ok && le.Status != 503 {
					t.Errorf("status %d, want 503", le.Status)
				}
				if _, n := e.provider.count(); n != tc.wantRequests {
					t.Errorf("%d requests to the provider, want %d", n, tc.wantRequests)
				}
				if took > 2*time.Second {
					t.Errorf("the resident waited %s", took)
				}
				if tc.want != "" {
					if !strings.Contains(e.log.String(), `"msg":"sms not sent"`) {
						t.Errorf("the failure is not logged:\n%s", e.log.String())
					}
					// The failure counted, and a retry by the resident is not held back by the cool-down.
					if n := metric(t, e, "civicwifi_controller_sms_requests_total", "provider_failed"); n != 1 {
						t.Errorf("provider_failed counted %v times", n)
					}
				}
			})
		}
	}
}

// failingStore fails every rate-limit count, as a Redis going away mid-request would.
type failingStore struct{ store.Store }

func (failingStore) Incr(context.Context, string, int64, time.Duration) (int64, error) {
	return 0, errors.New("redis: connection refused")
}

func TestStoreDown(t *testing.T) {
	e := newEnv(t, envOpts{limits: sms.Limits{Window: time.Hour, PerNumber: 3}, wrap: func(s store.Store) store.Store { return failingStore{s} }})
	ctx := context.Background()
	_, err := e.gw["parco"].StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: "3331234567", Consent: true})
	le, _ := err.(*apiclient.LoginError)
	if le == nil || le.Code != "unavailable" || le.Status != 503 {
		t.Fatalf("sms start with the store failing: %v, want a signed 503 unavailable", err)
	}
	_, err = e.gw["parco"].RedeemVoucher(ctx, apiclient.VoucherRequest{ClientMAC: mac1, ClientIP: ip1, Code: "22222-22222", Consent: true})
	if loginErr(err) != "unavailable" {
		t.Fatalf("voucher with the store failing: %v", err)
	}
	if sent, _ := e.provider.count(); sent != 0 {
		t.Errorf("%d SMS sent without the limits checked", sent)
	}
	if !strings.Contains(e.log.String(), "connection refused") {
		t.Error("the store failure is not logged")
	}
}
