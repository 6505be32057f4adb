package quantity

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rate
		err  string
	}{
		{"5mbit", 5 * Mbit, ""},
		{"5Mbit", 5 * Mbit, ""},
		{"1.5gbit", 1500 * Mbit, ""},
		{"512kbit", 512 * Kbit, ""},
		{"100bit", 100, ""},
		{"0", 0, ""},
		{"5 Mbps", 0, `"5 Mbps" is not a rate (try 5mbit)`},
		{"5MBps", 0, `"5MBps" is not a rate (try 5mbit)`},
		{"fast", 0, `"fast" is not a rate (try 5mbit)`},
		{"-1mbit", 0, "not a rate"},
		{"5 mbit", 0, "not a rate"},
		{"99999999999gbit", 0, "too large"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRate(tc.in)
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseRate(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseRate(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if back, err := ParseRate(got.String()); err != nil || back != got {
				t.Errorf("round trip of %v: %v, %v", got, back, err)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Bytes
		bad  bool
	}{
		{"500MB", 500 * MB, false},
		{"2GiB", 2 * GiB, false},
		{"1024", 1024, false},
		{"1.5GB", 1500 * MB, false},
		{"0", 0, false},
		{"lots", 0, true},
		{"-5MB", 0, true},
		{"2000000000GB", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBytes(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseBytes(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseBytes(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if back, err := ParseBytes(got.String()); err != nil || back != got {
				t.Errorf("round trip of %v (%q): %v, %v", got, got.String(), back, err)
			}
		})
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"5mbit", "1.5gbit", "0", "5 Mbps", "1e3kbit"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if back, err := ParseRate(r.String()); err != nil || back != r {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, r, r.String(), back, err)
		}
	})
}
