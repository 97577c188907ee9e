package clientapi

import (
	"net"
	"net/http"
	"sync"
	"time"

	"hearth/node/httputil"
)

// RateLimit is a token bucket per client IP for /register and /login.
// Sends are not limited: the node's own clients are trusted with the
// throughput the benchmark asks for.
type RateLimit struct {
	// PerSecond is the refill rate (0 means 20; negative disables).
	PerSecond float64
	// Burst is the bucket size (0 means 100).
	Burst int
}

type rateLimiter struct {
	cfg RateLimit
	mu  sync.Mutex
	m   map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds memory: past it, full buckets are dropped.
const maxBuckets = 10_000

func newRateLimiter(cfg RateLimit) *rateLimiter {
	if cfg.PerSecond == 0 {
		cfg.PerSecond = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 100
	}
	return &rateLimiter{cfg: cfg, m: map[string]*bucket{}}
}

// allow takes one token for key, or returns M_LIMIT_EXCEEDED with the
// time until the next token.
func (l *rateLimiter) allow(key string) error {
	if l.cfg.PerSecond < 0 {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[key]
	if b == nil {
		if len(l.m) >= maxBuckets {
			l.prune(now)
		}
		b = &bucket{tokens: float64(l.cfg.Burst), last: now}
		l.m[key] = b
	}
	b.tokens = min(float64(l.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*l.cfg.PerSecond)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return nil
	}
	wait := (1 - b.tokens) / l.cfg.PerSecond * 1000
	e := httputil.Errf(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "too many requests")
	e.RetryAfterMS = int64(wait) + 1
	return e
}

func (l *rateLimiter) prune(now time.Time) {
	for k, b := range l.m {
		if b.tokens+now.Sub(b.last).Seconds()*l.cfg.PerSecond >= float64(l.cfg.Burst) {
			delete(l.m, k)
		}
	}
}

// clientIP is the remote address without its port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
