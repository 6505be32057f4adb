package apiclient

import (
	"math/rand/v2"
	"time"
)

// Backoff computes retry delays: exponential from Base up to Max, with "equal jitter": the delay for attempt n
// is uniform in [c/2, c] where c = min(Max, Base*2^n). The random half spreads a fleet that failed at the same
// moment (a controller restart, a power cut bringing every gateway up at once) so it does not come back in step;
// the fixed half keeps every gateway from retrying at once in a tight loop.
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// DefaultBackoff retries after 0.5-1 s, then 1-2 s, ... up to 30-60 s.
var DefaultBackoff = Backoff{Base: time.Second, Max: time.Minute}

// Ceiling returns c = min(Max, Base*2^attempt), the upper bound of Delay(attempt).
func (b Backoff) Ceiling(attempt int) time.Duration {
	if b.Base <= 0 {
		b = DefaultBackoff
	}
	if b.Max < b.Base {
		b.Max = b.Base
	}
	c := b.Base
	for i := 0; i < attempt && c < b.Max; i++ {
		c *= 2
	}
	return min(c, b.Max)
}

// Delay returns how long to wait before retry number attempt (0 for the first retry).
func (b Backoff) Delay(attempt int) time.Duration {
	c := b.Ceiling(attempt)
	half := c / 2
	return c - half + rand.N(half+1)
}

// Spread returns a uniform random duration in [0, d): the delay before a gateway's first request after it
// starts, so a fleet booting together after a power cut spreads its first contacts over d.
func Spread(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
