package yamlconf

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type inner struct {
	Rate Value[string] `yaml:"rate"`
}

type doc struct {
	Name  Value[string] `yaml:"name"`
	Port  Value[uint16] `yaml:"port"`
	Inner inner         `yaml:"inner"`
	List  []inner       `yaml:"list"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
		ok       bool
	}{
		{"good", "name: x\nport: 80\ninner: {rate: 5mbit}\n", nil, true},
		{"every problem at once", "nme: x\ninner:\n  rte: 1\nlist:\n  - {rat: 2}\nport: 80\n", []string{
			`f.yaml:1:1: top level: unknown key "nme" (did you mean "name"?)`,
			`f.yaml:3:3: inner: unknown key "rte" (did you mean "rate"?)`,
			`f.yaml:5:6: list[0]: unknown key "rat" (did you mean "rate"?)`,
		}, true},
		{"duplicate", "name: a\nname: b\n", []string{`f.yaml:2:1: mapping key "name" already defined at line 1`}, true},
		{"wrong type", "port: eighty\n", []string{"f.yaml:1:1: cannot use text `eighty` as a port number"}, true},
		{"syntax", "name: [\n", nil, false},
		{"empty", "", []string{"f.yaml: file is empty"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			ps := &Problems{}
			ok := Decode("f.yaml", []byte(tc.in), &d, ps)
			if ok != tc.ok {
				t.Errorf("ok = %v, want %v (%v)", ok, tc.ok, ps.Err())
			}
			if tc.want == nil {
				if tc.ok && ps.Err() != nil {
					t.Fatalf("unexpected problems: %v", ps.Err())
				}
				if !tc.ok && ps.Err() == nil {
					t.Fatal("no problem reported")
				}
				return
			}
			var got []string
			if err := ps.Err(); err != nil {
				var p Problem
				if !errors.As(err, &p) {
					t.Errorf("errors.As(Problem) failed on %v", err)
				}
				for _, p := range ps.List {
					got = append(got, p.Error())
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
	var d doc
	ps := &Problems{}
	Decode("f.yaml", []byte("name: x\nport: 8080\n"), &d, ps)
	if d.Name.V != "x" || d.Port.V != 8080 || d.Port.Pos != (Pos{2, 7}) || !d.Port.Set || d.Inner.Rate.Set {
		t.Errorf("decoded %+v", d)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("name: x\nport: 80\ninner: {rate: 5mbit}\n")
	f.Add("list: [{rat: 1}]")
	f.Fuzz(func(t *testing.T, in string) {
		var d doc
		ps := &Problems{}
		Decode("f.yaml", []byte(in), &d, ps)
		_ = ps.Err()
	})
}

type common struct {
	Rate Value[string] `yaml:"rate"`
}

type withInline struct {
	Name   Value[string] `yaml:"name"`
	common `yaml:",inline"`
}

func TestDecodeInline(t *testing.T) {
	var d withInline
	ps := &Problems{}
	Decode("f.yaml", []byte("name: x\nrate: 5mbit\nrat: 1\n"), &d, ps)
	var got []string
	for _, p := range ps.List {
		got = append(got, p.Error())
	}
	if diff := cmp.Diff([]string{`f.yaml:3:1: top level: unknown key "rat" (did you mean "rate"?)`}, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if d.Rate.V != "5mbit" || d.Rate.Pos != (Pos{2, 7}) {
		t.Errorf("inline field decoded as %+v", d.Rate)
	}
}
