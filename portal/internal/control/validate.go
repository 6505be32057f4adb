package control

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
	"unicode"

	"github.com/civicwifi/civicwifi/internal/quantity"
)

// FieldError says which request field is wrong and why. It wraps
// ErrBadRequest, so the server answers 400 with its message. Field is the
// JSON name ("mac", "down"); the CLI shows it as the flag of the same name.
type FieldError struct {
	Field  string
	Reason string // includes the offending value, quoted
}

func (e *FieldError) Error() string { return ErrBadRequest.Error() + ": " + e.Field + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrBadRequest) true.
func (e *FieldError) Unwrap() error { return ErrBadRequest }

// maxReasonLen bounds the free-text reason of a kick (it ends up in logs).
const maxReasonLen = 200

// AllowParams is an AllowRequest parsed into typed values. Zero values mean
// "the gateway's default".
type AllowParams struct {
	MAC      net.HardwareAddr // nil if not given
	IP       netip.Addr       // invalid (zero) if not given
	Duration time.Duration
	Idle     time.Duration
	Quota    quantity.Bytes
	Down     quantity.Rate
	Up       quantity.Rate
	Method   string
}

// Parse checks every field of r and returns the typed values; the error is a
// *FieldError naming the first bad field. At least one of MAC and IP is required.
func (r AllowRequest) Parse() (AllowParams, error) {
	var p AllowParams
	var err error
	if p.MAC, p.IP, err = ParseTarget(r.MAC, r.IP); err != nil {
		return AllowParams{}, err
	}
	if p.Duration, err = parseDuration("duration", r.Duration); err != nil {
		return AllowParams{}, err
	}
	if p.Idle, err = parseDuration("idle", r.Idle); err != nil {
		return AllowParams{}, err
	}
	if r.Quota != "" {
		q, err := quantity.ParseBytes(r.Quota)
		if err != nil {
			return AllowParams{}, &FieldError{"quota", quantityReason(err)}
		}
		p.Quota = q
	}
	for _, f := range []struct {
		name string
		in   string
		out  *quantity.Rate
	}{{"down", r.Down, &p.Down}, {"up", r.Up, &p.Up}} {
		if f.in == "" {
			continue
		}
		v, err := quantity.ParseRate(f.in)
		if err != nil {
			return AllowParams{}, &FieldError{f.name, quantityReason(err)}
		}
		*f.out = v
	}
	if err := checkText("method", r.Method, 32); err != nil {
		return AllowParams{}, err
	}
	p.Method = r.Method
	return p, nil
}

// Normalized returns r with the MAC in lower-case colon form, the IP in
// canonical form and surrounding blanks trimmed, or the error of Parse.
func (r AllowRequest) Normalized() (AllowRequest, error) {
	p, err := r.Parse()
	if err != nil {
		return AllowRequest{}, err
	}
	r.MAC, r.IP = targetStrings(p.MAC, p.IP)
	r.Duration = strings.TrimSpace(r.Duration)
	r.Idle = strings.TrimSpace(r.Idle)
	r.Quota = strings.TrimSpace(r.Quota)
	r.Down = strings.TrimSpace(r.Down)
	r.Up = strings.TrimSpace(r.Up)
	return r, nil
}

// Normalized returns r with the MAC and IP in canonical form, or a
// *FieldError naming the bad field. At least one of MAC and IP is required.
func (r KickRequest) Normalized() (KickRequest, error) {
	mac, ip, err := ParseTarget(r.MAC, r.IP)
	if err != nil {
		return KickRequest{}, err
	}
	if err := checkText("reason", r.Reason, maxReasonLen); err != nil {
		return KickRequest{}, err
	}
	r.MAC, r.IP = targetStrings(mac, ip)
	return r, nil
}

func targetStrings(mac net.HardwareAddr, ip netip.Addr) (string, string) {
	var m, a string
	if mac != nil {
		m = mac.String()
	}
	if ip.IsValid() {
		a = ip.String()
	}
	return m, a
}

// ParseTarget parses the MAC and IP that name a client; at least one is
// required. The error is a *FieldError.
func ParseTarget(mac, ip string) (net.HardwareAddr, netip.Addr, error) {
	if strings.TrimSpace(mac) == "" && strings.TrimSpace(ip) == "" {
		return nil, netip.Addr{}, &FieldError{"mac", "one of mac or ip is required"}
	}
	var hw net.HardwareAddr
	if mac != "" {
		var err error
		hw, err = ParseMAC(mac)
		if err != nil {
			return nil, netip.Addr{}, err
		}
	}
	var addr netip.Addr
	if ip != "" {
		var err error
		addr, err = ParseIP(ip)
		if err != nil {
			return nil, netip.Addr{}, err
		}
	}
	return hw, addr, nil
}

// ParseMAC accepts a 48-bit MAC address written with colons or dashes
// ("aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF"); the error is a *FieldError.
func ParseMAC(s string) (net.HardwareAddr, error) {
	in := strings.TrimSpace(s)
	hw, err := net.ParseMAC(in)
	if err != nil || len(hw) != 6 || strings.Contains(in, ".") {
		return nil, &FieldError{"mac", fmt.Sprintf("%q is not a MAC address (want aa:bb:cc:dd:ee:ff)", s)}
	}
	return hw, nil
}

// ParseIP accepts an IPv4 or IPv6 address without zone; an IPv4-mapped IPv6
// address is unmapped. The error is a *FieldError.
func ParseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, &FieldError{"ip", fmt.Sprintf("%q is not an IP address (want e.g. 10.0.0.23)", s)}
	}
	return a.Unmap(), nil
}

func parseDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, &FieldError{field, fmt.Sprintf("%q is not a duration (try 2h or 45m)", s)}
	}
	if d < 0 {
		return 0, &FieldError{field, fmt.Sprintf("%q is negative", s)}
	}
	return d, nil
}

func quantityReason(err error) string {
	return strings.TrimPrefix(err.Error(), quantity.ErrSyntax.Error()+": ")
}

// checkText rejects control characters and overly long free text, which ends
// up in logs and terminals.
func checkText(field, s string, max int) error {
	if len(s) > max {
		return &FieldError{field, fmt.Sprintf("is %d bytes long (at most %d)", len(s), max)}
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return &FieldError{field, fmt.Sprintf("%q contains a control or invalid character", s)}
		}
	}
	return nil
}
