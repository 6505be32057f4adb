// Package uplink is the gateway's link to the town's controller, through
// controller/apiclient: it boots from the site's policy (the controller's,
// or the cached one when the controller is unreachable) and follows its
// changes, makes every session event durable in an on-disk outbox that a
// sender delivers (so a controller outage loses nothing), sends heartbeats,
// and runs the controller's remote commands (kick, extend).
//
// Gateways only ever call out: they sit behind NAT at the sites.
package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // the town's time zone, also on a gateway without zoneinfo files

	"golang.org/x/sync/errgroup"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/apiclient/outbox"
	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"github.com/civicwifi/civicwifi/portal/internal/gateway"
)

// Gateway is what the link needs from the gateway.
type Gateway interface {
	SetPolicy(ctx context.Context, l config.Limits) error
	SetSchedule(s *gateway.Schedule)
	Close(ctx context.Context, mac net.HardwareAddr, ip netip.Addr, reason string) (*gateway.Session, error)
	Extend(ctx context.Context, mac net.HardwareAddr, d time.Duration) (*gateway.Session, error)
	Status(ctx context.Context) (control.Status, error)
}

// Config of the link.
type Config struct {
	URL               string // the controller's base URL
	Site              string
	GatewayID         string
	KeyFile           string // this gateway's private key (controller enroll)
	ControllerKeyFile string // the controller's public response-signing key
	StateDir          string // outbox.db and policy.json live here
	HeartbeatInterval time.Duration
	Version           string
	// Wait is the long-poll wait; zero: the client's default.
	Wait time.Duration
	// Backoff of the client and the sender; zero: the client's default.
	Backoff apiclient.Backoff
	// Spread of the sender's first attempt (see outbox.Sender); zero: its
	// default; negative: none.
	Spread time.Duration
}

// Link connects one gateway to the controller.
type Link struct {
	cfg    Config
	gw     Gateway
	log    *slog.Logger
	client *apiclient.Client
	box    *outbox.Outbox
	start  time.Time

	mu      sync.Mutex
	version string               // policy version applied
	policy  apiclient.SitePolicy // last applied
	onPol   []func(apiclient.SitePolicy)
}

// New loads the keys, opens the outbox and makes the client. Close
// releases the outbox.
func New(cfg Config, gw Gateway, log *slog.Logger) (*Link, error) {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 30 * time.Second
	}
	key, err := apiclient.LoadPrivateKey(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("controller link: %w", err)
	}
	ckey, err := apiclient.LoadPublicKey(cfg.ControllerKeyFile)
	if err != nil {
		return nil, fmt.Errorf("controller link: %w", err)
	}
	client, err := apiclient.New(apiclient.Config{
		BaseURL: cfg.URL, Site: cfg.Site, GatewayID: cfg.GatewayID, Key: key, ControllerKey: ckey,
		CacheFile: filepath.Join(cfg.StateDir, "policy.json"), Log: log, Wait: cfg.Wait, Backoff: cfg.Backoff,
	})
	if err != nil {
		return nil, fmt.Errorf("controller link: %w", err)
	}
	box, err := outbox.Open(filepath.Join(cfg.StateDir, "outbox.db"))
	if err != nil {
		return nil, fmt.Errorf("controller link: %w", err)
	}
	return &Link{cfg: cfg, gw: gw, log: log, client: client, box: box, start: time.Now()}, nil
}

// Close closes the outbox.
func (l *Link) Close() error { return l.box.Close() }

// OnPolicy registers fn to run with each applied policy (the portal's
// pages follow the site's name and login methods).
func (l *Link) OnPolicy(fn func(apiclient.SitePolicy)) {
	l.mu.Lock()
	l.onPol = append(l.onPol, fn)
	l.mu.Unlock()
}

// Policy returns the last applied policy and its version ("" if none).
func (l *Link) Policy() (apiclient.SitePolicy, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.policy, l.version
}

// Events implements gateway.Options.Events: the events are in the outbox,
// on disk, when it returns. Start and stop ids derive from the session, so
// a repeat is recognised by the controller; interim ids are fresh.
func (l *Link) Events(evs []gateway.Event) error {
	out := make([]apiclient.SessionEvent, 0, len(evs))
	for _, e := range evs {
		s := e.Session
		id := s.ID + "-" + string(e.Kind)
		if e.Kind == gateway.EventInterim {
			id = apiclient.NewEventID()
		}
		at := e.At
		if at.Before(s.Started) {
			// The clock was set back during the session (NTP on a box
			// without a real-time clock): the controller refuses an
			// event before its session's start, and a refused event is
			// a lost one.
			at = s.Started
		}
		ev := apiclient.SessionEvent{
			ID: id, Kind: apiclient.EventKind(e.Kind), SessionID: s.ID, Start: s.Started.UTC(), At: at.UTC(),
			ClientMAC: s.MAC.String(), User: s.User, Method: s.Method,
			BytesDown: s.BytesDown, BytesUp: s.BytesUp,
		}
		if e.Kind == gateway.EventStop {
			ev.Reason = s.EndReason
			if ev.Reason == "" {
				ev.Reason = "ended"
			}
		}
		out = append(out, ev)
	}
	return l.box.Add(out...)
}

// Status is the link's state for `portal ctl status`.
func (l *Link) Status() *control.ControllerStatus {
	n, err := l.box.Len()
	if err != nil {
		n = -1
	}
	_, v := l.Policy()
	return &control.ControllerStatus{URL: l.cfg.URL, PolicyVersion: v, EventsQueued: n}
}

// CachedLimits are the limits of the last policy this gateway applied (the
// signed copy on disk), if any. The daemon starts from them, so that at Boot
// the sessions that followed that policy are recognised and moved to a
// policy that changed while the gateway was down.
func (l *Link) CachedLimits() (config.Limits, bool) {
	p, err := l.client.CachedPolicy()
	if err != nil {
		return config.Limits{}, false
	}
	var sp apiclient.SitePolicy
	if err := json.Unmarshal(p.Body, &sp); err != nil || (sp.SiteID != "" && sp.SiteID != l.cfg.Site) {
		return config.Limits{}, false
	}
	return Limits(sp), true
}

// Boot applies the site's policy at start: the controller's if it answers
// within its timeout, else the cached one. With neither (a gateway's first
// start with the controller down) the config file's limits stay.
func (l *Link) Boot(ctx context.Context) error {
	p, err := l.client.BootPolicy(ctx)
	if err != nil {
		l.log.Warn("no policy from the controller nor a cached one; keeping the config file's limits", "err", err)
		return nil
	}
	return l.apply(ctx, p)
}

// apply decodes and applies one policy. A policy the gateway cannot use
// changes nothing.
func (l *Link) apply(ctx context.Context, p apiclient.Policy) error {
	var sp apiclient.SitePolicy
	if err := json.Unmarshal(p.Body, &sp); err != nil {
		return fmt.Errorf("decoding policy %s: %w", p.Version, err)
	}
	if sp.SiteID != "" && sp.SiteID != l.cfg.Site {
		return fmt.Errorf("policy %s is for site %q, not %q", p.Version, sp.SiteID, l.cfg.Site)
	}
	lim := Limits(sp)
	sched, err := ParseSchedule(sp.Hours, sp.Timezone)
	if err != nil {
		return fmt.Errorf("policy %s: %w", p.Version, err)
	}
	if err := l.gw.SetPolicy(ctx, lim); err != nil {
		return fmt.Errorf("applying policy %s: %w", p.Version, err)
	}
	l.gw.SetSchedule(sched)
	l.mu.Lock()
	l.policy, l.version = sp, p.Version
	hooks := append([]func(apiclient.SitePolicy){}, l.onPol...)
	l.mu.Unlock()
	for _, fn := range hooks {
		fn(sp)
	}
	l.log.Info("site policy applied", "version", p.Version, "from_cache", p.FromCache, "policy", sp.Policy,
		"down", lim.Down, "up", lim.Up, "session", lim.Session, "methods", sp.LoginMethods)
	return nil
}

// Limits are the gateway's limits for a site policy. The daily quota is
// each device's allowance per day (in the town's time zone), across its
// sessions at this site.
func Limits(sp apiclient.SitePolicy) config.Limits {
	return config.Limits{
		Down: quantity.Rate(sp.DownBitsPerSecond), Up: quantity.Rate(sp.UpBitsPerSecond),
		Session: time.Duration(sp.Session), Idle: time.Duration(sp.Idle),
		Quota: quantity.Bytes(sp.DailyQuotaBytes), MaxClients: sp.MaxClients, DailyQuota: true,
	}
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// ParseSchedule reads a policy's opening hours ({"mon": ["08:00-20:00"]};
// none: always open) and time zone (IANA; "" is Europe/Rome).
func ParseSchedule(hours map[string][]string, tz string) (*gateway.Schedule, error) {
	if tz == "" {
		tz = "Europe/Rome"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", tz, err)
	}
	s := &gateway.Schedule{Loc: loc, Always: len(hours) == 0}
	clock := func(v string) (int, bool) {
		var h, m int
		if n, err := fmt.Sscanf(v, "%d:%d", &h, &m); err != nil || n != 2 || len(v) != 5 || m < 0 || m > 59 || h < 0 || h > 24 || h == 24 && m != 0 {
			return 0, false
		}
		return h*60 + m, true
	}
	for day, spans := range hours {
		wd, ok := weekdays[day]
		if !ok {
			return nil, fmt.Errorf("opening hours: %q is not a day (mon ... sun)", day)
		}
		for _, sp := range spans {
			a, b, ok := strings.Cut(sp, "-")
			from, ok1 := clock(a)
			to, ok2 := clock(b)
			if !ok || !ok1 || !ok2 || from >= to {
				return nil, fmt.Errorf("opening hours: %s %q is not a span like 08:00-20:00", day, sp)
			}
			s.Days[wd] = append(s.Days[wd], gateway.Span{From: from, To: to})
		}
	}
	return s, nil
}

// Run follows the policy, runs commands, sends heartbeats and delivers the
// outbox until ctx ends.
func (l *Link) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, have := l.Policy()
		return l.client.WatchPolicy(ctx, have, func(p apiclient.Policy) {
			if err := l.apply(ctx, p); err != nil {
				l.log.Error("site policy", "err", err)
			}
		})
	})
	g.Go(func() error { return l.client.WatchCommands(ctx, l.command) })
	g.Go(func() error {
		s := &outbox.Sender{Outbox: l.box, To: l.client, Backoff: l.cfg.Backoff, Spread: l.cfg.Spread, Log: l.log}
		return s.Run(ctx)
	})
	g.Go(func() error { return l.heartbeats(ctx) })
	return g.Wait()
}

func (l *Link) heartbeats(ctx context.Context) error {
	// The first one after a random part of the interval: a fleet that
	// boots together does not call in the same second.
	wait := apiclient.Spread(l.cfg.HeartbeatInterval)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = l.cfg.HeartbeatInterval
		st, err := l.gw.Status(ctx)
		if err != nil {
			l.log.Warn("reading status for the heartbeat", "err", err)
			continue
		}
		hb := apiclient.Heartbeat{
			Version: l.cfg.Version, UptimeSeconds: int64(time.Since(l.start) / time.Second),
			ClientsOnline: st.Authorised, ReconcileRepairs: st.Repairs,
		}
		if err := l.client.Heartbeat(ctx, hb); err != nil && ctx.Err() == nil {
			l.log.Warn("heartbeat", "err", err)
		}
	}
}

// CommandMaxAge is how old a remote command may be when the gateway gets
// it: a kick or extension queued while the gateway was unreachable is not
// run hours later against whatever session the device has by then.
const CommandMaxAge = 15 * time.Minute

// command runs one remote operation.
func (l *Link) command(ctx context.Context, c apiclient.Command) apiclient.CommandAck {
	ack := apiclient.CommandAck{ID: c.ID, OK: true}
	mac, err := net.ParseMAC(c.ClientMAC)
	if age := time.Since(c.IssuedAt); err == nil && !c.IssuedAt.IsZero() && age > CommandMaxAge {
		err = fmt.Errorf("expired: issued %s ago, at most %s", age.Round(time.Second), CommandMaxAge)
	} else if err == nil {
		switch c.Kind {
		case apiclient.CommandKick:
			_, err = l.gw.Close(ctx, mac, netip.Addr{}, "kicked")
		case apiclient.CommandExtend:
			_, err = l.gw.Extend(ctx, mac, time.Duration(c.Extend))
		default:
			err = fmt.Errorf("unknown command %q", c.Kind)
		}
	}
	if errors.Is(err, control.ErrNotFound) {
		// Nothing to do: the session ended already. Done, not failed.
		l.log.Info("controller command for a device without a session", "command", c.ID, "kind", c.Kind, "mac", c.ClientMAC)
		return ack
	}
	if err != nil {
		ack.OK, ack.Error = false, err.Error()
		l.log.Warn("controller command failed", "command", c.ID, "kind", c.Kind, "mac", c.ClientMAC, "err", err)
		return ack
	}
	l.log.Info("controller command done", "command", c.ID, "kind", c.Kind, "mac", c.ClientMAC)
	return ack
}

// Client is the signed controller client (the resident login relays
// through it).
func (l *Link) Client() *apiclient.Client { return l.client }
