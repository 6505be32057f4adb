package apiclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxResponse is the largest answer the client reads.
const MaxResponse = 8 << 20

// RequestTimeout bounds a request whose context has no deadline.
const RequestTimeout = 30 * time.Second

// DefaultWait is how long a long poll asks the controller to hold the request.
const DefaultWait = 30 * time.Second

// Errors the client returns; test them with errors.Is.
var (
	// ErrRefused: the controller answered 401 or 403 (unknown or misconfigured key, clock off by more than Skew,
	// wrong site). Retrying will not help until an operator fixes it.
	ErrRefused = errors.New("refused by the controller")
	// ErrBadSignature: an answer was not signed by the controller's key (or not for this request).
	ErrBadSignature = errors.New("answer not signed by the controller")
	// ErrNoCache: there is no usable cached policy.
	ErrNoCache = errors.New("no cached policy")
)

// StatusError is an answer with an unexpected HTTP status.
type StatusError struct {
	Code int
	Body string // at most 200 bytes of the answer
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("controller answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Body)
}

// Is makes errors.Is(err, ErrRefused) true for 401 and 403.
func (e *StatusError) Is(target error) bool {
	return target == ErrRefused && (e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden)
}

// Config configures a Client.
type Config struct {
	BaseURL       string             // the controller, e.g. https://wifi.comune.voghera.pv.it:8443
	Site          string             // this gateway's site id (the controller checks it against the key)
	GatewayID     string             // this gateway's id, as in sites.yaml
	Key           ed25519.PrivateKey // this gateway's key (LoadPrivateKey)
	ControllerKey ed25519.PublicKey  // the controller's response-signing key (LoadPublicKey)
	CacheFile     string             // where the last policy is kept; "" keeps none
	HTTPClient    *http.Client       // nil: a client with its own transport; no Timeout (contexts bound requests)
	Log           *slog.Logger       // nil: discard
	Backoff       Backoff            // zero: DefaultBackoff
	Wait          time.Duration      // long-poll wait; zero: DefaultWait
	Now           func() time.Time   // nil: time.Now
}

// Client talks to the controller for one gateway. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base *url.URL
	hc   *http.Client
	log  *slog.Logger
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(strings.TrimSuffix(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("apiclient: base URL %q: want http(s)://host[:port]", cfg.BaseURL)
	}
	if !ValidID(cfg.GatewayID) {
		return nil, fmt.Errorf("apiclient: gateway id %q: want 1 to 64 of a-z 0-9 . _ -", cfg.GatewayID)
	}
	if !ValidID(cfg.Site) {
		return nil, fmt.Errorf("apiclient: site %q: want 1 to 64 of a-z 0-9 . _ -", cfg.Site)
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("apiclient: missing gateway key")
	}
	if len(cfg.ControllerKey) != ed25519.PublicKeySize {
		return nil, errors.New("apiclient: missing controller public key")
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Client{cfg: cfg, base: base, hc: cfg.HTTPClient, log: cfg.Log}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Logins relay through here: a burst of residents must reuse
		// connections, not dial (and handshake) one each. Over plain
		// HTTP/1.1 a burst of 100 logins holds 100 connections at once;
		// with 64 idle slots, 36 were closed after every burst and dialled
		// again at the next. (Over HTTPS the transport speaks HTTP/2 to
		// the controller: one connection carries them all.)
		t.MaxIdleConns, t.MaxIdleConnsPerHost = 256, 256 // (the default transport keeps 100 in all)
		t.ResponseHeaderTimeout = 0                      // long polls; each request's context bounds it
		c.hc = &http.Client{Transport: t}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// answer is a verified response.
type answer struct {
	status int
	etag   string
	body   []byte
	nonce  string
	sig    string
}

// do signs and sends one request to /v1/sites/{site}{path} and verifies the answer's signature. Any status other
// than 200, 204 and 304 becomes a *StatusError.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, hdr http.Header) (answer, error) {
	if _, ok := ctx.Deadline(); !ok { // a dead TCP connection must not hang a caller forever
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, RequestTimeout)
		defer cancel()
	}
	u := *c.base
	u.Path = c.base.Path + "/v1/sites/" + c.cfg.Site + path // ids need no escaping (ValidID)
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	nonce := NewNonce()
	ts := c.cfg.Now().Unix()
	msg, err := SignedRequest{
		Gateway: c.cfg.GatewayID, Method: method, Target: req.URL.RequestURI(),
		Timestamp: ts, Nonce: nonce, BodySHA256: sha256.Sum256(body),
	}.AppendMessage(make([]byte, 0, 256))
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: signing: %w", method, path, err)
	}
	req.Header.Set(HeaderGateway, c.cfg.GatewayID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderSignature, EncodeSignature(ed25519.Sign(c.cfg.Key, msg)))

	resp, err := c.hc.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if len(data) > MaxResponse {
		return answer{}, fmt.Errorf("%s %s: answer longer than %d bytes", method, path, MaxResponse)
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent, http.StatusNotModified:
	default:
		return answer{}, fmt.Errorf("%s %s: %w", method, path, &StatusError{Code: resp.StatusCode, Body: string(data[:min(len(data), 200)])})
	}
	a := answer{status: resp.StatusCode, etag: resp.Header.Get("ETag"), body: data, nonce: nonce, sig: resp.Header.Get(HeaderSignature)}
	if err := c.verify(a); err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return a, nil
}

func (c *Client) verify(a answer) error {
	sig, err := DecodeSignature(a.sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return ErrBadSignature
	}
	msg, err := SignedResponse{
		Gateway: c.cfg.GatewayID, Nonce: a.nonce, Status: a.status, ETag: a.etag, BodySHA256: sha256.Sum256(a.body),
	}.AppendMessage(make([]byte, 0, 256))
	if err != nil || !ed25519.Verify(c.cfg.ControllerKey, msg, sig) {
		return ErrBadSignature
	}
	return nil
}

func (c *Client) postJSON(ctx context.Context, path string, v any) (answer, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return answer{}, fmt.Errorf("POST %s: encoding: %w", path, err)
	}
	return c.do(ctx, http.MethodPost, path, nil, body, nil)
}

// Heartbeat sends the gateway's health.
func (c *Client) Heartbeat(ctx context.Context, hb Heartbeat) error {
	if hb.SentAt.IsZero() {
		hb.SentAt = c.cfg.Now().UTC()
	}
	if _, err := c.postJSON(ctx, "/heartbeat", hb); err != nil {
		return fmt.Errorf("sending heartbeat: %w", err)
	}
	return nil
}

// SendEvents delivers up to MaxBatch session events and returns which ones the controller now holds. Callers
// normally go through outbox, which makes them durable first.
func (c *Client) SendEvents(ctx context.Context, events []SessionEvent) (EventAck, error) {
	if len(events) > MaxBatch {
		return EventAck{}, fmt.Errorf("sending events: %d in one batch, at most %d", len(events), MaxBatch)
	}
	a, err := c.postJSON(ctx, "/events", EventBatch{Events: events})
	if err != nil {
		return EventAck{}, fmt.Errorf("sending %d events: %w", len(events), err)
	}
	var ack EventAck
	if err := json.Unmarshal(a.body, &ack); err != nil {
		return EventAck{}, fmt.Errorf("sending %d events: decoding ack: %w", len(events), err)
	}
	return ack, nil
}

// FetchPolicy asks for the site's policy. With have set to the version the gateway runs, the controller holds
// the request up to wait for a new one; changed is false when none came (304). A new policy is written to the
// cache file before FetchPolicy returns.
func (c *Client) FetchPolicy(ctx context.Context, have string, wait time.Duration) (p Policy, changed bool, err error) {
	q := url.Values{}
	hdr := http.Header{}
	if have != "" {
		hdr.Set("If-None-Match", quoteETag(have))
		if wait > 0 {
			q.Set("wait", strconv.Itoa(int(wait.Round(time.Second)/time.Second)))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	a, err := c.do(ctx, http.MethodGet, "/policy", q, nil, hdr)
	if err != nil {
		return Policy{}, false, fmt.Errorf("fetching policy: %w", err)
	}
	if a.status == http.StatusNotModified {
		if unquoteETag(a.etag) != have || have == "" {
			return Policy{}, false, fmt.Errorf("fetching policy: 304 for version %q, asked about %q", a.etag, have)
		}
		return Policy{Version: have}, false, nil
	}
	if a.status != http.StatusOK || !json.Valid(a.body) {
		return Policy{}, false, fmt.Errorf("fetching policy: status %d, or not JSON", a.status)
	}
	p = Policy{Version: unquoteETag(a.etag), Body: a.body, FetchedAt: c.cfg.Now().UTC()}
	if p.Version == "" {
		return Policy{}, false, errors.New("fetching policy: answer without ETag")
	}
	if err := c.writeCache(p, a); err != nil {
		// Still apply it: the controller is the truth; the cache only matters for the next boot.
		c.log.Warn("caching policy", "err", err)
	}
	return p, true, nil
}

// BootPolicy returns the site's policy from the controller, or, when that fails for any reason (unreachable,
// refused, a bad answer), the cached one with FromCache set; the reason is logged. It fails only when neither
// is there. A gateway calls it at start so that a site comes up even while the controller is down.
func (c *Client) BootPolicy(ctx context.Context) (Policy, error) {
	ctx2, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	p, _, err := c.FetchPolicy(ctx2, "", 0)
	if err == nil {
		return p, nil
	}
	cached, cerr := c.CachedPolicy()
	if cerr != nil {
		return Policy{}, errors.Join(err, cerr)
	}
	c.log.Warn("controller unavailable, booting from the cached policy", "err", err, "version", cached.Version, "fetched_at", cached.FetchedAt)
	return cached, nil
}

// WatchPolicy long-polls for policy changes, starting from version have ("" fetches at once), and calls apply
// with each new one, in order, from this goroutine. Failures are retried with Backoff. It returns nil when ctx
// ends.
func (c *Client) WatchPolicy(ctx context.Context, have string, apply func(Policy)) error {
	attempt := 0
	for ctx.Err() == nil {
		p, changed, err := c.FetchPolicy(ctx, have, c.cfg.Wait)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			d := c.cfg.Backoff.Delay(attempt)
			attempt++
			c.log.Warn("fetching policy", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				break
			}
			continue
		}
		attempt = 0
		if changed {
			have = p.Version
			apply(p)
		}
	}
	return nil
}

// Commands long-polls for remote operations waiting for this gateway: it returns at once when there are some,
// else after wait with none.
func (c *Client) Commands(ctx context.Context, wait time.Duration) ([]Command, error) {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", strconv.Itoa(int(wait.Round(time.Second)/time.Second)))
	}
	ctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	a, err := c.do(ctx, http.MethodGet, "/commands", q, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("polling commands: %w", err)
	}
	var l CommandList
	if err := json.Unmarshal(a.body, &l); err != nil {
		return nil, fmt.Errorf("polling commands: decoding: %w", err)
	}
	return l.Commands, nil
}

// AckCommands reports what the gateway did; the controller then stops offering those commands.
func (c *Client) AckCommands(ctx context.Context, acks []CommandAck) error {
	if _, err := c.postJSON(ctx, "/commands/ack", CommandAcks{Acks: acks}); err != nil {
		return fmt.Errorf("acking %d commands: %w", len(acks), err)
	}
	return nil
}

// WatchCommands long-polls for commands, runs each through handle and acks the results, retrying failures with
// Backoff. A command delivered again because its ack was lost is acked with the remembered result, not run
// twice (an "extend" must not extend twice). It returns nil when ctx ends.
func (c *Client) WatchCommands(ctx context.Context, handle func(context.Context, Command) CommandAck) error {
	done := map[string]CommandAck{} // recent results by command id
	var order []string
	attempt := 0
	fail := func(what string, err error) bool {
		if ctx.Err() != nil {
			return false
		}
		d := c.cfg.Backoff.Delay(attempt)
		attempt++
		c.log.Warn(what, "err", err, "retry_in", d)
		return sleep(ctx, d)
	}
	for ctx.Err() == nil {
		cmds, err := c.Commands(ctx, c.cfg.Wait)
		if err != nil {
			if !fail("polling commands", err) {
				break
			}
			continue
		}
		if len(cmds) == 0 {
			attempt = 0
			continue
		}
		acks := make([]CommandAck, 0, len(cmds))
		for _, cmd := range cmds {
			ack, seen := done[cmd.ID]
			if !seen {
				ack = handle(ctx, cmd)
				ack.ID = cmd.ID
				done[cmd.ID] = ack
				order = append(order, cmd.ID)
				if len(order) > 1024 {
					delete(done, order[0])
					order = order[1:]
				}
			}
			acks = append(acks, ack)
		}
		if err := c.AckCommands(ctx, acks); err != nil {
			if !fail("acking commands", err) {
				break
			}
			continue
		}
		attempt = 0
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func quoteETag(v string) string { return `"` + v + `"` }

func unquoteETag(s string) string {
	s = strings.TrimPrefix(s, "W/")
	return strings.TrimSuffix(strings.TrimPrefix(s, `"`), `"`)
}

// RunHeartbeats sends health() every interval until ctx ends (then it returns nil). The first heartbeat goes
// after a random [0, every) and each wait is jittered by +-10%, so gateways started together drift apart. A
// failed heartbeat is logged and not retried: the next one replaces it.
func (c *Client) RunHeartbeats(ctx context.Context, every time.Duration, health func() Heartbeat) error {
	if every <= 0 {
		return errors.New("heartbeats: interval must be positive")
	}
	if !sleep(ctx, Spread(every)) {
		return nil
	}
	for {
		hctx, cancel := context.WithTimeout(ctx, max(every, 10*time.Second))
		err := c.Heartbeat(hctx, health())
		cancel()
		if err != nil && ctx.Err() == nil {
			c.log.Warn("sending heartbeat", "err", err)
		}
		if !sleep(ctx, every-every/10+Spread(every/5)) {
			return nil
		}
	}
}
