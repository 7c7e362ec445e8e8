package resilience

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrOverflow is wrapped by the acquire methods of [ServiceLimits] when a
// concurrency threshold is reached; the proxy answers 503 overflow.
var ErrOverflow = errors.New("overflow")

// ServiceLimits enforces [Limits] for one upstream service. Acquires never
// block. Safe for concurrent use.
type ServiceLimits struct {
	connections, pending, requests, retries semaphore
}

// NewServiceLimits returns limits for l; a zero threshold is unlimited.
func NewServiceLimits(l Limits) *ServiceLimits {
	return &ServiceLimits{
		connections: semaphore{name: "connections", max: int64(l.MaxConnections)},
		pending:     semaphore{name: "pending requests", max: int64(l.MaxPending)},
		requests:    semaphore{name: "requests", max: int64(l.MaxRequests)},
		retries:     semaphore{name: "retries", max: int64(l.MaxRetries)},
	}
}

// AcquireConnection takes a connection slot (call when dialing; release
// when the connection closes or the dial fails).
func (l *ServiceLimits) AcquireConnection() (release func(), err error) {
	return l.connections.acquire()
}

// AcquirePending takes a pending-request slot (while waiting for a
// connection or stream).
func (l *ServiceLimits) AcquirePending() (release func(), err error) { return l.pending.acquire() }

// AcquireRequest takes an active-request slot for a request's lifetime.
func (l *ServiceLimits) AcquireRequest() (release func(), err error) { return l.requests.acquire() }

// AcquireRetry takes an active-retry slot for one retry attempt.
func (l *ServiceLimits) AcquireRetry() (release func(), err error) { return l.retries.acquire() }

// InUse returns the slots taken: connections, pending, requests, retries.
func (l *ServiceLimits) InUse() (connections, pending, requests, retries int64) {
	return l.connections.n.Load(), l.pending.n.Load(), l.requests.n.Load(), l.retries.n.Load()
}

type semaphore struct {
	name string
	max  int64 // 0: unlimited
	n    atomic.Int64
}

func noRelease() {}

func (s *semaphore) acquire() (func(), error) {
	if s.max <= 0 {
		s.n.Add(1)
		return s.releaser(), nil
	}
	if s.n.Add(1) > s.max {
		s.n.Add(-1)
		return noRelease, fmt.Errorf("%w: max %s (%d) reached", ErrOverflow, s.name, s.max)
	}
	return s.releaser(), nil
}

// releaser returns a function that gives the slot back the first time it
// is called and does nothing after.
func (s *semaphore) releaser() func() {
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			s.n.Add(-1)
		}
	}
}
