package xdsclient

import (
	"math/rand/v2"
	"time"
)

// Backoff is exponential back-off with full jitter: the n-th consecutive
// retry (n from 0) waits a uniformly random time in [0, min(Max, Base·2ⁿ)).
type Backoff struct {
	// Base is the first ceiling; default 500ms.
	Base time.Duration
	// Max caps the ceiling; default 30s.
	Max time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = 500 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	if b.Max < b.Base {
		b.Max = b.Base
	}
	return b
}

// ceiling is the upper bound of the wait before retry n.
func (b Backoff) ceiling(n int) time.Duration {
	c := b.Base
	for i := 0; i < n && c < b.Max; i++ {
		c *= 2
	}
	return min(c, b.Max)
}

// Delay returns the jittered wait before retry n (n ≥ 0).
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	return time.Duration(rand.Int64N(int64(b.ceiling(n)))) // #nosec G404 -- jitter, not a secret
}
