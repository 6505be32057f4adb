package captive

import (
	"net/netip"
	"sync"
	"time"
)

// limiter is a token bucket per client address: rate requests a second,
// bursts of burst. A phone that hammers the portal gets 429s while every
// other client keeps its own budget. Buckets idle long enough to be full
// again are dropped, so the table stays as small as the busy clients.
type limiter struct {
	rate  float64 // tokens per second; 0 disables
	burst float64

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate int) *limiter {
	return &limiter{rate: float64(rate), burst: float64(2 * rate), buckets: map[netip.Addr]*bucket{}}
}

// allow takes a token from ip's bucket.
func (l *limiter) allow(ip netip.Addr, now time.Time) bool {
	if l.rate == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	b := l.buckets[ip]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[ip] = b
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep drops the buckets that would be full again. Caller holds mu.
func (l *limiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for ip, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, ip)
		}
	}
	l.swept = now
}
