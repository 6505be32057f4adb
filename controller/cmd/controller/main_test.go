package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
)

var update = flag.Bool("update", false, "rewrite golden files")

const testdata = "../../internal/sites/testdata/"

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), &env{stdout: &o, stderr: &e}, args)
	return code, o.String(), e.String()
}

func TestValidate(t *testing.T) {
	code, out, errs := runCmd("validate", "../../../sites.yaml")
	if code != 0 || errs != "" || out != "../../../sites.yaml: ok: 11 sites, 3 policies, 12 gateways, 16 access points\n" {
		t.Errorf("valid file: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	bad := filepath.Join(t.TempDir(), "sites.yaml")
	b, err := os.ReadFile(testdata + "base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("down: 5mbit"), []byte("down: 5 Mbps"), 1)
	b = bytes.Replace(b, []byte("kind: park"), []byte("kind: parc"), 1)
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCmd("validate", bad)
	want := bad + `:9:11: policy "parks": down: "5 Mbps" is not a rate (try 5mbit)` + "\n" +
		bad + `:18:11: site "parco": kind: "parc" is not a kind of site (did you mean "park"?)` + "\n"
	if code != 1 || out != "" || errs != want {
		t.Errorf("bad file: exit %d, stdout %q, stderr\n%s\nwant\n%s", code, out, errs, want)
	}
}

func TestPlanGolden(t *testing.T) {
	code, out, errs := runCmd("plan", testdata+"new.yaml", "--against", testdata+"old.yaml")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if *update {
		if err := os.WriteFile("testdata/plan.golden", []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/plan.golden")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), out); diff != "" {
		t.Errorf("plan output (-want +got)\n%s", diff)
	}
	if !strings.HasSuffix(out, "Plan: 4 to add, 6 to change, 2 to remove.\n") {
		t.Errorf("plan summary: %q", out[strings.LastIndex(out[:len(out)-1], "\n")+1:])
	}
}

func TestSchemaCommand(t *testing.T) {
	code, out, _ := runCmd("schema")
	want, err := sites.Schema()
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || out != string(want) {
		t.Errorf("exit %d; stdout is not sites.Schema()", code)
	}
	file := filepath.Join(t.TempDir(), "s.json")
	if code, _, errs := runCmd("schema", "-o", file); code != 0 {
		t.Fatalf("schema -o: exit %d: %s", code, errs)
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, want) {
		t.Error("schema -o wrote something else")
	}
}

func TestUsageAndErrors(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		stderrHead string
	}{
		{nil, 2, "usage: controller <command> [arguments]\n"},
		{[]string{"frobnicate"}, 2, "controller: unknown command \"frobnicate\"\n"},
		{[]string{"validate"}, 2, "usage: controller validate sites.yaml\n"},
		{[]string{"plan", testdata + "new.yaml", "-config", testdata + "missing.yaml"}, 1, "reading controller config: open " + testdata + "missing.yaml: no such file or directory\n"},
		{[]string{"plan", testdata + "new.yaml", "--against", testdata + "missing.yaml"}, 1, "reading sites file: open " + testdata + "missing.yaml: no such file or directory\n"},
		{[]string{"schema", "extra"}, 2, "usage: controller schema [-o file]\n"},
	} {
		code, _, errs := runCmd(tc.args...)
		if code != tc.code || !strings.HasPrefix(errs, tc.stderrHead) {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q...", tc.args, code, errs, tc.code, tc.stderrHead)
		}
	}
}
