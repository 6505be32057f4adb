package sites

import (
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func load(t *testing.T, path string) *Config {
	t.Helper()
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDiff(t *testing.T) {
	old, new := load(t, "testdata/old.yaml"), load(t, "testdata/new.yaml")
	changes := Diff(old, new)

	// The plan as an operator reads it.
	got := RenderPlan(changes)
	if *update {
		if err := os.WriteFile("testdata/plan.golden", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(string(mustRead(t, "testdata/plan.golden")), got); diff != "" {
		t.Errorf("plan (-want +got)\n%s", diff)
	}

	// And as the controller will use it: what changed, where.
	byName := map[string]Change{}
	for _, c := range changes {
		byName[string(c.Action)+c.Kind+" "+c.ID] = c
	}
	if diff := cmp.Diff(Change{Action: Update, Kind: "site", ID: "parco", Fields: []FieldChange{
		{"name", `"Parco"`, `"Parco Pertini"`},
		{"ssid", `"Prova WiFi"`, `"Prova Free WiFi"`},
		{"effective.down", "5mbit", "2mbit"},
	}}, byName["~site parco"]); diff != "" {
		t.Errorf("site parco (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff(Change{Action: Update, Kind: "gateway", ID: "piazza-gw1", Site: "piazza", Fields: []FieldChange{
		{"credential", "file:/etc/civicwifi/piazza-gw1.pub", "env:GW_PIAZZA"},
	}}, byName["~gateway piazza-gw1"]); diff != "" {
		t.Errorf("gateway (-want +got)\n%s", diff)
	}
	for _, k := range []string{"-site museo", "-gateway museo-gw1", "+site biblioteca", "+policy culture", "+access_point 02:00:00:00:00:03", "~policy parks", "~town "} {
		if _, ok := byName[k]; !ok {
			t.Errorf("no change %q", k)
		}
	}
	if len(changes) != 12 {
		t.Errorf("%d changes, want 12", len(changes))
	}
}

func TestDiffEdges(t *testing.T) {
	c := load(t, "../../../sites.yaml")
	if got := Diff(c, load(t, "../../../sites.yaml")); len(got) != 0 {
		t.Errorf("a file against itself: %v", got)
	}
	if got := RenderPlan(nil); got != "No changes.\n" {
		t.Errorf("no changes rendered as %q", got)
	}
	adds := map[string]int{}
	for _, ch := range Diff(nil, c) {
		if ch.Action != Add {
			t.Errorf("from nothing: %s %s %s", ch.Action, ch.Kind, ch.ID)
		}
		adds[ch.Kind]++
	}
	if diff := cmp.Diff(map[string]int{"town": 1, "policy": 3, "site": 11, "gateway": 12, "access_point": 16}, adds); diff != "" {
		t.Errorf("from nothing (-want +got)\n%s", diff)
	}
	for _, ch := range Diff(c, nil) {
		if ch.Action != Remove {
			t.Errorf("to nothing: %s %s %s", ch.Action, ch.Kind, ch.ID)
		}
	}
}

func TestSecretRef(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/key.pub", []byte("ed25519-public-key\n"), 0o600)
	t.Setenv("CW_TEST_SECRET", " token ")
	for _, tc := range []struct {
		in, read, err string
	}{
		{"env:CW_TEST_SECRET", "token", ""},
		{"file:" + dir + "/key.pub", "ed25519-public-key", ""},
		{"env:CW_TEST_UNSET", "", "reading secret env:CW_TEST_UNSET: the variable is not set"},
		{"env:9LIVES", "", "env: wants a variable name (letters, digits and _), e.g. env:CW_GW_PERTINI_KEY"},
		{"file:/etc/../etc/x", "", "file: wants a clean absolute path, e.g. file:/etc/civicwifi/gateways/pertini-gw1.pub"},
		{"-----BEGIN OPENSSH PRIVATE KEY-----", "", errInlineSecret.Error()},
		{"hunter2", "", "is not a reference to a secret (write env:NAME or file:/absolute/path)"},
		{"/etc/civicwifi/gateways/pertini-gw1.pub", "", "is a path without its source: write file:/etc/civicwifi/gateways/pertini-gw1.pub"},
		{"CW_GW_PERTINI1_KEY", "", "is a variable name without its source: write env:CW_GW_PERTINI1_KEY"},
		{"${CW_GW_KEY}", "", "is a variable name without its source: write env:CW_GW_KEY"},
		{"q9X2vTt7LmZ0pR4sW8yB1cN6", "", errInlineSecret.Error()},
		{"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "", errInlineSecret.Error()},
		{"AAAAC3NzaC1lZDI1NTE5AAAAIDu8p0vF1n3x9mN2a7Kq", "", errInlineSecret.Error()},
	} {
		ref, err := ParseSecretRef(tc.in)
		var got []byte
		if err == nil {
			got, err = ref.Read()
		}
		if (err != nil && err.Error() != tc.err) || (err == nil && tc.err != "") || string(got) != tc.read {
			t.Errorf("%q: read %q, error %v; want %q, %q", tc.in, got, err, tc.read, tc.err)
		}
	}
}

func TestHours(t *testing.T) {
	var h Hours
	for _, l := range []string{"mon-fri 08:00-12:00,14:00-18:00", "fri 11:00-15:00", "sat,sun 09:00-24:00", "fri-mon 23:00-24:00"} {
		if err := addHoursLine(&h, l); err != nil {
			t.Fatal(err)
		}
	}
	want := "mon 08:00-12:00,14:00-18:00,23:00-24:00; tue-thu 08:00-12:00,14:00-18:00; fri 08:00-18:00,23:00-24:00; sat-sun 09:00-24:00"
	if got := h.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	rome := mustLoc("Europe/Rome")
	for _, tc := range []struct {
		at   string
		open bool
	}{
		{"2026-11-27T07:59:00Z", true}, // friday 08:59 in Rome
		{"2026-11-27T06:59:00Z", false},
		{"2026-11-23T11:30:00Z", false}, // monday 12:30
		{"2026-11-29T22:59:00Z", true},  // sunday 23:59
		{"2026-11-24T22:30:00Z", false}, // tuesday 23:30
	} {
		at, _ := time.Parse(time.RFC3339, tc.at)
		if got := h.OpenAt(at, rome); got != tc.open {
			t.Errorf("OpenAt(%s) = %v, want %v", tc.at, got, tc.open)
		}
	}
	if !(Hours{}).OpenAt(time.Now(), rome) || (Hours{}).String() != "always" {
		t.Error("zero Hours is not always open")
	}
}
