package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
)

func TestVouchersCommand(t *testing.T) {
	dir := t.TempDir()
	sitesYAML, err := os.ReadFile("../../internal/login/testdata/sites.yaml")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("sites.yaml", string(sitesYAML), 0o644)
	write("pepper", "a-test-pepper-of-more-than-32-bytes-0123456789\n", 0o600)
	cfg := write("controller.yaml", "sites: sites.yaml\nsigning_key: controller.key\nstore: bolt:controller.db\nlogin:\n  pepper_file: pepper\n", 0o644)
	sheet := filepath.Join(dir, "sheet.html")

	code, out, errs := runCmd("vouchers", "-config", cfg, "-site", "biblio", "-count", "5", "-duration", "4h", "-data", "1GB", "-valid", "7d", "-out", sheet)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "5 vouchers for Biblioteca, 4h0m0s each, 2 devices") {
		t.Errorf("stdout %q", out)
	}
	html, err := os.ReadFile(sheet)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(sheet); fi.Mode().Perm() != 0o600 {
		t.Errorf("sheet mode %v, want 0600: the codes are secrets", fi.Mode().Perm())
	}
	codes := regexp.MustCompile(`class="code">([2-9A-Z]{5}-[2-9A-Z]{5})<`).FindAllStringSubmatch(string(html), -1)
	if len(codes) != 5 || strings.Count(string(html), "data:image/png;base64,") != 5 {
		t.Fatalf("sheet has %d codes and %d QR codes, want 5 each", len(codes), strings.Count(string(html), "data:image/png;base64,"))
	}
	// The sheet's codes are the store's: each redeems at the library with the batch's terms (QR codes point to
	// the site's gateway by default).
	if !strings.Contains(string(html), "http://10.20.4.1/portal/?voucher="+codes[0][1]) {
		t.Error("the sheet does not show the portal URL of the first code")
	}
	st, err := boltstore.Open(filepath.Join(dir, "controller.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := pepper.Load(filepath.Join(dir, "pepper"))
	if err != nil {
		t.Fatal(err)
	}
	book := &voucher.Book{Store: st, Pepper: p}
	r, err := book.Redeem(context.Background(), "biblio", "02:00:00:00:00:01", codes[0][1])
	if err != nil || r.DataBytes != 1_000_000_000 || r.Remaining.Hours() != 4 {
		t.Errorf("redeeming the sheet's first code: %+v %v", r, err)
	}
	if _, err := book.Redeem(context.Background(), "parco", "02:00:00:00:00:02", codes[1][1]); err == nil {
		t.Error("a library voucher redeemed in the park")
	}
	audit, err := st.ListAudit(context.Background(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour), 0)
	if err != nil || len(audit) != 1 || audit[0].Action != "voucher.create" || strings.Contains(audit[0].Detail, codes[0][1]) {
		t.Errorf("audit %+v %v: want one voucher.create without codes", audit, err)
	}
	st.Close() // the embedded store is locked while open

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no count", []string{"-site", "biblio", "-out", sheet}, 2, "usage"},
		{"site and town", []string{"-site", "biblio", "-town", "-count", "1", "-out", sheet}, 2, "usage"},
		{"unknown site", []string{"-site", "nowhere", "-count", "1", "-out", sheet}, 1, `no site "nowhere"`},
		{"too many", []string{"-site", "biblio", "-count", "10001", "-out", sheet}, 1, "count 10001"},
		{"bad validity", []string{"-site", "biblio", "-count", "1", "-valid", "soon", "-out", sheet}, 1, "-valid"},
		{"town without portal", []string{"-town", "-count", "1", "-out", sheet}, 1, "-portal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runCmd(append([]string{"vouchers", "-config", cfg}, tc.args...)...)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errs, tc.code, tc.want)
			}
		})
	}
}
