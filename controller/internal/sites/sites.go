// Package sites reads sites.yaml, the one file a town's IT staff edit to run
// every free hotspot: the town, reusable policies, and each site with its
// gateways and access points. Parse checks the whole file and reports every
// problem at once with file:line:col and a hint; a file with any problem
// yields no Config, so a bad file never replaces a good one. The resolved
// Config carries each site's effective policy (its policy merged with the
// site's overrides), which the controller serves to the site's gateways.
//
// The same Go types generate the file's JSON Schema (Schema), and Diff tells
// what a new file changes against an old one, like terraform plan.
package sites

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/civicwifi/civicwifi/internal/quantity"
)

// Config is a validated sites.yaml.
type Config struct {
	Town     Town
	Policies []Policy // in file order; names are unique
	Sites    []Site   // in file order; ids are unique
}

// DefaultRetentionDays is how long connection records are kept when
// town.retention_days is not set.
const DefaultRetentionDays = 365

// Town is the town that runs the hotspots.
type Town struct {
	Name     string
	IPACode  string // "" when not given
	Logo     string // an https URL or a path ("" when not given)
	SSID     string // the default SSID ("" when not given)
	Privacy  Text
	Terms    Text
	Contacts Contacts
	Timezone *time.Location
	// RetentionDays is how long connection records are kept; the controller
	// deletes older ones.
	RetentionDays int
}

// Text is a legal text given either by URL or inline per language.
type Text struct {
	URL            string
	IT, EN, DE, FR string
}

// In returns the inline text in lang ("it", "en", "de", "fr"), falling
// back to Italian; "" when the text is given by URL.
func (t Text) In(lang string) string {
	s := map[string]string{"it": t.IT, "en": t.EN, "de": t.DE, "fr": t.FR}[lang]
	if s == "" {
		return t.IT
	}
	return s
}

// Contacts are who to write to about the service.
type Contacts struct {
	Email string
	Phone string // "" when not given
	DPO   string
}

// Policy is a named set of limits and login rules. Zero limits mean no limit.
type Policy struct {
	Name               string
	Description        string
	Down, Up           quantity.Rate
	Session            time.Duration
	Idle               time.Duration
	DailyQuota         quantity.Bytes
	MaxClients         int
	Login              Login
	RememberDeviceDays int
	Hours              Hours
	WalledGarden       []string // lower-case domains, each covering its subdomains
}

// Defaults of the policy fields a file does not set.
const (
	DefaultDown    = 10 * quantity.Mbit
	DefaultUp      = 2 * quantity.Mbit
	DefaultSession = 2 * time.Hour
	DefaultIdle    = 15 * time.Minute
)

// Method is a login method.
type Method string

// The login methods.
const (
	ClickThrough Method = "click-through"
	SMS          Method = "sms"
	SPID         Method = "spid"
	Voucher      Method = "voucher"
)

// Methods are all login methods, in the order the portal offers them.
var Methods = []Method{ClickThrough, SMS, SPID, Voucher}

// Login is how clients log in under a policy.
type Login struct {
	Methods []Method
	SMS     SMSOptions
	SPID    SPIDOptions
	Voucher VoucherOptions
}

// Allows reports whether m is one of the login's methods.
func (l Login) Allows(m Method) bool {
	for _, x := range l.Methods {
		if x == m {
			return true
		}
	}
	return false
}

// SMSOptions are the options of SMS login.
type SMSOptions struct {
	Countries []string // ISO 3166-1 alpha-2, upper case; default [IT]
}

// SPIDOptions are the options of SPID login.
type SPIDOptions struct {
	Level int // 1 or 2; default 2
}

// VoucherOptions are the options of voucher login.
type VoucherOptions struct {
	Devices int // devices per voucher; default 1
}

// Kind is what a site is.
type Kind string

// The kinds of site.
const (
	Park    Kind = "park"
	Library Kind = "library"
	Museum  Kind = "museum"
	Office  Kind = "office"
	Square  Kind = "square"
)

// Kinds are all site kinds.
var Kinds = []Kind{Park, Library, Museum, Office, Square}

// Site is one hotspot.
type Site struct {
	ID          string
	Name        string
	Kind        Kind
	Address     string
	Coordinates Coordinates
	PolicyName  string
	// Policy is the effective policy: PolicyName's policy with the site's
	// overrides applied (its Name is PolicyName).
	Policy        Policy
	Overridden    []string // the policy keys the site overrides, in file order
	SSID          string   // the site's or else the town's
	ClientNetwork ClientNetwork
	Gateways      []Gateway
	AccessPoints  []AccessPoint
}

// Coordinates are a WGS84 position in decimal degrees.
type Coordinates struct {
	Lat, Lon float64
}

func (c Coordinates) String() string { return fmt.Sprintf("%.6f,%.6f", c.Lat, c.Lon) }

// ClientNetwork is a site's client network behind its gateway.
type ClientNetwork struct {
	Gateway netip.Addr   // the gateway's address
	Subnet  netip.Prefix // masked
	VLAN    int          // 0: untagged
}

func (n ClientNetwork) String() string {
	s := netip.PrefixFrom(n.Gateway, n.Subnet.Bits()).String()
	if n.VLAN != 0 {
		s += fmt.Sprintf(" vlan %d", n.VLAN)
	}
	return s
}

// Gateway is a site's captive-portal box.
type Gateway struct {
	ID         string
	Credential SecretRef
}

// AccessPoint is a Wi-Fi access point of a site.
type AccessPoint struct {
	MAC      string // lower case, colon separated: 02:00:5e:10:00:01
	Model    string
	Location string
	Radios   []Radio
}

// Band is a Wi-Fi band.
type Band string

// The bands.
const (
	Band24 Band = "2.4ghz"
	Band5  Band = "5ghz"
	Band6  Band = "6ghz"
)

// Radio is one radio of an access point. Zero Channel or TxPower means the
// radio chooses.
type Radio struct {
	Band    Band
	Channel int
	TxPower int // dBm EIRP
}

// Policy returns the named policy, or nil.
func (c *Config) Policy(name string) *Policy {
	for i := range c.Policies {
		if c.Policies[i].Name == name {
			return &c.Policies[i]
		}
	}
	return nil
}

// Site returns the site with the id, or nil.
func (c *Config) Site(id string) *Site {
	for i := range c.Sites {
		if c.Sites[i].ID == id {
			return &c.Sites[i]
		}
	}
	return nil
}

// GatewaySite returns the site of the gateway with the id, or nil.
func (c *Config) GatewaySite(gatewayID string) *Site {
	for i := range c.Sites {
		for _, g := range c.Sites[i].Gateways {
			if g.ID == gatewayID {
				return &c.Sites[i]
			}
		}
	}
	return nil
}

// Load reads and validates a sites.yaml. On any problem it returns no
// Config and an error listing every problem (a *yamlconf.Problems).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading sites file: %w", err)
	}
	return Parse(path, data)
}
