package gwapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/prometheus/client_golang/prometheus"
)

// Server serves the gateway API.
type Server struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	policy   notifier
	commands notifier
	refused  *prometheus.CounterVec
	events   *prometheus.CounterVec
	bufs     sync.Pool
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Keys == nil, cfg.Nonces == nil, cfg.Policies == nil, cfg.Sink == nil, cfg.Commands == nil:
		return nil, errors.New("gwapi: Keys, Nonces, Policies, Sink and Commands are all required")
	case len(cfg.SigningKey) != ed25519.PrivateKeySize:
		return nil, errors.New("gwapi: missing the controller's signing key")
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 30 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Log, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.bufs.New = func() any { return new(bytes.Buffer) }
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "civicwifi_controller_gateway_refusals_total",
		Help: "Gateway API requests refused, by reason.",
	}, []string{"reason"})
	s.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "civicwifi_controller_session_events_total",
		Help: "Session events received from gateways, by result (recorded, duplicate).",
	}, []string{"result"})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.refused, s.events} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("gwapi: registering metrics: %w", err)
			}
		}
	}
	s.mux.Handle("GET /v1/sites/{site}/policy", s.authenticated(s.getPolicy))
	s.mux.Handle("POST /v1/sites/{site}/heartbeat", s.authenticated(s.postHeartbeat))
	s.mux.Handle("POST /v1/sites/{site}/events", s.authenticated(s.postEvents))
	s.mux.Handle("GET /v1/sites/{site}/commands", s.authenticated(s.getCommands))
	s.mux.Handle("POST /v1/sites/{site}/commands/ack", s.authenticated(s.postAcks))
	return s, nil
}

// Handler returns the HTTP handler of the API (under /v1/).
func (s *Server) Handler() http.Handler { return s.mux }

// NotifyPolicy wakes the long polls of site's gateways so they re-read its policy; call it when sites.yaml was
// reloaded (for every site, NotifyAllPolicies). With several replicas, call it on every replica (e.g. from a
// Redis pub/sub message); a missed notify delays a change until the poll's wait ends (or Config.Recheck).
func (s *Server) NotifyPolicy(site string) { s.policy.notify(site) }

// NotifyAllPolicies wakes every site's policy long polls.
func (s *Server) NotifyAllPolicies() { s.policy.notifyAll() }

// NotifyCommands wakes the command long polls of site's gateways; call it after queueing a command.
func (s *Server) NotifyCommands(site string) { s.commands.notify(site) }

// request is an authenticated request.
type request struct {
	from  Origin
	nonce string
	body  []byte
}

// authenticated wraps h with the signature checks of README.md. Refusals are logged with the claimed gateway
// id, the reason and the remote address, and answered with a bare 401 or 403.
func (s *Server) authenticated(h func(w http.ResponseWriter, r *http.Request, req request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gw := r.Header.Get(apiclient.HeaderGateway)
		refuse := func(code int, reason string) {
			s.refused.WithLabelValues(reason).Inc()
			s.log.Warn("refused gateway request", "gateway", printable(gw), "reason", reason,
				"remote", r.RemoteAddr, "method", r.Method, "path", printable(r.URL.Path))
			http.Error(w, http.StatusText(code), code)
		}
		tsText, nonce, sigText := r.Header.Get(apiclient.HeaderTimestamp), r.Header.Get(apiclient.HeaderNonce), r.Header.Get(apiclient.HeaderSignature)
		if gw == "" || tsText == "" || nonce == "" || sigText == "" {
			refuse(http.StatusUnauthorized, "unsigned")
			return
		}
		ts, err := apiclient.ParseTimestamp(tsText)
		sig, serr := apiclient.DecodeSignature(sigText)
		if !apiclient.ValidID(gw) || err != nil || !apiclient.ValidNonce(nonce) || serr != nil || len(sig) != ed25519.SignatureSize {
			refuse(http.StatusUnauthorized, "malformed")
			return
		}
		ctx := r.Context()
		key, err := s.cfg.Keys.GatewayKey(ctx, gw)
		if errors.Is(err, ErrUnknownGateway) {
			refuse(http.StatusUnauthorized, "unknown gateway")
			return
		}
		if err != nil {
			s.log.Error("looking up gateway key", "gateway", gw, "err", err)
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
		now := s.cfg.Now()
		if d := now.Sub(time.Unix(ts, 0)); d > apiclient.Skew || d < -apiclient.Skew {
			refuse(http.StatusUnauthorized, "clock skew")
			return
		}
		buf := s.bufs.Get().(*bytes.Buffer)
		buf.Reset()
		defer s.bufs.Put(buf)
		if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				refuse(http.StatusRequestEntityTooLarge, "body too large")
				return
			}
			refuse(http.StatusBadRequest, "reading body")
			return
		}
		var msgBuf [320]byte
		msg, err := apiclient.SignedRequest{
			Gateway: gw, Method: r.Method, Target: r.RequestURI, Timestamp: ts, Nonce: nonce,
			BodySHA256: sha256.Sum256(buf.Bytes()),
		}.AppendMessage(msgBuf[:0])
		if err != nil || !ed25519.Verify(key.PublicKey, msg, sig) {
			refuse(http.StatusUnauthorized, "bad signature")
			return
		}
		// Only now, with a valid signature, is the nonce stored: nobody without a key can fill the store.
		fresh, err := s.cfg.Nonces.PutIfAbsent(ctx, "gw-nonce/"+gw+"/"+nonce, apiclient.NonceTTL)
		if err != nil {
			s.log.Error("storing nonce", "gateway", gw, "err", err)
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
		if !fresh {
			refuse(http.StatusUnauthorized, "replayed nonce")
			return
		}
		if r.PathValue("site") != key.Site {
			refuse(http.StatusForbidden, "other site")
			return
		}
		h(w, r, request{from: Origin{Site: key.Site, Gateway: gw, Remote: r.RemoteAddr}, nonce: nonce, body: buf.Bytes()})
	})
}

// reply writes a signed answer.
func (s *Server) reply(w http.ResponseWriter, req request, status int, etag string, body []byte) {
	var msgBuf [320]byte
	msg, err := apiclient.SignedResponse{
		Gateway: req.from.Gateway, Nonce: req.nonce, Status: status, ETag: etag, BodySHA256: sha256.Sum256(body),
	}.AppendMessage(msgBuf[:0])
	if err != nil {
		s.log.Error("signing answer", "gateway", req.from.Gateway, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set(apiclient.HeaderSignature, apiclient.EncodeSignature(ed25519.Sign(s.cfg.SigningKey, msg)))
	if etag != "" {
		h.Set("ETag", etag)
	}
	if len(body) > 0 {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}

func (s *Server) replyJSON(w http.ResponseWriter, req request, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.fail(w, req, "encoding answer", err)
		return
	}
	s.reply(w, req, http.StatusOK, "", body)
}

func (s *Server) fail(w http.ResponseWriter, req request, what string, err error) {
	if errors.Is(err, context.Canceled) {
		return // the gateway went away
	}
	s.log.Error(what, "site", req.from.Site, "gateway", req.from.Gateway, "err", err)
	http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
}

func (s *Server) badRequest(w http.ResponseWriter, req request, err error) {
	s.log.Warn("bad gateway request", "site", req.from.Site, "gateway", req.from.Gateway, "err", err)
	http.Error(w, err.Error(), http.StatusBadRequest) // the gateway is authenticated: say what is wrong
}

// wait parses ?wait=seconds, capped at MaxWait.
func (s *Server) wait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("wait %q: want whole seconds", v)
	}
	return min(time.Duration(n)*time.Second, s.cfg.MaxWait), nil
}

// longPoll calls check until it reports done, waking on n's notify for site, every Recheck, and giving up after
// wait. It reports whether check finished (false on timeout or when the request ended).
func (s *Server) longPoll(ctx context.Context, n *notifier, site string, wait time.Duration, check func() (bool, error)) (bool, error) {
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		woken := n.watch(site) // before check, so a change between check and select is not missed
		done, err := check()
		if err != nil || done {
			return done, err
		}
		if deadline == nil {
			return false, nil
		}
		var recheck <-chan time.Time
		if s.cfg.Recheck > 0 {
			t := time.NewTimer(s.cfg.Recheck)
			recheck = t.C
			defer t.Stop() // a poll loops a few times at most: notifies are rare
		}
		select {
		case <-woken:
		case <-recheck:
		case <-deadline:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, req request) {
	wait, err := s.wait(r)
	if err != nil {
		s.badRequest(w, req, err)
		return
	}
	have := unquoteETag(r.Header.Get("If-None-Match"))
	var body []byte
	var version string
	changed, err := s.longPoll(r.Context(), &s.policy, req.from.Site, wait, func() (bool, error) {
		var err error
		body, version, err = s.cfg.Policies.Policy(r.Context(), req.from.Site)
		return version != have, err
	})
	switch {
	case err != nil:
		s.fail(w, req, "reading policy", err)
	case !changed:
		s.reply(w, req, http.StatusNotModified, `"`+have+`"`, nil)
	case version == "" || strings.ContainsAny(version, "\"\r\n"):
		s.fail(w, req, "reading policy", fmt.Errorf("site %q: unusable policy version %q", req.from.Site, version))
	default:
		s.reply(w, req, http.StatusOK, `"`+version+`"`, body)
	}
}

func unquoteETag(s string) string {
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "W/"))
	return strings.TrimSuffix(strings.TrimPrefix(s, `"`), `"`)
}

func (s *Server) postHeartbeat(w http.ResponseWriter, r *http.Request, req request) {
	var hb apiclient.Heartbeat
	if err := json.Unmarshal(req.body, &hb); err != nil {
		s.badRequest(w, req, fmt.Errorf("heartbeat: %w", err))
		return
	}
	if err := s.cfg.Sink.Heartbeat(r.Context(), req.from, hb); err != nil {
		s.fail(w, req, "recording heartbeat", err)
		return
	}
	s.reply(w, req, http.StatusNoContent, "", nil)
}

// postEvents validates the whole batch first (a bad event changes nothing), then records the events in order and
// acks those recorded; after a Sink error the rest are left for the gateway to send again.
func (s *Server) postEvents(w http.ResponseWriter, r *http.Request, req request) {
	var b apiclient.EventBatch
	if err := json.Unmarshal(req.body, &b); err != nil {
		s.badRequest(w, req, fmt.Errorf("events: %w", err))
		return
	}
	if len(b.Events) > apiclient.MaxBatch {
		s.badRequest(w, req, fmt.Errorf("events: %d in one batch, at most %d", len(b.Events), apiclient.MaxBatch))
		return
	}
	var errs []error
	for i, ev := range b.Events {
		if err := ev.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("events[%d]: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		s.badRequest(w, req, err)
		return
	}
	ack := apiclient.EventAck{Recorded: []string{}, Duplicates: []string{}}
	for _, ev := range b.Events {
		dup, err := s.cfg.Sink.SessionEvent(r.Context(), req.from, ev)
		if err != nil {
			if len(ack.Recorded)+len(ack.Duplicates) == 0 {
				s.fail(w, req, "recording session event", err)
				return
			}
			s.log.Warn("recording session event; acking the ones before", "gateway", req.from.Gateway, "err", err)
			break
		}
		if dup {
			s.events.WithLabelValues("duplicate").Inc()
			ack.Duplicates = append(ack.Duplicates, ev.ID)
		} else {
			s.events.WithLabelValues("recorded").Inc()
			ack.Recorded = append(ack.Recorded, ev.ID)
		}
	}
	s.replyJSON(w, req, ack)
}

func (s *Server) getCommands(w http.ResponseWriter, r *http.Request, req request) {
	wait, err := s.wait(r)
	if err != nil {
		s.badRequest(w, req, err)
		return
	}
	var cmds []apiclient.Command
	if _, err := s.longPoll(r.Context(), &s.commands, req.from.Site, wait, func() (bool, error) {
		var err error
		cmds, err = s.cfg.Commands.Pending(r.Context(), req.from.Site, req.from.Gateway)
		return len(cmds) > 0, err
	}); err != nil {
		s.fail(w, req, "reading commands", err)
		return
	}
	if cmds == nil {
		cmds = []apiclient.Command{}
	}
	s.replyJSON(w, req, apiclient.CommandList{Commands: cmds})
}

func (s *Server) postAcks(w http.ResponseWriter, r *http.Request, req request) {
	var acks apiclient.CommandAcks
	if err := json.Unmarshal(req.body, &acks); err != nil {
		s.badRequest(w, req, fmt.Errorf("acks: %w", err))
		return
	}
	for _, a := range acks.Acks {
		err := s.cfg.Commands.Ack(r.Context(), req.from.Site, req.from.Gateway, a)
		if errors.Is(err, ErrUnknownCommand) {
			// Already acked, or another site's command: nothing to do, but worth a line.
			s.log.Warn("ack of an unknown command", "site", req.from.Site, "gateway", req.from.Gateway, "command", printable(a.ID), "remote", req.from.Remote)
			continue
		}
		if err != nil {
			s.fail(w, req, "recording command ack", err)
			return
		}
	}
	s.reply(w, req, http.StatusNoContent, "", nil)
}

// printable bounds attacker-supplied strings before they reach a log line.
func printable(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	q := strconv.QuoteToASCII(s)
	return q[1 : len(q)-1]
}

// notifier wakes waiters per key: watch returns a channel closed by the next notify of that key.
type notifier struct {
	mu    sync.Mutex
	chans map[string]chan struct{}
}

func (n *notifier) watch(key string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.chans == nil {
		n.chans = map[string]chan struct{}{}
	}
	ch, ok := n.chans[key]
	if !ok {
		ch = make(chan struct{})
		n.chans[key] = ch
	}
	return ch
}

func (n *notifier) notify(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.chans[key]; ok {
		close(ch)
		delete(n.chans, key)
	}
}

func (n *notifier) notifyAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, ch := range n.chans {
		close(ch)
		delete(n.chans, k)
	}
}
