package gateway

import (
	"sync"
	"time"

	"github.com/civicwifi/civicwifi/internal/groupcommit"
)

// record is one step of the store of record and the session events around
// it, decided under kmu (which fixes the order of records) and written by
// the journal in that order, grouped with whatever other records are
// waiting (one store transaction and one outbox write for a whole burst of
// logins: with fsync at hundreds of microseconds, a write per login would
// cap the site at a few hundred logins a second).
//
// Sessions in a record are copies: the journal may write them after the
// live session moved on.
type record struct {
	// before go to the controller's outbox before the store is written:
	// stops (once the store has a session as ended, nothing would send its
	// stop again after a crash, while a stop sent twice carries the same
	// id and is recognised) and interims.
	before []Event
	change Change
	// after go out once the store holds the sessions, without the writer
	// waiting for them (see eventQueue): starts (a crash before the store
	// leaves no session, and the controller must not count one). A stop of
	// the same session in the same batch reaches the controller first; it
	// keeps a session it saw stop ended.
	after []Event
}

func newJournal(g *Gateway) *groupcommit.Log[record] {
	return groupcommit.New(func(rs []record) error {
		var before, after []Event
		changes := make([]Change, 0, len(rs))
		for _, r := range rs {
			before = append(before, r.before...)
			after = append(after, r.after...)
			if len(r.change.Sessions) > 0 || len(r.change.Spent) > 0 {
				changes = append(changes, r.change)
			}
		}
		if len(before) > 0 {
			g.events.sync(g.events.push(before))
		}
		if len(changes) > 0 {
			if err := g.o.Store.Write(changes); err != nil {
				return err
			}
		}
		g.events.push(after)
		return nil
	})
}

// copies returns copies of ss.
func copies(ss []*Session) []*Session {
	out := make([]*Session, len(ss))
	for i, s := range ss {
		c := *s
		out[i] = &c
	}
	return out
}

// eventQueue hands events to Options.Events in order, on its own goroutine:
// a login does not wait for its start event to reach the controller's
// outbox (a start lost in a crash is recovered from the session's later
// interim or stop event, which carry the same start, method and user).
// Whoever needs events out before doing something (stops before the store;
// shutdown) waits for them with sync.
//
// Events nobody waits for linger up to linger before they are handed on,
// so that a burst of logins costs one outbox write (an fsync'd commit)
// every linger, not one per journal batch: at 1,000 logins a second the
// outbox's commits were 3 % of the machine (perf). A sync cuts the wait
// short.
type eventQueue struct {
	send   func([]Event)
	linger time.Duration
	hurry  chan struct{} // wakes a lingering run: a sync is waiting

	mu      sync.Mutex
	cond    sync.Cond
	q       []Event
	added   uint64 // events pushed so far
	sent    uint64 // events handed to send so far
	want    uint64 // the highest count a sync waits for
	running bool
}

// eventLinger is how long start events may wait to be handed on with
// others: long enough to gather a burst, short enough that the dashboard
// shows a new session within the second.
const eventLinger = 100 * time.Millisecond

func newEventQueue(send func([]Event), linger time.Duration) *eventQueue {
	e := &eventQueue{send: send, linger: linger, hurry: make(chan struct{}, 1)}
	e.cond.L = &e.mu
	return e
}

// push queues evs and returns the count to sync to for them.
func (e *eventQueue) push(evs []Event) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(evs) == 0 {
		return e.added
	}
	e.q = append(e.q, evs...)
	e.added += uint64(len(evs))
	if !e.running {
		e.running = true
		go e.run()
	}
	e.cond.Broadcast()
	return e.added
}

// run sends what is queued until the queue is empty, then ends (push
// starts it again): no goroutine outlives the gateway's last event.
func (e *eventQueue) run() {
	e.mu.Lock()
	for len(e.q) > 0 {
		if e.linger > 0 && e.want <= e.sent {
			// Nobody waits: a token in hurry is left from a sync
			// already served (it would cut this linger short).
			select {
			case <-e.hurry:
			default:
			}
			e.mu.Unlock()
			t := time.NewTimer(e.linger)
			select {
			case <-t.C:
			case <-e.hurry:
			}
			t.Stop()
			e.mu.Lock()
		}
		batch := e.q
		e.q = nil
		e.mu.Unlock()
		e.send(batch)
		e.mu.Lock()
		e.sent += uint64(len(batch))
		e.cond.Broadcast()
	}
	e.running = false
	e.mu.Unlock()
}

// sync waits until the events up to n (a count push returned) are sent.
func (e *eventQueue) sync(n uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.want = max(e.want, n)
	for e.sent < n {
		select {
		case e.hurry <- struct{}{}:
		default:
		}
		e.cond.Wait()
	}
}

// syncAll waits until every event pushed so far is sent.
func (e *eventQueue) syncAll() {
	e.mu.Lock()
	n := e.added
	e.mu.Unlock()
	e.sync(n)
}
