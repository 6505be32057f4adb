// Package apapi is the controller's HTTP API for OpenWrt access points:
// first-boot provisioning, periodic check-ins answered with the AP's desired
// config, and the offline view computed from missed check-ins. The AP side
// is firmware-scripts/ap (busybox ash); firmware-scripts/README.md describes
// the protocol and why it is shaped this way.
package apapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrUnknownAP is returned by Registry.GetAP for a MAC with no record.
var ErrUnknownAP = errors.New("unknown access point")

// ErrExists is returned by Registry.CreateAP when the MAC has a record.
var ErrExists = errors.New("access point already enrolled")

// Record is what the controller keeps about one enrolled AP.
type Record struct {
	MAC        string // NormalizeMAC form
	Model      string
	Firmware   string
	SecretHash []byte // SHA-256 of the AP's secret; the secret itself is never stored
	EnrolledAt time.Time

	LastCheckin    time.Time // zero until the first check-in
	Uptime         time.Duration
	Clients        int
	Radios         []RadioStatus
	AppliedVersion string    // the config version the AP runs, confirmed
	LastRollback   *Rollback // the most recent rollback the AP reported
	RollbackAt     time.Time
}

// Offline reports whether r missed its check-ins: none since after (K
// intervals) before now. An AP that never checked in counts from enrollment.
func (r Record) Offline(now time.Time, after time.Duration) bool {
	last := r.LastCheckin
	if last.IsZero() {
		last = r.EnrolledAt
	}
	return now.Sub(last) > after
}

// Registry stores AP records (the controller's Store implements it).
// CreateAP must be atomic: of two concurrent creates of one MAC, one fails
// with ErrExists.
type Registry interface {
	CreateAP(ctx context.Context, r Record) error
	GetAP(ctx context.Context, mac string) (Record, error) // ErrUnknownAP if none
	PutAP(ctx context.Context, r Record) error
	DeleteAP(ctx context.Context, mac string) error
	ListAPs(ctx context.Context) ([]Record, error)
}

// DesiredSource gives an AP's desired config from sites.yaml (the sites
// package implements it). ok is false for a MAC that sites.yaml does not
// declare. Config.Version may be left empty: the server sets it to
// ConfigVersion.
type DesiredSource interface {
	DesiredAP(mac string) (c Config, ok bool)
}

// EnrollVerifier checks a first-boot enrollment token for an AP.
type EnrollVerifier interface {
	VerifyEnrollToken(mac, token string) bool
}

// Options configure a Server. Desired, Registry and Enroll are required.
type Options struct {
	Desired  DesiredSource
	Registry Registry
	Enroll   EnrollVerifier

	Interval       time.Duration // check-in period told to APs; default 60s
	MissedCheckins int           // K: offline after K missed intervals; default 3
	RollbackAfter  time.Duration // the AP rolls back a config that loses the controller this long; default 5m
	// AllowReenroll lets a valid enrollment token replace the secret of an
	// already enrolled AP (a factory reset). Off by default: a leaked
	// enrollment token then cannot take over an enrolled AP's identity;
	// an operator removes the record (Server.Forget) instead.
	AllowReenroll bool

	Log *slog.Logger
	Now func() time.Time // default time.Now
}

// Server serves the AP API.
type Server struct {
	o   Options
	log *slog.Logger
}

// New checks o and returns a Server.
func New(o Options) (*Server, error) {
	if o.Desired == nil || o.Registry == nil || o.Enroll == nil {
		return nil, errors.New("apapi: Desired, Registry and Enroll are required")
	}
	if o.Interval == 0 {
		o.Interval = 60 * time.Second
	}
	if o.MissedCheckins == 0 {
		o.MissedCheckins = 3
	}
	if o.RollbackAfter == 0 {
		o.RollbackAfter = 5 * time.Minute
	}
	if o.Interval < time.Second || o.RollbackAfter < time.Second || o.MissedCheckins < 1 {
		return nil, fmt.Errorf("apapi: interval %v and rollback %v must be at least 1s, missed check-ins %d at least 1",
			o.Interval, o.RollbackAfter, o.MissedCheckins)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Server{o: o, log: o.Log.With("component", "apapi")}, nil
}

// OfflineAfter is how long an AP may stay silent before it counts as
// offline: MissedCheckins intervals.
func (s *Server) OfflineAfter() time.Duration {
	return time.Duration(s.o.MissedCheckins) * s.o.Interval
}

// Status is one enrolled AP as an operator sees it.
type Status struct {
	Record
	Offline bool
}

// Statuses lists every enrolled AP, sorted by MAC, with Offline computed at now.
func (s *Server) Statuses(ctx context.Context, now time.Time) ([]Status, error) {
	recs, err := s.o.Registry.ListAPs(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing access points: %w", err)
	}
	out := make([]Status, 0, len(recs))
	for _, r := range recs {
		out = append(out, Status{Record: r, Offline: r.Offline(now, s.OfflineAfter())})
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.MAC, b.MAC) })
	return out, nil
}

// Forget removes an AP's record, so that it can enroll again.
func (s *Server) Forget(ctx context.Context, mac string) error {
	m, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if err := s.o.Registry.DeleteAP(ctx, m); err != nil {
		return fmt.Errorf("forgetting %s: %w", m, err)
	}
	s.log.Info("access point forgotten", "mac", m)
	return nil
}

// Handler serves PathProvision and PathCheckin.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathProvision, s.provision)
	mux.HandleFunc("POST "+PathCheckin, s.checkin)
	return mux
}

const (
	maxBody   = 64 << 10
	maxRadios = 16
)

// apiError is an error answer: status, a message safe to show the AP.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func fail(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) provision(w http.ResponseWriter, r *http.Request) {
	var req ProvisionRequest
	resp, err := func() (ProvisionResponse, error) {
		tok, err := bearer(r)
		if err != nil {
			return ProvisionResponse{}, err
		}
		if err := decode(r, &req); err != nil {
			return ProvisionResponse{}, err
		}
		mac, err := NormalizeMAC(req.MAC)
		if err != nil {
			return ProvisionResponse{}, fail(http.StatusBadRequest, "%v", err)
		}
		req.MAC = mac
		if !s.o.Enroll.VerifyEnrollToken(mac, tok) {
			return ProvisionResponse{}, fail(http.StatusUnauthorized, "enrollment token refused for %s", mac)
		}
		if _, ok := s.o.Desired.DesiredAP(mac); !ok {
			return ProvisionResponse{}, fail(http.StatusForbidden, "%s is not an access point of sites.yaml", mac)
		}
		secret := make([]byte, 32)
		rand.Read(secret)
		hexSecret := hex.EncodeToString(secret)
		sum := sha256.Sum256([]byte(hexSecret))
		rec := Record{MAC: mac, Model: clean(req.Model), Firmware: clean(req.Firmware), SecretHash: sum[:], EnrolledAt: s.o.Now()}
		err = s.o.Registry.CreateAP(r.Context(), rec)
		if errors.Is(err, ErrExists) && s.o.AllowReenroll {
			s.log.Warn("access point enrolled again: its previous secret is revoked", "mac", mac, "remote", r.RemoteAddr)
			err = s.o.Registry.PutAP(r.Context(), rec)
		}
		if errors.Is(err, ErrExists) {
			return ProvisionResponse{}, fail(http.StatusConflict, "%s is already enrolled; an operator must forget it before it enrolls again", mac)
		}
		if err != nil {
			return ProvisionResponse{}, fmt.Errorf("enrolling %s: %w", mac, err)
		}
		s.log.Info("access point enrolled", "mac", mac, "model", rec.Model, "firmware", rec.Firmware, "remote", r.RemoteAddr)
		return ProvisionResponse{Secret: hexSecret, IntervalSeconds: int(s.o.Interval / time.Second)}, nil
	}()
	s.answer(w, r, "provision", req.MAC, err, resp)
}

func (s *Server) checkin(w http.ResponseWriter, r *http.Request) {
	var req CheckinRequest
	resp, err := func() (CheckinResponse, error) {
		tok, err := bearer(r)
		if err != nil {
			return CheckinResponse{}, err
		}
		if err := decode(r, &req); err != nil {
			return CheckinResponse{}, err
		}
		mac, err := NormalizeMAC(req.MAC)
		if err != nil {
			return CheckinResponse{}, fail(http.StatusBadRequest, "%v", err)
		}
		req.MAC = mac
		rec, err := s.o.Registry.GetAP(r.Context(), mac)
		if errors.Is(err, ErrUnknownAP) {
			// Same answer as a wrong token: the API does not tell who is enrolled.
			return CheckinResponse{}, fail(http.StatusUnauthorized, "token refused for %s", mac)
		}
		if err != nil {
			return CheckinResponse{}, fmt.Errorf("reading %s: %w", mac, err)
		}
		sum := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(sum[:], rec.SecretHash) != 1 {
			return CheckinResponse{}, fail(http.StatusUnauthorized, "token refused for %s", mac)
		}
		if len(req.Radios) > maxRadios {
			return CheckinResponse{}, fail(http.StatusBadRequest, "radios: %d reported, at most %d", len(req.Radios), maxRadios)
		}
		c, ok := s.o.Desired.DesiredAP(mac)
		if !ok {
			return CheckinResponse{}, fail(http.StatusForbidden, "%s is no longer an access point of sites.yaml", mac)
		}
		if err := c.Validate(); err != nil {
			return CheckinResponse{}, fmt.Errorf("desired config of %s: %w", mac, err)
		}
		c.Version = ConfigVersion(c)

		now := s.o.Now()
		if rec.LastCheckin.IsZero() || rec.Offline(now, s.OfflineAfter()) {
			s.log.Info("access point online", "mac", mac)
		}
		rec.LastCheckin = now
		rec.Firmware = clean(req.Firmware)
		rec.Uptime = time.Duration(max(req.UptimeSeconds, 0)) * time.Second
		rec.Clients = max(req.Clients, 0)
		rec.Radios = req.Radios
		for i := range rec.Radios {
			rec.Radios[i].SSID = clean(rec.Radios[i].SSID)
			rec.Radios[i].Interface = clean(rec.Radios[i].Interface)
		}
		// The AP confirms a pending version as soon as a check-in is
		// answered, so this answer makes it the applied one.
		rec.AppliedVersion = clean(req.AppliedVersion)
		if req.PendingVersion != "" {
			rec.AppliedVersion = clean(req.PendingVersion)
		}
		if rb := req.Rollback; rb != nil {
			rb.Version, rb.Reason = clean(rb.Version), clean(rb.Reason)
			rec.LastRollback, rec.RollbackAt = rb, now
			s.log.Warn("access point rolled back a config", "mac", mac, "version", rb.Version, "reason", rb.Reason)
		}
		if err := s.o.Registry.PutAP(r.Context(), rec); err != nil {
			return CheckinResponse{}, fmt.Errorf("recording check-in of %s: %w", mac, err)
		}
		return CheckinResponse{
			Config:               c,
			IntervalSeconds:      int(s.o.Interval / time.Second),
			RollbackAfterSeconds: int(s.o.RollbackAfter / time.Second),
		}, nil
	}()
	s.answer(w, r, "checkin", req.MAC, err, resp)
}

type texter interface{ EncodeText() string }

func (s *Server) answer(w http.ResponseWriter, r *http.Request, op, mac string, err error, resp texter) {
	text := wantsText(r)
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			s.log.Error("serving access point", "op", op, "mac", mac, "remote", r.RemoteAddr, "err", err)
			ae = &apiError{status: http.StatusInternalServerError, msg: "internal error"}
		} else {
			s.log.Warn("access point request refused", "op", op, "mac", mac, "remote", r.RemoteAddr, "status", ae.status, "err", ae.msg)
		}
		if ae.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="civicwifi-ap"`)
		}
		if text {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(ae.status)
			io.WriteString(w, "error="+ae.msg+"\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ae.status)
		json.NewEncoder(w).Encode(map[string]string{"error": ae.msg})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if text {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, resp.EncodeText())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func wantsText(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mt == "text/plain" {
			return true
		}
	}
	return false
}

func bearer(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", fail(http.StatusUnauthorized, "missing bearer token")
	}
	return tok, nil
}

func decode(r *http.Request, v any) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return fail(http.StatusUnsupportedMediaType, "content type %q: want application/json", r.Header.Get("Content-Type"))
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fail(http.StatusBadRequest, "body: JSON syntax error at byte %d: %v", se.Offset, err)
		}
		return fail(http.StatusBadRequest, "body: %v", err)
	}
	if err := dec.Decode(&json.RawMessage{}); err != io.EOF {
		return fail(http.StatusBadRequest, "body: data after the JSON value")
	}
	return nil
}

// clean bounds a free-text field reported by an AP and drops control
// characters, so it is safe in logs and dashboards.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if isControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) > 128 {
		s = s[:128]
	}
	return s
}

// EnrollTokens is an EnrollVerifier accepting any of a set of enrollment
// tokens (read by main from the environment or a file, never sites.yaml).
// It keeps only their SHA-256 and compares in constant time.
type EnrollTokens struct{ hashes [][32]byte }

// NewEnrollTokens returns an EnrollTokens for tokens; empty ones are ignored.
func NewEnrollTokens(tokens ...string) *EnrollTokens {
	e := &EnrollTokens{}
	for _, t := range tokens {
		if t != "" {
			e.hashes = append(e.hashes, sha256.Sum256([]byte(t)))
		}
	}
	return e
}

// VerifyEnrollToken reports whether token is one of e's tokens.
func (e *EnrollTokens) VerifyEnrollToken(_, token string) bool {
	sum := sha256.Sum256([]byte(token))
	ok := 0
	for _, h := range e.hashes {
		ok |= subtle.ConstantTimeCompare(sum[:], h[:])
	}
	return ok == 1
}

// MemRegistry is an in-memory Registry, for tests and a first try; the
// controller's Store provides the durable one.
type MemRegistry struct {
	mu   sync.Mutex
	recs map[string]Record
}

// NewMemRegistry returns an empty MemRegistry.
func NewMemRegistry() *MemRegistry { return &MemRegistry{recs: map[string]Record{}} }

// CreateAP implements Registry.
func (m *MemRegistry) CreateAP(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.recs[r.MAC]; ok {
		return ErrExists
	}
	m.recs[r.MAC] = r
	return nil
}

// GetAP implements Registry.
func (m *MemRegistry) GetAP(_ context.Context, mac string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[mac]
	if !ok {
		return Record{}, ErrUnknownAP
	}
	return r, nil
}

// PutAP implements Registry.
func (m *MemRegistry) PutAP(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[r.MAC] = r
	return nil
}

// DeleteAP implements Registry.
func (m *MemRegistry) DeleteAP(_ context.Context, mac string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.recs, mac)
	return nil
}

// ListAPs implements Registry.
func (m *MemRegistry) ListAPs(context.Context) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, 0, len(m.recs))
	for _, r := range m.recs {
		out = append(out, r)
	}
	return out, nil
}
