package server

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/adminconf"
	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/internal/yamlconf"
)

// DefaultStore is where the embedded store lives unless the file says otherwise.
const DefaultStore = "bolt:/var/lib/civicwifi/controller.db"

// EnvRedisPassword is the environment variable that holds the Redis password (the file never does).
const EnvRedisPassword = "CIVICWIFI_REDIS_PASSWORD"

// FileConfig is the controller's own file, controller.yaml (deploy/controller.yaml is the example).
type FileConfig struct {
	Listen            string        // the API's address: gateways under /v1/, access points under /ap/v1/
	TLSCert, TLSKey   string        // PEM files; both empty: plain HTTP (a lab, or TLS ended in front)
	Sites             string        // the sites.yaml path
	Store             string        // "bolt:/path" or "redis://host:port/db" (or rediss://)
	RedisPasswordFile string        // used when CIVICWIFI_REDIS_PASSWORD is not set
	SigningKey        string        // the controller's Ed25519 answer-signing key (controller enroll -name controller)
	APEnrollTokens    []string      // files of AP first-boot enrollment tokens, one per line
	MetricsListen     string        // Prometheus /metrics; "" (written "off") serves none
	APCheckin         time.Duration // the check-in period told to access points
	APMissedCheckins  int           // an AP is offline after this many missed check-ins
	Reload            time.Duration // how often sites.yaml is checked for a change
	StateDir          string        // the controller's own files: the copy of the running sites.yaml (controller plan)
	LogFormat         string        // json or text
	SPID              SPIDConfig    // the spid block; zero: SPID login is off

	// Login is the login block (pepper file, SMS provider and limits); zero: resident login is off.
	Login login.FileConfig
	// Admin is the operators' dashboard (accounts file, listener, single sign-on); zero: no dashboard.
	Admin adminconf.FileConfig
}

// SPIDConfig is controller.yaml's spid block: the controller as SAML service provider for SPID (and CIE) login
// (package login/spid). Paths are absolute.
type SPIDConfig struct {
	EntityID        string // the SP's entity id, e.g. https://wifi.comune.voghera.pv.it/spid
	PublicURL       string // where residents' browsers reach the controller: /spid/login, /spid/acs, /spid/metadata
	OrganizationURL string // the metadata's OrganizationURL; "": PublicURL
	Key             string // PEM RSA private key (2048 bits or more), not readable by group or others
	Certificate     string // PEM certificate of Key, as registered with AgID
	IdPRegistry     string // local copy of AgID's registry metadata (the IdP list)
}

// Enabled reports whether the file has a spid block.
func (c SPIDConfig) Enabled() bool { return c.EntityID != "" }

type v[T any] = yamlconf.Value[T]

type rawFileConfig struct {
	Listen            v[string]   `yaml:"listen"`
	TLS               v[rawTLS]   `yaml:"tls"`
	Sites             v[string]   `yaml:"sites"`
	Store             v[string]   `yaml:"store"`
	RedisPasswordFile v[string]   `yaml:"redis_password_file"`
	SigningKey        v[string]   `yaml:"signing_key"`
	APEnrollTokens    v[[]string] `yaml:"ap_enroll_token_files"`
	MetricsListen     v[string]   `yaml:"metrics_listen"`
	APCheckin         v[string]   `yaml:"ap_checkin_interval"`
	APMissedCheckins  v[int]      `yaml:"ap_missed_checkins"`
	Reload            v[string]   `yaml:"reload_check"`
	StateDir          v[string]   `yaml:"state_dir"`
	LogFormat         v[string]   `yaml:"log_format"`
	SPID              v[rawSPID]  `yaml:"spid"`

	Login v[login.RawFileConfig]     `yaml:"login"`
	Admin v[adminconf.RawFileConfig] `yaml:"admin"`
}

type rawSPID struct {
	EntityID        v[string] `yaml:"entity_id"`
	PublicURL       v[string] `yaml:"public_url"`
	OrganizationURL v[string] `yaml:"organization_url"`
	Key             v[string] `yaml:"key"`
	Certificate     v[string] `yaml:"certificate"`
	IdPRegistry     v[string] `yaml:"idp_registry"`
}

type rawTLS struct {
	Cert v[string] `yaml:"cert"`
	Key  v[string] `yaml:"key"`
}

// LoadConfig reads controller.yaml. Relative paths in it are taken from the file's directory. Every problem is
// reported at once with file:line:col (a *yamlconf.Problems).
func LoadConfig(path string) (FileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return FileConfig{}, fmt.Errorf("reading controller config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses the bytes of controller.yaml named name.
func ParseConfig(name string, data []byte) (FileConfig, error) {
	var r rawFileConfig
	ps := &yamlconf.Problems{File: name}
	if !yamlconf.Decode(name, data, &r, ps) {
		return FileConfig{}, ps.Err()
	}
	// After a YAML error (a duplicate key, a wrong type) keys may look missing that are not: say only that.
	decodeProblems := 0
	for _, p := range ps.List {
		if !strings.Contains(p.Msg, "unknown key") {
			decodeProblems++
		}
	}
	dir := filepath.Dir(name)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	c := FileConfig{
		Listen: ":8443", Store: DefaultStore, MetricsListen: "127.0.0.1:9464",
		APCheckin: 60 * time.Second, APMissedCheckins: 3, Reload: 2 * time.Second, LogFormat: "json",
		StateDir: "/var/lib/civicwifi",
	}
	addr := func(what string, val v[string]) string {
		if _, port, err := net.SplitHostPort(val.V); err != nil || port == "" {
			ps.Addf(val.Pos, "%s: %q is not host:port (e.g. :8443 or 127.0.0.1:9464)", what, val.V)
		}
		return val.V
	}
	if r.Listen.Set {
		c.Listen = addr("listen", r.Listen)
	}
	if r.MetricsListen.Set {
		c.MetricsListen = ""
		if r.MetricsListen.V != "" && r.MetricsListen.V != "off" {
			c.MetricsListen = addr("metrics_listen", r.MetricsListen)
		}
	}
	switch t := r.TLS.V; {
	case t.Cert.V != "" && t.Key.V != "":
		c.TLSCert, c.TLSKey = abs(t.Cert.V), abs(t.Key.V)
	case t.Cert.V != "" || t.Key.V != "":
		ps.Addf(r.TLS.Pos, "tls: give both cert and key (PEM files), or neither for plain HTTP")
	}
	if (!r.Sites.Set || r.Sites.V == "") && decodeProblems == 0 {
		ps.Addf(r.Sites.Pos, "sites: missing (the path of sites.yaml, e.g. /etc/civicwifi/sites.yaml)")
	}
	c.Sites = abs(r.Sites.V)
	if (!r.SigningKey.Set || r.SigningKey.V == "") && decodeProblems == 0 {
		ps.Addf(r.SigningKey.Pos, "signing_key: missing (the controller's private key file; make one with `controller enroll -out /etc/civicwifi -name controller`)")
	}
	c.SigningKey = abs(r.SigningKey.V)
	if r.Store.Set {
		c.Store = r.Store.V
		if err := checkStore(c.Store); err != nil {
			ps.Addf(r.Store.Pos, "store: %v", err)
		}
		if p, ok := strings.CutPrefix(c.Store, "bolt:"); ok {
			c.Store = "bolt:" + abs(p)
		}
	}
	c.RedisPasswordFile = abs(r.RedisPasswordFile.V)
	if r.StateDir.Set {
		if r.StateDir.V == "" {
			ps.Addf(r.StateDir.Pos, "state_dir: empty (a directory for the controller's own files, e.g. /var/lib/civicwifi)")
		}
		c.StateDir = abs(r.StateDir.V)
	}
	for _, t := range r.APEnrollTokens.V {
		if t == "" {
			ps.Addf(r.APEnrollTokens.Pos, "ap_enroll_token_files: an empty path")
			continue
		}
		c.APEnrollTokens = append(c.APEnrollTokens, abs(t))
	}
	dur := func(what string, val v[string], min time.Duration, out *time.Duration) {
		if !val.Set {
			return
		}
		d, err := time.ParseDuration(val.V)
		if err != nil || d < min {
			ps.Addf(val.Pos, "%s: %q is not a duration of at least %v (e.g. 60s, 2m)", what, val.V, min)
			return
		}
		*out = d
	}
	dur("ap_checkin_interval", r.APCheckin, time.Second, &c.APCheckin)
	dur("reload_check", r.Reload, 100*time.Millisecond, &c.Reload)
	if r.APMissedCheckins.Set {
		if r.APMissedCheckins.V < 1 {
			ps.Addf(r.APMissedCheckins.Pos, "ap_missed_checkins: %d, want at least 1", r.APMissedCheckins.V)
		}
		c.APMissedCheckins = r.APMissedCheckins.V
	}
	if r.LogFormat.Set {
		switch r.LogFormat.V {
		case "json", "text":
			c.LogFormat = r.LogFormat.V
		default:
			ps.Addf(r.LogFormat.Pos, "log_format: %q, want json or text", r.LogFormat.V)
		}
	}
	c.Login = login.ParseFileConfig(r.Login, abs, ps)
	c.Admin = adminconf.ParseFileConfig(r.Admin, abs, ps)
	if r.SPID.Set {
		c.SPID = parseSPID(r.SPID, abs, ps)
	}
	if err := ps.Err(); err != nil {
		return FileConfig{}, err
	}
	return c, nil
}

// parseSPID checks the spid block: every key but organization_url is needed.
func parseSPID(val v[rawSPID], abs func(string) string, ps *yamlconf.Problems) SPIDConfig {
	r := val.V
	checkURL := func(what string, x v[string], required bool) string {
		if !x.Set || x.V == "" {
			if required {
				ps.Addf(val.Pos, "spid.%s: missing", what)
			}
			return ""
		}
		u, err := url.Parse(x.V)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			ps.Addf(x.Pos, "spid.%s: %q is not an http(s) URL without query (e.g. https://wifi.comune.example.it/spid)", what, x.V)
		}
		return x.V
	}
	file := func(what string, x v[string], hint string) string {
		if !x.Set || x.V == "" {
			ps.Addf(val.Pos, "spid.%s: missing (%s)", what, hint)
			return ""
		}
		return abs(x.V)
	}
	return SPIDConfig{
		EntityID:        checkURL("entity_id", r.EntityID, true),
		PublicURL:       strings.TrimSuffix(checkURL("public_url", r.PublicURL, true), "/"),
		OrganizationURL: checkURL("organization_url", r.OrganizationURL, false),
		Key:             file("key", r.Key, "the SP's PEM RSA private key file"),
		Certificate:     file("certificate", r.Certificate, "the SP's PEM certificate, as registered with AgID"),
		IdPRegistry:     file("idp_registry", r.IdPRegistry, "a local copy of AgID's SPID registry metadata"),
	}
}

// checkStore checks a store address and refuses a password written in it: passwords come from the environment
// or a file, never from this file.
func checkStore(s string) error {
	if p, ok := strings.CutPrefix(s, "bolt:"); ok {
		if p == "" {
			return fmt.Errorf("%q: bolt: wants a file path, e.g. %s", s, DefaultStore)
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return fmt.Errorf("want bolt:/path/to/controller.db or redis://host:port/db")
	}
	if _, has := u.User.Password(); has || u.User.String() != "" {
		return fmt.Errorf("no user or password in the address: put the password in $%s or in redis_password_file "+
			"(and change it, since it has been written in a file)", EnvRedisPassword)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s://%s%s: no query or fragment (the password never goes here)", u.Scheme, u.Host, u.Path)
	}
	return nil
}

// AppliedCopy is where the running controller keeps a copy of the sites.yaml it serves, for `controller plan`.
func (c FileConfig) AppliedCopy() string { return filepath.Join(c.StateDir, "sites.applied.yaml") }
