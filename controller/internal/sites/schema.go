package sites

import (
	"encoding/json"
	"reflect"
	"strings"

	"github.com/invopop/jsonschema"
)

// SchemaID is the $id of the generated JSON Schema.
const SchemaID = "https://github.com/civicwifi/civicwifi/sites.schema.json"

// Schema returns the JSON Schema (draft 2020-12) of sites.yaml, generated
// from the same Go types Parse decodes into, so the two cannot drift. The
// schema checks shapes and spellings for editors; Parse checks more (the
// values' meaning, references between policies and sites, duplicates).
func Schema() ([]byte, error) {
	r := &jsonschema.Reflector{
		FieldNameTag:               "yaml",
		RequiredFromJSONSchemaTags: true,
		Mapper:                     scalarSchema,
		Namer: func(t reflect.Type) string {
			n, ok := strings.CutPrefix(t.Name(), "raw")
			if !ok || n == "" {
				return t.Name()
			}
			return strings.ToUpper(n[:1]) + n[1:]
		},
	}
	s := r.Reflect(&rawFile{})
	s.ID = SchemaID
	s.Title = "civicwifi sites.yaml"
	s.Description = "Every free Wi-Fi hotspot of a town: the town, reusable policies, and the sites with their gateways and access points. Documented in controller/internal/sites/README.md."
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// scalarSchema describes how each kind of text value is written. Parse
// checks the same things (and more) with its own parsers.
func scalarSchema(t reflect.Type) *jsonschema.Schema {
	str := func(pattern string, examples ...any) *jsonschema.Schema {
		return &jsonschema.Schema{Type: "string", Pattern: pattern, Examples: examples}
	}
	enum := func(values ...any) *jsonschema.Schema {
		return &jsonschema.Schema{Type: "string", Enum: values}
	}
	switch t {
	case reflect.TypeFor[text](), reflect.TypeFor[tzText]():
		return &jsonschema.Schema{Type: "string"}
	case reflect.TypeFor[slugText]():
		return str(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	case reflect.TypeFor[ipaText]():
		return str(`^[a-z0-9_]{2,16}$`, "c_m109")
	case reflect.TypeFor[rateText]():
		return str(`^(0|[0-9]+(\.[0-9]+)?[kKmMgG]?[bB][iI][tT])$`, "5mbit", "500kbit")
	case reflect.TypeFor[durationText]():
		return str(`^(0|([0-9]+(\.[0-9]+)?(h|m|s|ms))+)$`, "2h", "15m", "1h30m")
	case reflect.TypeFor[bytesText]():
		return str(`^([0-9]+|[0-9]+(\.[0-9]+)?([kKmMgG][iI]?)?[bB])$`, "500MB", "2GiB")
	case reflect.TypeFor[intText]():
		return &jsonschema.Schema{Type: "integer"}
	case reflect.TypeFor[floatText]():
		return &jsonschema.Schema{Type: "number"}
	case reflect.TypeFor[hoursText]():
		return str(`^(daily|[a-z]{3}(-[a-z]{3})?(,[a-z]{3}(-[a-z]{3})?)*) [0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}(,[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2})*$`,
			"mon-fri 08:00-20:00", "sat,sun 09:00-12:30,15:00-19:00", "daily 07:00-23:00")
	case reflect.TypeFor[domainText]():
		return str(`^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}\.?$`, "comune.voghera.pv.it")
	case reflect.TypeFor[methodText]():
		return enum("click-through", "sms", "spid", "voucher")
	case reflect.TypeFor[kindText]():
		return enum("park", "library", "museum", "office", "square")
	case reflect.TypeFor[bandText]():
		return enum("2.4ghz", "5ghz", "6ghz")
	case reflect.TypeFor[macText]():
		return str(`^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$`, "02:00:5e:10:00:01")
	case reflect.TypeFor[secretText]():
		return str(`^(env:[A-Za-z_][A-Za-z0-9_]*|file:/.+)$`, "file:/etc/civicwifi/gateways/pertini-gw1.pub", "env:CW_GW_PERTINI_KEY")
	case reflect.TypeFor[urlText]():
		return &jsonschema.Schema{Type: "string", Format: "uri", Pattern: `^https://`}
	case reflect.TypeFor[emailText]():
		return &jsonschema.Schema{Type: "string", Format: "email"}
	case reflect.TypeFor[phoneText]():
		return str(`^\+[1-9][0-9 ]{5,19}$`, "+39 0383 3361")
	case reflect.TypeFor[countryText]():
		return str(`^[A-Za-z]{2}$`, "IT")
	case reflect.TypeFor[ssidText]():
		return &jsonschema.Schema{Type: "string", MinLength: ptr(uint64(1)), MaxLength: ptr(uint64(32))}
	case reflect.TypeFor[prefixText]():
		return str(`^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$`, "10.20.0.1/22")
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// JSONSchemaExtend says in the schema what Parse checks: a legal text is
// given by URL or inline with at least its Italian version, not both.
func (rawText) JSONSchemaExtend(s *jsonschema.Schema) {
	s.OneOf = []*jsonschema.Schema{{Required: []string{"url"}}, {Required: []string{"it"}}}
}
