package sites

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	sj "github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite sites.schema.json and golden files")

const schemaFile = "../../../sites.schema.json"

// The committed sites.schema.json is what `controller schema` writes today.
func TestSchemaUpToDate(t *testing.T) {
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(schemaFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	committed, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, committed) {
		t.Errorf("sites.schema.json is stale: run `go run ./controller/cmd/controller schema -o sites.schema.json` (or this test with -update)")
	}
}

func compileSchema(t *testing.T) *sj.Schema {
	t.Helper()
	doc, err := sj.UnmarshalJSON(bytes.NewReader(mustRead(t, schemaFile)))
	if err != nil {
		t.Fatal(err)
	}
	c := sj.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatalf("compiling sites.schema.json: %v", err)
	}
	return s
}

// yamlToJSON gives the validator the file as an editor's YAML language
// server does: YAML read into JSON values.
func yamlToJSON(t *testing.T, in []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(in, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sj.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every file Parse accepts here, the schema accepts too, and it rejects the
// mistakes an editor can see from the file alone, at the right place.
func TestSchemaValidates(t *testing.T) {
	s := compileSchema(t)
	for _, p := range []string{"../../../sites.yaml", "testdata/base.yaml", "testdata/old.yaml", "testdata/new.yaml"} {
		if _, err := Load(p); err != nil {
			t.Fatalf("%s does not parse: %v", p, err)
		}
		if err := s.Validate(yamlToJSON(t, mustRead(t, p))); err != nil {
			t.Errorf("%s does not match the schema: %v", p, err)
		}
	}
	base := string(mustRead(t, "testdata/base.yaml"))
	for _, tc := range []struct {
		name, old, new string
		where          string // the instance location the schema blames
	}{
		{"unknown key", "    down: 5mbit", "    dwn: 5mbit", "/policies/0"},
		{"bad rate", "down: 5mbit", "down: 5 Mbps", "/policies/0/down"},
		{"bad duration", "session: 2h", "session: 1d", "/policies/0/session"},
		{"unknown kind", "kind: park", "kind: parc", "/sites/0/kind"},
		{"unknown login method", "methods: [click-through, sms]", "methods: [click-through, spdi]", "/policies/0/login/methods/1"},
		{"inline secret", `"env:GW_PARCO"`, `"q9X2vTt7LmZ0pR4sW8yB1cN6"`, "/sites/0/gateways/0/credential"},
		{"bad MAC", "mac: 02:00:00:00:00:02", "mac: 02:00:00:00:00", "/sites/1/access_points/0/mac"},
		{"bad hours", "mon-fri 08:00-20:00", "mon-fri 8-20", "/policies/0/hours/0"},
		{"SSID too long", "ssid: Prova WiFi", "ssid: Rete Wi-Fi libera e gratuita del Comune di Prova", "/town/ssid"},
		{"latitude out of range", "lat: 44.98", "lat: 94.98", "/sites/1/coordinates/lat"},
		{"missing gateways", "    gateways: [{id: museo-gw1, credential: \"env:GW_MUSEO\"}]\n", "", "/sites/2"},
		{"privacy both url and text", "{it: Informativa sulla privacy}", "{it: Informativa, url: \"https://comune.prova.it/privacy\"}", "/town/privacy"},
		{"privacy without Italian", "{it: Informativa sulla privacy}", "{en: Privacy notice}", "/town/privacy"},
		{"name in overrides", "    policy: parks\n    client_network: {address: 10.20.0.1/22}", "    policy: parks\n    overrides: {name: x}\n    client_network: {address: 10.20.0.1/22}", "/sites/0/overrides"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.old) {
				t.Fatalf("base has no %q", tc.old)
			}
			err := s.Validate(yamlToJSON(t, []byte(strings.Replace(base, tc.old, tc.new, 1))))
			if err == nil {
				t.Fatal("the schema accepts it")
			}
			if got := fmt.Sprintf("%#v", err); !strings.Contains(got, "'"+tc.where+"'") {
				t.Errorf("the schema does not blame %s:\n%v", tc.where, got)
			}
		})
	}
}

// Every key has a description in the schema and a line in the README.
func TestEveryKeyDocumented(t *testing.T) {
	var schema struct {
		Defs map[string]struct {
			Properties map[string]struct {
				Description string `json:"description"`
				Ref         string `json:"$ref"`
				Items       struct {
					Ref string `json:"$ref"`
				} `json:"items"`
			} `json:"properties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(mustRead(t, schemaFile), &schema); err != nil {
		t.Fatal(err)
	}
	readme := string(mustRead(t, "README.md"))
	var paths []string
	var walk func(def, prefix string)
	walk = func(def, prefix string) {
		d, ok := schema.Defs[def]
		if !ok {
			t.Fatalf("no $defs/%s", def)
		}
		for key, p := range d.Properties {
			path := prefix + key
			if p.Description == "" {
				t.Errorf("%s has no description in the schema", path)
			}
			paths = append(paths, path)
			ref := p.Ref + p.Items.Ref
			if ref != "" && key != "overrides" { // overrides: the policy's keys
				walk(strings.TrimPrefix(ref, "#/$defs/"), path+".")
			}
		}
	}
	walk("File", "")
	sort.Strings(paths)
	if len(paths) < 60 {
		t.Fatalf("only %d keys found: %v", len(paths), paths)
	}
	for _, p := range paths {
		if !strings.Contains(readme, "`"+p+"`") {
			t.Errorf("README.md does not document `%s`", p)
		}
	}
	// And the README documents no key that does not exist.
	for _, m := range regexp.MustCompile("\\| `((town|policies|sites)[a-z_.]*)`").FindAllStringSubmatch(readme, -1) {
		if !slices.Contains(paths, m[1]) {
			t.Errorf("README.md documents `%s`, which is not a key", m[1])
		}
	}
}
