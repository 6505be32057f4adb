// Package boltstore is the embedded store.Store: one bbolt file, so a
// controller runs with no Redis at all (a small town, a first try). Every
// method is one bbolt transaction, so each operation is atomic and
// durable when it returns (bbolt fsyncs each commit); bbolt's single
// writer makes read-modify-writes safe for concurrent use. The file is
// locked: one controller process per file (use redisstore for replicas).
//
// Ephemeral keys expire on read, and a sweep (see Options.SweepEvery)
// deletes expired keys and old event ids so the file does not grow.
package boltstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
	bolt "go.etcd.io/bbolt"
)

// Options tune a Store; the zero value is fine.
type Options struct {
	// SweepEvery is how often expired ephemeral keys and event ids are
	// deleted (default 1 minute).
	SweepEvery time.Duration
	// EventTTL is how long event ids are remembered to recognise replays
	// (default 30 days: longer than a gateway buffers events).
	EventTTL time.Duration
	// Log receives sweep errors; nil discards them.
	Log *slog.Logger
	// LockTimeout is how long Open waits for another process's lock on
	// the file (default 5 s).
	LockTimeout time.Duration
	// Location is where days begin for daily rollups and distinct users
	// (default UTC; a town sets Europe/Rome).
	Location *time.Location
	// Now is the clock (default time.Now); tests may replace it.
	Now func() time.Time
}

// Store is a store.Store on a bbolt file.
type Store struct {
	db   *bolt.DB
	opts Options
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var _ store.Store = (*Store)(nil)

// Bucket names. Nested buckets are used per site and per gateway.
var (
	bGateways     = []byte("gateways")      // id -> json GatewayStatus
	bAPs          = []byte("aps")           // mac -> json APStatus
	bEvents       = []byte("events")        // gateway + 0 + event id -> expiry (8 bytes, unix ms)
	bSessions     = []byte("sessions")      // session id -> json Session
	bSiteSessions = []byte("site_sessions") // site/ start ms (8) + session id -> nil
	bSiteOpen     = []byte("site_open")     // site/ session id -> nil
	bSiteTotals   = []byte("site_totals")   // site -> json Totals
	bHourly       = []byte("hourly")        // site/ hour unix (8) -> json counters
	bDaily        = []byte("daily")         // site/ day start unix (8) -> json counters
	bUsers        = []byte("users")         // site/ YYYYMMDD + 0 + user -> nil
	bUserSessions = []byte("user_sessions") // user/ session id -> nil
	bCommands     = []byte("commands")      // gateway/ seq (8) -> json Command
	bCommandIDs   = []byte("command_ids")   // gateway/ command id -> seq (8)
	bEphemeral    = []byte("ephemeral")     // key -> expiry (8, unix ms) + value
	bAudit        = []byte("audit")         // at ns (8) + random (8) -> json AuditEntry
	topBuckets    = [][]byte{bGateways, bAPs, bEvents, bSessions, bSiteSessions, bSiteOpen, bSiteTotals,
		bHourly, bDaily, bUsers, bUserSessions, bCommands, bCommandIDs, bEphemeral, bAudit}
)

// Open opens (creating if needed) the store file at path and starts its
// sweep. It waits at most Options.LockTimeout for another process's lock
// on the file.
func Open(path string, opts Options) (*Store, error) {
	if opts.SweepEvery <= 0 {
		opts.SweepEvery = time.Minute
	}
	if opts.EventTTL <= 0 {
		opts.EventTTL = 30 * 24 * time.Hour
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range topBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("creating buckets in %s: %w", path, err)
	}
	s := &Store{db: db, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	go s.sweepLoop()
	return s, nil
}

// Close stops the sweep and closes the file.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.db.Close()
}

// Path is the store's file.
func (s *Store) Path() string { return s.db.Path() }

func (s *Store) update(ctx context.Context, f func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(f)
}

// batch is update through bbolt's Batch: concurrent calls share one
// commit (one fsync), at the cost of up to MaxBatchDelay (10 ms) of
// latency. f may run more than once, so it must only touch tx. Used for
// heartbeats and check-ins: many gateways at once, nobody waiting on the
// answer.
func (s *Store) batch(ctx context.Context, f func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Batch(f)
}

func (s *Store) view(ctx context.Context, f func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(f)
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// sub returns the nested bucket name under top, creating it if create.
func sub(tx *bolt.Tx, top []byte, name string, create bool) (*bolt.Bucket, error) {
	t := tx.Bucket(top)
	if !create {
		return t.Bucket([]byte(name)), nil
	}
	return t.CreateBucketIfNotExists([]byte(name))
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// Heartbeat implements store.Gateways.
func (s *Store) Heartbeat(ctx context.Context, id string, at time.Time, h store.GatewayHealth) error {
	if err := store.CheckHeartbeat(id, at, h); err != nil {
		return err
	}
	st := store.GatewayStatus{ID: id, LastHeartbeat: store.Millis(at), Health: h}
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bGateways)
		if old := b.Get([]byte(id)); old != nil {
			var prev store.GatewayStatus
			if err := json.Unmarshal(old, &prev); err == nil && prev.LastHeartbeat.After(st.LastHeartbeat) {
				return nil
			}
		}
		return putJSON(b, []byte(id), st)
	})
	if err != nil {
		return fmt.Errorf("recording heartbeat of %s: %w", id, err)
	}
	return nil
}

// Gateway implements store.Gateways.
func (s *Store) Gateway(ctx context.Context, id string) (store.GatewayStatus, error) {
	var st store.GatewayStatus
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bGateways).Get([]byte(id))
		if v == nil {
			return store.ErrNotFound
		}
		return json.Unmarshal(v, &st)
	})
	if err != nil {
		return st, fmt.Errorf("reading gateway %s: %w", id, err)
	}
	return st, nil
}

// ListGateways implements store.Gateways.
func (s *Store) ListGateways(ctx context.Context) ([]store.GatewayStatus, error) {
	out, err := list[store.GatewayStatus](ctx, s, bGateways)
	if err != nil {
		return nil, fmt.Errorf("listing gateways: %w", err)
	}
	return out, nil
}

func list[T any](ctx context.Context, s *Store, bucket []byte) ([]T, error) {
	var out []T
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var x T
			if err := json.Unmarshal(v, &x); err != nil {
				return fmt.Errorf("decoding %s: %w", k, err)
			}
			out = append(out, x)
			return nil
		})
	})
	return out, err
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
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bAPs)
		if old := b.Get([]byte(m)); old != nil {
			var prev store.APStatus
			if err := json.Unmarshal(old, &prev); err == nil && prev.LastCheckIn.After(ap.LastCheckIn) {
				return nil
			}
		}
		return putJSON(b, []byte(m), ap)
	})
	if err != nil {
		return fmt.Errorf("recording check-in of %s: %w", m, err)
	}
	return nil
}

// AccessPoint implements store.AccessPoints.
func (s *Store) AccessPoint(ctx context.Context, mac string) (store.APStatus, error) {
	var ap store.APStatus
	m, err := store.NormalizeMAC("access point mac", mac)
	if err != nil {
		return ap, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bAPs).Get([]byte(m))
		if v == nil {
			return store.ErrNotFound
		}
		return json.Unmarshal(v, &ap)
	})
	if err != nil {
		return ap, fmt.Errorf("reading access point %s: %w", m, err)
	}
	return ap, nil
}

// ListAccessPoints implements store.AccessPoints.
func (s *Store) ListAccessPoints(ctx context.Context) ([]store.APStatus, error) {
	out, err := list[store.APStatus](ctx, s, bAPs)
	if err != nil {
		return nil, fmt.Errorf("listing access points: %w", err)
	}
	return out, nil
}

// RecordEvent implements store.Sessions.
func (s *Store) RecordEvent(ctx context.Context, ev store.SessionEvent) (bool, error) {
	ev, err := store.CheckEvent(ev)
	if err != nil {
		return false, err
	}
	var dup bool
	err = s.update(ctx, func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bSessions)
		var prev *store.Session
		if v := sessions.Get([]byte(ev.SessionID)); v != nil {
			prev = new(store.Session)
			if err := json.Unmarshal(v, prev); err != nil {
				return fmt.Errorf("decoding session %s: %w", ev.SessionID, err)
			}
		}
		if prev != nil && prev.SiteID != ev.SiteID {
			return fmt.Errorf("%w: session belongs to site %s", store.ErrInvalid, prev.SiteID)
		}
		dup = false
		events := tx.Bucket(bEvents)
		evKey := []byte(ev.GatewayID + "\x00" + ev.ID)
		if v := events.Get(evKey); v != nil && int64(binary.BigEndian.Uint64(v)) > s.opts.Now().UnixMilli() {
			dup = true
			return nil
		}
		if err := events.Put(evKey, u64(uint64(s.opts.Now().Add(s.opts.EventTTL).UnixMilli()))); err != nil {
			return err
		}
		n, d := store.Apply(prev, ev)
		if err := putJSON(sessions, []byte(n.ID), n); err != nil {
			return err
		}
		open, err := sub(tx, bSiteOpen, n.SiteID, true)
		if err != nil {
			return err
		}
		if n.Open() {
			err = open.Put([]byte(n.ID), nil)
		} else {
			err = open.Delete([]byte(n.ID))
		}
		if err != nil {
			return err
		}
		if d.NewSession {
			idx, err := sub(tx, bSiteSessions, n.SiteID, true)
			if err != nil {
				return err
			}
			if err := idx.Put(append(u64(uint64(n.Start.UnixMilli())), n.ID...), nil); err != nil {
				return err
			}
			if n.UserID != "" {
				users, err := sub(tx, bUsers, n.SiteID, true)
				if err != nil {
					return err
				}
				key := []byte(store.DayOf(n.Start, s.opts.Location) + "\x00" + n.UserID)
				if users.Get(key) == nil {
					if err := users.Put(key, nil); err != nil {
						return err
					}
					if err := incrCounters(tx, bDaily, n.SiteID, store.DayStart(n.Start, s.opts.Location), map[string]int64{store.CounterUsers: 1}); err != nil {
						return err
					}
				}
				us, err := sub(tx, bUserSessions, n.UserID, true)
				if err != nil {
					return err
				}
				if err := us.Put([]byte(n.ID), nil); err != nil {
					return err
				}
			}
		}
		return s.applyTotals(tx, n, ev.At, d)
	})
	if err != nil {
		return false, fmt.Errorf("recording session event %s: %w", ev.ID, err)
	}
	return dup, nil
}

func (s *Store) applyTotals(tx *bolt.Tx, n store.Session, at time.Time, d store.Delta) error {
	if !d.NewSession && d.BytesDown == 0 && d.BytesUp == 0 && d.OnlineMS == 0 {
		return nil
	}
	tb := tx.Bucket(bSiteTotals)
	var tot store.Totals
	if v := tb.Get([]byte(n.SiteID)); v != nil {
		if err := json.Unmarshal(v, &tot); err != nil {
			return fmt.Errorf("decoding totals of %s: %w", n.SiteID, err)
		}
	}
	if d.NewSession {
		tot.Sessions++
	}
	tot.BytesDown += d.BytesDown
	tot.BytesUp += d.BytesUp
	if err := putJSON(tb, []byte(n.SiteID), tot); err != nil {
		return err
	}
	if d.NewSession {
		c := map[string]int64{store.CounterSessions: 1}
		if n.Method != "" {
			c[store.MethodCounter(n.Method)] = 1
		}
		if err := s.incrHourly(tx, n.SiteID, n.Start, c); err != nil {
			return err
		}
	}
	c := map[string]int64{}
	for k, v := range map[string]int64{store.CounterBytesDown: int64(d.BytesDown), store.CounterBytesUp: int64(d.BytesUp), store.CounterOnlineMS: d.OnlineMS} {
		if v != 0 {
			c[k] = v
		}
	}
	if len(c) == 0 {
		return nil
	}
	return s.incrHourly(tx, n.SiteID, at, c)
}

func (s *Store) incrHourly(tx *bolt.Tx, site string, at time.Time, add map[string]int64) error {
	if err := incrCounters(tx, bHourly, site, store.HourOf(at), add); err != nil {
		return err
	}
	return incrCounters(tx, bDaily, site, store.DayStart(at, s.opts.Location), add)
}

func incrCounters(tx *bolt.Tx, bucket []byte, site string, start time.Time, add map[string]int64) error {
	b, err := sub(tx, bucket, site, true)
	if err != nil {
		return err
	}
	key := u64(uint64(start.Unix()))
	c := map[string]int64{}
	if v := b.Get(key); v != nil {
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("decoding counters of %s at %v: %w", site, start, err)
		}
	}
	for k, v := range add {
		c[k] += v
	}
	return putJSON(b, key, c)
}

// Session implements store.Sessions.
func (s *Store) Session(ctx context.Context, id string) (store.Session, error) {
	var x store.Session
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bSessions).Get([]byte(id))
		if v == nil {
			return store.ErrNotFound
		}
		return json.Unmarshal(v, &x)
	})
	if err != nil {
		return x, fmt.Errorf("reading session %s: %w", id, err)
	}
	return x, nil
}

func getSessions(tx *bolt.Tx, ids [][]byte) ([]store.Session, error) {
	b := tx.Bucket(bSessions)
	out := make([]store.Session, 0, len(ids))
	for _, id := range ids {
		v := b.Get(id)
		if v == nil {
			return nil, fmt.Errorf("session %s is indexed but missing", id)
		}
		var x store.Session
		if err := json.Unmarshal(v, &x); err != nil {
			return nil, fmt.Errorf("decoding session %s: %w", id, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// SessionsStarted implements store.Sessions.
func (s *Store) SessionsStarted(ctx context.Context, siteID string, from, to time.Time) ([]store.Session, error) {
	var out []store.Session
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, _ := sub(tx, bSiteSessions, siteID, false)
		if b == nil {
			return nil
		}
		lo, hi := u64(uint64(from.UnixMilli())), u64(uint64(to.UnixMilli()))
		var ids [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(lo); k != nil && bytes.Compare(k[:8], hi) < 0; k, _ = c.Next() {
			ids = append(ids, k[8:])
		}
		var err error
		out, err = getSessions(tx, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing sessions of %s: %w", siteID, err)
	}
	return out, nil
}

// OpenSessions implements store.Sessions.
func (s *Store) OpenSessions(ctx context.Context, siteID string) ([]store.Session, error) {
	var out []store.Session
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, _ := sub(tx, bSiteOpen, siteID, false)
		if b == nil {
			return nil
		}
		var ids [][]byte
		b.ForEach(func(k, _ []byte) error { ids = append(ids, k); return nil })
		var err error
		out, err = getSessions(tx, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing open sessions of %s: %w", siteID, err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out, nil
}

// SiteTotals implements store.Sessions.
func (s *Store) SiteTotals(ctx context.Context, siteID string) (store.Totals, error) {
	var tot store.Totals
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bSiteTotals).Get([]byte(siteID)); v != nil {
			return json.Unmarshal(v, &tot)
		}
		return nil
	})
	if err != nil {
		return tot, fmt.Errorf("reading totals of %s: %w", siteID, err)
	}
	return tot, nil
}

// Enqueue implements store.Commands.
func (s *Store) Enqueue(ctx context.Context, c store.Command) (store.Command, error) {
	c, err := store.CheckCommand(c, s.opts.Now())
	if err != nil {
		return c, err
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		ids, err := sub(tx, bCommandIDs, c.GatewayID, true)
		if err != nil {
			return err
		}
		if ids.Get([]byte(c.ID)) != nil {
			return nil
		}
		q, err := sub(tx, bCommands, c.GatewayID, true)
		if err != nil {
			return err
		}
		seq, err := q.NextSequence()
		if err != nil {
			return err
		}
		if err := ids.Put([]byte(c.ID), u64(seq)); err != nil {
			return err
		}
		return putJSON(q, u64(seq), c)
	})
	if err != nil {
		return c, fmt.Errorf("enqueueing command %s for %s: %w", c.ID, c.GatewayID, err)
	}
	return c, nil
}

// Pending implements store.Commands.
func (s *Store) Pending(ctx context.Context, gatewayID string) ([]store.Command, error) {
	var out []store.Command
	err := s.view(ctx, func(tx *bolt.Tx) error {
		q, _ := sub(tx, bCommands, gatewayID, false)
		if q == nil {
			return nil
		}
		return q.ForEach(func(k, v []byte) error {
			var c store.Command
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("decoding command: %w", err)
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listing commands for %s: %w", gatewayID, err)
	}
	return out, nil
}

// Ack implements store.Commands.
func (s *Store) Ack(ctx context.Context, gatewayID, commandID string) (bool, error) {
	acked := false
	err := s.update(ctx, func(tx *bolt.Tx) error {
		ids, _ := sub(tx, bCommandIDs, gatewayID, false)
		q, _ := sub(tx, bCommands, gatewayID, false)
		if ids == nil || q == nil {
			return nil
		}
		seq := ids.Get([]byte(commandID))
		if seq == nil {
			return nil
		}
		seq = bytes.Clone(seq)
		if err := ids.Delete([]byte(commandID)); err != nil {
			return err
		}
		acked = true
		return q.Delete(seq)
	})
	if err != nil {
		return false, fmt.Errorf("acknowledging command %s of %s: %w", commandID, gatewayID, err)
	}
	return acked, nil
}

// ephemeral values are stored as expiry (8 bytes, unix ms) + value.

func (s *Store) live(v []byte) ([]byte, bool) {
	if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) <= s.opts.Now().UnixMilli() {
		return nil, false
	}
	return v[8:], true
}

func (s *Store) eph(val []byte, ttl time.Duration) []byte {
	return append(u64(uint64(s.opts.Now().Add(ttl).UnixMilli())), val...)
}

// PutIfAbsent implements store.Ephemeral.
func (s *Store) PutIfAbsent(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	if err := store.CheckTTL(key, ttl); err != nil {
		return false, err
	}
	var put bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bEphemeral)
		if _, ok := s.live(b.Get([]byte(key))); ok {
			put = false
			return nil
		}
		put = true
		return b.Put([]byte(key), s.eph(val, ttl))
	})
	if err != nil {
		return false, fmt.Errorf("putting %q: %w", key, err)
	}
	return put, nil
}

// Put implements store.Ephemeral.
func (s *Store) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := store.CheckTTL(key, ttl); err != nil {
		return err
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bEphemeral).Put([]byte(key), s.eph(val, ttl))
	})
	if err != nil {
		return fmt.Errorf("putting %q: %w", key, err)
	}
	return nil
}

// Get implements store.Ephemeral.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	var out []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v, ok := s.live(tx.Bucket(bEphemeral).Get([]byte(key)))
		if !ok {
			return store.ErrNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("getting %q: %w", key, err)
	}
	return out, nil
}

// Take implements store.Ephemeral.
func (s *Store) Take(ctx context.Context, key string) ([]byte, error) {
	var out []byte
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bEphemeral)
		raw := b.Get([]byte(key))
		if raw == nil {
			return store.ErrNotFound
		}
		v, ok := s.live(raw)
		out = bytes.Clone(v)
		if err := b.Delete([]byte(key)); err != nil {
			return err
		}
		if !ok {
			out = nil
		}
		return nil
	})
	if err == nil && out == nil {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("taking %q: %w", key, err)
	}
	return out, nil
}

// Delete implements store.Ephemeral.
func (s *Store) Delete(ctx context.Context, key string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bEphemeral).Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("deleting %q: %w", key, err)
	}
	return nil
}

// Incr implements store.Ephemeral.
func (s *Store) Incr(ctx context.Context, key string, by int64, window time.Duration) (int64, error) {
	if err := store.CheckTTL(key, window); err != nil {
		return 0, err
	}
	var n int64
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bEphemeral)
		raw := b.Get([]byte(key))
		v, ok := s.live(raw)
		if !ok || len(v) != 8 {
			n = by
			return b.Put([]byte(key), s.eph(u64(uint64(n)), window))
		}
		n = int64(binary.BigEndian.Uint64(v)) + by
		return b.Put([]byte(key), append(bytes.Clone(raw[:8]), u64(uint64(n))...))
	})
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
	err := s.update(ctx, func(tx *bolt.Tx) error { return s.incrHourly(tx, siteID, at, counters) })
	if err != nil {
		return fmt.Errorf("incrementing counters of %s: %w", siteID, err)
	}
	return nil
}

// Hourly implements store.Stats.
func (s *Store) Hourly(ctx context.Context, siteID string, from, to time.Time) ([]store.Rollup, error) {
	lo := store.HourOf(from)
	if lo.Before(from) {
		lo = lo.Add(time.Hour)
	}
	out, err := s.rollups(ctx, bHourly, siteID, lo, to)
	if err != nil {
		return nil, fmt.Errorf("reading hourly counters of %s: %w", siteID, err)
	}
	return out, nil
}

// Daily implements store.Stats.
func (s *Store) Daily(ctx context.Context, siteID string, from, to time.Time) ([]store.Rollup, error) {
	lo := store.DayStart(from, s.opts.Location)
	if lo.Before(from) {
		lo = lo.AddDate(0, 0, 1)
	}
	out, err := s.rollups(ctx, bDaily, siteID, lo, to)
	if err != nil {
		return nil, fmt.Errorf("reading daily counters of %s: %w", siteID, err)
	}
	return out, nil
}

// rollups reads the counters with keys in [from, to).
func (s *Store) rollups(ctx context.Context, bucket []byte, siteID string, from, to time.Time) ([]store.Rollup, error) {
	var out []store.Rollup
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, _ := sub(tx, bucket, siteID, false)
		if b == nil || !from.Before(to) {
			return nil
		}
		hi := u64(uint64(to.Unix()))
		if !to.Equal(time.Unix(to.Unix(), 0)) { // sub-second: [.., to) includes to's second
			hi = u64(uint64(to.Unix() + 1))
		}
		c := b.Cursor()
		for k, v := c.Seek(u64(uint64(from.Unix()))); k != nil && bytes.Compare(k, hi) < 0; k, v = c.Next() {
			r := store.Rollup{Start: time.Unix(int64(binary.BigEndian.Uint64(k)), 0).UTC()}
			if err := json.Unmarshal(v, &r.Counters); err != nil {
				return fmt.Errorf("decoding counters at %v: %w", r.Start, err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// DistinctUsers implements store.Stats.
func (s *Store) DistinctUsers(ctx context.Context, from, to time.Time, siteIDs ...string) (int, error) {
	seen := map[string]struct{}{}
	lo, hi := store.DayOf(from, s.opts.Location), store.DayOf(to, s.opts.Location)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		for _, site := range siteIDs {
			b, _ := sub(tx, bUsers, site, false)
			if b == nil {
				continue
			}
			c := b.Cursor()
			for k, _ := c.Seek([]byte(lo)); k != nil && string(k[:8]) <= hi; k, _ = c.Next() {
				seen[string(k[9:])] = struct{}{}
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("counting users: %w", err)
	}
	return len(seen), nil
}

// UserSessions implements store.Privacy.
func (s *Store) UserSessions(ctx context.Context, userID string) ([]store.Session, error) {
	var out []store.Session
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		out, err = userSessions(tx, userID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing sessions of user %s: %w", userID, err)
	}
	return out, nil
}

func userSessions(tx *bolt.Tx, userID string) ([]store.Session, error) {
	us, _ := sub(tx, bUserSessions, userID, false)
	if us == nil {
		return nil, nil
	}
	var ids [][]byte
	us.ForEach(func(k, _ []byte) error { ids = append(ids, bytes.Clone(k)); return nil })
	out, err := getSessions(tx, ids)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out, err
}

// ForgetUser implements store.Privacy.
func (s *Store) ForgetUser(ctx context.Context, userID string) (int, error) {
	if err := store.CheckID("user id", userID); err != nil {
		return 0, err
	}
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		sessions, err := userSessions(tx, userID)
		if err != nil {
			return err
		}
		for _, x := range sessions {
			if err := deleteSession(tx, x); err != nil {
				return err
			}
			if users, _ := sub(tx, bUsers, x.SiteID, false); users != nil {
				if err := users.Delete([]byte(store.DayOf(x.Start, s.opts.Location) + "\x00" + userID)); err != nil {
					return err
				}
			}
		}
		n = len(sessions)
		if tx.Bucket(bUserSessions).Bucket([]byte(userID)) != nil {
			return tx.Bucket(bUserSessions).DeleteBucket([]byte(userID))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("forgetting user %s: %w", userID, err)
	}
	return n, nil
}

// deleteSession removes x and its index entries (not the day sets).
func deleteSession(tx *bolt.Tx, x store.Session) error {
	id := []byte(x.ID)
	if err := tx.Bucket(bSessions).Delete(id); err != nil {
		return err
	}
	if b, _ := sub(tx, bSiteSessions, x.SiteID, false); b != nil {
		if err := b.Delete(append(u64(uint64(x.Start.UnixMilli())), id...)); err != nil {
			return err
		}
	}
	if b, _ := sub(tx, bSiteOpen, x.SiteID, false); b != nil {
		if err := b.Delete(id); err != nil {
			return err
		}
	}
	if x.UserID != "" {
		if b, _ := sub(tx, bUserSessions, x.UserID, false); b != nil {
			if err := b.Delete(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// PurgeSessions implements store.Privacy.
func (s *Store) PurgeSessions(ctx context.Context, before time.Time) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		var sites [][]byte
		tx.Bucket(bSiteSessions).ForEach(func(k, _ []byte) error { sites = append(sites, bytes.Clone(k)); return nil })
		hi := u64(uint64(before.UnixMilli()))
		for _, site := range sites {
			var ids [][]byte
			c := tx.Bucket(bSiteSessions).Bucket(site).Cursor()
			for k, _ := c.First(); k != nil && bytes.Compare(k[:8], hi) < 0; k, _ = c.Next() {
				ids = append(ids, bytes.Clone(k[8:]))
			}
			sessions, err := getSessions(tx, ids)
			if err != nil {
				return err
			}
			for _, x := range sessions {
				if x.Open() {
					continue
				}
				if err := deleteSession(tx, x); err != nil {
					return err
				}
				n++
			}
		}
		// The day sets of days before before's day.
		day := []byte(store.DayOf(before, s.opts.Location))
		var userSites [][]byte
		tx.Bucket(bUsers).ForEach(func(k, _ []byte) error { userSites = append(userSites, bytes.Clone(k)); return nil })
		for _, site := range userSites {
			b := tx.Bucket(bUsers).Bucket(site)
			var old [][]byte
			c := b.Cursor()
			for k, _ := c.First(); k != nil && bytes.Compare(k[:8], day) < 0; k, _ = c.Next() {
				old = append(old, bytes.Clone(k))
			}
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purging sessions before %v: %w", before, err)
	}
	return n, nil
}

// AppendAudit implements store.Audit.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	if e.Actor == "" || e.Action == "" || e.At.IsZero() {
		return fmt.Errorf("%w: audit entry needs a time, an actor and an action (got %v, %q, %q)", store.ErrInvalid, e.At, e.Actor, e.Action)
	}
	e.At = store.Millis(e.At)
	var r [8]byte
	rand.Read(r[:])
	key := append(u64(uint64(e.At.UnixNano())), r[:]...)
	err := s.update(ctx, func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bAudit), key, e) })
	if err != nil {
		return fmt.Errorf("appending audit entry: %w", err)
	}
	return nil
}

// ListAudit implements store.Audit.
func (s *Store) ListAudit(ctx context.Context, from, to time.Time, limit int) ([]store.AuditEntry, error) {
	var out []store.AuditEntry
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bAudit).Cursor()
		lo, hi := u64(uint64(from.UnixNano())), u64(uint64(to.UnixNano()))
		k, v := c.Seek(hi)
		if k == nil {
			k, v = c.Last()
		}
		for ; k != nil && bytes.Compare(k[:8], lo) >= 0; k, v = c.Prev() {
			if bytes.Compare(k[:8], hi) >= 0 {
				continue
			}
			var e store.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decoding audit entry: %w", err)
			}
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing audit entries: %w", err)
	}
	return out, nil
}

func (s *Store) sweepLoop() {
	defer close(s.done)
	tk := time.NewTicker(s.opts.SweepEvery)
	defer tk.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tk.C:
			if _, err := s.Sweep(); err != nil {
				s.opts.Log.Error("sweeping expired keys", "err", err)
			}
		}
	}
}

// Sweep deletes expired ephemeral keys and event ids older than
// Options.EventTTL, and returns how many it deleted. It runs every
// Options.SweepEvery; reads never see expired keys anyway.
func (s *Store) Sweep() (int, error) {
	now := s.opts.Now().UnixMilli()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bEphemeral, bEvents} {
			b := tx.Bucket(name)
			var expired [][]byte
			b.ForEach(func(k, v []byte) error {
				if len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) <= now {
					expired = append(expired, bytes.Clone(k))
				}
				return nil
			})
			for _, k := range expired {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n += len(expired)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweeping: %w", err)
	}
	return n, nil
}
