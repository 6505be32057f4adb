package login_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/google/go-cmp/cmp"
)

func (e *env) book() *voucher.Book {
	return &voucher.Book{Store: e.st, Pepper: e.pepper, Now: e.clock.Now}
}

func (e *env) redeem(site, mac, ip, code string) (apiclient.Grant, error) {
	g, err := e.gw[site].RedeemVoucher(context.Background(), apiclient.VoucherRequest{ClientMAC: mac, ClientIP: ip, Code: code, Consent: true})
	if err == nil {
		if err := apiclient.VerifyGrant(g, e.ctlPub, site, e.gwID[site], mac, ip, e.clock.Now()); err != nil {
			e.t.Fatalf("voucher grant does not verify: %v", err)
		}
	}
	return g, err
}

func TestVoucherCodes(t *testing.T) {
	for range 200 {
		c, err := voucher.NewCode()
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(c, "0O1lIL") || len(c) != voucher.CodeLen {
			t.Fatalf("code %q has a look-alike or a wrong length", c)
		}
		typed := strings.ToLower(voucher.Format(c)[:3]) + " " + voucher.Format(c)[3:]
		if n, ok := voucher.Normalize(typed); !ok || n != c {
			t.Fatalf("Normalize(%q) = %q, %v; want %q", typed, n, ok, c)
		}
	}
	for _, bad := range []string{"", "ABCDE", "ABCDE-FGHJKM", "ABCDE-FGH0K", "ABCDE-FGHOK", "ABCDE-FGH1K", "ABCDÉ-FGHJK"} {
		if _, ok := voucher.Normalize(bad); ok {
			t.Errorf("Normalize(%q) accepted", bad)
		}
	}
}

func TestVoucherRedeem(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	now := e.clock.Now()
	_, codes, err := e.book().Create(ctx, voucher.Spec{Site: "biblio", Duration: 3 * time.Hour, DataBytes: 500_000_000, Devices: 2,
		ValidUntil: now.Add(30 * 24 * time.Hour)}, 3, "test desk")
	if err != nil {
		t.Fatal(err)
	}
	macs := []string{"02:00:00:00:02:01", "02:00:00:00:02:02", "02:00:00:00:02:03"}
	ips := []string{"10.20.4.11", "10.20.4.12", "10.20.4.13"}
	g, err := e.redeem("biblio", macs[0], ips[0], strings.ToLower(codes[0]))
	if err != nil {
		t.Fatalf("redeem: %v", err)
	}
	// The voucher's 3 h are shorter than the library's 4 h sessions; its data replaces the daily quota.
	if g.Method != "voucher" || time.Duration(g.Session) != 3*time.Hour || g.QuotaBytes != 500_000_000 || g.User == "" {
		t.Errorf("grant %+v", g)
	}
	var got []string
	for _, step := range []struct{ site, mac, ip, code string }{
		{"biblio", macs[0], ips[0], codes[0]},           // the same device again: fine
		{"biblio", macs[1], ips[1], codes[0]},           // a second device: fine (devices: 2)
		{"biblio", macs[2], ips[2], codes[0]},           // a third: used
		{"parco", macs[2], "10.20.0.13", codes[1]},      // another site's voucher
		{"museo", macs[2], "10.20.8.13", "ZZZZZ-ZZZZZ"}, // no such voucher
	} {
		_, err := e.redeem(step.site, step.mac, step.ip, step.code)
		got = append(got, loginErr(err))
	}
	if d := cmp.Diff([]string{"", "", "voucher_used", "bad_voucher", "bad_voucher"}, got); d != "" {
		t.Errorf("answers (-want +got):\n%s", d)
	}
	// Time counts from the first use: an hour later the grant is for the two hours left; after 3 h it is used up.
	e.clock.Advance(time.Hour)
	g, err = e.redeem("biblio", macs[0], ips[0], codes[0])
	if err != nil || time.Duration(g.Session).Round(time.Minute) != 2*time.Hour {
		t.Errorf("an hour later: %v, session %s", err, time.Duration(g.Session))
	}
	e.clock.Advance(2 * time.Hour)
	if _, err := e.redeem("biblio", macs[0], ips[0], codes[0]); loginErr(err) != "voucher_used" {
		t.Errorf("after its duration: %v, want voucher_used", err)
	}
	// A voucher never used is void after its validity.
	e.clock.Advance(31 * 24 * time.Hour)
	if _, err := e.redeem("biblio", macs[0], ips[0], codes[2]); loginErr(err) != "bad_voucher" {
		t.Errorf("after its validity: %v, want bad_voucher", err)
	}
	// Without consent nothing is redeemed.
	_, err = e.gw["biblio"].RedeemVoucher(ctx, apiclient.VoucherRequest{ClientMAC: macs[0], ClientIP: ips[0], Code: codes[1]})
	if loginErr(err) != "no_consent" {
		t.Errorf("without consent: %v", err)
	}
}

func TestVoucherTownWide(t *testing.T) {
	e := newEnv(t, envOpts{})
	_, codes, err := e.book().Create(context.Background(), voucher.Spec{Duration: time.Hour, Devices: 1,
		ValidUntil: e.clock.Now().Add(24 * time.Hour)}, 1, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.redeem("museo", mac1, "10.20.8.10", codes[0]); err != nil {
		t.Fatalf("at the museum: %v", err)
	}
	if _, err := e.redeem("parco", mac1, ip1, codes[0]); err != nil {
		t.Fatalf("the same device in the park: %v", err)
	}
}

func TestVoucherGuessing(t *testing.T) {
	e := newEnv(t, envOpts{})
	_, codes, err := e.book().Create(context.Background(), voucher.Spec{Site: "museo", Duration: time.Hour, Devices: 1,
		ValidUntil: e.clock.Now().Add(24 * time.Hour)}, 1, "test")
	if err != nil {
		t.Fatal(err)
	}
	lim := voucher.DefaultLimits
	// One device: PerMAC tries, then rate_limited even with the right code.
	var got []string
	for i := range lim.PerMAC + 1 {
		_, err := e.redeem("museo", mac1, "10.20.8.10", fmt.Sprintf("AAAAA-AAA%02d", 22+i%7*11))
		got = append(got, loginErr(err))
	}
	if got[lim.PerMAC-1] != "bad_voucher" || got[lim.PerMAC] != "rate_limited" {
		t.Errorf("answers %v: want bad_voucher up to try %d, then rate_limited", got, lim.PerMAC)
	}
	if _, err := e.redeem("museo", mac1, "10.20.8.10", codes[0]); loginErr(err) != "rate_limited" {
		t.Errorf("the right code from a rate-limited device: %v", err)
	}
	// Many devices (a MAC-randomising attacker): the site stops after SiteFailures wrong codes in all.
	refusedAt := -1
	for i := range 3 * lim.SiteFailures {
		_, err := e.redeem("museo", fmt.Sprintf("02:00:00:00:03:%02x", i), fmt.Sprintf("10.20.9.%d", i+1), "BBBBB-BBBBB")
		if loginErr(err) == "rate_limited" {
			refusedAt = i
			break
		}
	}
	// The first device's PerMAC wrong tries counted for the site too.
	if want := lim.SiteFailures - lim.PerMAC; refusedAt != want {
		t.Errorf("site refused guesses from try %d, want %d", refusedAt, want)
	}
	if !strings.Contains(e.log.String(), "voucher guessing limit reached") {
		t.Error("the guessing limit is not logged")
	}
	// Other sites are not affected.
	if _, err := e.redeem("parco", "02:00:00:00:04:01", ip1, "CCCCC-CCCCC"); loginErr(err) != "bad_voucher" {
		t.Errorf("another site: %v", err)
	}
}

func TestVoucherSheet(t *testing.T) {
	e := newEnv(t, envOpts{})
	b, codes, err := e.book().Create(context.Background(), voucher.Spec{Site: "museo", Duration: 24 * time.Hour, Devices: 2,
		DataBytes: 2_000_000_000, ValidUntil: e.clock.Now().Add(7 * 24 * time.Hour)}, 4, "test")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := voucher.WriteSheet(&buf, voucher.SheetInfo{Town: "Comune di Prova", Where: "Museo", Batch: b, Portal: "http://10.20.8.1"}, codes); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	for _, c := range codes {
		if !strings.Contains(html, ">"+c+"<") {
			t.Errorf("code %s not on the sheet", c)
		}
	}
	if n := strings.Count(html, `src="data:image/png;base64,`); n != len(codes) {
		t.Errorf("%d QR images, want %d", n, len(codes))
	}
	if !strings.Contains(html, "Accesso per 1 giorno dal primo uso, 2 dispositivi, 2 GB") {
		t.Errorf("the sheet does not state the vouchers' terms:\n%s", html[strings.Index(html, "Accesso"):][:120])
	}
	if got, want := voucher.PortalURL("http://10.20.8.1", codes[0]), "http://10.20.8.1/portal/?voucher="+codes[0]; got != want {
		t.Errorf("PortalURL = %q, want %q", got, want)
	}
}
