package login_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestRememberedAcrossSites(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	g, err := e.smsLogin("parco", mac1, ip1, "3331234567")
	if err != nil {
		t.Fatal(err)
	}
	remembered := func(site, mac, ip string) (apiclient.Grant, error) {
		r, err := e.gw[site].Remembered(ctx, apiclient.RememberedRequest{ClientMAC: mac, ClientIP: ip})
		if err == nil {
			if err := apiclient.VerifyGrant(r, e.ctlPub, site, e.gwID[site], mac, ip, e.clock.Now()); err != nil {
				t.Fatalf("remembered grant does not verify: %v", err)
			}
		}
		return r, err
	}
	// The same phone at the library, another site of the town: in without a code, as the same pseudonym.
	r, err := remembered("biblio", mac1, "10.20.4.10")
	if err != nil {
		t.Fatalf("at the library: %v", err)
	}
	if r.Method != "remembered" || r.User != g.User || r.Site != "biblio" || time.Duration(r.Session) != 4*time.Hour {
		t.Errorf("remembered grant %+v: want method remembered, user %s, the library's 4h session", r, g.User)
	}
	var le *apiclient.LoginError
	for _, tc := range []struct {
		name, site, mac, ip string
	}{
		{"another device", "parco", "02:00:00:00:00:77", "10.20.0.77"},
		{"a site that does not remember devices", "museo", mac1, "10.20.8.10"},
	} {
		_, err := remembered(tc.site, tc.mac, tc.ip)
		if loginErr(err) != "not_remembered" {
			t.Errorf("%s: %v, want not_remembered", tc.name, err)
		} else if le, _ = err.(*apiclient.LoginError); le.Status != 404 {
			t.Errorf("%s: status %d, want 404", tc.name, le.Status)
		}
	}
	// Eight days later the library (7 days) no longer knows the device; the park (30 days) still does.
	e.clock.Advance(8 * 24 * time.Hour)
	if _, err := remembered("biblio", mac1, "10.20.4.10"); loginErr(err) != "not_remembered" {
		t.Errorf("library after 8 days: %v", err)
	}
	if _, err := remembered("parco", mac1, ip1); err != nil {
		t.Errorf("park after 8 days: %v", err)
	}
	// A voucher login is not a verified identity: it is not remembered.
	_, codes, err := e.book().Create(ctx, voucher.Spec{Duration: time.Hour, Devices: 1, ValidUntil: e.clock.Now().Add(time.Hour)}, 1, "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.redeem("parco", "02:00:00:00:00:55", "10.20.0.55", codes[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := remembered("parco", "02:00:00:00:00:55", "10.20.0.55"); loginErr(err) != "not_remembered" {
		t.Errorf("after a voucher login: %v, want not_remembered", err)
	}
}

// TestNoPhoneNumberInClear runs every flow, successes and failures, against a real bbolt file and a real Redis,
// then looks for the numbers in every byte the store holds, in the log and in the metrics.
func TestNoPhoneNumberInClear(t *testing.T) {
	for _, kind := range []string{"bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, envOpts{store: kind})
			ctx := context.Background()
			numbers := []string{"3331234567", "3471112233", "3209876543"}
			if _, err := e.smsLogin("parco", mac1, ip1, "+39 "+numbers[0]); err != nil {
				t.Fatal(err)
			}
			st, err := e.gw["parco"].StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: numbers[1], Consent: true})
			if err != nil {
				t.Fatal(err)
			}
			code := e.provider.code(t, st.RequestID)
			e.gw["parco"].VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: st.RequestID, ClientMAC: mac1, ClientIP: ip1, Code: "000000"})
			// The provider refuses the third number with an error that quotes it.
			e.provider.mu.Lock()
			e.provider.reject = true
			e.provider.mu.Unlock()
			if _, err := e.gw["parco"].StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: numbers[2], Consent: true}); loginErr(err) != "provider_failed" {
				t.Fatalf("a refused number: %v", err)
			}
			if _, err := e.gw["biblio"].Remembered(ctx, apiclient.RememberedRequest{ClientMAC: mac1, ClientIP: "10.20.4.10"}); err != nil {
				t.Fatal(err)
			}
			_, vcodes, err := e.book().Create(ctx, voucher.Spec{Duration: time.Hour, Devices: 1, ValidUntil: e.clock.Now().Add(time.Hour)}, 1, "t")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.redeem("museo", mac1, "10.20.8.10", vcodes[0]); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(e.log.String(), "<number>") {
				t.Errorf("the provider's error was not logged redacted:\n%s", e.log.String())
			}

			rec := httptest.NewRecorder()
			promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			dump := e.dump()
			places := map[string]string{"store": dump, "log": e.log.String(), "metrics": rec.Body.String()}
			for where, text := range places {
				if len(text) < 100 {
					t.Fatalf("%s: only %d bytes: nothing to look at", where, len(text))
				}
				digits := strings.Map(func(r rune) rune {
					if r == ' ' || r == '.' || r == '-' {
						return -1
					}
					return r
				}, text)
				for _, n := range numbers {
					if strings.Contains(digits, n) || strings.Contains(digits, n[3:]) {
						t.Errorf("%s holds the phone number %s in clear", where, n)
					}
				}
				if strings.Contains(text, vcodes[0]) || strings.Contains(text, strings.ReplaceAll(vcodes[0], "-", "")) {
					t.Errorf("%s holds a voucher code in clear", where)
				}
				if where == "store" && strings.Contains(text, code) {
					t.Errorf("the store holds a one-time code in clear")
				}
			}
			// The pseudonym, on the other hand, is there: the dump really covers what was written.
			if !strings.Contains(dump, e.pepper.Pseudonym("phone:+39"+numbers[0])) {
				t.Error("the store dump does not contain the resident's pseudonym: the dump misses data")
			}
		})
	}
}
