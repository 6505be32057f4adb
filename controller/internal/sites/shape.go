package sites

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/civicwifi/civicwifi/internal/yamlconf"
)

// shapeProblems finds values of the wrong shape (a mapping where a list
// belongs, a list where one value does) with their exact place; yaml's own
// type errors name only the line and the Go type. A value that should be a
// mapping is counted in found but not reported: yamlconf.Decode reports it.
func shapeProblems(data []byte) (out []yamlconf.Problem, found int) {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || len(root.Content) == 0 {
		return nil, 0
	}
	walkShape(root.Content[0], reflect.TypeFor[rawFile](), "", &out, &found)
	return out, found
}

func walkShape(n *yaml.Node, t reflect.Type, path string, out *[]yamlconf.Problem, found *int) {
	if isValueType(t) {
		t = t.Field(0).Type
	}
	if n.Kind == yaml.AliasNode || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return // an alias may point at its own ancestor: never followed
	}
	what := map[yaml.Kind]string{yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list", yaml.ScalarNode: "a single value"}[n.Kind]
	add := func(want string) {
		*found++
		*out = append(*out, yamlconf.Problem{Pos: yamlconf.Pos{Line: n.Line, Col: n.Column},
			Msg: fmt.Sprintf("%s: %s belongs here, not %s", orTop(path), want, what)})
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			*found++
			return
		}
		fields := map[string]reflect.Type{}
		collectFields(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			if ft, ok := fields[n.Content[i].Value]; ok {
				walkShape(n.Content[i+1], ft, join(path, n.Content[i].Value), out, found)
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			add("a list")
			return
		}
		for i, c := range n.Content {
			walkShape(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), out, found)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			add("a single value")
		}
	}
}

// collectFields maps a struct's yaml keys to their types, inline fields
// included, as yamlconf.Decode reads them.
func collectFields(t reflect.Type, fields map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" && opts == "inline" {
			collectFields(f.Type, fields)
		} else if name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
}

func orTop(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
