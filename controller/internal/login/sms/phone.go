package sms

import (
	"slices"
	"strings"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/nyaruka/phonenumbers"
)

// DefaultRegion is how a number typed without a country code is read.
const DefaultRegion = "IT"

// Phone is a parsed, allowed mobile number.
type Phone struct {
	E164    string // +393331234567
	Region  string // IT
	prefix  string // E164 without its last PrefixHide digits: the number range pumping attacks walk through
	country int32
}

// PrefixHide is how many trailing digits the per-prefix limit ignores: numbers that share everything else (10,000
// of them) share one counter.
const PrefixHide = 4

// ParsePhone reads a number as a resident types it (spaces, dots, dashes, "00" or "+" before the country code;
// national numbers as Italian) and accepts it only if it is a valid mobile number of one of countries (ISO
// 3166-1 alpha-2; empty means [IT]). The error is a *apiclient.LoginError with code bad_number,
// country_not_allowed or not_mobile.
func ParsePhone(s string, countries []string) (Phone, error) {
	s = strings.TrimSpace(s)
	if len(s) < 3 || len(s) > 32 {
		return Phone{}, &apiclient.LoginError{Code: apiclient.CodeBadNumber, Message: "not a phone number"}
	}
	num, err := phonenumbers.Parse(s, DefaultRegion)
	if err != nil || !phonenumbers.IsValidNumber(num) {
		return Phone{}, &apiclient.LoginError{Code: apiclient.CodeBadNumber, Message: "not a valid phone number"}
	}
	region := phonenumbers.GetRegionCodeForNumber(num)
	if len(countries) == 0 {
		countries = []string{DefaultRegion}
	}
	if !slices.Contains(countries, region) {
		return Phone{}, &apiclient.LoginError{Code: apiclient.CodeCountryNotAllowed, Message: "numbers of " + region + " are not accepted here"}
	}
	switch phonenumbers.GetNumberType(num) {
	case phonenumbers.MOBILE, phonenumbers.FIXED_LINE_OR_MOBILE:
	default:
		return Phone{}, &apiclient.LoginError{Code: apiclient.CodeNotMobile, Message: "not a mobile number"}
	}
	e164 := phonenumbers.Format(num, phonenumbers.E164)
	return Phone{E164: e164, Region: region, prefix: e164[:len(e164)-PrefixHide], country: num.GetCountryCode()}, nil
}
