// Package gateway reconciles the sessions in the store of record to the
// kernel (firewall and shaper), durably: at start, after every change and
// every few seconds, so drift is repaired and a restart or a crash never
// drops a resident who had a valid session. It ends sessions on expiry, idle
// timeout and quota, and implements the local control Service.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/civicwifi/civicwifi/internal/groupcommit"
	"github.com/civicwifi/civicwifi/internal/quantity"
	"github.com/civicwifi/civicwifi/portal/internal/config"
	"github.com/civicwifi/civicwifi/portal/internal/control"
	"github.com/civicwifi/civicwifi/portal/internal/discovery"
	"github.com/civicwifi/civicwifi/portal/internal/firewall"
	"github.com/civicwifi/civicwifi/portal/internal/shaper"
)

// Hosts is what the gateway needs from client discovery.
type Hosts interface {
	Lookup(ip netip.Addr) (discovery.Host, bool)
	LookupMAC(mac net.HardwareAddr) (discovery.Host, bool)
	All() []discovery.Host
}

// Options wires a Gateway.
type Options struct {
	Config  *config.Config
	Version string
	FW      firewall.Firewall
	Shaper  shaper.Shaper
	Store   *Store
	Hosts   Hosts
	// Neighbors is the fallback MAC lookup (the kernel's neighbour table).
	Neighbors func() ([]discovery.Host, error)
	// FirewallReady is called once at start, as soon as the firewall
	// enforces every stored session (before shaping is restored): the
	// daemon turns forwarding on there, so the box fails closed.
	FirewallReady func() error
	// DNSRunning reports whether dnsmasq is up (nil: unknown).
	DNSRunning func() bool
	Metrics    *Metrics
	Log        *slog.Logger

	PollInterval      time.Duration // counters, idle, quota, expiry (default 1s)
	ReconcileInterval time.Duration // drift repair: firewall in full, shaper's qdiscs (default 2s)
	// FullReconcileInterval is how often the shaper's every class and
	// filter is checked too (default 30s): with thousands of clients that
	// read costs a quarter of a second of tc, too much for every 2 s (and
	// allows wait for it). Default 60s.
	FullReconcileInterval time.Duration
	FlushInterval         time.Duration // counters to the store (default 10s)
	// Events, if set, receives session events (start, interim, stop), in
	// order, from the journal's writer (no lock of the gateway held), a
	// whole burst at a time: it should be quick (the controller link
	// writes them to its durable outbox). An error is logged.
	Events func([]Event) error
	// InterimInterval is how often an active session's totals are
	// reported while they move (default 5m).
	InterimInterval time.Duration
	// Opened, if set, is called with a client's address once a session
	// for it is open (kernel and store), with no lock held: the portal
	// closes the connections the firewall sent it before login. Quick.
	Opened func(ip netip.Addr)
	// Controller, if set, adds the controller link's state to Status.
	Controller func() *control.ControllerStatus
	Now        func() time.Time
}

// Gateway is the daemon's core.
type Gateway struct {
	o   Options
	log *slog.Logger
	now func() time.Time

	// kmu orders every change to the kernel (Open, Close, ends,
	// reconcile), so a reconcile never works from a list that an Open or
	// Close made stale. Taken before mu. Open takes it shared, with the
	// lock of its address (addrLock): an open's kernel work concerns its
	// address only, so residents logging in together do not queue behind
	// each other's netlink round trips (nor behind an opener the CPU
	// scheduler put aside); everything else takes it exclusive.
	kmu sync.RWMutex
	// addrMu serialises opens of one address (and of the others that
	// share its lock); see addrLock.
	addrMu [64]sync.Mutex

	mu       sync.Mutex
	gen      uint64              // bumped by every open and end; see poll and reconcile
	sessions map[string]*Session // active, by ID
	// touched is the gen at which each client's kernel state last changed
	// (opened, updated or ended): a reconcile leaves alone the clients
	// touched after it took its list. Pruned by every reconcile.
	touched map[netip.Addr]uint64
	// lockout keeps a device that was kicked or used up its quota from
	// letting itself in again by click-through before the session would
	// have expired.
	lockout map[string]time.Time
	byIP    map[netip.Addr]*Session
	// parked: shaping classes kept for addresses whose session ended
	// (see endKernel).
	parked map[netip.Addr]parked
	// limits are the site's defaults for new sessions: the config's, then
	// the controller's policy (SetPolicy).
	limits config.Limits
	// schedule: opening hours and the town's time zone (nil: always open,
	// days counted in local time). daily: bytes of ended sessions per
	// device since day (daily quotas).
	schedule *Schedule
	day      time.Time
	daily    map[string]uint64
	// journal writes the store of record and the session events, in the
	// order records are added (under kmu), grouping concurrent ones.
	journal *groupcommit.Log[record]
	events  *eventQueue
	started time.Time
	lastRec time.Time
	repairs uint64
	// polled is when the last poll read the counters (monotonic clock):
	// the poll tick and the reconcile's own poll, which fall due together
	// every other second, share one reading (see fresh).
	polled time.Time
}

// New makes a Gateway; Run starts it.
func New(o Options) *Gateway {
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
	if o.ReconcileInterval == 0 {
		o.ReconcileInterval = 2 * time.Second
	}
	if o.FullReconcileInterval == 0 {
		o.FullReconcileInterval = 60 * time.Second
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = 10 * time.Second
	}
	if o.InterimInterval == 0 {
		o.InterimInterval = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	g := &Gateway{
		o: o, log: o.Log, now: o.Now,
		sessions: map[string]*Session{},
		byIP:     map[netip.Addr]*Session{},
		touched:  map[netip.Addr]uint64{},
		lockout:  map[string]time.Time{},
		parked:   map[netip.Addr]parked{},
		limits:   o.Config.Limits,
		daily:    map[string]uint64{},
	}
	g.journal = newJournal(g)
	g.events = newEventQueue(func(evs []Event) { g.emit(evs...) }, eventLinger)
	return g
}

// Start sets up the kernel and enforces the stored sessions again. It
// returns once every stored session is enforced; Run then keeps it so.
func (g *Gateway) Start(ctx context.Context) error {
	t0 := time.Now()
	g.started = g.now()
	if err := g.o.FW.Setup(ctx); err != nil {
		return fmt.Errorf("setting up firewall: %w", err)
	}
	if err := g.o.Shaper.Setup(ctx); err != nil {
		return fmt.Errorf("setting up shaper: %w", err)
	}
	stored, err := g.o.Store.Active()
	if err != nil {
		return fmt.Errorf("loading sessions: %w", err)
	}
	previous, err := g.o.Store.Ended()
	if err != nil {
		return fmt.Errorf("loading ended sessions: %w", err)
	}
	g.mu.Lock()
	now := g.now()
	g.day = g.schedule.dayStart(now)
	for _, s := range previous {
		g.noteLockout(s, now)
		g.countDay(s)
	}
	var ended []*Session
	for _, s := range stored {
		if !s.Expires.IsZero() && !now.Before(s.Expires) {
			s.Ended, s.EndReason = now, "expired"
			ended = append(ended, s)
			continue
		}
		g.sessions[s.ID] = s
		g.byIP[s.IP] = s
	}
	g.mu.Unlock()
	g.revokeKernel(ctx, ended...) // one batch: thousands may have expired while down
	if err := g.journal.Do(record{before: eventsOf(EventStop, ended), change: Change{Sessions: ended}}); err != nil {
		return fmt.Errorf("recording expired sessions: %w", err)
	}
	// Gating first: residents with a session get through again as soon as
	// the firewall has them back; the shaper's classes (seconds of kernel
	// work with thousands of clients) follow.
	if err := g.poll(ctx); err != nil {
		g.log.Warn("reading counters at start", "err", err)
	}
	g.kmu.Lock()
	grants, _, _ := g.grants()
	_, err = g.o.FW.Reconcile(ctx, grants, nil)
	g.kmu.Unlock()
	if err != nil {
		return fmt.Errorf("enforcing stored sessions: %w", err)
	}
	g.log.Info("sessions gated", "active", len(grants), "took", time.Since(t0).Round(time.Millisecond))
	if g.o.FirewallReady != nil {
		if err := g.o.FirewallReady(); err != nil {
			return err
		}
	}
	if _, err := g.reconcile(ctx, true); err != nil {
		return err
	}
	g.o.Metrics.restoreSeconds.Set(time.Since(t0).Seconds())
	g.log.Info("sessions enforced", "active", len(g.sessions), "expired_while_down", len(ended), "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// Run polls counters, ends sessions and repairs drift until ctx ends. It
// leaves every rule in place on return: a stop or restart of the daemon
// keeps residents connected and the site closed to everyone else.
func (g *Gateway) Run(ctx context.Context) error {
	poll := time.NewTicker(g.o.PollInterval)
	defer poll.Stop()
	rec := time.NewTicker(g.o.ReconcileInterval)
	defer rec.Stop()
	lastFull := time.Now()
	flush := time.NewTicker(g.o.FlushInterval)
	defer flush.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	pruneSpent := time.NewTicker(time.Minute)
	defer pruneSpent.Stop()
	g.pruneEnded()
	for {
		select {
		case <-ctx.Done():
			// Save counters so a restart resumes from here, and let
			// every event reach the outbox.
			if err := g.flush(); err != nil {
				g.log.Error("saving counters", "err", err)
			}
			g.events.syncAll()
			return nil
		case <-poll.C:
			if g.fresh() {
				continue // the reconcile has just polled
			}
			if err := g.poll(ctx); err != nil {
				g.o.Metrics.errors.WithLabelValues("poll").Inc()
				g.log.Error("polling counters", "err", err)
			}
		case <-rec.C:
			full := time.Since(lastFull) >= g.o.FullReconcileInterval
			if full {
				lastFull = time.Now()
			}
			if _, err := g.reconcile(ctx, full); err != nil {
				g.o.Metrics.errors.WithLabelValues("reconcile").Inc()
				g.log.Error("reconciling", "err", err)
			}
			g.refreshGauges()
		case <-flush.C:
			if err := g.flush(); err != nil {
				g.o.Metrics.errors.WithLabelValues("store").Inc()
				g.log.Error("saving counters", "err", err)
			}
		case <-prune.C:
			g.pruneEnded()
		case <-pruneSpent.C:
			g.pruneSpent()
		}
	}
}

// EndedRetention is how long ended sessions stay in the store: longer than
// any lockout or daily allowance needs them (the controller's outbox has
// the accounting), so that the store, read at every start and policy
// change, does not grow with every session the site ever had.
const EndedRetention = 32 * 24 * time.Hour

func (g *Gateway) pruneEnded() {
	n, err := g.o.Store.PruneEnded(g.now().Add(-EndedRetention))
	if err != nil {
		g.o.Metrics.errors.WithLabelValues("store").Inc()
		g.log.Error("pruning ended sessions", "err", err)
		return
	}
	if n > 0 {
		g.log.Info("ended sessions pruned", "count", n, "older_than", EndedRetention)
	}
}

// pruneSpent drops the ids of expired grants (they fail their own expiry
// check now).
func (g *Gateway) pruneSpent() {
	if _, err := g.o.Store.PruneSpent(g.now()); err != nil {
		g.o.Metrics.errors.WithLabelValues("store").Inc()
		g.log.Error("pruning spent grant ids", "err", err)
	}
}

// Drain hands every session event still waiting (start events linger, see
// eventQueue) to Options.Events. The daemon calls it once everything that
// opens sessions has stopped, before it closes the outbox.
func (g *Gateway) Drain() { g.events.syncAll() }

// GrantSpent reports whether a single-use grant's id is recorded as
// spent (by an Open that carried it, or SpendGrant).
func (g *Gateway) GrantSpent(id string) (bool, error) { return g.o.Store.IsSpent(id) }

// SpendGrant records grant ids as spent without a session: a grant whose
// open was refused, ids carried over from an older version's file. They
// are written with the next batch of the journal.
func (g *Gateway) SpendGrant(sps ...Spent) error {
	if len(sps) == 0 {
		return nil
	}
	return g.journal.Do(record{change: Change{Spent: sps}})
}

// grants is what the kernel should hold now, and the gen it was taken at.
func (g *Gateway) grants() ([]firewall.Grant, []shaper.Limit, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	grants := make([]firewall.Grant, 0, len(g.sessions))
	limits := make([]shaper.Limit, 0, len(g.sessions))
	for _, s := range g.sessions {
		grants = append(grants, grantOf(s))
		if s.DownRate > 0 || s.UpRate > 0 {
			limits = append(limits, limitOf(s))
		}
	}
	for ip, p := range g.parked {
		if g.byIP[ip] == nil {
			limits = append(limits, p.limit)
		}
	}
	return grants, limits, g.gen
}

// touch records that ip's kernel state changes now. Caller holds mu.
func (g *Gateway) touch(ip netip.Addr) uint64 {
	g.gen++
	g.touched[ip] = g.gen
	return g.gen
}

// guard is the firewall's and shaper's Guard for one reconcile: repairs
// hold kmu, like every allow and revoke; clients touched after the
// reconcile took its list (gen) are stale.
type guard struct {
	g     *Gateway
	gen   uint64
	stale map[netip.Addr]bool
}

func (gd *guard) Lock() {
	gd.g.kmu.Lock()
	gd.g.mu.Lock()
	gd.stale = map[netip.Addr]bool{}
	for ip, gen := range gd.g.touched {
		if gen > gd.gen {
			gd.stale[ip] = true
		}
	}
	gd.g.mu.Unlock()
}

func (gd *guard) Unlock()                  { gd.g.kmu.Unlock() }
func (gd *guard) Stale(ip netip.Addr) bool { return gd.stale[ip] }

func grantOf(s *Session) firewall.Grant {
	return firewall.Grant{
		Client:        firewall.Client{IP: s.IP, MAC: s.MAC},
		Expires:       s.Expires,
		QuotaBytes:    s.QuotaBytes,
		UsedBytes:     s.BytesDown + s.BytesUp,
		UsedDownBytes: s.BytesDown,
	}
}

func limitOf(s *Session) shaper.Limit {
	return shaper.Limit{IP: s.IP, Down: quantity.Rate(s.DownRate), Up: quantity.Rate(s.UpRate)}
}

// reconcile makes the kernel match the store. The usage poll runs first so
// that elements re-added after drift carry their latest counters. The
// firewall is reconciled in full every time; the shaper in full when asked
// or when its cheap check finds its qdiscs or IFB device gone. The kernel
// is read without kmu (see guard): an allow waits only for repairs.
func (g *Gateway) reconcile(ctx context.Context, full bool) (int, error) {
	g.unpark(ctx, 256)
	if !g.fresh() {
		if err := g.poll(ctx); err != nil {
			g.log.Warn("reading counters before reconcile", "err", err)
		}
	}
	grants, limits, gen := g.grants()
	defer func() {
		// Clients touched up to gen are settled for every later round.
		g.mu.Lock()
		for ip, t := range g.touched {
			if t <= gen {
				delete(g.touched, ip)
			}
		}
		g.mu.Unlock()
	}()
	// One part failing must not keep the other from being repaired.
	fr, ferr := g.o.FW.Reconcile(ctx, grants, &guard{g: g, gen: gen})
	if ferr != nil {
		ferr = fmt.Errorf("reconciling firewall: %w", ferr)
	}
	var sr int
	var serr error
	if !full {
		intact, err := g.o.Shaper.Intact(ctx)
		full = err != nil || !intact
	}
	if full {
		sr, serr = g.o.Shaper.Reconcile(ctx, limits, &guard{g: g, gen: gen})
		if serr != nil {
			serr = fmt.Errorf("reconciling shaper: %w", serr)
		}
	}
	if err := errors.Join(ferr, serr); err != nil {
		return 0, err
	}
	m := g.o.Metrics
	m.repairs.WithLabelValues("rules").Add(float64(fr.Rules))
	m.repairs.WithLabelValues("sets").Add(float64(fr.Sets))
	m.repairs.WithLabelValues("entries").Add(float64(fr.Entries))
	m.repairs.WithLabelValues("shaper").Add(float64(sr))
	n := fr.Total() + sr
	g.mu.Lock()
	g.repairs += uint64(n)
	g.lastRec = g.now()
	g.mu.Unlock()
	if n > 0 {
		g.log.Warn("repaired drift", "rules", fr.Rules, "sets", fr.Sets, "entries", fr.Entries, "shaper", sr)
	}
	return n, nil
}

// fresh reports whether the counters were read less than half a poll
// interval ago: reading them again would only repeat the kernel's work
// (two listings of 10,000 elements). Idle, quota and expiry checks still
// run at least once per poll interval. Only the Run goroutine polls.
func (g *Gateway) fresh() bool {
	return !g.polled.IsZero() && time.Since(g.polled) < g.o.PollInterval/2
}

// poll reads the kernel counters and ends sessions that ran out.
func (g *Gateway) poll(ctx context.Context) error {
	// The kernel is read without holding kmu (with thousands of clients
	// that read takes tens of milliseconds, and an allow must not wait for
	// it). Counters are then applied only to sessions that were not
	// (re)opened since the read began: an address reused in between must
	// not inherit the previous device's counters.
	g.mu.Lock()
	readGen := g.gen
	g.mu.Unlock()
	usage, err := g.o.FW.Usage(ctx)
	if err != nil {
		return err
	}
	g.polled = time.Now()
	g.kmu.Lock()
	now := g.now()
	var ending []*Session
	g.mu.Lock()
	var down, up uint64
	for _, s := range g.sessions {
		if s.gen > readGen {
			continue // opened or changed after the read: next time
		}
		u, ok := usage[s.IP]
		if ok {
			// Counters only grow, in each direction; a smaller value means
			// an element was re-created by someone else: keep ours
			// (reconcile re-adds it with them).
			if u.DownBytes <= u.Bytes && u.DownBytes >= s.BytesDown && u.Bytes-u.DownBytes >= s.BytesUp {
				if u.Packets != s.Packets || s.LastActive.IsZero() {
					if u.Packets > s.Packets {
						s.LastActive = now
					}
					s.Packets = u.Packets
				}
				down += u.DownBytes - min(u.DownBytes, s.BytesDown)
				up += (u.Bytes - u.DownBytes) - min(u.Bytes-u.DownBytes, s.BytesUp)
				if s.BytesDown != u.DownBytes || s.BytesUp != u.Bytes-u.DownBytes {
					s.unsaved = true
				}
				s.BytesDown, s.BytesUp = u.DownBytes, u.Bytes-u.DownBytes
			}
		}
		if s.LastActive.IsZero() {
			s.LastActive = s.Started
		}
		switch {
		case !s.Expires.IsZero() && !now.Before(s.Expires):
			s.EndReason = "expired"
		case s.Method != "ctl" && g.closed(now):
			s.EndReason = "closed"
		case s.IdleTimeout > 0 && now.Sub(s.LastActive) >= s.IdleTimeout:
			s.EndReason = "idle"
		case s.QuotaBytes > 0 && (u.OverQuota || s.BytesDown+s.BytesUp >= s.QuotaBytes):
			s.EndReason = "quota"
		default:
			continue
		}
		s.Ended = now
		ending = append(ending, s)
	}
	for _, s := range ending {
		g.forget(s)
		g.noteLockout(s, now)
	}
	g.o.Metrics.addBytes(down, up)
	g.mu.Unlock()
	wait := g.end(ctx, ending)
	g.kmu.Unlock()
	return wait()
}

// forget drops a session from the in-memory indexes. Caller holds g.mu.
func (g *Gateway) forget(s *Session) {
	g.touch(s.IP)
	g.countDay(s)
	delete(g.sessions, s.ID)
	if g.byIP[s.IP] == s {
		delete(g.byIP, s.IP)
	}
}

// noteLockout remembers a device that must not let itself in again by
// click-through: kicked, or out of quota, until the session would have
// expired (an hour if it had no end). Caller holds g.mu.
func (g *Gateway) noteLockout(s *Session, now time.Time) {
	if s.EndReason != "kicked" && s.EndReason != "quota" {
		return
	}
	until := s.Expires
	if until.IsZero() {
		until = s.Ended.Add(time.Hour)
	}
	if s.EndReason == "quota" && g.limits.DailyQuota {
		// The allowance comes back the day after the one it was used up
		// (at a start, that may be before now).
		until = g.schedule.dayStart(s.Ended).AddDate(0, 0, 1)
	}
	if until.After(now) {
		g.lockout[s.MAC.String()] = until
	}
}

// end records ended sessions and makes their clients captive again. The
// caller holds kmu and calls wait after releasing it: opens need not wait
// for the record of an end.
func (g *Gateway) end(ctx context.Context, ended []*Session) (wait func() error) {
	if len(ended) == 0 {
		return func() error { return nil }
	}
	// Ended sessions are no longer in the maps: nothing changes them.
	t := g.journal.Add(record{before: eventsOf(EventStop, ended), change: Change{Sessions: copies(ended)}})
	var errs []error
	if err := g.endKernel(ctx, ended...); err != nil { // one batch: a closing time ends hundreds
		errs = append(errs, err)
	}
	for _, s := range ended {
		g.o.Metrics.ended.WithLabelValues(s.EndReason).Inc()
		g.log.Info("session ended", "session", s.ID, "mac", s.MAC.String(), "ip", s.IP, "reason", s.EndReason,
			"bytes_down", s.BytesDown, "bytes_up", s.BytesUp)
	}
	return func() error {
		if err := t.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("recording ended sessions: %w", err))
		}
		return errors.Join(errs...)
	}
}

// parkFor is how long an ended session's shaping class is kept for its
// address (see endKernel).
const parkFor = 15 * time.Minute

// endKernel makes ended sessions' clients captive (one firewall call) and
// parks their shaping classes instead of removing them: creating an HTB
// class costs the kernel time in proportion to every class on the machine
// (about 5 ms at 10,000 clients, measured), and the usual next session of
// an address is the same phone back from an idle timeout or a kick, with
// the same rates. A parked class shapes nothing that gets through the
// firewall (the address is captive; at most the portal's own answers to
// it); the next session of the address sets or removes it, and one unused
// for parkFor is removed by the reconcile loop. Caller holds kmu.
func (g *Gateway) endKernel(ctx context.Context, ss ...*Session) error {
	err := g.revokeFW(ctx, ss...)
	until := g.now().Add(parkFor)
	g.mu.Lock()
	for _, s := range ss {
		if (s.DownRate > 0 || s.UpRate > 0) && g.byIP[s.IP] == nil {
			g.parked[s.IP] = parked{limit: limitOf(s), until: until}
		}
	}
	g.mu.Unlock()
	return err
}

// parked is a shaping class kept for an address after its session ended.
type parked struct {
	limit shaper.Limit
	until time.Time
}

// unpark removes shaping classes parked for longer than parkFor, at most
// max at a time (each Remove is a few netlink messages under kmu).
func (g *Gateway) unpark(ctx context.Context, max int) {
	g.kmu.Lock()
	defer g.kmu.Unlock()
	now := g.now()
	var due []netip.Addr
	g.mu.Lock()
	for ip, p := range g.parked {
		if len(due) == max {
			break
		}
		if !now.Before(p.until) {
			due = append(due, ip)
			delete(g.parked, ip)
		}
	}
	g.mu.Unlock()
	for _, ip := range due {
		if err := g.o.Shaper.Remove(ctx, ip); err != nil {
			g.log.Warn("removing a parked shaping class; the next reconcile does", "ip", ip, "err", err)
		}
	}
}

// revokeFW makes the sessions' clients captive with one firewall call.
func (g *Gateway) revokeFW(ctx context.Context, ss ...*Session) error {
	if len(ss) == 0 {
		return nil
	}
	cs := make([]firewall.Client, len(ss))
	for i, s := range ss {
		cs[i] = firewall.Client{IP: s.IP, MAC: s.MAC}
	}
	err := g.o.FW.Revoke(ctx, cs...)
	if err != nil && len(ss) == 1 {
		err = fmt.Errorf("revoking %s: %w", ss[0].MAC, err)
	}
	return err
}

// revokeKernel makes the sessions' clients captive with one firewall
// Revoke (its errors name each client), then removes their shaping.
func (g *Gateway) revokeKernel(ctx context.Context, ss ...*Session) error {
	if len(ss) == 0 {
		return nil
	}
	var errs []error
	if err := g.revokeFW(ctx, ss...); err != nil {
		errs = append(errs, err)
	}
	for _, s := range ss {
		if err := g.o.Shaper.Remove(ctx, s.IP); err != nil {
			errs = append(errs, fmt.Errorf("unshaping %s: %w", s.IP, err))
		}
	}
	return errors.Join(errs...)
}

// flush writes the counters of the sessions that moved since the last flush
// (only those: with thousands of idle sessions a full write would hold the
// store, and every allow waiting on it, for a long time).
func (g *Gateway) flush() error {
	// Under kmu from the snapshot to the record: an open, extension or
	// policy change cannot slip between them (its newer record would be
	// overwritten by this older copy), nor a stop ahead of the interims.
	g.kmu.Lock()
	g.mu.Lock()
	now := g.now()
	var snap, interim []*Session
	for _, s := range g.sessions {
		if s.unsaved {
			s.unsaved = false
			c := *s
			snap = append(snap, &c)
		}
		if g.o.Events != nil && s.BytesDown+s.BytesUp != s.reportedBytes && now.Sub(s.reported) >= g.o.InterimInterval {
			s.reported, s.reportedBytes = now, s.BytesDown+s.BytesUp
			c := *s
			interim = append(interim, &c)
		}
	}
	g.mu.Unlock()
	if len(interim) == 0 && len(snap) == 0 {
		g.kmu.Unlock()
		return nil
	}
	// IfActive: a session whose end is already recorded stays ended.
	t := g.journal.Add(record{before: eventsOf(EventInterim, interim), change: Change{Sessions: snap, IfActive: true}})
	g.kmu.Unlock()
	return t.Wait()
}

// Grant is a request to open a session, already parsed.
type Grant struct {
	MAC    net.HardwareAddr // optional if IP is set
	IP     netip.Addr       // optional if MAC is set
	Method string
	User   string // the resident's pseudonym, when a login gave one
	Limits config.Limits
	// Spends, if its ID is set, is the single-use grant this open spends:
	// recorded as spent in the same store transaction as the session (see
	// SpendGrant for an open that fails).
	Spends Spent
}

// maxQuota bounds a quota well below the firewall's counter offset.
const maxQuota = 1 << 50

// checkLimits refuses limits the kernel cannot enforce, before anything is
// recorded.
func checkLimits(l config.Limits) error {
	for _, r := range []struct {
		name string
		v    quantity.Rate
	}{{"down", l.Down}, {"up", l.Up}} {
		if r.v != 0 && r.v < shaper.MinRate {
			return fmt.Errorf("%w: %s: %s is below the smallest rate, %s (0 for no limit)", control.ErrBadRequest, r.name, r.v, shaper.MinRate)
		}
	}
	if l.Quota > maxQuota {
		return fmt.Errorf("%w: quota: %s is too large", control.ErrBadRequest, l.Quota)
	}
	if l.Session < 0 || l.Idle < 0 {
		return fmt.Errorf("%w: durations must not be negative", control.ErrBadRequest)
	}
	return nil
}

// Open authorises a client (the operator's or the controller's decision).
// An existing session of the same client is updated in place (limits
// replaced, counters kept); a session of another device on the same address
// ends. It returns once the session is in the kernel and in the store of
// record. If the kernel or the store refuses, nothing is left behind: a new
// session is revoked, an updated one goes back to what it was.
func (g *Gateway) Open(ctx context.Context, req Grant) (*Session, error) {
	if err := checkLimits(req.Limits); err != nil {
		return nil, err
	}
	mac, ip, err := g.identify(req.MAC, req.IP)
	if err != nil {
		return nil, err
	}
	am := g.addrLock(ip)
	g.kmu.RLock()
	am.Lock()
	o, err := g.open(ctx, mac, ip, req)
	am.Unlock()
	g.kmu.RUnlock()
	if err != nil {
		return nil, err
	}
	return g.settle(ctx, o)
}

// addrLock is the lock an Open of ip takes under kmu held shared.
// Everything an open changes belongs to its address: the session at it
// (and one it displaces, at the same address), its parked class, its
// kernel elements and classes, its touch. Records of different addresses
// may reach the journal in either order; those of one address keep theirs.
func (g *Gateway) addrLock(ip netip.Addr) *sync.Mutex {
	b := ip.As16()
	return &g.addrMu[int(binary.BigEndian.Uint16(b[14:]))%len(g.addrMu)]
}

// ClickThrough lets a captive device in by itself, with the site's default
// limits. It never changes an existing session (a resident cannot lift the
// limits an operator set), never takes an address from another device's
// session, and refuses a device that was kicked or used up its quota until
// that session would have expired.
func (g *Gateway) ClickThrough(ctx context.Context, ip netip.Addr) (*Session, error) {
	mac, ip, err := g.identify(nil, ip)
	if err != nil {
		return nil, err
	}
	g.kmu.Lock()
	o, err := g.clickThrough(ctx, mac, ip)
	g.kmu.Unlock()
	if err != nil {
		return nil, err
	}
	if o.already != nil {
		return o.already, nil
	}
	return g.settle(ctx, o)
}

// clickThrough is ClickThrough's part under kmu. An opening with only
// already set is a device already in.
func (g *Gateway) clickThrough(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) (*opening, error) {
	g.mu.Lock()
	if s := g.byIP[ip]; s != nil {
		c := *s
		g.mu.Unlock()
		if sameMAC(s.MAC, mac) {
			return &opening{already: &c}, nil
		}
		return nil, fmt.Errorf("%w: %s is in use by another device's session", ErrRefused, ip)
	}
	for _, s := range g.sessions {
		if sameMAC(s.MAC, mac) {
			g.mu.Unlock()
			return nil, fmt.Errorf("%w: %s already has a session on %s", ErrRefused, mac, s.IP)
		}
	}
	if until, ok := g.lockout[mac.String()]; ok && g.now().Before(until) {
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: %s may not log in again before %s", ErrRefused, mac, until.Format(time.RFC3339))
	}
	limits := g.limits
	g.mu.Unlock()
	return g.open(ctx, mac, ip, Grant{Method: "click-through", Limits: limits})
}

// ErrRefused marks a login the site's rules refuse.
var ErrRefused = errors.New("refused")

// opening is an open in the kernel whose record the journal is writing.
type opening struct {
	s       *Session // the live session
	c       Session  // as opened
	prev    *Session // before an update; nil for a new session
	gen     uint64   // s.gen as opened
	t       groupcommit.Ticket[record]
	t0      time.Time
	already *Session // ClickThrough: the device was in already
	grant   string   // the id of the grant the open spends, if any
}

// open does the work of Open under kmu (shared, with the address's lock;
// ClickThrough holds kmu exclusive): the decision (under mu), the kernel
// (mu released: readers of the sessions need not wait for the kernel), and
// the record handed to the journal. The caller releases kmu and settles.
func (g *Gateway) open(ctx context.Context, mac net.HardwareAddr, ip netip.Addr, req Grant) (*opening, error) {
	t0 := time.Now()
	now := g.now()
	g.mu.Lock()
	s, prev, displaced, err := g.decide(mac, ip, req, now)
	if err != nil {
		g.mu.Unlock()
		return nil, err
	}
	if displaced != nil {
		// The address now belongs to another device: the old session ends.
		displaced.Ended, displaced.EndReason = now, "replaced"
		g.forget(displaced)
	}
	if prev == nil {
		s.reported, s.reportedBytes = now, 0
	}
	s.gen = g.touch(ip)
	g.sessions[s.ID] = s
	g.byIP[ip] = s
	delete(g.parked, ip) // enforce takes the class over
	o := &opening{s: s, c: *s, prev: prev, gen: s.gen, t0: t0, grant: req.Spends.ID}
	g.mu.Unlock()

	var dt *groupcommit.Ticket[record]
	if displaced != nil {
		// Its end stands whatever becomes of this open.
		t := g.journal.Add(record{before: eventsOf(EventStop, []*Session{displaced}), change: Change{Sessions: copies([]*Session{displaced})}})
		dt = &t
		// Its shaping goes to the new session: enforce below sets or
		// removes it for the address.
		if err := g.endKernel(ctx, displaced); err != nil {
			g.log.Error("revoking displaced session", "session", displaced.ID, "err", err)
		}
	}
	if err := g.enforce(ctx, &o.c); err != nil {
		g.o.Metrics.errors.WithLabelValues("allow").Inc()
		g.undo(ctx, o, now)
		if dt != nil {
			if err := dt.Wait(); err != nil {
				g.log.Error("recording displaced session", "session", displaced.ID, "err", err)
			}
		}
		return nil, fmt.Errorf("authorising %s: %w", mac, err)
	}
	// Touched again now that the kernel has it: a reconcile that took its
	// list while the kernel work ran (mu was free) must leave it alone.
	g.mu.Lock()
	if g.sessions[s.ID] == s {
		s.gen = g.touch(ip)
		o.gen = s.gen
	}
	g.mu.Unlock()
	var after []Event
	if prev == nil {
		after = eventsOf(EventStart, []*Session{&o.c})
	}
	c := o.c
	ch := Change{Sessions: []*Session{&c}}
	if req.Spends.ID != "" {
		ch.Spent = []Spent{req.Spends}
	}
	o.t = g.journal.Add(record{change: ch, after: after})
	return o, nil
}

// decide works out the session an open makes or updates. Caller holds mu;
// nothing is changed yet.
func (g *Gateway) decide(mac net.HardwareAddr, ip netip.Addr, req Grant, now time.Time) (s, prev, displaced *Session, err error) {
	s = g.byIP[ip]
	if s != nil && !sameMAC(s.MAC, mac) {
		displaced, s = s, nil
	}
	if req.Method != "ctl" && g.closed(now) {
		next := g.schedule.NextOpen(now)
		return nil, nil, nil, fmt.Errorf("%w: the site is closed now (it opens %s)", ErrRefused, next.In(g.schedule.loc()).Format("Mon 15:04"))
	}
	if s == nil {
		if max := g.limits.MaxClients; max > 0 && len(g.sessions) >= max && displaced == nil {
			return nil, nil, nil, fmt.Errorf("%w: %w: the site is full (%d clients)", control.ErrBadRequest, ErrRefused, max)
		}
		s = &Session{ID: newID(), MAC: mac, IP: ip, Started: now, LastActive: now}
	} else {
		c := *s
		prev = &c
	}
	l := req.Limits
	quota := uint64(l.Quota)
	if l.DailyQuota && l.Quota > 0 {
		// What is left of the device's day; this session's own counters
		// carry on inside it.
		used := g.usedToday(mac.String(), now)
		if used >= uint64(l.Quota) {
			return nil, nil, nil, fmt.Errorf("%w: %s used its daily data allowance (%s)", ErrRefused, mac, l.Quota)
		}
		quota = uint64(l.Quota) - used
	}
	s.Method, s.User = req.Method, req.User
	s.Expires = time.Time{}
	if l.Session > 0 {
		s.Expires = now.Add(l.Session)
	}
	s.IdleTimeout, s.QuotaBytes = l.Idle, quota
	s.DownRate, s.UpRate = uint64(l.Down), uint64(l.Up)
	return s, prev, displaced, nil
}

// settle waits for the journal to write an opening's record. If the store
// refused it, the open is taken back (unless a later change of the client
// superseded it) and its error returned.
func (g *Gateway) settle(ctx context.Context, o *opening) (*Session, error) {
	if err := o.t.Wait(); err != nil {
		g.o.Metrics.errors.WithLabelValues("store").Inc()
		g.kmu.Lock()
		g.mu.Lock()
		current := g.sessions[o.s.ID] == o.s && o.s.gen == o.gen
		g.mu.Unlock()
		if current {
			g.undo(ctx, o, g.now())
		}
		g.kmu.Unlock()
		return nil, fmt.Errorf("recording session: %w", err)
	}
	s := &o.c
	g.o.Metrics.authorisations.WithLabelValues(s.Method).Inc()
	g.o.Metrics.allowSeconds.Observe(time.Since(o.t0).Seconds())
	attrs := []any{"session", s.ID, "mac", s.MAC.String(), "ip", s.IP, "method", s.Method,
		"expires", s.Expires, "quota", s.QuotaBytes, "down", quantity.Rate(s.DownRate), "up", quantity.Rate(s.UpRate)}
	if s.User != "" {
		attrs = append(attrs, "user", s.User) // a pseudonym, never a phone number
	}
	if o.grant != "" {
		attrs = append(attrs, "grant", o.grant)
	}
	g.log.Info("session opened", attrs...)
	if g.o.Opened != nil {
		g.o.Opened(s.IP)
	}
	return s, nil
}

// undo takes back an opening the kernel or the store refused: an update
// goes back to the limits the session had (counters kept), a new session
// is dropped and revoked. Nothing of it is in the store. Caller holds kmu.
func (g *Gateway) undo(ctx context.Context, o *opening, now time.Time) {
	s := o.s
	g.mu.Lock()
	if o.prev != nil {
		back := *o.prev
		back.BytesDown, back.BytesUp, back.Packets, back.LastActive = s.BytesDown, s.BytesUp, s.Packets, s.LastActive
		back.unsaved = s.unsaved
		*s = back
		s.gen = g.touch(s.IP)
		c := *s
		g.mu.Unlock()
		if err := g.enforce(ctx, &c); err != nil {
			g.log.Error("restoring session after a refused update; the next reconcile repairs it", "session", s.ID, "err", err)
		}
		return
	}
	s.Ended, s.EndReason = now, "failed"
	g.forget(s)
	g.mu.Unlock()
	if err := g.revokeKernel(ctx, s); err != nil {
		g.log.Error("revoking a refused session; the next reconcile repairs it", "session", s.ID, "err", err)
	}
}

// enforce puts one session in the kernel: shaping first, so the first
// forwarded packet is already limited.
func (g *Gateway) enforce(ctx context.Context, s *Session) error {
	var err error
	if s.DownRate > 0 || s.UpRate > 0 {
		err = g.o.Shaper.Set(ctx, limitOf(s))
	} else {
		err = g.o.Shaper.Remove(ctx, s.IP)
	}
	if err == nil {
		err = g.o.FW.Allow(ctx, grantOf(s))
	}
	return err
}

// Close ends the session of a client (by MAC or IP) with reason.
func (g *Gateway) Close(ctx context.Context, mac net.HardwareAddr, ip netip.Addr, reason string) (*Session, error) {
	g.kmu.Lock()
	s, wait, err := g.close(ctx, mac, ip, reason)
	g.kmu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := wait(); err != nil {
		return nil, err
	}
	return s, nil
}

// close is Close's part under kmu.
func (g *Gateway) close(ctx context.Context, mac net.HardwareAddr, ip netip.Addr, reason string) (*Session, func() error, error) {
	g.mu.Lock()
	var s *Session
	if ip.IsValid() {
		s = g.byIP[ip]
		if s != nil && mac != nil && !sameMAC(s.MAC, mac) {
			s = nil
		}
	} else {
		for _, c := range g.sessions {
			if sameMAC(c.MAC, mac) {
				s = c
				break
			}
		}
	}
	if s == nil {
		g.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: no session for %s", control.ErrNotFound, describe(mac, ip))
	}
	now := g.now()
	s.Ended, s.EndReason = now, reason
	g.forget(s)
	g.noteLockout(s, now)
	g.mu.Unlock()
	c := *s
	return &c, g.end(ctx, []*Session{s}), nil
}

// Sessions returns a copy of the active sessions, sorted by IP.
func (g *Gateway) Sessions() []Session {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Session, 0, len(g.sessions))
	for _, s := range g.sessions {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// SessionFor returns the active session of ip, if any.
func (g *Gateway) SessionFor(ip netip.Addr) (Session, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.byIP[ip]; s != nil {
		return *s, true
	}
	return Session{}, false
}

// identify completes a MAC/IP pair from what was seen on the wire.
func (g *Gateway) identify(mac net.HardwareAddr, ip netip.Addr) (net.HardwareAddr, netip.Addr, error) {
	cfg := g.o.Config
	if ip.IsValid() {
		ip = ip.Unmap()
		if err := g.checkClientIP(ip); err != nil {
			return nil, netip.Addr{}, err
		}
	}
	if mac != nil && (len(mac) != 6 || mac[0]&1 == 1 || isZero(mac)) {
		return nil, netip.Addr{}, fmt.Errorf("%w: %s is not a unicast Ethernet address", control.ErrBadRequest, mac)
	}
	if mac != nil && ip.IsValid() {
		return mac, ip, nil
	}
	if mac == nil && !ip.IsValid() {
		return nil, netip.Addr{}, fmt.Errorf("%w: give the client's MAC or IP", control.ErrBadRequest)
	}
	find := func(h discovery.Host) bool {
		if mac != nil {
			return sameMAC(h.MAC, mac) && cfg.ClientSubnet.Contains(h.IP)
		}
		return h.IP == ip
	}
	var found discovery.Host
	ok := false
	if mac != nil {
		found, ok = g.o.Hosts.LookupMAC(mac)
		ok = ok && find(found)
	} else {
		found, ok = g.o.Hosts.Lookup(ip)
	}
	if !ok && g.o.Neighbors != nil {
		if hosts, err := g.o.Neighbors(); err == nil {
			for _, h := range hosts {
				if find(h) {
					found, ok = h, true
					break
				}
			}
		}
	}
	if !ok {
		return nil, netip.Addr{}, fmt.Errorf("%w: %s has not been seen on %s; give both --mac and --ip", control.ErrNotFound, describe(mac, ip), cfg.ClientIf)
	}
	if err := g.checkClientIP(found.IP); err != nil {
		return nil, netip.Addr{}, err
	}
	return found.MAC, found.IP, nil
}

// checkClientIP refuses addresses that can never be a client's.
func (g *Gateway) checkClientIP(ip netip.Addr) error {
	cfg := g.o.Config
	switch {
	case !ip.Is4() || !cfg.ClientSubnet.Contains(ip):
		return fmt.Errorf("%w: %s is not in the client network %s", control.ErrBadRequest, ip, cfg.ClientSubnet)
	case ip == cfg.GatewayIP || ip == cfg.ClientSubnet.Addr() || ip == config.Broadcast(cfg.ClientSubnet):
		return fmt.Errorf("%w: %s is the gateway's, the network's or the broadcast address", control.ErrBadRequest, ip)
	}
	return nil
}

func describe(mac net.HardwareAddr, ip netip.Addr) string {
	if mac != nil {
		return mac.String()
	}
	return ip.String()
}

func sameMAC(a, b net.HardwareAddr) bool { return a.String() == b.String() }

func isZero(mac net.HardwareAddr) bool {
	for _, b := range mac {
		if b != 0 {
			return false
		}
	}
	return true
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
