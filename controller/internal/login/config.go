package login

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/sms"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/internal/yamlconf"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// EnvSMSSecret is the environment variable that holds the SMS provider's secret (auth token, password, webhook
// token); login.sms.secret_file is read when it is not set. controller.yaml never holds the secret itself.
const EnvSMSSecret = "CIVICWIFI_SMS_SECRET"

// FileConfig is the login section of controller.yaml. The zero value (no section) turns resident login off.
type FileConfig struct {
	PepperFile string    // secret file, at least 32 bytes, mode 0600
	SMS        SMSConfig // Provider "" turns SMS login off
}

// SMSConfig is login.sms.
type SMSConfig struct {
	Provider    string // twilio, skebby, webhook or log
	URL         string
	Account     string
	From        string
	SecretFile  string
	MessageType string
	Attempts    int
	Timeout     time.Duration
	Limits      sms.Limits
	Cost        float64 // euros per SMS, for the operators' metrics; 0: not counted
}

// Enabled reports whether the section was given.
func (c FileConfig) Enabled() bool { return c.PepperFile != "" }

type v[T any] = yamlconf.Value[T]

// RawFileConfig is login: as written in controller.yaml; ParseFileConfig validates it.
type RawFileConfig struct {
	PepperFile v[string]       `yaml:"pepper_file"`
	SMS        v[rawSMSConfig] `yaml:"sms"`
}

type rawSMSConfig struct {
	Provider    v[string]    `yaml:"provider"`
	URL         v[string]    `yaml:"url"`
	Account     v[string]    `yaml:"account"`
	From        v[string]    `yaml:"from"`
	SecretFile  v[string]    `yaml:"secret_file"`
	MessageType v[string]    `yaml:"message_type"`
	Attempts    v[int]       `yaml:"attempts"`
	Timeout     v[string]    `yaml:"timeout"`
	Limits      v[rawLimits] `yaml:"limits"`
	Cost        v[float64]   `yaml:"cost_eur"`
}

type rawLimits struct {
	Window      v[string] `yaml:"window"`
	PerNumber   v[int]    `yaml:"per_number"`
	PerMAC      v[int]    `yaml:"per_mac"`
	PerSite     v[int]    `yaml:"per_site"`
	PerPrefix   v[int]    `yaml:"per_prefix"`
	DailyBudget v[int]    `yaml:"daily_budget"`
	ResendAfter v[string] `yaml:"resend_after"`
}

// ParseFileConfig validates the login section r; abs makes a path relative to controller.yaml's directory. Problems
// go to ps with their place.
func ParseFileConfig(r v[RawFileConfig], abs func(string) string, ps *yamlconf.Problems) FileConfig {
	if !r.Set {
		return FileConfig{}
	}
	var c FileConfig
	if r.V.PepperFile.V == "" {
		ps.Addf(r.Pos, "login.pepper_file: missing (a secret file of at least 32 bytes: head -c 48 /dev/urandom | base64 > /etc/civicwifi/pepper; chmod 600)")
	}
	c.PepperFile = abs(r.V.PepperFile.V)
	rs := r.V.SMS
	if !rs.Set {
		return c
	}
	s := rs.V
	c.SMS = SMSConfig{Provider: s.Provider.V, URL: s.URL.V, Account: s.Account.V, From: s.From.V, SecretFile: abs(s.SecretFile.V),
		MessageType: s.MessageType.V, Attempts: s.Attempts.V, Limits: sms.DefaultLimits, Cost: s.Cost.V}
	if s.Cost.Set && (s.Cost.V < 0 || s.Cost.V > 10) {
		ps.Addf(s.Cost.Pos, "login.sms.cost_eur: %v, want the price of one SMS in euros (0 to 10)", s.Cost.V)
	}
	switch s.Provider.V {
	case "twilio", "skebby":
		if s.Account.V == "" {
			ps.Addf(rs.Pos, "login.sms.account: missing (%s)", map[string]string{"twilio": "the account SID, AC...", "skebby": "the user name"}[s.Provider.V])
		}
		if s.Provider.V == "twilio" && s.From.V == "" {
			ps.Addf(rs.Pos, "login.sms.from: missing (the sender number in E.164 or a messaging service SID, MG...)")
		}
	case "webhook":
		if !strings.HasPrefix(s.URL.V, "https://") && !strings.HasPrefix(s.URL.V, "http://") {
			ps.Addf(s.URL.Pos, "login.sms.url: %q is not an http(s) URL (the webhook provider posts there)", s.URL.V)
		}
	case "log":
	default:
		ps.Addf(s.Provider.Pos, "login.sms.provider: %q, want twilio, skebby, webhook or log", s.Provider.V)
	}
	if s.MessageType.Set && s.MessageType.V != "GP" && s.MessageType.V != "TI" && s.MessageType.V != "SI" {
		ps.Addf(s.MessageType.Pos, "login.sms.message_type: %q, want GP, TI or SI (Skebby's SMS classes)", s.MessageType.V)
	}
	if s.Attempts.Set && (s.Attempts.V < 1 || s.Attempts.V > 5) {
		ps.Addf(s.Attempts.Pos, "login.sms.attempts: %d, want 1 to 5", s.Attempts.V)
	}
	dur := func(what string, val v[string], lo, hi time.Duration, out *time.Duration) {
		if !val.Set {
			return
		}
		d, err := time.ParseDuration(val.V)
		if err != nil || d < lo || d > hi {
			ps.Addf(val.Pos, "%s: %q is not a duration from %v to %v", what, val.V, lo, hi)
			return
		}
		*out = d
	}
	dur("login.sms.timeout", s.Timeout, 500*time.Millisecond, 10*time.Second, &c.SMS.Timeout)
	attempts, timeout := c.SMS.Attempts, c.SMS.Timeout
	if attempts == 0 {
		attempts = 3
	}
	if timeout == 0 {
		timeout = 4 * time.Second
	}
	if time.Duration(attempts)*timeout > 20*time.Second {
		ps.Addf(s.Attempts.Pos, "login.sms: attempts x timeout is over 20 s: residents would wait too long")
	}
	l := s.Limits.V
	dur("login.sms.limits.window", l.Window, time.Minute, 7*24*time.Hour, &c.SMS.Limits.Window)
	dur("login.sms.limits.resend_after", l.ResendAfter, 0, time.Hour, &c.SMS.Limits.ResendAfter)
	for _, n := range []struct {
		name string
		val  v[int]
		out  *int
	}{
		{"per_number", l.PerNumber, &c.SMS.Limits.PerNumber}, {"per_mac", l.PerMAC, &c.SMS.Limits.PerMAC},
		{"per_site", l.PerSite, &c.SMS.Limits.PerSite}, {"per_prefix", l.PerPrefix, &c.SMS.Limits.PerPrefix},
		{"daily_budget", l.DailyBudget, &c.SMS.Limits.DailyBudget},
	} {
		if !n.val.Set {
			continue
		}
		if n.val.V < 0 {
			ps.Addf(n.val.Pos, "login.sms.limits.%s: %d, want 0 (no limit) or more", n.name, n.val.V)
		}
		*n.out = n.val.V
	}
	return c
}

// Deps are what Setup takes from the running controller.
type Deps struct {
	Sites      func() *sites.Config
	Store      store.Store
	SigningKey ed25519.PrivateKey
	Log        *slog.Logger
	Registerer prometheus.Registerer
	Accounting sms.Accounting // SMS cost and daily budget for the metrics; nil: none
}

// Setup reads the pepper and the SMS secret named by fc and builds the login Server. Mount it with Register.
func Setup(fc FileConfig, d Deps) (*Server, error) {
	p, err := pepper.Load(fc.PepperFile)
	if err != nil {
		return nil, err
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "login")
	var svc *sms.Service
	if fc.SMS.Provider != "" {
		secret := os.Getenv(EnvSMSSecret)
		if secret == "" && fc.SMS.SecretFile != "" {
			b, err := os.ReadFile(fc.SMS.SecretFile)
			if err != nil {
				return nil, fmt.Errorf("reading the sms secret: %w", err)
			}
			secret = strings.TrimSpace(string(b))
		}
		prov, err := sms.NewProvider(sms.ProviderConfig{Kind: fc.SMS.Provider, URL: fc.SMS.URL, Account: fc.SMS.Account, From: fc.SMS.From,
			Secret: secret, MessageType: fc.SMS.MessageType, Log: log})
		if err != nil {
			if fc.SMS.Provider != "webhook" && secret == "" {
				err = fmt.Errorf("%w (set %s or login.sms.secret_file)", err, EnvSMSSecret)
			}
			return nil, err
		}
		if fc.SMS.Provider == "log" {
			log.Warn("SMS login uses the log provider: codes are written to this log and no SMS is sent (development only)")
		}
		var loc *time.Location
		if cfg := d.Sites(); cfg != nil {
			loc = cfg.Town.Timezone
		}
		svc, err = sms.New(sms.Config{Store: d.Store, Pepper: p, Limits: fc.SMS.Limits, Location: loc, Log: log, Registerer: d.Registerer,
			Accounting: d.Accounting, Cost: fc.SMS.Cost,
			Sender: &sms.Sender{Provider: prov, Attempts: fc.SMS.Attempts, Timeout: fc.SMS.Timeout, Log: log}})
		if err != nil {
			return nil, err
		}
	}
	return New(Config{Sites: d.Sites, Store: d.Store, Pepper: p, SigningKey: d.SigningKey, SMS: svc, Log: log, Registerer: d.Registerer})
}

// LoadFileConfig reads only the login section of controller.yaml at path (for tools such as `controller
// vouchers`); the rest of the file is checked by the controller's own loader.
func LoadFileConfig(path string) (FileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return FileConfig{}, fmt.Errorf("reading controller config: %w", err)
	}
	var doc struct {
		Login v[RawFileConfig] `yaml:"login"`
	}
	ps := &yamlconf.Problems{File: path}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		ps.Addf(yamlconf.Pos{}, "%v", err)
		return FileConfig{}, ps.Err()
	}
	dir := filepath.Dir(path)
	c := ParseFileConfig(doc.Login, func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}, ps)
	return c, ps.Err()
}
