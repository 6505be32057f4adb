package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/control"
)

// EventKind is the kind of a session event.
type EventKind string

// Session events, as the controller's accounting wants them.
const (
	EventStart   EventKind = "start"
	EventInterim EventKind = "interim"
	EventStop    EventKind = "stop"
)

// Event is one session event: the session as it stood (totals so far; for
// a stop, its end and reason).
type Event struct {
	Kind    EventKind
	At      time.Time
	Session Session
}

func eventsOf(kind EventKind, ss []*Session) []Event {
	out := make([]Event, 0, len(ss))
	for _, s := range ss {
		at := s.Started
		switch kind {
		case EventStop:
			at = s.Ended
		case EventInterim:
			at = s.reported
		}
		out = append(out, Event{Kind: kind, At: at, Session: *s})
	}
	return out
}

// emit hands events to Options.Events. Only the journal's writer calls it,
// one batch at a time, in order.
func (g *Gateway) emit(evs ...Event) {
	if len(evs) == 0 || g.o.Events == nil {
		return
	}
	if err := g.o.Events(evs); err != nil {
		g.o.Metrics.errors.WithLabelValues("events").Inc()
		g.log.Error("recording session events", "events", len(evs), "err", err)
	}
}

// Limits returns the site's default limits for new sessions now.
func (g *Gateway) Limits() config.Limits {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limits
}

// SetPolicy replaces the site's defaults (the controller's policy). New
// sessions get the new limits. Sessions that follow the site's rates (they
// were opened with the previous defaults) move to the new rates at once,
// without a break in their connection; sessions given their own rates by an
// operator keep them. Durations and quotas already granted are kept: a
// resident's session is not cut short by a policy change.
//
// An error means the limits were refused and nothing changed. Once they are
// accepted they are in force: a failure to record or reshape a moved
// session is logged and left to the next reconcile, which repairs the kernel
// from the sessions in memory.
func (g *Gateway) SetPolicy(ctx context.Context, l config.Limits) error {
	if err := checkLimits(l); err != nil {
		return fmt.Errorf("applying policy: %w", err)
	}
	g.kmu.Lock()
	defer g.kmu.Unlock()
	g.mu.Lock()
	old := g.limits
	g.limits = l
	var moved []*Session
	if old.Down != l.Down || old.Up != l.Up {
		for _, s := range g.sessions {
			if s.DownRate == uint64(old.Down) && s.UpRate == uint64(old.Up) {
				s.DownRate, s.UpRate = uint64(l.Down), uint64(l.Up)
				g.touch(s.IP)
				c := *s
				moved = append(moved, &c)
			}
		}
	}
	g.mu.Unlock()
	g.log.Info("policy applied", "down", l.Down, "up", l.Up, "session", l.Session, "idle", l.Idle,
		"quota", l.Quota, "max_clients", l.MaxClients, "sessions_moved", len(moved))
	if len(moved) == 0 {
		return nil
	}
	t := g.journal.Add(record{change: Change{Sessions: moved}})
	var errs []error
	for _, s := range moved {
		var err error
		if s.DownRate > 0 || s.UpRate > 0 {
			err = g.o.Shaper.Set(ctx, limitOf(s))
		} else {
			err = g.o.Shaper.Remove(ctx, s.IP)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reshaping %s: %w", s.IP, err))
		}
	}
	if err := t.Wait(); err != nil {
		errs = append(errs, fmt.Errorf("recording new rates: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		g.o.Metrics.errors.WithLabelValues("policy").Inc()
		g.log.Warn("moving sessions to the policy's rates; the next reconcile repairs them", "err", err)
	}
	return nil
}

// Extend lengthens the session of the device with mac by d (the
// controller's or an operator's decision). A session without an end keeps
// none.
func (g *Gateway) Extend(ctx context.Context, mac net.HardwareAddr, d time.Duration) (*Session, error) {
	if d <= 0 || d > 31*24*time.Hour {
		return nil, fmt.Errorf("%w: extension %v: want more than 0 and at most 31 days", control.ErrBadRequest, d)
	}
	g.kmu.Lock()
	defer g.kmu.Unlock()
	g.mu.Lock()
	var s *Session
	for _, c := range g.sessions {
		if sameMAC(c.MAC, mac) {
			s = c
			break
		}
	}
	if s == nil {
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: no session for %s", control.ErrNotFound, mac)
	}
	if s.Expires.IsZero() {
		c := *s
		g.mu.Unlock()
		return &c, nil
	}
	prev := s.Expires
	s.Expires = s.Expires.Add(d)
	g.touch(s.IP)
	c := *s
	g.mu.Unlock()
	rec := c
	err := g.journal.Do(record{change: Change{Sessions: []*Session{&rec}}})
	if err == nil {
		// Allow on an existing client rewrites its timeout, keeping its
		// counters.
		err = g.o.FW.Allow(ctx, grantOf(&c))
	}
	if err != nil {
		g.mu.Lock()
		s.Expires = prev
		g.touch(s.IP)
		back := *s
		g.mu.Unlock()
		if perr := g.journal.Do(record{change: Change{Sessions: []*Session{&back}}}); perr != nil {
			err = errors.Join(err, perr)
		}
		return nil, fmt.Errorf("extending %s: %w", mac, err)
	}
	g.log.Info("session extended", "session", c.ID, "mac", mac.String(), "by", d, "expires", c.Expires)
	return &c, nil
}
