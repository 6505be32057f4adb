package apiclient

// SitePolicy is the body of GET /v1/sites/{site}/policy: one site's effective policy (its sites.yaml policy with
// the site's overrides applied), as the gateway enforces it. The controller serves it with an ETag that is a hash
// of these bytes, so any change here reaches the site's gateways by the policy long poll. Zero rates, durations,
// quota and max clients mean "no limit".
type SitePolicy struct {
	SiteID   string `json:"site_id"`
	SiteName string `json:"site_name"`
	TownName string `json:"town_name"`
	SSID     string `json:"ssid"`
	Policy   string `json:"policy"` // the sites.yaml policy's name

	DownBitsPerSecond uint64   `json:"down_bps"` // per client
	UpBitsPerSecond   uint64   `json:"up_bps"`   // per client
	Session           Duration `json:"session"`  // longest session
	Idle              Duration `json:"idle"`     // a client idle this long is logged out
	DailyQuotaBytes   uint64   `json:"daily_quota_bytes"`
	MaxClients        int      `json:"max_clients"`

	LoginMethods       []string `json:"login_methods"`           // click-through, sms, spid, voucher, in the portal's order
	SMSCountries       []string `json:"sms_countries,omitempty"` // ISO 3166-1 alpha-2 (sms only)
	SPIDLevel          int      `json:"spid_level,omitempty"`    // 1 or 2 (spid only)
	VoucherDevices     int      `json:"voucher_devices,omitempty"`
	WalledGarden       []string `json:"walled_garden"` // domains reachable before login, each with its subdomains
	RememberDeviceDays int      `json:"remember_device_days"`

	// Hours are the opening hours per weekday ("mon" ... "sun", only the days that have any), each a list of
	// "HH:MM-HH:MM" spans in Timezone; To may be "24:00". Empty: always open.
	Hours    map[string][]string `json:"hours"`
	Timezone string              `json:"timezone"` // IANA name, e.g. Europe/Rome
}
