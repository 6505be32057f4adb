// Package sms is the SMS one-time-code login: it parses and checks the resident's number (ParsePhone), applies
// the anti-pumping limits (per number, MAC, site and number prefix, a daily budget for the town, a resend
// cool-down), sends a 6-digit code through a Provider with retries, and verifies it: valid CodeTTL, single use,
// at most MaxTries wrong tries. Numbers, MACs and codes reach the store only as keyed hashes (package pepper).
package sms

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Code rules.
const (
	CodeTTL  = 10 * time.Minute
	MaxTries = 5
	Digits   = 6
)

// Limits are the anti-pumping limits. A zero count means no limit; the defaults are DefaultLimits.
type Limits struct {
	Window      time.Duration // the fixed window of the per-number, MAC, site and prefix counts
	PerNumber   int
	PerMAC      int
	PerSite     int
	PerPrefix   int
	DailyBudget int           // codes sent per day in the whole town (Location's days)
	ResendAfter time.Duration // cool-down between two codes for one number
}

// DefaultLimits suit a town of a few tens of thousands.
var DefaultLimits = Limits{
	Window: time.Hour, PerNumber: 3, PerMAC: 5, PerSite: 60, PerPrefix: 10, DailyBudget: 1000, ResendAfter: 60 * time.Second,
}

// Config configures a Service. Store, Pepper and Sender are required.
type Config struct {
	Store    store.Ephemeral
	Pepper   pepper.Pepper
	Sender   *Sender
	Limits   Limits
	Location *time.Location // the town's time zone, for the daily budget; nil: UTC
	// Text returns the SMS text for a code in lang; nil: DefaultText.
	Text       func(lang, code string) string
	Log        *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
	// Accounting, if set, is told the cost of each SMS handed to the
	// provider (Cost euros) and today's count against the daily budget,
	// for the operators' metrics and the "budget near limit" alert.
	Accounting Accounting
	Cost       float64 // euros per SMS (the provider's price); 0: not counted
}

// Accounting is what the statistics keep about SMS (stats.Metrics).
type Accounting interface {
	SMSCost(provider string, euros float64)
	SMSBudget(used, limit int64)
}

// Service starts and verifies SMS logins. It is safe for concurrent use; several controller replicas may share
// one store.
type Service struct {
	cfg      Config
	log      *slog.Logger
	requests *prometheus.CounterVec
	attempts *prometheus.CounterVec
	budget   prometheus.Gauge
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || !cfg.Pepper.Valid() || cfg.Sender == nil || cfg.Sender.Provider == nil {
		return nil, errors.New("sms: Store, Pepper and Sender are required")
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if cfg.Limits.Window <= 0 {
		cfg.Limits.Window = time.Hour
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.Text == nil {
		cfg.Text = DefaultText
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, log: cfg.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "civicwifi_controller_sms_requests_total",
		Help: "SMS code requests by result (sent, rate_limited, budget_exhausted, provider_failed, bad_number, ...).",
	}, []string{"result"})
	s.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "civicwifi_controller_sms_provider_attempts_total",
		Help: "Attempts to hand an SMS to the provider, by provider and result (ok, error, timeout, refused).",
	}, []string{"provider", "result"})
	s.budget = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "civicwifi_controller_sms_daily_budget_exhausted",
		Help: "1 when today's SMS budget of the town is used up (alert on it), else 0.",
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.requests, s.attempts, s.budget} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("sms: registering metrics: %w", err)
			}
		}
	}
	prev := cfg.Sender.Result
	cfg.Sender.Result = func(p, r string) {
		s.attempts.WithLabelValues(p, r).Inc()
		if prev != nil {
			prev(p, r)
		}
	}
	return s, nil
}

// DefaultText is the SMS: the code first (phones offer to fill it in), then what it is for.
func DefaultText(lang, code string) string {
	switch lang {
	case "en":
		return code + " is your Wi-Fi login code. It is valid for 10 minutes."
	case "de":
		return code + " ist Ihr WLAN-Anmeldecode. Er ist 10 Minuten gültig."
	case "fr":
		return code + " est votre code de connexion Wi-Fi. Il est valable 10 minutes."
	}
	return code + " è il tuo codice di accesso al Wi-Fi. È valido 10 minuti."
}

// StartRequest is one resident's request for a code.
type StartRequest struct {
	Site      string
	Gateway   string
	ClientMAC string // canonical
	Phone     string // as typed
	Countries []string
	Lang      string
}

// Started says a code was sent.
type Started struct {
	RequestID   string
	User        string // the pseudonym of the number
	ResendAfter time.Duration
	ExpiresIn   time.Duration
}

// record is what the store keeps of a sent code: no number, no code, only their keyed hashes.
type record struct {
	CodeHash []byte    `json:"code_hash"`
	User     string    `json:"user"`
	Site     string    `json:"site"`
	MAC      string    `json:"mac_hash"`
	Expires  time.Time `json:"expires"`
}

func limited(retry time.Duration, msg string) error {
	return &apiclient.LoginError{Code: apiclient.CodeRateLimited, Message: msg, RetryAfterSeconds: int((retry + time.Second - 1) / time.Second)}
}

// Start checks the number and the limits, sends a code and returns the request id. Resident-facing refusals are
// *apiclient.LoginError; other errors are the store's.
func (s *Service) Start(ctx context.Context, r StartRequest) (Started, error) {
	st, err := s.start(ctx, r)
	var le *apiclient.LoginError
	switch {
	case err == nil:
		s.requests.WithLabelValues("sent").Inc()
	case errors.As(err, &le):
		s.requests.WithLabelValues(le.Code).Inc()
	default:
		s.requests.WithLabelValues("error").Inc()
	}
	return st, err
}

func (s *Service) start(ctx context.Context, r StartRequest) (Started, error) {
	ph, err := ParsePhone(r.Phone, r.Countries)
	if err != nil {
		return Started{}, err
	}
	p, lim, now := s.cfg.Pepper, s.cfg.Limits, s.cfg.Now()
	numKey := p.Key("number", ph.E164)
	macKey := p.Key("mac", r.ClientMAC)
	if lim.ResendAfter > 0 {
		until := now.Add(lim.ResendAfter)
		fresh, err := s.cfg.Store.PutIfAbsent(ctx, "sms/cool/"+numKey, []byte(strconv.FormatInt(until.UnixMilli(), 10)), lim.ResendAfter)
		if err != nil {
			return Started{}, fmt.Errorf("checking resend cool-down: %w", err)
		}
		if !fresh {
			retry := lim.ResendAfter
			if v, err := s.cfg.Store.Get(ctx, "sms/cool/"+numKey); err == nil {
				if ms, err := strconv.ParseInt(string(v), 10, 64); err == nil {
					retry = max(time.UnixMilli(ms).Sub(now), time.Second)
				}
			}
			return Started{}, limited(retry, "a code was just sent to this number")
		}
	}
	for _, c := range []struct {
		key, what string
		limit     int
	}{
		{"sms/n/" + numKey, "number", lim.PerNumber},
		{"sms/mac/" + macKey, "device", lim.PerMAC},
		{"sms/prefix/" + p.Key("prefix", ph.prefix), "number range", lim.PerPrefix},
		{"sms/site/" + r.Site, "site", lim.PerSite},
	} {
		if c.limit <= 0 {
			continue
		}
		n, err := s.cfg.Store.Incr(ctx, c.key, 1, lim.Window)
		if err != nil {
			return Started{}, fmt.Errorf("counting sms per %s: %w", c.what, err)
		}
		if n > int64(c.limit) {
			if n == int64(c.limit)+1 {
				s.log.Warn("sms limit reached", "per", c.what, "site", r.Site, "gateway", r.Gateway, "limit", c.limit, "window", lim.Window)
			}
			return Started{}, limited(lim.Window, "too many codes for this "+c.what)
		}
	}
	if lim.DailyBudget > 0 {
		day := now.In(s.cfg.Location).Format(time.DateOnly)
		n, err := s.cfg.Store.Incr(ctx, "sms/budget/"+day, 1, 48*time.Hour)
		if err != nil {
			return Started{}, fmt.Errorf("counting the daily sms budget: %w", err)
		}
		if s.cfg.Accounting != nil {
			s.cfg.Accounting.SMSBudget(min(n, int64(lim.DailyBudget)), int64(lim.DailyBudget))
		}
		if n > int64(lim.DailyBudget) {
			s.budget.Set(1)
			if first, err := s.cfg.Store.PutIfAbsent(ctx, "sms/budget-alert/"+day, []byte("1"), 48*time.Hour); err == nil && first {
				s.log.Error("ALERT: the town's daily SMS budget is used up: no more codes are sent today", "day", day, "budget", lim.DailyBudget)
			}
			y, m, d := now.In(s.cfg.Location).Date()
			midnight := time.Date(y, m, d+1, 0, 0, 0, 0, s.cfg.Location)
			return Started{}, &apiclient.LoginError{Code: apiclient.CodeBudgetExhausted, Message: "the daily SMS budget is used up",
				RetryAfterSeconds: int(midnight.Sub(now) / time.Second)}
		}
		s.budget.Set(0)
	}

	code, err := newCode()
	if err != nil {
		return Started{}, err
	}
	id := apiclient.NewEventID()
	rec := record{CodeHash: s.codeHash(id, code), User: p.Pseudonym("phone:" + ph.E164), Site: r.Site, MAC: macKey, Expires: now.Add(CodeTTL)}
	val, _ := json.Marshal(rec)
	// Kept past its expiry so that a late try answers "expired" rather than "unknown".
	if err := s.cfg.Store.Put(ctx, "sms/req/"+id, val, 2*CodeTTL); err != nil {
		return Started{}, fmt.Errorf("storing sms request: %w", err)
	}
	if err := s.cfg.Sender.Send(ctx, Message{To: ph.E164, Text: s.cfg.Text(r.Lang, code), Code: code, RequestID: id}); err != nil {
		s.log.Error("sms not sent", "site", r.Site, "gateway", r.Gateway, "request_id", id, "err", err)
		// Let the resident try again at once; the counts stay (a failing provider must not be hammered).
		_ = s.cfg.Store.Delete(context.WithoutCancel(ctx), "sms/req/"+id)
		_ = s.cfg.Store.Delete(context.WithoutCancel(ctx), "sms/cool/"+numKey)
		return Started{}, &apiclient.LoginError{Code: apiclient.CodeProviderFailed, Message: "the SMS could not be sent", Status: 502}
	}
	if s.cfg.Accounting != nil && s.cfg.Cost > 0 {
		s.cfg.Accounting.SMSCost(s.cfg.Sender.Provider.Name(), s.cfg.Cost)
	}
	return Started{RequestID: id, User: rec.User, ResendAfter: lim.ResendAfter, ExpiresIn: CodeTTL}, nil
}

func (s *Service) codeHash(id, code string) []byte {
	return s.cfg.Pepper.Sum("sms-code\x00" + id + "\x00" + code)
}

// newCode returns Digits uniformly random decimal digits.
func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", fmt.Errorf("making a code: %w", err)
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

// Verified is a code verified.
type Verified struct {
	User string // the pseudonym of the number
}

// Verify checks code for request id from the device mac at site. It counts every try; after MaxTries wrong ones
// (answered wrong_code with TriesLeft down to 0) the request is dead: any further try is too_many_tries. A right code is used up (single use): a second verify says expired.
func (s *Service) Verify(ctx context.Context, site, mac, id, code string) (Verified, error) {
	v, err := s.verify(ctx, site, mac, id, code)
	var le *apiclient.LoginError
	switch {
	case err == nil:
		s.requests.WithLabelValues("verified").Inc()
	case errors.As(err, &le):
		s.requests.WithLabelValues("verify_" + le.Code).Inc()
	}
	return v, err
}

func (s *Service) verify(ctx context.Context, site, mac, id, code string) (Verified, error) {
	expired := &apiclient.LoginError{Code: apiclient.CodeExpired, Message: "no such code, or it expired or was used"}
	if len(id) != 32 || len(code) > 16 {
		return Verified{}, expired
	}
	key := "sms/req/" + id
	val, err := s.cfg.Store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return Verified{}, expired
	}
	if err != nil {
		return Verified{}, fmt.Errorf("reading sms request: %w", err)
	}
	var rec record
	if err := json.Unmarshal(val, &rec); err != nil {
		return Verified{}, fmt.Errorf("decoding sms request: %w", err)
	}
	if !s.cfg.Now().Before(rec.Expires) {
		return Verified{}, expired
	}
	// Counted only for a request that exists: a guess at ids writes
	// nothing. The counter is left to expire (every request has its own
	// id): deleting it was one more round trip on every login.
	tries, err := s.cfg.Store.Incr(ctx, "sms/tries/"+id, 1, 2*CodeTTL)
	if err != nil {
		return Verified{}, fmt.Errorf("counting tries: %w", err)
	}
	if tries > MaxTries {
		return Verified{}, &apiclient.LoginError{Code: apiclient.CodeTooManyTries, Message: "too many wrong codes: ask for a new one"}
	}
	// A request is bound to the site and device that asked for it.
	ok := rec.Site == site && rec.MAC == s.cfg.Pepper.Key("mac", mac) && hmac.Equal(rec.CodeHash, s.codeHash(id, normalizeCode(code)))
	if !ok { // the 5th wrong try answers tries_left 0; every try after it too_many_tries
		return Verified{}, &apiclient.LoginError{Code: apiclient.CodeWrongCode, Message: "wrong code", TriesLeft: MaxTries - int(tries)}
	}
	// Single use: of two concurrent right answers only one Take succeeds.
	if _, err := s.cfg.Store.Take(ctx, key); errors.Is(err, store.ErrNotFound) {
		return Verified{}, expired
	} else if err != nil {
		return Verified{}, fmt.Errorf("using sms request: %w", err)
	}
	return Verified{User: rec.User}, nil
}

// normalizeCode drops what a resident or a phone's autofill may add around the digits.
func normalizeCode(c string) string {
	b := make([]byte, 0, Digits)
	for i := 0; i < len(c); i++ {
		if c[i] >= '0' && c[i] <= '9' {
			b = append(b, c[i])
		}
	}
	return string(b)
}
