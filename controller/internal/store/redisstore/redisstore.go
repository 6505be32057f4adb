// Package redisstore is the production store.Store on Redis (go-redis v9),
// shared by several controller replicas. Every read-modify-write is one
// Lua script (atomic on the server) or one MULTI, so two controller
// processes on one Redis never double-count an event, accept a nonce twice
// or hand out a single-use grant twice.
//
// Durability is Redis's: run it with appendonly yes (appendfsync everysec
// loses at most the last second on a crash; a clean restart loses
// nothing).
//
// Keys, under Options.Prefix (default "cw:"):
//
//	gw, gwt              hash: gateway id -> status json, heartbeat ms
//	ap, apt              hash: AP MAC -> status json, check-in ms
//	ev:<gw>:<event>      string with TTL: event id seen (replay guard)
//	s:<session>          hash: the session's fields
//	ss:<site>            zset: session ids by start ms
//	so:<site>            set: open session ids
//	st:<site>            hash: sessions, down, up totals
//	h:<site>:<hour unix> hash: hourly counters
//	d:<site>:<day unix>  hash: daily counters (day start in Options.Location)
//	u:<site>:<YYYYMMDD>  set: pseudonymous users who started a session
//	us:<user>            set: the user's session ids
//	sites                set: site ids with sessions
//	c:<gw>, cq:<gw>      hash id -> command json; zset ids by sequence (cseq)
//	e:<key>              string with TTL: ephemeral values and counters
//	a                    zset: audit entries by ms
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	neturl "net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/redis/go-redis/v9"
)

// Options tune a Store; the zero value is fine.
type Options struct {
	// Prefix is put before every key (default "cw:"), so one Redis can
	// hold several controllers' data (or tests).
	Prefix string
	// EventTTL is how long event ids are remembered to recognise replays
	// (default 30 days: longer than a gateway buffers events).
	EventTTL time.Duration
	// Location is where days begin for daily rollups and distinct users
	// (default UTC; a town sets Europe/Rome). Every replica on one Redis
	// must use the same.
	Location *time.Location
}

// Store is a store.Store on Redis.
type Store struct {
	rdb   redis.UniversalClient
	p     string
	opts  Options
	owned bool
}

var _ store.Store = (*Store)(nil)

// New returns a Store on rdb; Close does not close rdb.
func New(rdb redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "cw:"
	}
	if opts.EventTTL <= 0 {
		opts.EventTTL = 30 * 24 * time.Hour
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	return &Store{rdb: rdb, p: opts.Prefix, opts: opts}
}

// Open connects to the Redis at url (redis://[:password@]host:port/db,
// or rediss:// for TLS), checks it answers, and returns a Store that
// closes the connection on Close.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		// net/url's errors quote the whole URL, password included: keep
		// only the reason.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("parsing redis url: %w", err)
	}
	rdb := redis.NewClient(o)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("connecting to redis at %s: %w", o.Addr, err)
	}
	s := New(rdb, opts)
	s.owned = true
	return s, nil
}

// Close closes the connection if Open made it.
func (s *Store) Close() error {
	if s.owned {
		return s.rdb.Close()
	}
	return nil
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// latest stores json under id in KEYS[1] unless KEYS[2] holds a newer time
// for id.
var latest = redis.NewScript(`
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old and tonumber(old) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
`)

// Heartbeat implements store.Gateways.
func (s *Store) Heartbeat(ctx context.Context, id string, at time.Time, h store.GatewayHealth) error {
	if err := store.CheckHeartbeat(id, at, h); err != nil {
		return err
	}
	st := store.GatewayStatus{ID: id, LastHeartbeat: store.Millis(at), Health: h}
	data, err := json.Marshal(st)
	if err == nil {
		err = latest.Run(ctx, s.rdb, []string{s.p + "gw", s.p + "gwt"}, id, ms(st.LastHeartbeat), data).Err()
	}
	if err != nil {
		return fmt.Errorf("recording heartbeat of %s: %w", id, err)
	}
	return nil
}

func getJSON[T any](ctx context.Context, s *Store, key, field string) (T, error) {
	var x T
	v, err := s.rdb.HGet(ctx, key, field).Bytes()
	if errors.Is(err, redis.Nil) {
		return x, store.ErrNotFound
	}
	if err != nil {
		return x, err
	}
	return x, json.Unmarshal(v, &x)
}

func listJSON[T any](ctx context.Context, s *Store, key string) ([]T, error) {
	m, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		var x T
		if err := json.Unmarshal([]byte(m[k]), &x); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", k, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// Gateway implements store.Gateways.
func (s *Store) Gateway(ctx context.Context, id string) (store.GatewayStatus, error) {
	st, err := getJSON[store.GatewayStatus](ctx, s, s.p+"gw", id)
	if err != nil {
		return st, fmt.Errorf("reading gateway %s: %w", id, err)
	}
	return st, nil
}

// ListGateways implements store.Gateways.
func (s *Store) ListGateways(ctx context.Context) ([]store.GatewayStatus, error) {
	out, err := listJSON[store.GatewayStatus](ctx, s, s.p+"gw")
	if err != nil {
		return nil, fmt.Errorf("listing gateways: %w", err)
	}
	return out, nil
}

// CheckIn implements store.AccessPoints.
func (s *Store) CheckIn(ctx context.Context, mac string, at time.Time, st store.APState, configVersion string) error {
	m, err := store.NormalizeMAC("access point mac", mac)
	if err != nil {
		return err
	}
	if err := store.CheckAPState(m, at, st, configVersion); err != nil {
		return err
	}
	ap := store.APStatus{MAC: m, LastCheckIn: store.Millis(at), State: st, ConfigVersion: configVersion}
	data, err := json.Marshal(ap)
	if err == nil {
		err = latest.Run(ctx, s.rdb, []string{s.p + "ap", s.p + "apt"}, m, ms(ap.LastCheckIn), data).Err()
	}
	if err != nil {
		return fmt.Errorf("recording check-in of %s: %w", m, err)
	}
	return nil
}

// AccessPoint implements store.AccessPoints.
func (s *Store) AccessPoint(ctx context.Context, mac string) (store.APStatus, error) {
	m, err := store.NormalizeMAC("access point mac", mac)
	if err != nil {
		return store.APStatus{}, err
	}
	ap, err := getJSON[store.APStatus](ctx, s, s.p+"ap", m)
	if err != nil {
		return ap, fmt.Errorf("reading access point %s: %w", m, err)
	}
	return ap, nil
}

// ListAccessPoints implements store.AccessPoints.
func (s *Store) ListAccessPoints(ctx context.Context) ([]store.APStatus, error) {
	out, err := listJSON[store.APStatus](ctx, s, s.p+"ap")
	if err != nil {
		return nil, fmt.Errorf("listing access points: %w", err)
	}
	return out, nil
}

// recordEvent is store.Apply plus totals, rollups and users, in one
// atomic step. It returns 1 for a duplicate, 0 when applied, and an error
// reply when the session belongs to another site.
//
// KEYS: 1 ev:<gw>:<id>, 2 s:<session>, 3 ss:<site>, 4 so:<site>, 5 st:<site>,
// 6 h:<site>:<start hour>, 7 h:<site>:<event hour>, 8 u:<site>:<start day>,
// 9 d:<site>:<start day>, 10 d:<site>:<event day>, 11 us:<user>, 12 sites
// ARGV: 1 event ttl ms, 2 kind, 3 session, 4 gateway, 5 site, 6 mac,
// 7 user, 8 method, 9 start ms, 10 at ms, 11 down, 12 up, 13 reason
var recordEvent = redis.NewScript(`
local f = redis.call('HMGET', KEYS[2], 'site', 'last', 'end', 'down', 'up')
if f[1] and f[1] ~= ARGV[5] then
  return redis.error_reply('INVALID session belongs to site ' .. f[1])
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end
local function n(x) return string.format('%.0f', x) end
local sid, at = ARGV[3], tonumber(ARGV[10])
local down, up = tonumber(ARGV[11]), tonumber(ARGV[12])
local last, fin, pdown, pup
if not f[1] then
  last, fin, pdown, pup = tonumber(ARGV[9]), 0, 0, 0
  redis.call('HSET', KEYS[2], 'gw', ARGV[4], 'site', ARGV[5], 'mac', ARGV[6], 'user', ARGV[7],
    'method', ARGV[8], 'start', ARGV[9], 'last', ARGV[9], 'end', '0', 'down', '0', 'up', '0', 'reason', '')
  redis.call('ZADD', KEYS[3], ARGV[9], sid)
  redis.call('HINCRBY', KEYS[5], 'sessions', 1)
  for _, k in ipairs({KEYS[6], KEYS[9]}) do
    redis.call('HINCRBY', k, 'sessions', 1)
    if ARGV[8] ~= '' then redis.call('HINCRBY', k, 'method:' .. ARGV[8], 1) end
  end
  if ARGV[7] ~= '' then
    if redis.call('SADD', KEYS[8], ARGV[7]) == 1 then redis.call('HINCRBY', KEYS[9], 'users', 1) end
    redis.call('SADD', KEYS[11], sid)
  end
  redis.call('SADD', KEYS[12], ARGV[5])
else
  last, fin, pdown, pup = tonumber(f[2]), tonumber(f[3]), tonumber(f[4]), tonumber(f[5])
end
if down > pdown then
  redis.call('HSET', KEYS[2], 'down', ARGV[11])
  redis.call('HINCRBY', KEYS[5], 'down', n(down - pdown))
  redis.call('HINCRBY', KEYS[7], 'bytes_down', n(down - pdown))
  redis.call('HINCRBY', KEYS[10], 'bytes_down', n(down - pdown))
end
if up > pup then
  redis.call('HSET', KEYS[2], 'up', ARGV[12])
  redis.call('HINCRBY', KEYS[5], 'up', n(up - pup))
  redis.call('HINCRBY', KEYS[7], 'bytes_up', n(up - pup))
  redis.call('HINCRBY', KEYS[10], 'bytes_up', n(up - pup))
end
if fin == 0 and at > last then
  redis.call('HSET', KEYS[2], 'last', ARGV[10])
  redis.call('HINCRBY', KEYS[7], 'online_ms', n(at - last))
  redis.call('HINCRBY', KEYS[10], 'online_ms', n(at - last))
  last = at
end
if ARGV[2] == 'stop' and fin == 0 then
  fin = at
  if last > fin then fin = last end
  redis.call('HSET', KEYS[2], 'end', n(fin), 'reason', ARGV[13])
end
if fin == 0 then
  redis.call('SADD', KEYS[4], sid)
else
  redis.call('SREM', KEYS[4], sid)
end
return 0
`)

func (s *Store) hourKey(site string, t time.Time) string {
	return s.p + "h:" + site + ":" + strconv.FormatInt(store.HourOf(t).Unix(), 10)
}

func (s *Store) dayKey(site string, t time.Time) string {
	return s.p + "d:" + site + ":" + strconv.FormatInt(store.DayStart(t, s.opts.Location).Unix(), 10)
}

func (s *Store) usersKey(site, day string) string { return s.p + "u:" + site + ":" + day }

// RecordEvent implements store.Sessions.
func (s *Store) RecordEvent(ctx context.Context, ev store.SessionEvent) (bool, error) {
	ev, err := store.CheckEvent(ev)
	if err != nil {
		return false, err
	}
	keys := []string{
		s.p + "ev:" + ev.GatewayID + ":" + ev.ID, s.p + "s:" + ev.SessionID, s.p + "ss:" + ev.SiteID, s.p + "so:" + ev.SiteID,
		s.p + "st:" + ev.SiteID, s.hourKey(ev.SiteID, ev.Start), s.hourKey(ev.SiteID, ev.At),
		s.usersKey(ev.SiteID, store.DayOf(ev.Start, s.opts.Location)),
		s.dayKey(ev.SiteID, ev.Start), s.dayKey(ev.SiteID, ev.At),
		s.p + "us:" + ev.UserID, s.p + "sites",
	}
	r, err := recordEvent.Run(ctx, s.rdb, keys,
		s.opts.EventTTL.Milliseconds(), string(ev.Kind), ev.SessionID, ev.GatewayID, ev.SiteID, ev.ClientMAC,
		ev.UserID, ev.Method, ms(ev.Start), ms(ev.At), ev.BytesDown, ev.BytesUp, ev.Reason).Int()
	if err != nil {
		if strings.HasPrefix(err.Error(), "INVALID ") {
			err = fmt.Errorf("%w: %s", store.ErrInvalid, strings.TrimPrefix(err.Error(), "INVALID "))
		}
		return false, fmt.Errorf("recording session event %s: %w", ev.ID, err)
	}
	return r == 1, nil
}

func parseSession(id string, m map[string]string) (store.Session, error) {
	if len(m) == 0 {
		return store.Session{}, store.ErrNotFound
	}
	var nums [5]int64
	for i, f := range []string{"start", "last", "end", "down", "up"} {
		v, err := strconv.ParseInt(m[f], 10, 64)
		if err != nil {
			return store.Session{}, fmt.Errorf("session %s: field %s: %w", id, f, err)
		}
		nums[i] = v
	}
	return store.Session{
		ID: id, GatewayID: m["gw"], SiteID: m["site"], ClientMAC: m["mac"], UserID: m["user"], Method: m["method"],
		Start: store.FromMillis(nums[0]), LastSeen: store.FromMillis(nums[1]), End: store.FromMillis(nums[2]),
		BytesDown: uint64(nums[3]), BytesUp: uint64(nums[4]), StopReason: m["reason"],
	}, nil
}

// Session implements store.Sessions.
func (s *Store) Session(ctx context.Context, id string) (store.Session, error) {
	m, err := s.rdb.HGetAll(ctx, s.p+"s:"+id).Result()
	var x store.Session
	if err == nil {
		x, err = parseSession(id, m)
	}
	if err != nil {
		return x, fmt.Errorf("reading session %s: %w", id, err)
	}
	return x, nil
}

func (s *Store) sessions(ctx context.Context, ids []string) ([]store.Session, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.p+"s:"+id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]store.Session, 0, len(ids))
	for i, c := range cmds {
		x, err := parseSession(ids[i], c.Val())
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

// SessionsStarted implements store.Sessions.
func (s *Store) SessionsStarted(ctx context.Context, siteID string, from, to time.Time) ([]store.Session, error) {
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.p + "ss:" + siteID, ByScore: true, Start: ms(from), Stop: "(" + ms(to),
	}).Result()
	var out []store.Session
	if err == nil {
		out, err = s.sessions(ctx, ids)
	}
	if err != nil {
		return nil, fmt.Errorf("listing sessions of %s: %w", siteID, err)
	}
	return out, nil
}

// OpenSessions implements store.Sessions.
func (s *Store) OpenSessions(ctx context.Context, siteID string) ([]store.Session, error) {
	ids, err := s.rdb.SMembers(ctx, s.p+"so:"+siteID).Result()
	var out []store.Session
	if err == nil {
		out, err = s.sessions(ctx, ids)
	}
	if err != nil {
		return nil, fmt.Errorf("listing open sessions of %s: %w", siteID, err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// SiteTotals implements store.Sessions.
func (s *Store) SiteTotals(ctx context.Context, siteID string) (store.Totals, error) {
	var tot store.Totals
	m, err := s.rdb.HGetAll(ctx, s.p+"st:"+siteID).Result()
	if err == nil {
		var n [3]int64
		for i, f := range []string{"sessions", "down", "up"} {
			if v, ok := m[f]; ok {
				if n[i], err = strconv.ParseInt(v, 10, 64); err != nil {
					break
				}
			}
		}
		tot = store.Totals{Sessions: n[0], BytesDown: uint64(n[1]), BytesUp: uint64(n[2])}
	}
	if err != nil {
		return tot, fmt.Errorf("reading totals of %s: %w", siteID, err)
	}
	return tot, nil
}

// enqueue queues a command unless its id is queued.
// KEYS: 1 c:<gw>, 2 cq:<gw>, 3 cseq. ARGV: 1 id, 2 json.
var enqueue = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
return 1
`)

// Enqueue implements store.Commands.
func (s *Store) Enqueue(ctx context.Context, c store.Command) (store.Command, error) {
	c, err := store.CheckCommand(c, time.Now())
	if err != nil {
		return c, err
	}
	data, err := json.Marshal(c)
	if err == nil {
		err = enqueue.Run(ctx, s.rdb, []string{s.p + "c:" + c.GatewayID, s.p + "cq:" + c.GatewayID, s.p + "cseq"}, c.ID, data).Err()
	}
	if err != nil {
		return c, fmt.Errorf("enqueueing command %s for %s: %w", c.ID, c.GatewayID, err)
	}
	return c, nil
}

// Pending implements store.Commands.
func (s *Store) Pending(ctx context.Context, gatewayID string) ([]store.Command, error) {
	var out []store.Command
	ids, err := s.rdb.ZRange(ctx, s.p+"cq:"+gatewayID, 0, -1).Result()
	if err == nil && len(ids) > 0 {
		var vals []any
		vals, err = s.rdb.HMGet(ctx, s.p+"c:"+gatewayID, ids...).Result()
		for i := 0; err == nil && i < len(vals); i++ {
			v, ok := vals[i].(string)
			if !ok { // acked between the two reads
				continue
			}
			var c store.Command
			if err = json.Unmarshal([]byte(v), &c); err == nil {
				out = append(out, c)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listing commands for %s: %w", gatewayID, err)
	}
	return out, nil
}

// Ack implements store.Commands.
func (s *Store) Ack(ctx context.Context, gatewayID, commandID string) (bool, error) {
	var del *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.HDel(ctx, s.p+"c:"+gatewayID, commandID)
		p.ZRem(ctx, s.p+"cq:"+gatewayID, commandID)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("acknowledging command %s of %s: %w", commandID, gatewayID, err)
	}
	return del.Val() == 1, nil
}

func (s *Store) ek(key string) string { return s.p + "e:" + key }

// PutIfAbsent implements store.Ephemeral.
func (s *Store) PutIfAbsent(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	if err := store.CheckTTL(key, ttl); err != nil {
		return false, err
	}
	ok, err := s.rdb.SetNX(ctx, s.ek(key), val, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("putting %q: %w", key, err)
	}
	return ok, nil
}

// Put implements store.Ephemeral.
func (s *Store) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := store.CheckTTL(key, ttl); err != nil {
		return err
	}
	if err := s.rdb.Set(ctx, s.ek(key), val, ttl).Err(); err != nil {
		return fmt.Errorf("putting %q: %w", key, err)
	}
	return nil
}

func notFound(err error) error {
	if errors.Is(err, redis.Nil) {
		return store.ErrNotFound
	}
	return err
}

// Get implements store.Ephemeral.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := s.rdb.Get(ctx, s.ek(key)).Bytes()
	if err != nil {
		return nil, fmt.Errorf("getting %q: %w", key, notFound(err))
	}
	return v, nil
}

// Take implements store.Ephemeral (GETDEL: atomic).
func (s *Store) Take(ctx context.Context, key string) ([]byte, error) {
	v, err := s.rdb.GetDel(ctx, s.ek(key)).Bytes()
	if err != nil {
		return nil, fmt.Errorf("taking %q: %w", key, notFound(err))
	}
	return v, nil
}

// Delete implements store.Ephemeral.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.rdb.Del(ctx, s.ek(key)).Err(); err != nil {
		return fmt.Errorf("deleting %q: %w", key, err)
	}
	return nil
}

// incr adds ARGV[1] to KEYS[1] and starts its window (ARGV[2] ms) if it
// has none.
var incr = redis.NewScript(`
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
`)

// Incr implements store.Ephemeral.
func (s *Store) Incr(ctx context.Context, key string, by int64, window time.Duration) (int64, error) {
	if err := store.CheckTTL(key, window); err != nil {
		return 0, err
	}
	n, err := incr.Run(ctx, s.rdb, []string{s.ek(key)}, by, window.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("incrementing %q: %w", key, err)
	}
	return n, nil
}

// IncrHourly implements store.Stats.
func (s *Store) IncrHourly(ctx context.Context, siteID string, at time.Time, counters map[string]int64) error {
	if err := store.CheckID("site id", siteID); err != nil {
		return err
	}
	hk, dk := s.hourKey(siteID, at), s.dayKey(siteID, at)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for name, v := range counters {
			p.HIncrBy(ctx, hk, name, v)
			p.HIncrBy(ctx, dk, name, v)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("incrementing counters of %s: %w", siteID, err)
	}
	return nil
}

// Hourly implements store.Stats. It reads every hour of the range in one
// pipeline (a year is 8,760 small reads; use Daily for long ranges).
func (s *Store) Hourly(ctx context.Context, siteID string, from, to time.Time) ([]store.Rollup, error) {
	h := store.HourOf(from)
	if h.Before(from) {
		h = h.Add(time.Hour)
	}
	var starts []time.Time
	for ; h.Before(to) && len(starts) < 24*store.MaxDays; h = h.Add(time.Hour) {
		starts = append(starts, h)
	}
	out, err := s.rollups(ctx, starts, func(t time.Time) string { return s.hourKey(siteID, t) })
	if err != nil {
		return nil, fmt.Errorf("reading hourly counters of %s: %w", siteID, err)
	}
	return out, nil
}

// Daily implements store.Stats.
func (s *Store) Daily(ctx context.Context, siteID string, from, to time.Time) ([]store.Rollup, error) {
	var starts []time.Time
	for _, d := range store.Days(from, to, s.opts.Location, store.MaxDays) {
		if !d.Before(from) && d.Before(to) {
			starts = append(starts, d)
		}
	}
	out, err := s.rollups(ctx, starts, func(t time.Time) string { return s.dayKey(siteID, t) })
	if err != nil {
		return nil, fmt.Errorf("reading daily counters of %s: %w", siteID, err)
	}
	return out, nil
}

func (s *Store) rollups(ctx context.Context, starts []time.Time, key func(time.Time) string) ([]store.Rollup, error) {
	if len(starts) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(starts))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range starts {
			cmds[i] = p.HGetAll(ctx, key(t))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []store.Rollup
	for i, c := range cmds {
		m := c.Val()
		if len(m) == 0 {
			continue
		}
		r := store.Rollup{Start: starts[i].UTC(), Counters: make(map[string]int64, len(m))}
		for k, v := range m {
			if r.Counters[k], err = strconv.ParseInt(v, 10, 64); err != nil {
				return nil, fmt.Errorf("counter %s at %v: %w", k, r.Start, err)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// DistinctUsers implements store.Stats (SUNION of the day sets).
func (s *Store) DistinctUsers(ctx context.Context, from, to time.Time, siteIDs ...string) (int, error) {
	var keys []string
	for _, d := range store.Days(from, to, s.opts.Location, store.MaxDays) {
		for _, site := range siteIDs {
			keys = append(keys, s.usersKey(site, store.DayOf(d, s.opts.Location)))
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	users, err := s.rdb.SUnion(ctx, keys...).Result()
	if err != nil {
		return 0, fmt.Errorf("counting users: %w", err)
	}
	return len(users), nil
}

// UserSessions implements store.Privacy.
func (s *Store) UserSessions(ctx context.Context, userID string) ([]store.Session, error) {
	ids, err := s.rdb.SMembers(ctx, s.p+"us:"+userID).Result()
	var out []store.Session
	if err == nil {
		out, err = s.sessions(ctx, ids)
	}
	if err != nil {
		return nil, fmt.Errorf("listing sessions of user %s: %w", userID, err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// deleteSession deletes one session and its index entries if it still
// belongs to ARGV[2] (site) and ARGV[3] (user); with ARGV[4] "purge" only
// if it is closed, with "forget" also removing the user from the day set.
// KEYS: 1 s:<id>, 2 ss:<site>, 3 so:<site>, 4 us:<user>, 5 u:<site>:<start day>
// ARGV: 1 id, 2 site, 3 user, 4 mode.
var deleteSession = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'site', 'user', 'end')
if not f[1] or f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then return 0 end
if ARGV[4] == 'purge' and f[3] == '0' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
if ARGV[3] ~= '' then redis.call('SREM', KEYS[4], ARGV[1]) end
if ARGV[4] == 'forget' then redis.call('SREM', KEYS[5], ARGV[3]) end
return 1
`)

func (s *Store) deleteSession(ctx context.Context, x store.Session, mode string) (bool, error) {
	keys := []string{
		s.p + "s:" + x.ID, s.p + "ss:" + x.SiteID, s.p + "so:" + x.SiteID, s.p + "us:" + x.UserID,
		s.usersKey(x.SiteID, store.DayOf(x.Start, s.opts.Location)),
	}
	n, err := deleteSession.Run(ctx, s.rdb, keys, x.ID, x.SiteID, x.UserID, mode).Int()
	return n == 1, err
}

// ForgetUser implements store.Privacy.
func (s *Store) ForgetUser(ctx context.Context, userID string) (int, error) {
	if err := store.CheckID("user id", userID); err != nil {
		return 0, err
	}
	sessions, err := s.UserSessions(ctx, userID)
	n := 0
	for i := 0; err == nil && i < len(sessions); i++ {
		var ok bool
		if ok, err = s.deleteSession(ctx, sessions[i], "forget"); ok {
			n++
		}
	}
	if err != nil {
		return n, fmt.Errorf("forgetting user %s: %w", userID, err)
	}
	return n, nil
}

// PurgeSessions implements store.Privacy.
func (s *Store) PurgeSessions(ctx context.Context, before time.Time) (int, error) {
	n, err := s.purge(ctx, before)
	if err != nil {
		return n, fmt.Errorf("purging sessions before %v: %w", before, err)
	}
	return n, nil
}

func (s *Store) purge(ctx context.Context, before time.Time) (int, error) {
	sites, err := s.rdb.SMembers(ctx, s.p+"sites").Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, site := range sites {
		ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: s.p + "ss:" + site, ByScore: true, Start: "-inf", Stop: "(" + ms(before),
		}).Result()
		if err != nil {
			return n, err
		}
		sessions, err := s.sessions(ctx, ids)
		if err != nil {
			return n, err
		}
		for _, x := range sessions {
			if x.Open() {
				continue
			}
			ok, err := s.deleteSession(ctx, x, "purge")
			if err != nil {
				return n, err
			}
			if ok {
				n++
			}
		}
	}
	// The day sets of days before before's day: keys end in :YYYYMMDD.
	day := store.DayOf(before, s.opts.Location)
	iter := s.rdb.Scan(ctx, 0, globEscape(s.p+"u:")+"*", 1000).Iterator()
	var old []string
	for iter.Next(ctx) {
		k := iter.Val()
		if i := strings.LastIndexByte(k, ':'); i >= 0 && len(k)-i == 9 && k[i+1:] < day {
			old = append(old, k)
		}
	}
	if err := iter.Err(); err != nil {
		return n, err
	}
	for len(old) > 0 {
		batch := old[:min(len(old), 500)]
		old = old[len(batch):]
		if err := s.rdb.Del(ctx, batch...).Err(); err != nil {
			return n, err
		}
	}
	return n, nil
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// AppendAudit implements store.Audit.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	if e.Actor == "" || e.Action == "" || e.At.IsZero() {
		return fmt.Errorf("%w: audit entry needs a time, an actor and an action (got %v, %q, %q)", store.ErrInvalid, e.At, e.Actor, e.Action)
	}
	e.At = store.Millis(e.At)
	data, err := json.Marshal(e)
	if err == nil {
		// A random prefix keeps two identical entries apart in the set.
		var r [8]byte
		rand.Read(r[:])
		err = s.rdb.ZAdd(ctx, s.p+"a", redis.Z{Score: float64(e.At.UnixMilli()), Member: hex.EncodeToString(r[:]) + string(data)}).Err()
	}
	if err != nil {
		return fmt.Errorf("appending audit entry: %w", err)
	}
	return nil
}

// ListAudit implements store.Audit.
func (s *Store) ListAudit(ctx context.Context, from, to time.Time, limit int) ([]store.AuditEntry, error) {
	z := redis.ZRangeArgs{Key: s.p + "a", ByScore: true, Rev: true, Start: "(" + ms(to), Stop: ms(from)}
	if limit > 0 {
		z.Count = int64(limit)
	}
	vals, err := s.rdb.ZRangeArgs(ctx, z).Result()
	var out []store.AuditEntry
	for i := 0; err == nil && i < len(vals); i++ {
		var e store.AuditEntry
		if len(vals[i]) < 16 {
			err = fmt.Errorf("audit entry %q is too short", vals[i])
			break
		}
		if err = json.Unmarshal([]byte(vals[i][16:]), &e); err == nil {
			out = append(out, e)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listing audit entries: %w", err)
	}
	return out, nil
}
