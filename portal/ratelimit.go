package portal

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Sign-in attempts allowed by default per client address and per user name
// (Config.SignInsPerMinute changes it): a burst of signInBurst, then one
// every 1/signInRate. Vault has no lockout of its
// own for userpass, so this is what slows a password guesser down. Each
// instance counts on its own; behind N instances the limit is N times this.
const (
	signInRate  = rate.Limit(10.0 / 60) // 10 a minute
	signInBurst = 10
	// limiterIdle is how long an unused bucket is kept.
	limiterIdle = 15 * time.Minute
	// limiterMaxKeys bounds memory under a flood of distinct keys.
	limiterMaxKeys = 50000
)

// rateLimiter keeps one token bucket per key.
type rateLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex // guards buckets and lastGC
	buckets map[string]*bucket
	lastGC  time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newRateLimiter(limit rate.Limit, burst int) *rateLimiter {
	return &rateLimiter{limit: limit, burst: burst, buckets: map[string]*bucket{}}
}

// allow takes one token from every key's bucket; it says whether all had
// one, and if not, how long until they will.
func (l *rateLimiter) allow(now time.Time, keys ...string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gc(now)
	var wait time.Duration
	ok := true
	for _, k := range keys {
		b := l.buckets[k]
		if b == nil {
			b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
			l.buckets[k] = b
		}
		b.seen = now
		if !b.lim.AllowN(now, 1) {
			ok = false
			if d := time.Duration(float64(time.Second) / float64(l.limit)); d > wait {
				wait = d
			}
		}
	}
	return ok, wait
}

func (l *rateLimiter) gc(now time.Time) {
	if now.Sub(l.lastGC) < time.Minute && len(l.buckets) < limiterMaxKeys {
		return
	}
	l.lastGC = now
	for k, b := range l.buckets {
		if now.Sub(b.seen) > limiterIdle {
			delete(l.buckets, k)
		}
	}
	// Still too many: they are all fresh, so this is a flood; starting the
	// buckets over is the cheapest bounded answer.
	if len(l.buckets) >= limiterMaxKeys {
		l.buckets = map[string]*bucket{}
	}
}

// clientIP is the address the request came from. Forwarded headers are not
// trusted: anyone can set them.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
