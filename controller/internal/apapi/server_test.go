package apapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEncodeText(t *testing.T) {
	c := parkConfig()
	c.SSID = `Parco "Pertini" = $x`
	c.Version = ConfigVersion(c)
	got := CheckinResponse{Config: c, IntervalSeconds: 60, RollbackAfterSeconds: 300}.EncodeText()
	want := "version=" + c.Version + "\ninterval=60\nrollback_after=300\n" +
		"ssid=Parco \"Pertini\" = $x\nnetwork=cw\nbridge=br-cw\nvlan=20\n" +
		"radio=radio0 6 20\nradio=radio1 36 0\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("EncodeText (-want +got):\n%s", diff)
	}
	if got, want := (ProvisionResponse{Secret: "ab12", IntervalSeconds: 30}).EncodeText(), "secret=ab12\ninterval=30\n"; got != want {
		t.Errorf("provision EncodeText = %q, want %q", got, want)
	}
}

func TestConfigVersion(t *testing.T) {
	a, b := parkConfig(), parkConfig()
	b.Version = "ignored"
	if ConfigVersion(a) != ConfigVersion(b) {
		t.Error("Version field changes the version")
	}
	for name, edit := range map[string]func(*Config){
		"ssid":    func(c *Config) { c.SSID += "!" },
		"channel": func(c *Config) { c.Radios[0].Channel = "11" },
		"power":   func(c *Config) { c.Radios[1].TxPowerDBm = 17 },
		"vlan":    func(c *Config) { c.VLAN = 21 },
		"bridge":  func(c *Config) { c.Bridge = "br-x" },
	} {
		c := parkConfig()
		edit(&c)
		if ConfigVersion(c) == ConfigVersion(a) {
			t.Errorf("changing %s keeps the version", name)
		}
	}
	if v := ConfigVersion(a); len(v) != 16 || strings.Trim(v, "0123456789abcdef") != "" {
		t.Errorf("version %q: want 16 hex digits", v)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"auto channel, untagged", func(c *Config) { c.Radios[0].Channel = "auto"; c.VLAN = 0 }, ""},
		{"empty ssid", func(c *Config) { c.SSID = "" }, `ssid "": want 1 to 32 bytes`},
		{"long ssid", func(c *Config) { c.SSID = strings.Repeat("x", 33) }, "want 1 to 32 bytes"},
		{"newline in ssid", func(c *Config) { c.SSID = "a\nversion=0" }, "without control characters"},
		{"no radios", func(c *Config) { c.Radios = nil }, "no radios"},
		{"bad device", func(c *Config) { c.Radios[0].Device = "radio0 6" }, `radios[0].device "radio0 6"`},
		{"twice", func(c *Config) { c.Radios[1].Device = "radio0" }, `radios[1].device "radio0": listed twice`},
		{"bad channel", func(c *Config) { c.Radios[1].Channel = "36; reboot" }, `radios[1].channel "36; reboot"`},
		{"power", func(c *Config) { c.Radios[0].TxPowerDBm = 31 }, "radios[0].txpower_dbm 31"},
		{"network", func(c *Config) { c.Network = "CW" }, `network "CW"`},
		{"bridge", func(c *Config) { c.Bridge = "br cw" }, `bridge "br cw"`},
		{"vlan", func(c *Config) { c.VLAN = 4095 }, "vlan 4095"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parkConfig()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestRecordOffline(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		r    Record
		now  time.Time
		want bool
	}{
		{"just checked in", Record{EnrolledAt: t0, LastCheckin: t0}, t0, false},
		{"at the limit", Record{EnrolledAt: t0, LastCheckin: t0}, t0.Add(90 * time.Second), false},
		{"past the limit", Record{EnrolledAt: t0, LastCheckin: t0}, t0.Add(91 * time.Second), true},
		{"never checked in, new", Record{EnrolledAt: t0}, t0.Add(time.Minute), false},
		{"never checked in, old", Record{EnrolledAt: t0}, t0.Add(time.Hour), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Offline(tc.now, 90*time.Second); got != tc.want {
				t.Errorf("Offline = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestHTTP drives the handler with hand-made requests: statuses, exact
// answers and what a refused request leaves behind.
func TestHTTP(t *testing.T) {
	c := &controller{sites: &sites{m: map[string]Config{}}, reg: NewMemRegistry(), clock: &clock{t: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)}, log: &logBuf{}}
	srv, err := New(Options{Desired: c.sites, Registry: c.reg, Enroll: NewEnrollTokens(enrollToken), Now: c.clock.Now, RollbackAfter: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	const macA, macB = "02:00:00:00:0a:01", "02:00:00:00:0b:02"
	c.sites.m[macA], c.sites.m[macB] = parkConfig(), parkConfig()
	broken := parkConfig()
	broken.SSID = "bad\nssid"
	c.sites.m["02:00:00:00:0e:0e"] = broken

	do := func(path, token, accept, ctype, body string) (int, string, http.Header) {
		r := httptest.NewRequest("POST", path, strings.NewReader(body))
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		r.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, string(b), w.Result().Header
	}
	enroll := func(mac string) string {
		code, body, _ := do(PathProvision, enrollToken, "", "application/json", `{"mac":"`+strings.ToUpper(mac)+`","model":"m","firmware":"f"}`)
		var pr ProvisionResponse
		if code != 200 || json.Unmarshal([]byte(body), &pr) != nil || len(pr.Secret) != 64 || pr.IntervalSeconds != 60 {
			t.Fatalf("enrolling %s: %d %s", mac, code, body)
		}
		return pr.Secret
	}
	secA, secB := enroll(macA), enroll(macB)
	secE := enroll("02:00:00:00:0e:0e")

	checkin := `{"mac":"` + macA + `","firmware":"OpenWrt","uptime_s":5,"clients":0,"radios":[],"applied_version":""}`
	v := ConfigVersion(parkConfig())
	for _, tc := range []struct {
		name, path, token, accept, ctype, body string
		wantCode                               int
		wantBody                               string
	}{
		{"check-in, JSON", PathCheckin, secA, "", "application/json", checkin, 200,
			`{"config":{"version":"` + v + `","ssid":"Voghera Free WiFi","radios":[{"device":"radio0","channel":"6","txpower_dbm":20},{"device":"radio1","channel":"36","txpower_dbm":0}],"network":"cw","bridge":"br-cw","vlan":20},"interval_s":60,"rollback_after_s":120}` + "\n"},
		{"check-in, text", PathCheckin, secA, "text/plain", "application/json", checkin, 200,
			"version=" + v + "\ninterval=60\nrollback_after=120\nssid=Voghera Free WiFi\nnetwork=cw\nbridge=br-cw\nvlan=20\nradio=radio0 6 20\nradio=radio1 36 0\n"},
		{"no token", PathCheckin, "", "text/plain", "application/json", checkin, 401, "error=missing bearer token\n"},
		{"other AP's token", PathCheckin, secB, "text/plain", "application/json", checkin, 401, "error=token refused for " + macA + "\n"},
		{"made-up token", PathCheckin, strings.Repeat("0", 64), "", "application/json", checkin, 401, `{"error":"token refused for ` + macA + `"}` + "\n"},
		{"enrollment token on check-in", PathCheckin, enrollToken, "text/plain", "application/json", checkin, 401, "error=token refused for " + macA + "\n"},
		{"unknown AP", PathCheckin, secA, "text/plain", "application/json", strings.Replace(checkin, macA, "02:00:00:00:99:99", 1), 401, "error=token refused for 02:00:00:00:99:99\n"},
		{"form body", PathCheckin, secA, "text/plain", "application/x-www-form-urlencoded", checkin, 415, "error=content type \"application/x-www-form-urlencoded\": want application/json\n"},
		{"unknown field", PathCheckin, secA, "text/plain", "application/json", `{"mac":"` + macA + `","admin":true}`, 400, "error=body: json: unknown field \"admin\"\n"},
		{"syntax", PathCheckin, secA, "text/plain", "application/json", `{"mac":`, 400, "error=body: unexpected EOF\n"},
		{"two values", PathCheckin, secA, "text/plain", "application/json", checkin + checkin, 400, "error=body: data after the JSON value\n"},
		{"bad mac", PathCheckin, secA, "text/plain", "application/json", `{"mac":"02:00:00"}`, 400, "error=mac \"02:00:00\": want six octets such as 02:00:00:00:00:01\n"},
		{"too many radios", PathCheckin, secA, "text/plain", "application/json", `{"mac":"` + macA + `","radios":[` + strings.Repeat(`{},`, 16) + `{}]}`, 400, "error=radios: 17 reported, at most 16\n"},
		{"broken desired config", PathCheckin, secE, "text/plain", "application/json", strings.Replace(checkin, macA, "02:00:00:00:0e:0e", 1), 500, "error=internal error\n"},
		{"enroll twice", PathProvision, enrollToken, "text/plain", "application/json", `{"mac":"` + macA + `"}`, 409, "error=" + macA + " is already enrolled; an operator must forget it before it enrolls again\n"},
		{"enroll, wrong token", PathProvision, "guess", "text/plain", "application/json", `{"mac":"02:00:00:00:0c:03"}`, 401, "error=enrollment token refused for 02:00:00:00:0c:03\n"},
		{"enroll, AP's secret", PathProvision, secA, "text/plain", "application/json", `{"mac":"02:00:00:00:0c:03"}`, 401, "error=enrollment token refused for 02:00:00:00:0c:03\n"},
		{"enroll, not in sites.yaml", PathProvision, enrollToken, "text/plain", "application/json", `{"mac":"02:00:00:00:0c:03"}`, 403, "error=02:00:00:00:0c:03 is not an access point of sites.yaml\n"},
		{"GET", PathCheckin, secA, "", "", "", 405, "Method Not Allowed\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if tc.name == "GET" {
				method = "GET"
			}
			r := httptest.NewRequest(method, tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			if tc.accept != "" {
				r.Header.Set("Accept", tc.accept)
			}
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.wantCode {
				t.Errorf("status %d, want %d", w.Code, tc.wantCode)
			}
			if diff := cmp.Diff(tc.wantBody, w.Body.String()); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if tc.wantCode == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// Only the two good check-ins touched A's record.
	rec, err := c.reg.GetAP(context.Background(), macA)
	if err != nil || rec.LastCheckin.IsZero() || rec.Firmware != "OpenWrt" {
		t.Errorf("A's record: %+v %v", rec, err)
	}
	if _, err := c.reg.GetAP(context.Background(), "02:00:00:00:0c:03"); err != ErrUnknownAP {
		t.Errorf("refused enrollment left a record (err %v)", err)
	}

	// Forget lets an AP enroll again; the old secret stops working.
	if err := srv.Forget(context.Background(), macA); err != nil {
		t.Fatal(err)
	}
	newA := enroll(macA)
	if code, _, _ := do(PathCheckin, secA, "", "application/json", checkin); code != 401 {
		t.Errorf("old secret after re-enrollment: status %d, want 401", code)
	}
	if code, _, _ := do(PathCheckin, newA, "", "application/json", checkin); code != 200 {
		t.Errorf("new secret: status %d, want 200", code)
	}
}

// FuzzCheckin: no body makes the check-in handler fail with a 5xx or
// panic, and only a well-formed report from the right AP is accepted.
func FuzzCheckin(f *testing.F) {
	f.Add(`{"mac":"02:00:00:00:0a:01","firmware":"x","uptime_s":1,"clients":2,"radios":[{"interface":"w","ssid":"s","channel":1,"txpower_dbm":2,"clients":2}],"applied_version":"v","rollback":{"version":"v","reason":"r"}}`)
	f.Add(`{"mac":"02:00:00:00:0a:01","radios":null}`)
	f.Add(`[]`)
	sites := &sites{m: map[string]Config{"02:00:00:00:0a:01": parkConfig()}}
	reg := NewMemRegistry()
	srv, err := New(Options{Desired: sites, Registry: reg, Enroll: NewEnrollTokens(enrollToken)})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	r := httptest.NewRequest("POST", PathProvision, strings.NewReader(`{"mac":"02:00:00:00:0a:01"}`))
	r.Header.Set("Authorization", "Bearer "+enrollToken)
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var pr ProvisionResponse
	if err := json.Unmarshal(w.Body.Bytes(), &pr); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", PathCheckin, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+pr.Secret)
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
		if w.Code == 200 {
			var req CheckinRequest
			if err := json.Unmarshal([]byte(body), &req); err != nil {
				t.Fatalf("accepted a body that does not parse: %q", body)
			}
			if m, _ := NormalizeMAC(req.MAC); m != "02:00:00:00:0a:01" {
				t.Fatalf("accepted a report for %q with 02:00:00:00:0a:01's token", req.MAC)
			}
		}
	})
}

// BenchmarkCheckin: one authenticated check-in through the handler (JSON
// decode, token check, desired config, version hash, record write, text
// answer), MemRegistry, no TLS.
func BenchmarkCheckin(b *testing.B) {
	const mac = "02:00:00:00:0a:01"
	s := &sites{m: map[string]Config{mac: parkConfig()}}
	srv, err := New(Options{Desired: s, Registry: NewMemRegistry(), Enroll: NewEnrollTokens(enrollToken)})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	r := httptest.NewRequest("POST", PathProvision, strings.NewReader(`{"mac":"`+mac+`"}`))
	r.Header.Set("Authorization", "Bearer "+enrollToken)
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var pr ProvisionResponse
	if err := json.Unmarshal(w.Body.Bytes(), &pr); err != nil {
		b.Fatal(err)
	}
	body := `{"mac":"` + mac + `","firmware":"OpenWrt 23.05.5","uptime_s":500,"clients":3,"radios":[{"interface":"phy0-ap0","ssid":"Voghera Free WiFi","channel":6,"txpower_dbm":20,"clients":3},{"interface":"phy1-ap0","ssid":"Voghera Free WiFi","channel":36,"txpower_dbm":20,"clients":0}],"applied_version":"0123456789abcdef"}`
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("POST", PathCheckin, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+pr.Secret)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "text/plain")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
