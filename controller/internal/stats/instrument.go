package stats

import (
	"context"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// Instrument returns st measured: each call's latency goes to
// civicwifi_controller_store_seconds{op} and each failure (not-found
// excluded) to civicwifi_controller_store_errors_total{op}. A nil m
// returns st itself.
func (m *Metrics) Instrument(st store.Store) store.Store {
	if m == nil {
		return st
	}
	return &measured{Store: st, m: m}
}

// measured wraps every Store method; a method added to store.Store later
// still works through the embedded Store, unmeasured until added here.
type measured struct {
	store.Store
	m *Metrics
}

func (s *measured) Heartbeat(ctx context.Context, id string, at time.Time, h store.GatewayHealth) error {
	t0 := time.Now()
	err := s.Store.Heartbeat(ctx, id, at, h)
	s.m.observe("heartbeat", t0, err)
	return err
}

func (s *measured) Gateway(ctx context.Context, id string) (store.GatewayStatus, error) {
	t0 := time.Now()
	v, err := s.Store.Gateway(ctx, id)
	s.m.observe("gateway", t0, err)
	return v, err
}

func (s *measured) ListGateways(ctx context.Context) ([]store.GatewayStatus, error) {
	t0 := time.Now()
	v, err := s.Store.ListGateways(ctx)
	s.m.observe("list_gateways", t0, err)
	return v, err
}

func (s *measured) CheckIn(ctx context.Context, mac string, at time.Time, st store.APState, configVersion string) error {
	t0 := time.Now()
	err := s.Store.CheckIn(ctx, mac, at, st, configVersion)
	s.m.observe("check_in", t0, err)
	return err
}

func (s *measured) AccessPoint(ctx context.Context, mac string) (store.APStatus, error) {
	t0 := time.Now()
	v, err := s.Store.AccessPoint(ctx, mac)
	s.m.observe("access_point", t0, err)
	return v, err
}

func (s *measured) ListAccessPoints(ctx context.Context) ([]store.APStatus, error) {
	t0 := time.Now()
	v, err := s.Store.ListAccessPoints(ctx)
	s.m.observe("list_access_points", t0, err)
	return v, err
}

func (s *measured) RecordEvent(ctx context.Context, ev store.SessionEvent) (bool, error) {
	t0 := time.Now()
	v, err := s.Store.RecordEvent(ctx, ev)
	s.m.observe("record_event", t0, err)
	return v, err
}

func (s *measured) Session(ctx context.Context, id string) (store.Session, error) {
	t0 := time.Now()
	v, err := s.Store.Session(ctx, id)
	s.m.observe("session", t0, err)
	return v, err
}

func (s *measured) SessionsStarted(ctx context.Context, siteID string, from, to time.Time) ([]store.Session, error) {
	t0 := time.Now()
	v, err := s.Store.SessionsStarted(ctx, siteID, from, to)
	s.m.observe("sessions_started", t0, err)
	return v, err
}

func (s *measured) OpenSessions(ctx context.Context, siteID string) ([]store.Session, error) {
	t0 := time.Now()
	v, err := s.Store.OpenSessions(ctx, siteID)
	s.m.observe("open_sessions", t0, err)
	return v, err
}

func (s *measured) SiteTotals(ctx context.Context, siteID string) (store.Totals, error) {
	t0 := time.Now()
	v, err := s.Store.SiteTotals(ctx, siteID)
	s.m.observe("site_totals", t0, err)
	return v, err
}

func (s *measured) Enqueue(ctx context.Context, c store.Command) (store.Command, error) {
	t0 := time.Now()
	v, err := s.Store.Enqueue(ctx, c)
	s.m.observe("enqueue", t0, err)
	return v, err
}

func (s *measured) Pending(ctx context.Context, gatewayID string) ([]store.Command, error) {
	t0 := time.Now()
	v, err := s.Store.Pending(ctx, gatewayID)
	s.m.observe("pending", t0, err)
	return v, err
}

func (s *measured) Ack(ctx context.Context, gatewayID, commandID string) (bool, error) {
	t0 := time.Now()
	v, err := s.Store.Ack(ctx, gatewayID, commandID)
	s.m.observe("ack", t0, err)
	return v, err
}

func (s *measured) PutIfAbsent(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	t0 := time.Now()
	v, err := s.Store.PutIfAbsent(ctx, key, val, ttl)
	s.m.observe("put_if_absent", t0, err)
	return v, err
}

func (s *measured) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	t0 := time.Now()
	err := s.Store.Put(ctx, key, val, ttl)
	s.m.observe("put", t0, err)
	return err
}

func (s *measured) Get(ctx context.Context, key string) ([]byte, error) {
	t0 := time.Now()
	v, err := s.Store.Get(ctx, key)
	s.m.observe("get", t0, err)
	return v, err
}

func (s *measured) Take(ctx context.Context, key string) ([]byte, error) {
	t0 := time.Now()
	v, err := s.Store.Take(ctx, key)
	s.m.observe("take", t0, err)
	return v, err
}

func (s *measured) Delete(ctx context.Context, key string) error {
	t0 := time.Now()
	err := s.Store.Delete(ctx, key)
	s.m.observe("delete", t0, err)
	return err
}

func (s *measured) Incr(ctx context.Context, key string, by int64, window time.Duration) (int64, error) {
	t0 := time.Now()
	v, err := s.Store.Incr(ctx, key, by, window)
	s.m.observe("incr", t0, err)
	return v, err
}

func (s *measured) IncrHourly(ctx context.Context, siteID string, at time.Time, counters map[string]int64) error {
	t0 := time.Now()
	err := s.Store.IncrHourly(ctx, siteID, at, counters)
	s.m.observe("incr_hourly", t0, err)
	return err
}

func (s *measured) Hourly(ctx context.Context, siteID string, from, to time.Time) ([]store.Rollup, error) {
	t0 := time.Now()
	v, err := s.Store.Hourly(ctx, siteID, from, to)
	s.m.observe("hourly", t0, err)
	return v, err
}

func (s *measured) Daily(ctx context.Context, siteID string, from, to time.Time) ([]store.Rollup, error) {
	t0 := time.Now()
	v, err := s.Store.Daily(ctx, siteID, from, to)
	s.m.observe("daily", t0, err)
	return v, err
}

func (s *measured) DistinctUsers(ctx context.Context, from, to time.Time, siteIDs ...string) (int, error) {
	t0 := time.Now()
	v, err := s.Store.DistinctUsers(ctx, from, to, siteIDs...)
	s.m.observe("distinct_users", t0, err)
	return v, err
}

func (s *measured) UserSessions(ctx context.Context, userID string) ([]store.Session, error) {
	t0 := time.Now()
	v, err := s.Store.UserSessions(ctx, userID)
	s.m.observe("user_sessions", t0, err)
	return v, err
}

func (s *measured) ForgetUser(ctx context.Context, userID string) (int, error) {
	t0 := time.Now()
	v, err := s.Store.ForgetUser(ctx, userID)
	s.m.observe("forget_user", t0, err)
	return v, err
}

func (s *measured) PurgeSessions(ctx context.Context, before time.Time) (int, error) {
	t0 := time.Now()
	v, err := s.Store.PurgeSessions(ctx, before)
	s.m.observe("purge_sessions", t0, err)
	return v, err
}

func (s *measured) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	t0 := time.Now()
	err := s.Store.AppendAudit(ctx, e)
	s.m.observe("append_audit", t0, err)
	return err
}

func (s *measured) ListAudit(ctx context.Context, from, to time.Time, limit int) ([]store.AuditEntry, error) {
	t0 := time.Now()
	v, err := s.Store.ListAudit(ctx, from, to, limit)
	s.m.observe("list_audit", t0, err)
	return v, err
}
