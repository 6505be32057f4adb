// Package store is the controller's state layer: every subsystem (the
// gateway API, the login flows, the dashboard and statistics) reads and
// writes through the Store interface defined here.
//
// Two implementations pass one contract suite (store/storetest):
// boltstore, an embedded file for a controller with no Redis, and
// redisstore, for production and for several controller replicas sharing
// one Redis. Both are safe for concurrent use; redisstore keeps every
// read-modify-write in one Lua script or MULTI, so two controller processes
// on one Redis stay correct.
//
// Times are kept with millisecond precision and returned in UTC.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned (wrapped) when a gateway, access point, session,
// command or ephemeral key does not exist or has expired.
var ErrNotFound = errors.New("not found")

// ErrInvalid is returned (wrapped, with what and where) for bad input; the
// store is left unchanged.
var ErrInvalid = errors.New("invalid input")

// Store is everything the controller keeps. Close releases the store; it is
// not safe to use afterwards.
type Store interface {
	Gateways
	AccessPoints
	Sessions
	Commands
	Ephemeral
	Stats
	Privacy
	Audit
	Close() error
}

// GatewayHealth is what a gateway reports with each heartbeat.
type GatewayHealth struct {
	Version          string            `json:"version,omitempty"`
	Uptime           time.Duration     `json:"uptime,omitempty"`
	ClientsOnline    int               `json:"clients_online"`
	ReconcileRepairs int64             `json:"reconcile_repairs"`
	Extra            map[string]string `json:"extra,omitempty"` // small, free-form
}

// GatewayStatus is the last heartbeat of one gateway.
type GatewayStatus struct {
	ID            string        `json:"id"`
	LastHeartbeat time.Time     `json:"last_heartbeat"`
	Health        GatewayHealth `json:"health"`
}

// Up reports whether the last heartbeat is at most within before now.
func (g GatewayStatus) Up(now time.Time, within time.Duration) bool {
	return !g.LastHeartbeat.IsZero() && now.Sub(g.LastHeartbeat) <= within
}

// Gateways keeps each gateway's last heartbeat.
type Gateways interface {
	// Heartbeat records that gateway id was alive at at with health h,
	// replacing the previous heartbeat unless that one is newer.
	Heartbeat(ctx context.Context, id string, at time.Time, h GatewayHealth) error
	// Gateway returns one gateway's status or ErrNotFound.
	Gateway(ctx context.Context, id string) (GatewayStatus, error)
	// ListGateways returns every gateway that ever sent a heartbeat, by ID.
	ListGateways(ctx context.Context) ([]GatewayStatus, error)
}

// Radio is the reported state of one radio of an access point.
type Radio struct {
	Name    string `json:"name"` // e.g. radio0
	Up      bool   `json:"up"`
	Channel int    `json:"channel,omitempty"`
	TxPower int    `json:"txpower,omitempty"` // dBm
	SSID    string `json:"ssid,omitempty"`
}

// APState is what an access point reports when it checks in.
type APState struct {
	Firmware string        `json:"firmware,omitempty"`
	Uptime   time.Duration `json:"uptime,omitempty"`
	Clients  int           `json:"clients"`
	Radios   []Radio       `json:"radios,omitempty"`
}

// APStatus is the last check-in of one access point.
type APStatus struct {
	MAC           string    `json:"mac"` // lower case, colon separated
	LastCheckIn   time.Time `json:"last_check_in"`
	State         APState   `json:"state"`
	ConfigVersion string    `json:"config_version,omitempty"` // applied desired-config version
}

// Up reports whether the last check-in is at most within before now.
func (a APStatus) Up(now time.Time, within time.Duration) bool {
	return !a.LastCheckIn.IsZero() && now.Sub(a.LastCheckIn) <= within
}

// AccessPoints keeps each access point's last check-in.
type AccessPoints interface {
	// CheckIn records the state reported by the AP with MAC mac (any form
	// net.ParseMAC accepts) and the config version it has applied.
	CheckIn(ctx context.Context, mac string, at time.Time, st APState, configVersion string) error
	// AccessPoint returns one AP's status or ErrNotFound.
	AccessPoint(ctx context.Context, mac string) (APStatus, error)
	// ListAccessPoints returns every AP that ever checked in, by MAC.
	ListAccessPoints(ctx context.Context) ([]APStatus, error)
}

// EventKind is the kind of a session event.
type EventKind string

// Session event kinds.
const (
	EventStart   EventKind = "start"
	EventInterim EventKind = "interim"
	EventStop    EventKind = "stop"
)

// SessionEvent is one accounting event sent by a gateway. Byte counts are
// the session's cumulative totals at At (as RADIUS interim accounting does),
// so a lost interim costs nothing and a late one cannot lower a total.
type SessionEvent struct {
	ID        string    `json:"id"` // unique per gateway; a replay is a no-op
	Kind      EventKind `json:"kind"`
	SessionID string    `json:"session_id"`
	GatewayID string    `json:"gateway_id"`
	SiteID    string    `json:"site_id"`
	ClientMAC string    `json:"client_mac"`
	UserID    string    `json:"user_id,omitempty"` // pseudonymous
	Method    string    `json:"method,omitempty"`  // login method: click, sms, spid, voucher...
	Start     time.Time `json:"start"`             // session start; zero means At
	At        time.Time `json:"at"`                // when the event happened
	BytesDown uint64    `json:"bytes_down"`
	BytesUp   uint64    `json:"bytes_up"`
	Reason    string    `json:"reason,omitempty"` // stop only: logout, idle, quota, time, kick...
}

// Session is the store's view of one session, built from its events.
type Session struct {
	ID         string    `json:"id"`
	GatewayID  string    `json:"gateway_id"`
	SiteID     string    `json:"site_id"`
	ClientMAC  string    `json:"client_mac"`
	UserID     string    `json:"user_id,omitempty"`
	Method     string    `json:"method,omitempty"`
	Start      time.Time `json:"start"`
	LastSeen   time.Time `json:"last_seen"`
	End        time.Time `json:"end"` // zero while open
	BytesDown  uint64    `json:"bytes_down"`
	BytesUp    uint64    `json:"bytes_up"`
	StopReason string    `json:"stop_reason,omitempty"`
}

// Open reports whether no stop event has been recorded for the session.
func (s Session) Open() bool { return s.End.IsZero() }

// Totals are a site's session count and bytes since the store began.
type Totals struct {
	Sessions  int64  `json:"sessions"`
	BytesDown uint64 `json:"bytes_down"`
	BytesUp   uint64 `json:"bytes_up"`
}

// Sessions records session events and answers queries over sessions.
type Sessions interface {
	// RecordEvent applies ev. A replayed event (same gateway and ID) changes nothing
	// and returns duplicate true. The first event of a session (whatever
	// its kind) creates it; a stop closes it for good; byte totals only
	// grow. In the same atomic step the site's totals and hourly rollups
	// (see Stats) and the day's distinct users are updated, so nothing is
	// ever counted twice.
	RecordEvent(ctx context.Context, ev SessionEvent) (duplicate bool, err error)
	// Session returns one session or ErrNotFound.
	Session(ctx context.Context, id string) (Session, error)
	// SessionsStarted returns the site's sessions that started in
	// [from, to), by start time.
	SessionsStarted(ctx context.Context, siteID string, from, to time.Time) ([]Session, error)
	// OpenSessions returns the site's open sessions, by start time.
	OpenSessions(ctx context.Context, siteID string) ([]Session, error)
	// SiteTotals returns the site's totals (zero for an unknown site).
	SiteTotals(ctx context.Context, siteID string) (Totals, error)
}

// CommandKind is what a command asks a gateway to do.
type CommandKind string

// Command kinds.
const (
	CommandKick   CommandKind = "kick"   // disconnect ClientMAC now
	CommandExtend CommandKind = "extend" // extend ClientMAC's session by Extend
)

// Command is a remote operation queued for one gateway.
type Command struct {
	ID        string        `json:"id"` // assigned by Enqueue when empty
	GatewayID string        `json:"gateway_id"`
	Kind      CommandKind   `json:"kind"`
	ClientMAC string        `json:"client_mac,omitempty"`
	Extend    time.Duration `json:"extend,omitempty"`
	Created   time.Time     `json:"created"`
}

// Commands is a durable per-gateway queue, delivered at least once: a
// command stays pending until the gateway acknowledges its ID.
type Commands interface {
	// Enqueue queues c and returns it with its ID. Enqueueing an ID that is
	// already queued for the gateway is a no-op.
	Enqueue(ctx context.Context, c Command) (Command, error)
	// Pending returns the gateway's unacknowledged commands, oldest first.
	Pending(ctx context.Context, gatewayID string) ([]Command, error)
	// Ack removes a command and reports whether it was pending for that
	// gateway: false for an unknown, another gateway's or an already
	// acknowledged ID (a gateway may ack twice), which is not an error.
	Ack(ctx context.Context, gatewayID, commandID string) (bool, error)
}

// Ephemeral is short-lived security state (nonces, one-time codes, grants,
// rate limits, budgets). Every key expires after its TTL; keys are opaque
// strings chosen by the caller, in a namespace of their own.
type Ephemeral interface {
	// PutIfAbsent stores val under key for ttl unless key is present:
	// false means key was seen (a replayed nonce).
	PutIfAbsent(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error)
	// Put stores val under key for ttl, replacing any value.
	Put(ctx context.Context, key string, val []byte, ttl time.Duration) error
	// Get returns key's value or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Take returns key's value and deletes it in one atomic step (a
	// single-use code or grant): of two concurrent Takes only one gets it,
	// the other ErrNotFound.
	Take(ctx context.Context, key string) ([]byte, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Incr adds by to the counter key and returns the new value. The first
	// increment starts a fixed window: the counter expires window later
	// (rate limits; a daily budget uses a key per day).
	Incr(ctx context.Context, key string, by int64, window time.Duration) (int64, error)
}

// Hourly counter names maintained by RecordEvent; other subsystems may add
// their own names with IncrHourly (e.g. "sms_sent").
const (
	CounterSessions  = "sessions"   // sessions started in the hour
	CounterBytesDown = "bytes_down" // bytes counted in the hour
	CounterBytesUp   = "bytes_up"
	CounterOnlineMS  = "online_ms" // session time between events in the hour, ms
	// CounterUsers is only in daily rollups: distinct users who started
	// a session that day. It outlives the day's user set (see Privacy).
	CounterUsers = "users"
)

// MethodCounter is the hourly counter of sessions started with login
// method m.
func MethodCounter(m string) string { return "method:" + m }

// Rollup is a site's counters for one hour or one day.
type Rollup struct {
	Start    time.Time        `json:"start"` // the hour's or day's start, UTC
	Counters map[string]int64 `json:"counters"`
}

// Stats holds the rollups that reports read instead of raw events:
// counters per (site, hour) and, summed, per (site, day), so a year is 365
// reads; months are sums of days. Days are calendar days in the
// implementation's Location option (UTC by default; a town sets
// Europe/Rome, and every replica must use the same).
//
// Distinct users are exact sets of pseudonymous ids per (site, day),
// not HyperLogLog: a town's volume is small (thousands a day), council
// reports want exact numbers, and an erasure request must be able to
// remove one user, which a HyperLogLog cannot.
type Stats interface {
	// IncrHourly adds counters to the site's counters of at's hour and day.
	IncrHourly(ctx context.Context, siteID string, at time.Time, counters map[string]int64) error
	// Hourly returns the site's hours that start in [from, to) and have
	// counters.
	Hourly(ctx context.Context, siteID string, from, to time.Time) ([]Rollup, error)
	// Daily returns the site's days that start in [from, to) and have
	// counters.
	Daily(ctx context.Context, siteID string, from, to time.Time) ([]Rollup, error)
	// DistinctUsers counts the distinct users who started a session at
	// any of the sites (all of them at least once) on the days from
	// from's day to to's day, inclusive.
	DistinctUsers(ctx context.Context, from, to time.Time, siteIDs ...string) (int, error)
}

// Privacy serves the GDPR duties: export and erasure of one pseudonymous
// user's connection records, and their deletion after the retention
// period. Totals and rollups are anonymous aggregates and stay.
type Privacy interface {
	// UserSessions returns every session of userID, by start time.
	UserSessions(ctx context.Context, userID string) ([]Session, error)
	// ForgetUser deletes userID's sessions, open or not, and removes the
	// user from the distinct-user sets; it returns how many sessions it
	// deleted.
	ForgetUser(ctx context.Context, userID string) (int, error)
	// PurgeSessions deletes the closed sessions that started before
	// before, and the distinct-user sets of the days before before's day
	// (their daily CounterUsers stays); it returns how many sessions it
	// deleted. Open sessions are kept until they end.
	PurgeSessions(ctx context.Context, before time.Time) (int, error)
}

// AuditEntry is one recorded action.
type AuditEntry struct {
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`  // who: an admin account, "sites.yaml reload"...
	Action string    `json:"action"` // what: "kick", "voucher.create"...
	Target string    `json:"target,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Audit is an append-only log of actions.
type Audit interface {
	AppendAudit(ctx context.Context, e AuditEntry) error
	// ListAudit returns entries with At in [from, to), newest first, at
	// most limit of them (limit <= 0: all).
	ListAudit(ctx context.Context, from, to time.Time, limit int) ([]AuditEntry, error)
}
