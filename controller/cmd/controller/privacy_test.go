package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
)

// A resident asks the town for their data, then for its erasure: the
// operator gives the phone number (or fiscal code) as the resident says it;
// the controller finds the pseudonym with the pepper.
func TestPrivacyExportErase(t *testing.T) {
	dir := t.TempDir()
	pepperFile := filepath.Join(dir, "pepper")
	if err := os.WriteFile(pepperFile, []byte("0123456789abcdef0123456789abcdef-pepper"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := newLab(t, "bolt:state/controller.db", "login: {pepper_file: "+pepperFile+"}\n")
	p, err := pepper.Load(pepperFile)
	if err != nil {
		t.Fatal(err)
	}
	anna, other := p.Pseudonym("phone:+393331234567"), p.Pseudonym("spid:TINIT-RSSMRA80A01H501U")
	if err := os.MkdirAll(filepath.Join(l.dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := boltstore.Open(filepath.Join(l.dir, "state", "controller.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	for i, s := range []struct{ id, user, mac string }{{"s1", anna, "02:00:00:00:00:01"}, {"s2", anna, "02:00:00:00:00:02"}, {"s3", other, "02:00:00:00:00:03"}} {
		if _, err := st.RecordEvent(ctx, store.SessionEvent{ID: s.id + "-start", Kind: store.EventStart, SessionID: s.id, GatewayID: "parco-gw1",
			SiteID: "parco", ClientMAC: s.mac, UserID: s.user, Method: "sms", Start: at, At: at.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		rec, _ := json.Marshal(map[string]any{"user": s.user, "method": "sms", "site": "parco", "at": at})
		if err := st.Put(ctx, "remember:"+s.mac, rec, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	code, out, errs := runCmd("privacy", "export", "-config", l.configPath, "-phone", "333 123 4567", "-actor", "anna.it")
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, errs)
	}
	var got privacyExport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("export output %q: %v", out, err)
	}
	if got.Pseudonym != anna || len(got.Sessions) != 2 || len(got.Devices) != 2 {
		t.Errorf("export = %+v, want anna's 2 sessions and 2 devices", got)
	}
	if strings.Contains(out, "3331234567") {
		t.Errorf("the export repeats the phone number:\n%s", out)
	}
	if code, out, errs := runCmd("privacy", "erase", "-config", l.configPath, "-phone", "+39 333 1234567", "-actor", "anna.it"); code != 0 ||
		!strings.Contains(out, "erased 2 sessions and 2 remembered devices") {
		t.Fatalf("erase: exit %d, %q %s", code, out, errs)
	}
	// Anna is gone; the other resident is untouched; both requests are audited.
	st, err = boltstore.Open(filepath.Join(l.dir, "state", "controller.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ss, _ := st.UserSessions(ctx, anna); len(ss) != 0 {
		t.Errorf("after erase anna has %d sessions", len(ss))
	}
	if _, err := st.Get(ctx, "remember:02:00:00:00:00:01"); err == nil {
		t.Error("anna's device is still remembered")
	}
	if ss, _ := st.UserSessions(ctx, other); len(ss) != 1 {
		t.Errorf("the other resident has %d sessions, want 1", len(ss))
	}
	if _, err := st.Get(ctx, "remember:02:00:00:00:00:03"); err != nil {
		t.Errorf("the other resident's device was forgotten: %v", err)
	}
	entries, err := st.ListAudit(ctx, time.Now().Add(-time.Minute), time.Now().Add(time.Minute), 10)
	actions := map[string]string{}
	for _, a := range entries {
		actions[a.Action] = a.Actor
	}
	if err != nil || len(entries) != 2 || actions["privacy.export"] != "anna.it" || actions["privacy.erase"] != "anna.it" {
		t.Errorf("audit = %+v, %v", entries, err)
	}
	for _, a := range entries {
		if strings.Contains(a.Detail+a.Target, "333") {
			t.Errorf("the audit log holds the number: %+v", a)
		}
	}
	// Bad input changes nothing and says what is wrong.
	if code, _, errs := runCmd("privacy", "erase", "-config", l.configPath, "-phone", "not a number"); code != 1 || !strings.Contains(errs, "-phone: not a valid phone number") {
		t.Errorf("bad number: exit %d, %q", code, errs)
	}
	if code, _, _ := runCmd("privacy", "erase", "-config", l.configPath); code != 2 {
		t.Errorf("no subject: exit %d, want the usage", code)
	}
}
