// Package outbox makes a gateway's session events durable before they are sent: Add writes them to a bbolt
// file, a Sender delivers them to the controller in batches, oldest first, retrying with jittered exponential
// back-off, and deletes each one only after the controller acknowledged it. Events survive a daemon restart,
// a reboot and a controller outage; the controller's idempotency by event id makes the retries harmless.
package outbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketEvents = []byte("events") // 8-byte big-endian sequence -> JSON event, so iteration is oldest first
	bucketIDs    = []byte("ids")    // event id -> sequence
)

// Outbox is the durable queue of events not yet acknowledged by the controller.
type Outbox struct {
	db   *bolt.DB
	wake chan struct{}
}

// Open opens (or creates) the outbox file. Only one process may hold it; a second Open fails after a second.
func Open(path string) (*Outbox, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening outbox %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEvents, bucketIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening outbox %s: %w", path, err)
	}
	return &Outbox{db: db, wake: make(chan struct{}, 1)}, nil
}

// Close closes the file.
func (o *Outbox) Close() error { return o.db.Close() }

// Add stores events durably (fsynced when Add returns), in order. An event without an ID gets a fresh one; an
// event whose ID is already queued is skipped. Every event is validated first: a bad one stores nothing.
func (o *Outbox) Add(events ...apiclient.SessionEvent) error {
	var errs []error
	for i := range events {
		if events[i].ID == "" {
			events[i].ID = apiclient.NewEventID()
		}
		if err := events[i].Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("queueing events: %w", err)
	}
	err := o.db.Update(func(tx *bolt.Tx) error {
		evb, idb := tx.Bucket(bucketEvents), tx.Bucket(bucketIDs)
		for _, ev := range events {
			if idb.Get([]byte(ev.ID)) != nil {
				continue
			}
			seq, err := evb.NextSequence()
			if err != nil {
				return err
			}
			data, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			key := binary.BigEndian.AppendUint64(nil, seq)
			if err := evb.Put(key, data); err != nil {
				return err
			}
			if err := idb.Put([]byte(ev.ID), key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("queueing events: %w", err)
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// Peek returns up to n of the oldest events, leaving them queued.
func (o *Outbox) Peek(n int) ([]apiclient.SessionEvent, error) {
	var out []apiclient.SessionEvent
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			var ev apiclient.SessionEvent
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("event #%d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading outbox: %w", err)
	}
	return out, nil
}

// Remove deletes the events with these ids and returns how many were queued.
func (o *Outbox) Remove(ids []string) (int, error) {
	removed := 0
	err := o.db.Update(func(tx *bolt.Tx) error {
		evb, idb := tx.Bucket(bucketEvents), tx.Bucket(bucketIDs)
		for _, id := range ids {
			key := idb.Get([]byte(id))
			if key == nil {
				continue
			}
			if err := evb.Delete(key); err != nil {
				return err
			}
			if err := idb.Delete([]byte(id)); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("removing acknowledged events: %w", err)
	}
	return removed, nil
}

// Len returns how many events are queued.
func (o *Outbox) Len() (int, error) {
	var n int
	err := o.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketIDs).Stats().KeyN
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("counting outbox: %w", err)
	}
	return n, nil
}

// Deliverer sends a batch of events and says which ones the controller holds; *apiclient.Client is one.
type Deliverer interface {
	SendEvents(ctx context.Context, events []apiclient.SessionEvent) (apiclient.EventAck, error)
}

// DefaultSpread is the default Sender.Spread.
const DefaultSpread = 10 * time.Second

// Sender delivers an Outbox's events.
type Sender struct {
	Outbox  *Outbox
	To      Deliverer
	Backoff apiclient.Backoff // zero: apiclient.DefaultBackoff
	Batch   int               // events per request; zero: 100
	// Spread: before its first attempt the sender waits a random time in [0, Spread), so a fleet that boots
	// together after a power cut does not call the controller in the same second. Zero: DefaultSpread;
	// negative: no wait.
	Spread time.Duration
	Log    *slog.Logger // nil: discard
}

// Run delivers events until ctx ends (then it returns nil) or the outbox file fails.
func (s *Sender) Run(ctx context.Context) error {
	b := s.Backoff
	if b == (apiclient.Backoff{}) {
		b = apiclient.DefaultBackoff
	}
	batch := s.Batch
	if batch <= 0 {
		batch = 100
	}
	batch = min(batch, apiclient.MaxBatch)
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	spread := s.Spread
	if spread == 0 {
		spread = DefaultSpread
	}
	if !sleep(ctx, apiclient.Spread(spread)) {
		return nil
	}
	attempt := 0
	for {
		events, err := s.Outbox.Peek(batch)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-s.Outbox.wake:
				continue
			}
		}
		ack, err := s.To.SendEvents(ctx, events)
		if err == nil {
			var n int
			n, err = s.Outbox.Remove(append(ack.Recorded, ack.Duplicates...))
			if err != nil {
				return err
			}
			if n == 0 {
				err = fmt.Errorf("controller acknowledged none of %d events", len(events))
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d := b.Delay(attempt)
			attempt++
			log.Warn("delivering session events", "err", err, "queued_batch", len(events), "retry_in", d)
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		attempt = 0
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
