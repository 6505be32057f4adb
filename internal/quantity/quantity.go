// Package quantity provides the two units a site's policy is written in:
// bandwidth rates (Rate, bits per second, written like tc: "5mbit") and data
// sizes (Bytes, written "500MB" or "2GiB"). Both parse strictly and print
// back in the same notation, so an error can suggest the right spelling.
package quantity

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Rate is a bandwidth in bits per second. Zero means "not limited".
type Rate uint64

// Common rates.
const (
	Kbit Rate = 1000
	Mbit Rate = 1000 * Kbit
	Gbit Rate = 1000 * Mbit
)

var rateUnits = []struct {
	suffix string
	mult   Rate
}{
	{"gbit", Gbit}, {"mbit", Mbit}, {"kbit", Kbit}, {"bit", 1},
}

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("invalid quantity")

// ParseRate parses a rate in tc notation: "500kbit", "5mbit", "1.5gbit",
// "0" (no limit). Units are case-insensitive; bytes-per-second spellings such
// as "5MBps" or "5 Mbps" are rejected with a hint, because they are the
// classic factor-of-eight mistake.
func ParseRate(s string) (Rate, error) {
	in := strings.ToLower(strings.TrimSpace(s))
	if in == "0" {
		return 0, nil
	}
	for _, u := range rateUnits {
		num, ok := strings.CutSuffix(in, u.suffix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || strings.ContainsAny(num, " \t") {
			break
		}
		v := f * float64(u.mult)
		if v >= math.MaxUint32*float64(Mbit) {
			return 0, fmt.Errorf("%w: rate %q is too large", ErrSyntax, s)
		}
		return Rate(math.Round(v)), nil
	}
	return 0, fmt.Errorf("%w: %q is not a rate (try %s)", ErrSyntax, s, rateHint(in))
}

func rateHint(in string) string {
	digits := strings.TrimRightFunc(in, func(r rune) bool { return r < '0' || r > '9' })
	digits = strings.TrimSpace(digits)
	if digits == "" {
		digits = "5"
	}
	return digits + "mbit"
}

// String prints the rate in the largest whole tc unit.
func (r Rate) String() string {
	if r == 0 {
		return "0"
	}
	for _, u := range rateUnits {
		if r%u.mult == 0 {
			return strconv.FormatUint(uint64(r/u.mult), 10) + u.suffix
		}
	}
	return strconv.FormatUint(uint64(r), 10) + "bit"
}

// Bytes is an amount of data. Zero means "not limited" where used as a quota.
type Bytes uint64

// Common sizes.
const (
	KB  Bytes = 1000
	MB  Bytes = 1000 * KB
	GB  Bytes = 1000 * MB
	KiB Bytes = 1024
	MiB Bytes = 1024 * KiB
	GiB Bytes = 1024 * MiB
)

var byteUnits = []struct {
	suffix string
	mult   Bytes
}{
	{"gib", GiB}, {"mib", MiB}, {"kib", KiB}, {"gb", GB}, {"mb", MB}, {"kb", KB}, {"b", 1},
}

// ParseBytes parses "500MB", "2GiB", "1024" (bytes). Case-insensitive.
func ParseBytes(s string) (Bytes, error) {
	in := strings.ToLower(strings.TrimSpace(s))
	if n, err := strconv.ParseUint(in, 10, 64); err == nil {
		return Bytes(n), nil
	}
	for _, u := range byteUnits {
		num, ok := strings.CutSuffix(in, u.suffix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || strings.ContainsAny(num, " \t") {
			break
		}
		v := f * float64(u.mult)
		if v >= 1<<60 {
			return 0, fmt.Errorf("%w: size %q is too large", ErrSyntax, s)
		}
		return Bytes(math.Round(v)), nil
	}
	return 0, fmt.Errorf("%w: %q is not a data size (try 500MB or 2GiB)", ErrSyntax, s)
}

// String prints the size in the largest whole unit.
func (b Bytes) String() string {
	if b == 0 {
		return "0"
	}
	for _, u := range byteUnits {
		if b%u.mult == 0 {
			return strconv.FormatUint(uint64(b/u.mult), 10) + strings.Replace(strings.ToUpper(u.suffix), "I", "i", 1)
		}
	}
	return strconv.FormatUint(uint64(b), 10) + "B"
}
