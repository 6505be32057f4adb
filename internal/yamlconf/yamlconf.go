// Package yamlconf provides what every civicwifi configuration file needs
// from YAML: strict decoding that reports every unknown key with its place
// and the closest valid key, values that remember their file:line:col, and an
// error list that reports every problem at once, Caddy/CoreDNS style:
//
//	portal.yaml:14:5: limits.down: "5 Mbps" is not a rate (try 5mbit)
package yamlconf

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Pos is a place in a file.
type Pos struct {
	Line, Col int
}

// Value is a configuration value that remembers where it was written.
type Value[T any] struct {
	V   T
	Pos Pos
	Set bool
}

// UnmarshalYAML records the node's position and decodes the value.
func (v *Value[T]) UnmarshalYAML(n *yaml.Node) error {
	v.Pos = Pos{n.Line, n.Column}
	v.Set = true
	return n.Decode(&v.V)
}

// JSONSchemaAlias tells JSON Schema generators that reflect Go types
// (github.com/invopop/jsonschema) to describe a Value[T] as a plain T, the
// way it is written in the file.
func (Value[T]) JSONSchemaAlias() any {
	var zero T
	return zero
}

// Problem is one error in a file, with its place.
type Problem struct {
	File string
	Pos  Pos
	Msg  string
}

func (p Problem) Error() string {
	if p.Pos.Line == 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Pos.Line, p.Pos.Col, p.Msg)
}

// Problems is every error found in a file. It is an error when non-empty.
type Problems struct {
	File string
	List []Problem
	// TypeErrors counts the values Decode could not store (a list where a
	// mapping belongs, text where a number does): the decoded struct then
	// lacks them, so checks that relate values to each other would report
	// consequences rather than mistakes.
	TypeErrors int
}

// Addf records a problem at pos.
func (ps *Problems) Addf(pos Pos, format string, args ...any) {
	ps.List = append(ps.List, Problem{File: ps.File, Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// Err returns nil when there are no problems, else the problems sorted by place.
func (ps *Problems) Err() error {
	if len(ps.List) == 0 {
		return nil
	}
	sort.SliceStable(ps.List, func(i, j int) bool {
		a, b := ps.List[i].Pos, ps.List[j].Pos
		return a.Line < b.Line || (a.Line == b.Line && a.Col < b.Col)
	})
	return ps
}

func (ps *Problems) Error() string {
	lines := make([]string, len(ps.List))
	for i, p := range ps.List {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each Problem.
func (ps *Problems) Unwrap() []error {
	errs := make([]error, len(ps.List))
	for i := range ps.List {
		errs[i] = ps.List[i]
	}
	return errs
}

// Decode parses data strictly into out (a pointer to a struct with yaml tags).
// Unknown keys, wrong types and syntax errors are all reported with their
// place; the caller then validates values and adds its own problems. It
// returns false when the file could not be read as YAML at all (then there is
// nothing to validate).
func Decode(file string, data []byte, out any, ps *Problems) bool {
	ps.File = file
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		ps.Addf(Pos{yamlErrLine(err), 1}, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		return false
	}
	if len(root.Content) == 0 {
		ps.Addf(Pos{}, "file is empty")
		return false
	}
	doc := root.Content[0]
	checkKeys(doc, reflect.TypeOf(out).Elem(), "", ps)
	if err := doc.Decode(out); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, m := range te.Errors {
				ps.Addf(Pos{yamlErrLine(errors.New(m)), 1}, "%s", cleanTypeError(m))
			}
			ps.TypeErrors += len(te.Errors)
			return true
		}
		ps.Addf(Pos{}, "%v", err)
		return false
	}
	return true
}

// checkKeys walks a mapping node against a struct type, reporting unknown
// keys with the closest valid key (yaml itself reports duplicate keys).
func checkKeys(n *yaml.Node, t reflect.Type, path string, ps *Problems) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isValue(t) {
		t = t.Field(0).Type // Value[T].V
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return
			}
			ps.Addf(Pos{n.Line, n.Column}, "%s: expected a mapping of keys", orTop(path))
			return
		}
		fields := map[string]reflect.Type{}
		var names []string
		structFields(t, fields, &names)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				hint := ""
				if c := closest(k.Value, names); c != "" {
					hint = fmt.Sprintf(" (did you mean %q?)", c)
				}
				ps.Addf(Pos{k.Line, k.Column}, "%s: unknown key %q%s", orTop(path), k.Value, hint)
				continue
			}
			checkKeys(v, ft, join(path, k.Value), ps)
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for i, c := range n.Content {
				checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), ps)
			}
		}
	}
}

// structFields collects a struct's yaml keys, including those of fields
// tagged `yaml:",inline"` (as yaml itself decodes them).
func structFields(t reflect.Type, fields map[string]reflect.Type, names *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" && opts == "inline" && f.Type.Kind() == reflect.Struct {
			structFields(f.Type, fields, names)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f.Type
		*names = append(*names, name)
	}
}

func isValue(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t.NumField() == 3 && t.Field(0).Name == "V" && t.Field(1).Type == reflect.TypeOf(Pos{})
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

func yamlErrLine(err error) int {
	var line int
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		fmt.Sscanf(s[i:], "line %d", &line)
	}
	return line
}

func cleanTypeError(m string) string {
	// "line 3: cannot unmarshal !!str `abc` into uint16" -> "cannot use "abc" here: expected a number"
	if _, rest, ok := strings.Cut(m, ": "); ok {
		m = rest
	}
	m = strings.Replace(m, "cannot unmarshal", "cannot use", 1)
	for _, r := range []struct{ from, to string }{
		{"!!str", "text"}, {"!!int", "number"}, {"!!seq", "a list"}, {"!!map", "a mapping"}, {"!!bool", "true/false"},
		{"into uint16", "as a port number"}, {"into int", "as a number"}, {"into []", "as a list of "},
	} {
		m = strings.ReplaceAll(m, r.from, r.to)
	}
	return m
}

// Closest returns the candidate nearest to s (within edit distance 2, or a
// prefix match), or "" when none is near: the hint of "did you mean ...?".
// Candidates are lower case; s is compared in lower case.
func Closest(s string, candidates []string) string { return closest(s, candidates) }

// closest returns the candidate within edit distance 2 (or a prefix match) of s.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		d := levenshtein(strings.ToLower(s), c)
		if d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		for _, c := range candidates {
			if strings.HasPrefix(c, strings.ToLower(s)) || strings.HasPrefix(strings.ToLower(s), c) {
				return c
			}
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
