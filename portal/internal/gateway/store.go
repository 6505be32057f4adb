package gateway

import (
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
		for _, b := range [][]byte{bucketActive, bucketEnded} {
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
// IfActive, like UpdateActive.
type Change struct {
	Sessions []*Session
	IfActive bool
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
		act, end := tx.Bucket(bucketActive), tx.Bucket(bucketEnded)
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
		}
		return nil
	})
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

// PruneEnded deletes ended sessions that ended before t.
func (s *Store) PruneEnded(t time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEnded)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			sess, err := decode(v)
			if err != nil || sess.Ended.Before(t) {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
}
