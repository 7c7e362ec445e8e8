package resilience

import (
	"math"

	"golang.org/x/time/rate"
)

// RateLimiter is the local token bucket of one inbound route. A nil
// *RateLimiter allows everything. Safe for concurrent use.
type RateLimiter struct{ l *rate.Limiter }

// NewRateLimiter returns a limiter for r, or nil when r sets no limit.
func NewRateLimiter(r RateLimit) *RateLimiter {
	if r.PerSecond <= 0 {
		return nil
	}
	burst := r.Burst
	if burst <= 0 {
		burst = max(int(math.Ceil(r.PerSecond)), 1)
	}
	return &RateLimiter{l: rate.NewLimiter(rate.Limit(r.PerSecond), burst)}
}

// Allow takes a token and reports whether the request may proceed; if
// not, the proxy answers 429.
func (rl *RateLimiter) Allow() bool {
	return rl == nil || rl.l.Allow()
}
