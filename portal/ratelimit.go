package portal

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Sign-in limits. Attempts per client address (Config.SignInsPerMinute
// changes it): a burst of signInBurst, then one every 1/signInRate. Failed
// passwords per account and client address: signInFailuresPerAddress in
// Vault's lockout window, fewer than Vault's lockout threshold
// (provision.UserLockoutThreshold), so that no single address can make
// Vault lock a person out for everyone. There is no limit per account
// alone: it would let anyone who knows a user name keep that person out.
// Each instance counts on its own; behind N instances the limits are N
// times these.
const (
	signInRate               = rate.Limit(10.0 / 60) // 10 a minute
	signInBurst              = 10
	signInFailuresPerAddress = 3
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

// ready says whether key's bucket has a token, without taking it, and if
// not, how long until it will.
func (l *rateLimiter) ready(now time.Time, key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil || b.lim.TokensAt(now) >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - b.lim.TokensAt(now)) * float64(time.Second) / float64(l.limit))
}

// spend takes a token from key's bucket (a failure counted).
func (l *rateLimiter) spend(now time.Time, key string) {
	l.allow(now, key)
}

// clientIP is the address the request came from: the connection's peer,
// or, when that peer is one of the trusted proxies, the nearest address in
// X-Forwarded-For that is not. A forwarded header from anyone else is
// ignored: anyone can set it.
func clientIP(r *http.Request, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if !trustedAddr(host, trusted) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if hop == "" {
			continue
		}
		if !trustedAddr(hop, trusted) {
			return hop
		}
	}
	return host
}

func trustedAddr(addr string, trusted []netip.Prefix) bool {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	for _, p := range trusted {
		if p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}
