package sms

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/civicwifi/civicwifi/controller/apiclient"
)

func TestParsePhone(t *testing.T) {
	for _, tc := range []struct {
		in        string
		countries []string
		want      string // E.164, or the refusal code
	}{
		{"333 123 4567", nil, "+393331234567"},
		{"+39 333.123.4567", nil, "+393331234567"},
		{"0039 333-1234567", nil, "+393331234567"},
		{"3331234567", []string{"IT", "SM"}, "+393331234567"},
		{"+41 78 123 45 67", []string{"IT", "CH"}, "+41781234567"},
		{"+41 78 123 45 67", nil, "country_not_allowed"},
		{"+44 7400 123456", []string{"IT"}, "country_not_allowed"},
		{"0383 336111", nil, "not_mobile"}, // Voghera's town hall, a landline
		{"+39 800 123456", nil, "not_mobile"},
		{"333 123", nil, "bad_number"},
		{"", nil, "bad_number"},
		{"tel:abc", nil, "bad_number"},
		{strings.Repeat("3", 40), nil, "bad_number"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePhone(tc.in, tc.countries)
			got := p.E164
			var le *apiclient.LoginError
			if errors.As(err, &le) {
				got = le.Code
			} else if err != nil {
				t.Fatalf("not a LoginError: %v", err)
			}
			if got != tc.want {
				t.Errorf("ParsePhone(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if err == nil && p.prefix != tc.want[:len(tc.want)-PrefixHide] {
				t.Errorf("prefix %q", p.prefix)
			}
		})
	}
}

func FuzzParsePhone(f *testing.F) {
	for _, s := range []string{"333 123 4567", "+41781234567", "0039 333", "+", "00", "+39 ３３３ 1234567"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePhone(s, []string{"IT", "CH", "SM"})
		if err != nil {
			var le *apiclient.LoginError
			if !errors.As(err, &le) || le.Code == "" {
				t.Fatalf("ParsePhone(%q): %v is not a LoginError", s, err)
			}
			return
		}
		if !strings.HasPrefix(p.E164, "+") || len(p.E164) < 8 || len(p.prefix) != len(p.E164)-PrefixHide {
			t.Fatalf("ParsePhone(%q) = %+v", s, p)
		}
	})
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New(`twilio answered 400: {"message":"The 'To' number +393331234567 is not valid"}`), `twilio answered 400: {"message":"The 'To' number <number> is not valid"}`},
		{fmt.Errorf("%w: skebby: 393331234567 refused", ErrPermanent), "permanent provider error: skebby: <number> refused"},
		{errors.New("webhook: to=%2B393331234567"), "webhook: to=<number>"},
		{errors.New("national 3331234567"), "national <number>"},
		{errors.New("connection refused"), "connection refused"},
	} {
		got := redact(tc.err, "+393331234567")
		if got.Error() != tc.want {
			t.Errorf("redact(%q) = %q, want %q", tc.err, got, tc.want)
		}
		if errors.Is(tc.err, ErrPermanent) != errors.Is(got, ErrPermanent) {
			t.Errorf("redact(%q) lost ErrPermanent", tc.err)
		}
	}
}
