package resilience

import (
	"errors"
	"sync"
	"time"
)

// ErrRetryBudgetExhausted is what a retrying caller returns when a retry
// was wanted but the budget refused it (x-mesh-error:
// retry_budget_exhausted, if the proxy reports it as such).
var ErrRetryBudgetExhausted = errors.New("retry budget exhausted")

// budgetSlots is how many buckets the window is divided into: finer
// slots make the window slide more smoothly.
const budgetSlots = 10

// tokenScale makes one deposit worth this many tokens, so that a retry
// (1/Ratio deposits) costs a whole number of tokens.
const tokenScale = 1000

// RetryBudget limits retries to a share of requests over a sliding
// window plus a floor (Linkerd's TTL-bucketed budget). Each original
// request deposits; each retry withdraws 1/Ratio deposits' worth. A
// standing reserve of MinPerSecond × Window retries is always there, and
// withdrawals expire with the window, so over any Window at most
// Ratio × requests + MinPerSecond × Window retries pass. Safe for
// concurrent use; each call holds a mutex for a few instructions.
type RetryBudget struct {
	now      func() time.Time
	slot     int64 // slot length, nanoseconds
	reserve  int64 // tokens always available: MinPerSecond × Window retries
	deposit  int64 // tokens per request; 0 when Ratio is 0 (only the reserve)
	withdraw int64 // tokens per retry

	mu      sync.Mutex
	cur     int64 // index (time / slot) of the newest slot
	slots   [budgetSlots]int64
	balance int64 // sum of slots
}

// NewRetryBudget returns a budget for b. now is the clock (nil:
// time.Now). b must be valid (Policy.Validate).
func NewRetryBudget(b Budget, now func() time.Time) *RetryBudget {
	if now == nil {
		now = time.Now
	}
	rb := &RetryBudget{
		now:      now,
		slot:     int64(b.Window) / budgetSlots,
		withdraw: tokenScale,
	}
	if rb.slot <= 0 {
		rb.slot = 1
	}
	if b.Ratio > 0 {
		rb.deposit = tokenScale
		rb.withdraw = int64(tokenScale / b.Ratio)
	}
	rb.reserve = int64(float64(b.MinPerSecond)*b.Window.Seconds()) * rb.withdraw
	rb.cur = now().UnixNano() / rb.slot
	return rb
}

// advance expires slots older than the window. mu must be held.
func (rb *RetryBudget) advance() int {
	idx := rb.now().UnixNano() / rb.slot
	if gap := idx - rb.cur; gap > 0 {
		if gap >= budgetSlots {
			rb.slots = [budgetSlots]int64{}
			rb.balance = 0
		} else {
			for i := rb.cur + 1; i <= idx; i++ {
				j := i % budgetSlots
				rb.balance -= rb.slots[j]
				rb.slots[j] = 0
			}
		}
		rb.cur = idx
	}
	return int(rb.cur % budgetSlots)
}

// Deposit records an original request (not a retry).
func (rb *RetryBudget) Deposit() {
	if rb.deposit == 0 {
		return
	}
	rb.mu.Lock()
	j := rb.advance()
	rb.slots[j] += rb.deposit
	rb.balance += rb.deposit
	rb.mu.Unlock()
}

// Withdraw takes one retry from the budget and reports whether it was
// there. A false result means the retry must not be sent.
func (rb *RetryBudget) Withdraw() bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	j := rb.advance()
	if rb.balance+rb.reserve < rb.withdraw {
		return false
	}
	rb.slots[j] -= rb.withdraw
	rb.balance -= rb.withdraw
	return true
}
