package sites

import "github.com/civicwifi/civicwifi/internal/yamlconf"

// The types in this file are sites.yaml as written: every value remembers
// its place (yamlconf.Value) and is kept as text until validation parses it,
// so that a bad value is reported at its exact line and column. The JSON
// Schema (schema.go) is generated from these same types; their
// jsonschema_description tags are the schema's documentation, and the
// README's key reference says the same.

type v[T any] = yamlconf.Value[T]

// Scalar kinds as written in the file. Each has its own JSON Schema (see
// scalarSchemas) and its own parser in validate.go.
type (
	text         string // free text
	slugText     string // an identifier: lower-case letters, digits, dashes
	rateText     string // "5mbit"
	durationText string // "2h", "15m"
	bytesText    string // "500MB", "2GiB"
	intText      string // a whole number (parsed by us, for exact positions)
	floatText    string // a decimal number
	hoursText    string // "mon-fri 08:00-20:00"
	domainText   string // "comune.voghera.pv.it"
	methodText   string // a login method
	kindText     string // a site kind
	bandText     string // a radio band
	macText      string // "02:00:5e:10:00:01"
	secretText   string // "env:NAME" or "file:/path"
	urlText      string // an https URL
	emailText    string // an e-mail address
	phoneText    string // a phone number
	countryText  string // an ISO 3166-1 alpha-2 country code
	ssidText     string // a Wi-Fi network name
	prefixText   string // "10.20.0.1/22"
	tzText       string // an IANA time zone
	ipaText      string // an IPA code: c_m109
)

type rawFile struct {
	Town     v[rawTown]     `yaml:"town" jsonschema:"required" jsonschema_description:"The town that runs the hotspots: its name, logo, legal texts and contacts, shown on every captive portal page."`
	Policies []v[rawPolicy] `yaml:"policies" jsonschema_description:"Reusable named policies (limits, login methods, opening hours, walled garden). Each site names one and may override any of its fields."`
	Sites    []v[rawSite]   `yaml:"sites" jsonschema:"required" jsonschema_description:"Every hotspot: where it is, which policy it follows, its gateway(s) and access points."`
}

type rawTown struct {
	Name      v[text]        `yaml:"name" jsonschema:"required" jsonschema_description:"The town's official name, e.g. \"Comune di Voghera\"."`
	IPACode   v[ipaText]     `yaml:"ipa_code" jsonschema_description:"The town's code in the Indice delle Pubbliche Amministrazioni (IPA), e.g. c_m109. Optional."`
	Logo      v[text]        `yaml:"logo" jsonschema_description:"The logo shown on the portal: an https URL, or a path to an image file (relative paths are relative to sites.yaml)."`
	SSID      v[ssidText]    `yaml:"ssid" jsonschema_description:"The default Wi-Fi network name of every site (1 to 32 bytes); a site may set its own."`
	Privacy   v[rawText]     `yaml:"privacy" jsonschema:"required" jsonschema_description:"The privacy notice (GDPR art. 13) residents accept before logging in: inline text per language, or a URL."`
	Terms     v[rawText]     `yaml:"terms" jsonschema:"required" jsonschema_description:"The terms of use residents accept before logging in: inline text per language, or a URL."`
	Contacts  v[rawContacts] `yaml:"contacts" jsonschema:"required" jsonschema_description:"Who residents and the Garante can write to about the service."`
	Timezone  v[tzText]      `yaml:"timezone" jsonschema:"default=Europe/Rome" jsonschema_description:"The IANA time zone in which opening hours and daily quotas are counted. Default Europe/Rome."`
	Retention v[intText]     `yaml:"retention_days" jsonschema_description:"Days connection records (pseudonymous user, MAC, site, start, end, bytes) are kept; older ones are deleted automatically (30 to 3650). Default 365."`
}

type rawText struct {
	URL v[urlText] `yaml:"url" jsonschema_description:"An https URL where the text is published. Give either url or inline text, not both."`
	IT  v[text]    `yaml:"it" jsonschema_description:"The text in Italian (required when the text is given inline)."`
	EN  v[text]    `yaml:"en" jsonschema_description:"The text in English."`
	DE  v[text]    `yaml:"de" jsonschema_description:"The text in German."`
	FR  v[text]    `yaml:"fr" jsonschema_description:"The text in French."`
}

type rawContacts struct {
	Email v[emailText] `yaml:"email" jsonschema:"required" jsonschema_description:"The service's contact e-mail address, shown on the portal."`
	Phone v[phoneText] `yaml:"phone" jsonschema_description:"A phone number for help, in international form (+39 ...). Optional."`
	DPO   v[emailText] `yaml:"dpo" jsonschema:"required" jsonschema_description:"The e-mail address of the town's Data Protection Officer (GDPR art. 37-39), named in the privacy notice."`
}

type rawPolicy struct {
	Name        v[slugText] `yaml:"name" jsonschema:"required" jsonschema_description:"The policy's name, which sites refer to (lower-case letters, digits and dashes)."`
	Description v[text]     `yaml:"description" jsonschema_description:"What the policy is for, for the people who edit this file."`
	rawSettings `yaml:",inline"`
}

// rawSettings are the fields a policy sets and a site's overrides may
// replace, one by one (a list replaces the whole list).
type rawSettings struct {
	Down               v[rateText]     `yaml:"down" jsonschema_description:"Per-client download rate, in tc notation: 500kbit, 5mbit, 1gbit; 0 for no limit. Default 10mbit."`
	Up                 v[rateText]     `yaml:"up" jsonschema_description:"Per-client upload rate, in tc notation: 500kbit, 2mbit; 0 for no limit. Default 2mbit."`
	Session            v[durationText] `yaml:"session" jsonschema_description:"How long a login lasts before the client must log in again: 2h, 90m; 0 for no limit. Default 2h."`
	Idle               v[durationText] `yaml:"idle" jsonschema_description:"A client silent for this long is logged out: 15m; 0 for never. Default 15m."`
	DailyQuota         v[bytesText]    `yaml:"daily_quota" jsonschema_description:"Data a client may use per day (counted in the town's time zone): 500MB, 2GiB; 0 for no quota. Default 0."`
	MaxClients         v[intText]      `yaml:"max_clients" jsonschema:"minimum=0,maximum=100000" jsonschema_description:"Most clients logged in at once at one site; 0 for no limit. Default 0."`
	Login              v[rawLogin]     `yaml:"login" jsonschema_description:"How residents and visitors log in."`
	RememberDeviceDays v[intText]      `yaml:"remember_device_days" jsonschema:"minimum=0,maximum=365" jsonschema_description:"Days a device that logged in is let in again without logging in (0 to 365). Default 0 (never)."`
	Hours              []v[hoursText]  `yaml:"hours" jsonschema_description:"When the hotspot is open, in the town's time zone, one line per group of days: \"mon-fri 08:00-20:00\", \"sat,sun 09:00-12:30,15:00-19:00\", \"daily 07:00-23:00\". Days not listed are closed. Omitted: always open."`
	WalledGarden       []v[domainText] `yaml:"walled_garden" jsonschema_description:"Domains reachable before login (each with its subdomains), e.g. the town's website or the SPID identity providers. Never the phones' captive-portal probe hosts."`
}

type rawLogin struct {
	Methods []v[methodText] `yaml:"methods" jsonschema_description:"Login methods offered, among click-through, sms, spid and voucher. A site must offer at least one."`
	SMS     v[rawSMS]       `yaml:"sms" jsonschema_description:"Options of SMS login (a one-time code sent to the phone number)."`
	SPID    v[rawSPID]      `yaml:"spid" jsonschema_description:"Options of SPID login (the Italian public digital identity)."`
	Voucher v[rawVoucher]   `yaml:"voucher" jsonschema_description:"Options of voucher login (printed codes handed out at a desk)."`
}

type rawSMS struct {
	Countries []v[countryText] `yaml:"countries" jsonschema_description:"Countries whose phone numbers may log in, as ISO 3166-1 alpha-2 codes. Default [IT]."`
}

type rawSPID struct {
	Level v[intText] `yaml:"level" jsonschema:"enum=1,enum=2,default=2" jsonschema_description:"SPID authentication level required: 1 (password) or 2 (password and one-time code). Default 2."`
}

type rawVoucher struct {
	Devices v[intText] `yaml:"devices" jsonschema:"minimum=1,maximum=10" jsonschema_description:"How many devices one voucher may log in (1 to 10). Default 1."`
}

type rawSite struct {
	ID            v[slugText]         `yaml:"id" jsonschema:"required" jsonschema_description:"The site's identifier, unique in the file (lower-case letters, digits and dashes), e.g. parco-pertini. Gateways are configured with it."`
	Name          v[text]             `yaml:"name" jsonschema:"required" jsonschema_description:"The site's name as residents know it, shown on the portal."`
	Kind          v[kindText]         `yaml:"kind" jsonschema:"required" jsonschema_description:"What the place is: park, library, museum, office or square."`
	Address       v[text]             `yaml:"address" jsonschema_description:"The street address."`
	Coordinates   v[rawCoordinates]   `yaml:"coordinates" jsonschema:"required" jsonschema_description:"Where the site is (WGS84), for the map on the dashboard and the open-data list of hotspots."`
	Policy        v[slugText]         `yaml:"policy" jsonschema:"required" jsonschema_description:"The name of the policy the site follows."`
	Overrides     v[rawSettings]      `yaml:"overrides" jsonschema_description:"Policy fields this site sets differently; any policy field except name and description."`
	SSID          v[ssidText]         `yaml:"ssid" jsonschema_description:"The Wi-Fi network name at this site (1 to 32 bytes). Default: town.ssid."`
	ClientNetwork v[rawClientNetwork] `yaml:"client_network" jsonschema:"required" jsonschema_description:"The network the site's clients are on, behind its gateway."`
	Gateways      []v[rawGateway]     `yaml:"gateways" jsonschema:"required" jsonschema_description:"The site's gateway(s): the box that runs the captive portal. At least one."`
	AccessPoints  []v[rawAccessPoint] `yaml:"access_points" jsonschema_description:"The site's Wi-Fi access points."`
}

type rawCoordinates struct {
	Lat v[floatText] `yaml:"lat" jsonschema:"required,minimum=-90,maximum=90" jsonschema_description:"Latitude in decimal degrees, -90 to 90 (Voghera is near 44.99)."`
	Lon v[floatText] `yaml:"lon" jsonschema:"required,minimum=-180,maximum=180" jsonschema_description:"Longitude in decimal degrees, -180 to 180 (Voghera is near 9.01)."`
}

type rawClientNetwork struct {
	Address v[prefixText] `yaml:"address" jsonschema:"required" jsonschema_description:"The gateway's address on the client network with its prefix length, e.g. 10.20.0.1/22 (/17 to /30)."`
	VLAN    v[intText]    `yaml:"vlan" jsonschema:"minimum=1,maximum=4094" jsonschema_description:"The VLAN id (1 to 4094) that carries the clients from the access points to the gateway; omitted: untagged."`
}

type rawGateway struct {
	ID         v[slugText]   `yaml:"id" jsonschema:"required" jsonschema_description:"The gateway's identifier, unique in the file, e.g. pertini-gw1."`
	Credential v[secretText] `yaml:"credential" jsonschema:"required" jsonschema_description:"Where the controller finds the gateway's credential (its Ed25519 public key or enrollment token): env:NAME or file:/absolute/path. Never the credential itself."`
}

type rawAccessPoint struct {
	MAC      v[macText]    `yaml:"mac" jsonschema:"required" jsonschema_description:"The access point's MAC address, unique in the file, e.g. 02:00:5e:10:00:01."`
	Model    v[text]       `yaml:"model" jsonschema_description:"The hardware model, e.g. \"TP-Link EAP225-Outdoor\"."`
	Location v[text]       `yaml:"location" jsonschema_description:"Where it is mounted, for whoever goes to fix it, e.g. \"lamp post by the playground\"."`
	Radios   []v[rawRadio] `yaml:"radios" jsonschema_description:"The access point's radios, at most one per band."`
}

type rawRadio struct {
	Band    v[bandText] `yaml:"band" jsonschema:"required" jsonschema_description:"The band: 2.4ghz, 5ghz or 6ghz."`
	Channel v[intText]  `yaml:"channel" jsonschema:"minimum=1,maximum=233" jsonschema_description:"The channel, valid for the band in Italy (2.4ghz: 1-13; 5ghz: 36-64, 100-140; 6ghz: 1-93). Omitted: chosen automatically."`
	TxPower v[intText]  `yaml:"tx_power" jsonschema:"minimum=1,maximum=36" jsonschema_description:"Transmit power in dBm EIRP, within the Italian limit for the band (2.4ghz: 20; 5ghz 36-64: 23; 5ghz 100-140: 30; 6ghz: 23). Omitted: the radio's default."`
}
