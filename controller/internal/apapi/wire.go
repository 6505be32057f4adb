package apapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Paths served by Handler. Every request is a POST with a JSON body; the
// answer is JSON, or the line format (see EncodeText) when the request says
// "Accept: text/plain", which is what the OpenWrt scripts ask for.
const (
	PathProvision = "/ap/v1/provision"
	PathCheckin   = "/ap/v1/checkin"
)

// ProvisionRequest is the first-boot announcement, sent with the
// installation's enrollment token as the bearer token.
type ProvisionRequest struct {
	MAC      string `json:"mac"`
	Model    string `json:"model"`
	Firmware string `json:"firmware"`
}

// ProvisionResponse carries the AP's own secret: from then on its only
// credential, sent as the bearer token of every check-in.
type ProvisionResponse struct {
	Secret          string `json:"secret"`
	IntervalSeconds int    `json:"interval_s"`
}

// RadioStatus is one wireless interface as the AP reports it (iwinfo).
type RadioStatus struct {
	Interface  string `json:"interface"`
	SSID       string `json:"ssid"`
	Channel    int    `json:"channel"`
	TxPowerDBm int    `json:"txpower_dbm"`
	Clients    int    `json:"clients"`
}

// Rollback reports that the AP undid Version because it lost the controller
// for RollbackAfter after applying it.
type Rollback struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// CheckinRequest is the AP's periodic report.
type CheckinRequest struct {
	MAC            string        `json:"mac"`
	Firmware       string        `json:"firmware"`
	UptimeSeconds  int64         `json:"uptime_s"`
	Clients        int           `json:"clients"`
	Radios         []RadioStatus `json:"radios"`
	AppliedVersion string        `json:"applied_version"`
	PendingVersion string        `json:"pending_version,omitempty"`
	Rollback       *Rollback     `json:"rollback,omitempty"`
}

// RadioConfig is the desired setting of one radio (an OpenWrt wifi-device).
type RadioConfig struct {
	Device     string `json:"device"`      // uci wifi-device section, e.g. "radio0"
	Channel    string `json:"channel"`     // "auto" or a channel number
	TxPowerDBm int    `json:"txpower_dbm"` // 0 leaves the driver's default
}

// Config is an AP's desired configuration. The AP bridges one open SSID on
// every listed radio into Bridge, whose uplink carries VLAN towards the
// gateway (0: untagged).
type Config struct {
	Version string        `json:"version"`
	SSID    string        `json:"ssid"`
	Radios  []RadioConfig `json:"radios"`
	Network string        `json:"network"` // uci interface the SSID joins, e.g. "cw"
	Bridge  string        `json:"bridge"`  // bridge device, e.g. "br-cw"
	VLAN    int           `json:"vlan"`
}

// CheckinResponse is the answer to a check-in: what the AP should run and
// how often to call again.
type CheckinResponse struct {
	Config               Config `json:"config"`
	IntervalSeconds      int    `json:"interval_s"`
	RollbackAfterSeconds int    `json:"rollback_after_s"`
}

var (
	reName    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,14}$`)
	reBridge  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,14}$`)
	reChannel = regexp.MustCompile(`^(auto|[1-9][0-9]{0,2})$`)
)

// Validate checks that c can be applied by the AP scripts and encoded in the
// line format without ambiguity.
func (c Config) Validate() error {
	var errs []error
	if c.SSID == "" || len(c.SSID) > 32 || !utf8.ValidString(c.SSID) || strings.ContainsFunc(c.SSID, isControl) {
		errs = append(errs, fmt.Errorf("ssid %q: want 1 to 32 bytes of UTF-8 without control characters", c.SSID))
	}
	if len(c.Radios) == 0 {
		errs = append(errs, errors.New("no radios"))
	}
	seen := map[string]bool{}
	for i, r := range c.Radios {
		if !reName.MatchString(r.Device) {
			errs = append(errs, fmt.Errorf("radios[%d].device %q: want a uci section name such as radio0", i, r.Device))
		} else if seen[r.Device] {
			errs = append(errs, fmt.Errorf("radios[%d].device %q: listed twice", i, r.Device))
		}
		seen[r.Device] = true
		if !reChannel.MatchString(r.Channel) {
			errs = append(errs, fmt.Errorf("radios[%d].channel %q: want auto or a channel number", i, r.Channel))
		}
		if r.TxPowerDBm < 0 || r.TxPowerDBm > 30 {
			errs = append(errs, fmt.Errorf("radios[%d].txpower_dbm %d: want 0 (default) to 30", i, r.TxPowerDBm))
		}
	}
	if !reName.MatchString(c.Network) {
		errs = append(errs, fmt.Errorf("network %q: want a uci interface name such as cw", c.Network))
	}
	if !reBridge.MatchString(c.Bridge) {
		errs = append(errs, fmt.Errorf("bridge %q: want a device name such as br-cw", c.Bridge))
	}
	if c.VLAN < 0 || c.VLAN > 4094 {
		errs = append(errs, fmt.Errorf("vlan %d: want 0 (untagged) to 4094", c.VLAN))
	}
	return errors.Join(errs...)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// ConfigVersion is the version of c's content: the first 16 hex digits of
// the SHA-256 of its JSON with Version left empty. Any change in sites.yaml
// that reaches the AP changes it; a reload that changes nothing keeps it.
func ConfigVersion(c Config) string {
	c.Version = ""
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // plain struct: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// EncodeText renders r in the line format the AP scripts read: one
// key=value per line, the value running to the end of the line. Values are
// validated (Config.Validate) so none holds a newline; radio lines hold
// three space-separated words that cannot contain spaces. The scripts never
// eval the answer: values reach uci as single arguments.
//
//	version=<16 hex>
//	interval=<seconds>
//	rollback_after=<seconds>
//	ssid=<ssid>
//	network=<name>
//	bridge=<name>
//	vlan=<0..4094>
//	radio=<device> <channel|auto> <txpower dBm, 0 = default>
func (r CheckinResponse) EncodeText() string {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "version=%s\ninterval=%d\nrollback_after=%d\n", c.Version, r.IntervalSeconds, r.RollbackAfterSeconds)
	fmt.Fprintf(&b, "ssid=%s\nnetwork=%s\nbridge=%s\nvlan=%d\n", c.SSID, c.Network, c.Bridge, c.VLAN)
	for _, rc := range c.Radios {
		fmt.Fprintf(&b, "radio=%s %s %d\n", rc.Device, rc.Channel, rc.TxPowerDBm)
	}
	return b.String()
}

// EncodeText renders r as "secret=<hex>\ninterval=<seconds>\n".
func (r ProvisionResponse) EncodeText() string {
	return "secret=" + r.Secret + "\ninterval=" + strconv.Itoa(r.IntervalSeconds) + "\n"
}

// NormalizeMAC returns mac as six lower-case colon-separated octets, the
// form every interface of this package uses.
func NormalizeMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("mac %q: want six octets such as 02:00:00:00:00:01", mac)
	}
	return hw.String(), nil
}
