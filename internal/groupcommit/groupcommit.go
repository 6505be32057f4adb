// Package groupcommit makes durable writes of concurrent callers share one
// write (group commit): each caller adds its item and waits; whoever waits
// while no write is running writes every item added so far in one call,
// in the order added, and the others wait for it. With fsync costing
// hundreds of microseconds, a hundred logins arriving together cost a few
// fsyncs instead of a hundred, and no caller waits for a timer.
//
// bbolt's own DB.Batch groups too, but it waits up to MaxBatchDelay for
// company, may run a function twice, and does not keep the callers' order,
// which the gateway's records need (a session's start before its stop).
//
// Add never blocks on the disk, so a caller can add under a lock that
// fixes the order of its items (the gateway's kernel lock) and wait after
// releasing it.
package groupcommit

import "sync"

// Log groups items into batches for its write function.
type Log[T any] struct {
	write func([]T) error

	mu      sync.Mutex
	cond    sync.Cond
	cur     *batch[T] // collecting; nil when empty
	writing bool
}

type batch[T any] struct {
	items []T
	done  bool
	err   error
}

// New makes a Log writing with write. write gets the items of one batch
// in the order they were added; its error is every waiter's error in that
// batch. Batches are written one at a time, in order.
func New[T any](write func([]T) error) *Log[T] {
	l := &Log[T]{write: write}
	l.cond.L = &l.mu
	return l
}

// Ticket waits for the batch holding one added item.
type Ticket[T any] struct {
	l *Log[T]
	b *batch[T]
}

// Add queues item for the next write. Every Add must be followed by a
// Wait on its ticket (by this caller or a later one): items are written
// only by waiters.
func (l *Log[T]) Add(item T) Ticket[T] {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		l.cur = &batch[T]{}
	}
	l.cur.items = append(l.cur.items, item)
	return Ticket[T]{l: l, b: l.cur}
}

// Wait returns once the item is written, with the write's error.
func (t Ticket[T]) Wait() error {
	l := t.l
	l.mu.Lock()
	defer l.mu.Unlock()
	for !t.b.done {
		if l.writing || l.cur == nil {
			l.cond.Wait()
			continue
		}
		// Lead: write everything queued so far.
		b := l.cur
		l.cur, l.writing = nil, true
		l.mu.Unlock()
		err := l.write(b.items)
		l.mu.Lock()
		b.done, b.err, l.writing = true, err, false
		l.cond.Broadcast()
	}
	return t.b.err
}

// Do adds item and waits for it.
func (l *Log[T]) Do(item T) error { return l.Add(item).Wait() }
