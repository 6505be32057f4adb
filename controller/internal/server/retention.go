package server

import (
	"context"
	"strconv"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// RetentionEvery is how often expired connection records are deleted.
const RetentionEvery = time.Hour

// purgeExpired deletes the closed sessions that started more than the
// town's retention_days ago (sites.yaml), and the day sets of distinct
// users older than that; it returns how many sessions went. Each replica
// may run it: deleting what is gone already is a no-op.
func (s *Server) purgeExpired(ctx context.Context, now time.Time) (int, error) {
	days := s.Config().Town.RetentionDays
	if days <= 0 {
		return 0, nil
	}
	before := now.AddDate(0, 0, -days)
	n, err := s.st.PurgeSessions(ctx, before)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.log.Info("connection records past their retention deleted", "sessions", n, "started_before", before.UTC().Format(time.DateOnly), "retention_days", days)
		if err := s.st.AppendAudit(ctx, store.AuditEntry{At: now, Actor: "retention", Action: "sessions.purge",
			Target: before.UTC().Format(time.DateOnly), Detail: "sessions deleted: " + strconv.Itoa(n)}); err != nil {
			s.log.Warn("auditing the retention purge", "err", err)
		}
	}
	return n, nil
}

// retention runs purgeExpired at start and every RetentionEvery until ctx ends.
func (s *Server) retention(ctx context.Context) {
	t := time.NewTicker(RetentionEvery)
	defer t.Stop()
	for {
		if _, err := s.purgeExpired(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Error("deleting connection records past their retention", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
