package sms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nyaruka/phonenumbers"
)

// Message is one SMS to send. To is E.164. Code and RequestID are there for the log provider only: a real provider
// sends Text.
type Message struct {
	To        string
	Text      string
	Code      string
	RequestID string
}

// Provider sends one SMS. An error wrapping ErrPermanent is not retried (the provider refused the number or
// our credentials); any other error is.
type Provider interface {
	Name() string
	Send(ctx context.Context, m Message) error
}

// ErrPermanent marks a provider's answer that retrying cannot change.
var ErrPermanent = errors.New("permanent provider error")

// ProviderConfig chooses and configures a provider (controller.yaml login.sms).
type ProviderConfig struct {
	Kind        string // twilio, skebby, webhook or log
	URL         string // the API's base URL (twilio, skebby: the public API when empty) or the webhook's URL
	Account     string // twilio: the account SID (AC...); skebby: the user name
	From        string // twilio: the sender number or messaging service SID (MG...); skebby: the sender alias
	Secret      string // twilio: the auth token; skebby: the password; webhook: a bearer token (optional)
	MessageType string // skebby: GP (default), TI or SI
	HTTPClient  *http.Client
	Log         *slog.Logger // log provider
}

// Public API base URLs.
const (
	TwilioURL = "https://api.twilio.com"
	SkebbyURL = "https://api.skebby.it/API/v1.0/REST"
)

// NewProvider returns the provider cfg names.
func NewProvider(cfg ProviderConfig) (Provider, error) {
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{} // each attempt's context bounds it (Sender.Timeout)
	}
	need := func(what, v string) error {
		if v == "" {
			return fmt.Errorf("sms provider %s: %s missing", cfg.Kind, what)
		}
		return nil
	}
	switch cfg.Kind {
	case "twilio":
		if err := errors.Join(need("account", cfg.Account), need("from", cfg.From), need("secret", cfg.Secret)); err != nil {
			return nil, err
		}
		return &Twilio{BaseURL: strings.TrimSuffix(or(cfg.URL, TwilioURL), "/"), AccountSID: cfg.Account, AuthToken: cfg.Secret, From: cfg.From, HTTP: hc}, nil
	case "skebby":
		if err := errors.Join(need("account", cfg.Account), need("secret", cfg.Secret)); err != nil {
			return nil, err
		}
		return &Skebby{BaseURL: strings.TrimSuffix(or(cfg.URL, SkebbyURL), "/"), Username: cfg.Account, Password: cfg.Secret,
			Sender: cfg.From, MessageType: or(cfg.MessageType, "GP"), HTTP: hc}, nil
	case "webhook":
		if err := need("url", cfg.URL); err != nil {
			return nil, err
		}
		return &Webhook{URL: cfg.URL, Token: cfg.Secret, HTTP: hc}, nil
	case "log":
		l := cfg.Log
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		return &LogProvider{Log: l}, nil
	}
	return nil, fmt.Errorf("sms provider %q: want twilio, skebby, webhook or log", cfg.Kind)
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// httpError turns a provider's non-success answer into an error: 4xx other than 408 and 429 are permanent.
func httpError(provider string, resp *http.Response, body []byte) error {
	err := fmt.Errorf("%s answered %d: %s", provider, resp.StatusCode, bytes.TrimSpace(body[:min(len(body), 200)]))
	if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	return err
}

func readBody(resp *http.Response) []byte {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return b
}

// Twilio speaks Twilio's Programmable Messaging API (and compatible ones): POST
// {base}/2010-04-01/Accounts/{AccountSid}/Messages.json, form fields To, From (or MessagingServiceSid for an MG
// sid) and Body, HTTP basic auth with the account SID and auth token; 201 with the message resource as JSON.
type Twilio struct {
	BaseURL, AccountSID, AuthToken, From string
	HTTP                                 *http.Client
}

func (t *Twilio) Name() string { return "twilio" }

func (t *Twilio) Send(ctx context.Context, m Message) error {
	form := url.Values{"To": {m.To}, "Body": {m.Text}}
	if strings.HasPrefix(t.From, "MG") {
		form.Set("MessagingServiceSid", t.From)
	} else {
		form.Set("From", t.From)
	}
	u := t.BaseURL + "/2010-04-01/Accounts/" + url.PathEscape(t.AccountSID) + "/Messages.json"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(t.AccountSID, t.AuthToken)
	resp, err := t.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("twilio: %w", err)
	}
	defer resp.Body.Close()
	body := readBody(resp)
	if resp.StatusCode/100 != 2 {
		return httpError("twilio", resp, body)
	}
	var msg struct {
		SID       string  `json:"sid"`
		Status    string  `json:"status"`
		ErrorCode *int    `json:"error_code"`
		ErrorMsg  *string `json:"error_message"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || msg.SID == "" {
		return fmt.Errorf("twilio: answer without a message sid: %.200s", body)
	}
	if msg.Status == "failed" || msg.Status == "undelivered" || msg.ErrorCode != nil {
		return fmt.Errorf("twilio: message %s %s", msg.SID, msg.Status)
	}
	return nil
}

// Skebby speaks the Skebby (Aruba) REST API: GET {base}/login with HTTP basic auth answers "user_key;session_key";
// POST {base}/sms with the user_key and Session_key headers and a JSON body {message_type, message, recipient,
// sender, returnCredits} answers 201 {"result":"OK","order_id":...}. The session is reused and renewed when the
// API answers 401.
type Skebby struct {
	BaseURL, Username, Password, Sender, MessageType string
	HTTP                                             *http.Client

	mu                  sync.Mutex
	userKey, sessionKey string
}

func (s *Skebby) Name() string { return "skebby" }

func (s *Skebby) login(ctx context.Context) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.userKey != "" {
		return s.userKey, s.sessionKey, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.BaseURL+"/login", nil)
	if err != nil {
		return "", "", err
	}
	req.SetBasicAuth(s.Username, s.Password)
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("skebby login: %w", err)
	}
	defer resp.Body.Close()
	body := readBody(resp)
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("skebby login: %w", httpError("skebby", resp, body))
	}
	uk, sk, ok := strings.Cut(strings.TrimSpace(string(body)), ";")
	if !ok || uk == "" || sk == "" {
		return "", "", fmt.Errorf("skebby login: answer %.80q is not user_key;session_key", body)
	}
	s.userKey, s.sessionKey = uk, sk
	return uk, sk, nil
}

func (s *Skebby) Send(ctx context.Context, m Message) error {
	for attempt := 0; ; attempt++ {
		uk, sk, err := s.login(ctx)
		if err != nil {
			return err
		}
		body, _ := json.Marshal(map[string]any{
			"message_type": s.MessageType, "message": m.Text, "recipient": []string{m.To},
			"sender": s.Sender, "returnCredits": true,
		})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.BaseURL+"/sms", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("user_key", uk)
		req.Header.Set("Session_key", sk)
		resp, err := s.HTTP.Do(req)
		if err != nil {
			return fmt.Errorf("skebby: %w", err)
		}
		data := readBody(resp)
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			s.mu.Lock()
			s.userKey, s.sessionKey = "", "" // the session expired: log in again once
			s.mu.Unlock()
			continue
		}
		if resp.StatusCode/100 != 2 {
			return httpError("skebby", resp, data)
		}
		var ans struct {
			Result  string `json:"result"`
			OrderID string `json:"order_id"`
		}
		if err := json.Unmarshal(data, &ans); err != nil || ans.Result != "OK" {
			return fmt.Errorf("skebby: answer %.200s", data)
		}
		return nil
	}
}

// Webhook posts {"to": E.164, "text": ..., "request_id": ...} as JSON to URL, with "Authorization: Bearer Token"
// when Token is set; any 2xx is success. For a town's own SMS gateway or a provider without a built-in client.
type Webhook struct {
	URL, Token string
	HTTP       *http.Client
}

func (w *Webhook) Name() string { return "webhook" }

func (w *Webhook) Send(ctx context.Context, m Message) error {
	body, _ := json.Marshal(map[string]string{"to": m.To, "text": m.Text, "request_id": m.RequestID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if w.Token != "" {
		req.Header.Set("Authorization", "Bearer "+w.Token)
	}
	resp, err := w.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	data := readBody(resp)
	if resp.StatusCode/100 != 2 {
		return httpError("webhook", resp, data)
	}
	return nil
}

// LogProvider sends nothing: it writes the code and the request id (never the number) to the log. For a lab or
// a developer's machine only.
type LogProvider struct{ Log *slog.Logger }

func (l *LogProvider) Name() string { return "log" }

func (l *LogProvider) Send(ctx context.Context, m Message) error {
	l.Log.Warn("sms not sent (log provider, development only)", "request_id", m.RequestID, "code", m.Code)
	return nil
}

// Sender sends through a Provider, retrying errors and timeouts with back-off: Attempts tries of at most Timeout
// each, waiting Backoff[i] between them. The whole is bounded, so a resident always gets an answer.
type Sender struct {
	Provider Provider
	Attempts int             // zero: 3
	Timeout  time.Duration   // per attempt; zero: 4 s
	Backoff  []time.Duration // zero: 250 ms, 1 s
	Log      *slog.Logger
	// Result, if set, is called once per attempt with "ok", "error", "timeout" or "refused" (metrics).
	Result func(provider, result string)
}

// Send sends m, retrying; the error says how often it tried and the last failure.
func (s *Sender) Send(ctx context.Context, m Message) error {
	attempts, timeout, backoff := s.Attempts, s.Timeout, s.Backoff
	if attempts <= 0 {
		attempts = 3
	}
	if timeout <= 0 {
		timeout = 4 * time.Second
	}
	if backoff == nil {
		backoff = []time.Duration{250 * time.Millisecond, time.Second}
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := s.Provider.Name()
	var err error
	for i := range attempts {
		actx, cancel := context.WithTimeout(ctx, timeout)
		err = s.Provider.Send(actx, m)
		timedOut := actx.Err() == context.DeadlineExceeded && ctx.Err() == nil
		cancel()
		result := "ok"
		switch {
		case err == nil:
		case errors.Is(err, ErrPermanent):
			result = "refused"
		case timedOut:
			result = "timeout"
		default:
			result = "error"
		}
		if s.Result != nil {
			s.Result(name, result)
		}
		if err == nil {
			return nil
		}
		err = redact(err, m.To) // providers echo the number in their errors
		log.Warn("sending sms", "provider", name, "request_id", m.RequestID, "attempt", i+1, "of", attempts, "result", result, "err", err)
		if errors.Is(err, ErrPermanent) || ctx.Err() != nil || i == attempts-1 {
			break
		}
		d := backoff[min(i, len(backoff)-1)]
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("sending sms via %s: %w", name, ctx.Err())
		case <-t.C:
		}
	}
	return fmt.Errorf("sending sms via %s: %w", name, err)
}

// redact returns err with every form of the number to (E.164, with "+" escaped or left out, the national
// significant number) replaced by "<number>", keeping ErrPermanent.
func redact(err error, to string) error {
	msg := err.Error()
	if to == "" {
		return err
	}
	digits := strings.TrimPrefix(to, "+")
	forms := []string{"%2B" + digits, "%2b" + digits, to, digits}
	if n, perr := phonenumbers.Parse(to, ""); perr == nil {
		forms = append(forms, phonenumbers.GetNationalSignificantNumber(n))
	}
	for _, f := range forms {
		if len(f) >= 6 {
			msg = strings.ReplaceAll(msg, f, "<number>")
		}
	}
	if msg == err.Error() {
		return err
	}
	if errors.Is(err, ErrPermanent) {
		return fmt.Errorf("%w: %s", ErrPermanent, strings.TrimPrefix(msg, ErrPermanent.Error()+": "))
	}
	return errors.New(msg)
}
