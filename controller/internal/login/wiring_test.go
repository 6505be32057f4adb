package login_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/civicwifi/civicwifi/controller/internal/server"
)

// TestMountedByServer runs the real controller (server.New with a login block, as `controller run` does) and logs
// in with a voucher and by SMS through it, with the log provider (the code read from the controller's log).
func TestMountedByServer(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "pepper")
	if err := os.WriteFile(pf, []byte("a-test-pepper-of-more-than-32-bytes-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	gwPub, gwKey, _ := ed25519.GenerateKey(nil)
	for _, v := range []string{"GW_PARCO", "GW_BIBLIO", "GW_MUSEO"} {
		t.Setenv(v, apiclient.MarshalPublicKey(gwPub))
	}
	ctlPub, ctlKey, _ := ed25519.GenerateKey(nil)
	st, _ := openStore(t, "bolt")
	logs := &syncBuffer{}
	fc, err := server.ParseConfig(filepath.Join(dir, "controller.yaml"), []byte(baseYAML+"login:\n  pepper_file: pepper\n  sms: {provider: log}\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{SitesPath: "testdata/sites.yaml", Store: st, SigningKey: ctlKey, Login: fc.Login,
		Log: slogJSON(logs)})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Login() == nil {
		t.Fatal("server.Login() is nil with a login block")
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	c, err := apiclient.New(apiclient.Config{BaseURL: hs.URL, Site: "parco", GatewayID: "parco-gw1", Key: gwKey, ControllerKey: ctlPub})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, _ := pepper.Load(pf)
	_, codes, err := (&voucher.Book{Store: st, Pepper: p}).Create(ctx, voucher.Spec{Duration: time.Hour, Devices: 1, ValidUntil: time.Now().Add(time.Hour)}, 1, "t")
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.RedeemVoucher(ctx, apiclient.VoucherRequest{ClientMAC: mac1, ClientIP: ip1, Code: codes[0], Consent: true})
	if err != nil {
		t.Fatalf("voucher through the controller: %v", err)
	}
	if err := apiclient.VerifyGrant(g, ctlPub, "parco", "parco-gw1", mac1, ip1, time.Now()); err != nil {
		t.Fatal(err)
	}
	s, err := c.StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: "3331234567", Consent: true})
	if err != nil {
		t.Fatalf("sms start through the controller: %v", err)
	}
	fp := &fakeProvider{kind: "log", log: logs}
	if _, err := c.VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: s.RequestID, ClientMAC: mac1, ClientIP: ip1, Code: fp.code(t, s.RequestID)}); err != nil {
		t.Fatalf("sms verify through the controller: %v", err)
	}
	if !strings.Contains(logs.String(), "log provider") {
		t.Error("the log provider's warning is missing")
	}
	// The consent of both logins is in the audit log, under the residents' pseudonyms.
	audit, err := st.ListAudit(ctx, time.Now().Add(-time.Minute), time.Now().Add(time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	var consents []string
	for _, a := range audit {
		if a.Action == "login.consent" {
			consents = append(consents, a.Actor+" "+a.Target+" "+a.Detail)
		}
	}
	if len(consents) != 2 || !strings.Contains(strings.Join(consents, "\n"), "resident:"+p.Pseudonym("phone:+393331234567")+" parco sms") {
		t.Errorf("consents %q", consents)
	}
	_ = login.EnvSMSSecret
}

// TestVerifyRaceSingleUse sends the right code twice at once: exactly one grant comes back.
func TestVerifyRaceSingleUse(t *testing.T) {
	for _, kind := range []string{"bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, envOpts{store: kind})
			ctx := context.Background()
			for round := range 10 {
				st, err := e.gw["parco"].StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: ip1, Phone: mobile(round), Consent: true})
				if err != nil {
					t.Fatal(err)
				}
				code := e.provider.code(t, st.RequestID)
				var wg sync.WaitGroup
				results := make([]string, 4)
				for i := range results {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, err := e.gw["parco"].VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: st.RequestID, ClientMAC: mac1, ClientIP: ip1, Code: code})
						results[i] = loginErr(err)
					}()
				}
				wg.Wait()
				granted := 0
				for _, r := range results {
					switch r {
					case "":
						granted++
					case "expired":
					default:
						t.Errorf("round %d: %q", round, r)
					}
				}
				if granted != 1 {
					t.Fatalf("round %d: %d grants for one code (%v)", round, granted, results)
				}
			}
		})
	}
}

// TestOtherSiteRefused: a gateway cannot log a client in at another site: gwapi refuses the request (403) before
// the login handler runs, and nothing is sent.
func TestOtherSiteRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.gwKeys["parco-gw1"]
	c, err := apiclient.New(apiclient.Config{BaseURL: e.url, Site: "biblio", GatewayID: "parco-gw1", Key: key, ControllerKey: e.ctlPub})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.StartSMS(context.Background(), apiclient.SMSStartRequest{ClientMAC: mac1, ClientIP: "10.20.4.9", Phone: "3331234567", Consent: true})
	var se *apiclient.StatusError
	if !errors.As(err, &se) || se.Code != 403 {
		t.Fatalf("another site's login: %v, want 403", err)
	}
	if sent, _ := e.provider.count(); sent != 0 {
		t.Errorf("%d SMS sent", sent)
	}
}
