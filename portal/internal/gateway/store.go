package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Session is one resident's authorised session: the store of record.
type Session struct {
	ID          string           `json:"id"`
	MAC         net.HardwareAddr `json:"-"`
	IP          netip.Addr       `json:"ip"`
	Method      string           `json:"method"`
	User        string           `json:"user,omitempty"` // pseudonym from the controller's login; never a phone number
	Started     time.Time        `json:"started"`
	Expires     time.Time        `json:"expires,omitzero"`
	IdleTimeout time.Duration    `json:"idle_timeout"`
	QuotaBytes  uint64           `json:"quota_bytes"`
	DownRate    uint64           `json:"down_rate"`
	UpRate      uint64           `json:"up_rate"`

	BytesDown  uint64    `json:"bytes_down"`
	BytesUp    uint64    `json:"bytes_up"`
	Packets    uint64    `json:"packets"`
	LastActive time.Time `json:"last_active"`

	Ended     time.Time `json:"ended,omitzero"`
	EndReason string    `json:"end_reason,omitempty"`

	gen     uint64 // in memory only: when this session was last (re)opened
	unsaved bool   // in memory only: counters moved since the last flush
	// in memory only: when the last start/interim event went out, and the
	// totals it carried
	reported      time.Time
	reportedBytes uint64
}

// sessionJSON carries the MAC as text.
type sessionJSON struct {
	Session
	MACText string `json:"mac"`
}

// Active reports whether the session has not ended.
func (s *Session) Active() bool { return s.Ended.IsZero() }

// Store keeps sessions in a bbolt file: active ones are the truth the kernel
// is reconciled to; ended ones are kept for accounting until pruned.
type Store struct {
	db *bolt.DB
	// Corrupt, if set, is told about records that cannot be decoded.
	Corrupt func(id string, err error)
}

var (
	bucketActive = []byte("active")
	bucketEnded  = []byte("ended")
	bucketSpent  = []byte("spent") // single-use grant ids -> expiry (unix ns)
)

// OpenStore opens (creating) the store in dir.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	path := filepath.Join(dir, "sessions.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("opening %s: another portal daemon holds it", path)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketActive, bucketEnded, bucketSpent} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Put writes sessions: active ones to the active bucket, ended ones moved to
// the ended bucket. One transaction for all.
func (s *Store) Put(sessions ...*Session) error {
	return s.Write([]Change{{Sessions: sessions}})
}

// UpdateActive writes sessions that are still active in the store and skips
// the others (ended since the caller took its copy), in one transaction.
func (s *Store) UpdateActive(sessions ...*Session) error {
	return s.Write([]Change{{Sessions: sessions, IfActive: true}})
}

// Change is one step of the store: Sessions written like Put, or, with
// IfActive, like UpdateActive; Spent grant ids recorded.
type Change struct {
	Sessions []*Session
	IfActive bool
	Spent    []Spent
}

// Spent is a single-use grant's id, kept until its grant expires so that
// it can never open a session again, also after a restart.
type Spent struct {
	ID      string
	Expires time.Time
}

// Write applies changes in order in one transaction (one fsync for all).
func (s *Store) Write(changes []Change) error {
	// Encode outside the write transaction, which blocks every other writer.
	encoded := make([][][]byte, len(changes))
	for i, c := range changes {
		encoded[i] = make([][]byte, len(c.Sessions))
		for j, sess := range c.Sessions {
			b, err := encode(sess)
			if err != nil {
				return fmt.Errorf("encoding session %s: %w", sess.ID, err)
			}
			encoded[i][j] = b
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		act, end, spent := tx.Bucket(bucketActive), tx.Bucket(bucketEnded), tx.Bucket(bucketSpent)
		for i, c := range changes {
			for j, sess := range c.Sessions {
				key, b := []byte(sess.ID), encoded[i][j]
				var err error
				switch {
				case c.IfActive:
					if !sess.Active() || act.Get(key) == nil {
						continue
					}
					err = act.Put(key, b)
				case sess.Active():
					err = act.Put(key, b)
				default:
					if err = act.Delete(key); err == nil {
						err = end.Put(key, b)
					}
				}
				if err != nil {
					return fmt.Errorf("writing session %s: %w", sess.ID, err)
				}
			}
			for _, sp := range c.Spent {
				var v [8]byte
				binary.BigEndian.PutUint64(v[:], uint64(sp.Expires.UnixNano()))
				if err := spent.Put([]byte(sp.ID), v[:]); err != nil {
					return fmt.Errorf("writing spent grant %s: %w", sp.ID, err)
				}
			}
		}
		return nil
	})
}

// IsSpent reports whether a grant id is recorded as spent.
func (s *Store) IsSpent(id string) (bool, error) {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketSpent).Get([]byte(id)) != nil
		return nil
	})
	return found, err
}

// SpentCount is the number of grant ids kept.
func (s *Store) SpentCount() (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketSpent).Stats().KeyN
		return nil
	})
	return n, err
}

// PruneSpent deletes the ids of grants expired at t.
func (s *Store) PruneSpent(t time.Time) (int, error) {
	return s.prune(bucketSpent, func(v []byte) bool {
		return len(v) != 8 || int64(binary.BigEndian.Uint64(v)) <= t.UnixNano()
	})
}

// prune deletes, in one transaction, the records of bucket whose value
// drop says to.
func (s *Store) prune(bucket []byte, drop func(v []byte) bool) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		n, err = deleteWhere(tx.Bucket(bucket), drop)
		return err
	})
	return n, err
}

// deleteWhere deletes the keys of b for which drop is true. The keys are
// gathered first: after a Cursor.Delete on a leaf already changed in the
// same transaction, bbolt's cursor stands on the next key, and Next skips
// it (etcd-io/bbolt#146).
func deleteWhere(b *bolt.Bucket, drop func(v []byte) bool) (int, error) {
	var keys [][]byte
	if err := b.ForEach(func(k, v []byte) error {
		if drop(v) {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	}); err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// Active returns every active session.
func (s *Store) Active() ([]*Session, error) { return s.list(bucketActive) }

// Ended returns ended sessions (kept until pruned).
func (s *Store) Ended() ([]*Session, error) { return s.list(bucketEnded) }

// list decodes a bucket. A record that cannot be decoded is skipped and
// reported through Corrupt: one bad record must not keep the gateway (and
// every other resident) from starting.
func (s *Store) list(bucket []byte) ([]*Session, error) {
	var out []*Session
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			sess, err := decode(v)
			if err != nil {
				if s.Corrupt != nil {
					s.Corrupt(string(k), err)
				}
				return nil
			}
			out = append(out, sess)
			return nil
		})
	})
	return out, err
}

// PruneEnded deletes ended sessions that ended before t (and records that
// cannot be decoded).
func (s *Store) PruneEnded(t time.Time) (int, error) {
	return s.prune(bucketEnded, func(v []byte) bool {
		sess, err := decode(v)
		return err != nil || sess.Ended.Before(t)
	})
}
