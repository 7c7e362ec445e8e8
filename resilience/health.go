package resilience

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// ErrCircuitOpen is returned by Allow when the endpoint's breaker is open
// or its half-open probes are all in flight. When every endpoint of a
// service is unavailable the proxy answers 503 circuit_open.
var ErrCircuitOpen = errors.New("circuit open")

// BreakerState is a circuit breaker's state.
type BreakerState uint8

// Breaker states.
const (
	BreakerClosed BreakerState = iota
	BreakerHalfOpen
	BreakerOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return "unknown"
}

func fromGobreaker(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// Hooks receive health events, for metrics and logs. Any field may be
// nil. They are called synchronously on the request path (a breaker
// transition while the breaker's lock is held), so they must be quick and
// must not call back into the Registry.
type Hooks struct {
	// BreakerTransition is called when an endpoint's breaker changes state.
	BreakerTransition func(service, addr string, from, to BreakerState)
	// Ejected is called when outlier detection ejects an endpoint for d
	// because of failures of the given kind.
	Ejected func(service, addr string, d time.Duration, cause Kind)
	// EjectionSkipped is called when an endpoint met an ejection threshold
	// but MaxEjectionPercent was reached.
	EjectionSkipped func(service, addr string)
}

// Registry holds the health (breaker and outlier state) of every endpoint
// of every upstream service. Safe for concurrent use.
type Registry struct {
	hooks Hooks

	mu       sync.RWMutex
	services map[string]*ServiceHealth
}

// NewRegistry returns an empty registry reporting to hooks.
func NewRegistry(hooks Hooks) *Registry {
	return &Registry{hooks: hooks, services: make(map[string]*ServiceHealth)}
}

// Service returns the health of the named service, creating it with the
// given breaker and outlier settings (which must be valid). If the
// settings differ from those the service was created with, its endpoints
// start afresh (breakers closed, nothing ejected) under the new settings.
func (r *Registry) Service(name string, b Breaker, o Outlier) *ServiceHealth {
	r.mu.RLock()
	s := r.services[name]
	r.mu.RUnlock()
	if s != nil && s.breaker == b && s.outlier == o {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s = r.services[name]; s != nil && s.breaker == b && s.outlier == o {
		return s
	}
	s = &ServiceHealth{name: name, breaker: b, outlier: o, hooks: r.hooks, endpoints: make(map[string]*EndpointHealth)}
	r.services[name] = s
	return s
}

// RetainServices drops every service not named in names.
func (r *Registry) RetainServices(names []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n := range r.services {
		if !slices.Contains(names, n) {
			delete(r.services, n)
		}
	}
}

// Snapshot returns every service's endpoint states, by service name.
func (r *Registry) Snapshot() map[string][]EndpointSnapshot {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string][]EndpointSnapshot, len(r.services))
	for n, s := range r.services {
		out[n] = s.Snapshot()
	}
	return out
}

// ServiceHealth is the health of one service's endpoints.
type ServiceHealth struct {
	name    string
	breaker Breaker
	outlier Outlier
	hooks   Hooks

	mu        sync.RWMutex
	endpoints map[string]*EndpointHealth
}

// Endpoint returns the health of the endpoint at addr, creating it.
// The balancer may keep the result and call Available on it directly.
func (s *ServiceHealth) Endpoint(addr string) *EndpointHealth {
	s.mu.RLock()
	e := s.endpoints[addr]
	s.mu.RUnlock()
	if e != nil {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e = s.endpoints[addr]; e == nil {
		e = newEndpointHealth(s, addr)
		s.endpoints[addr] = e
	}
	return e
}

// Available reports whether addr may be picked: its breaker is not open
// and it is not ejected. An unknown endpoint is available. Cheap: a map
// read and atomic loads (a clock read only while the endpoint is
// unhealthy).
func (s *ServiceHealth) Available(addr string) bool {
	s.mu.RLock()
	e := s.endpoints[addr]
	s.mu.RUnlock()
	return e == nil || e.Available()
}

// Allow asks the breaker of addr to let an attempt through. On success,
// call done exactly once with the attempt's classified result. It fails
// with an error wrapping [ErrCircuitOpen] when the breaker refuses.
func (s *ServiceHealth) Allow(addr string) (done func(Result), err error) {
	return s.Endpoint(addr).Allow()
}

// Retain drops the state of endpoints not in addrs (those that left the
// service).
func (s *ServiceHealth) Retain(addrs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a := range s.endpoints {
		if !slices.Contains(addrs, a) {
			delete(s.endpoints, a)
		}
	}
}

// Snapshot returns the state of each endpoint, sorted by address.
func (s *ServiceHealth) Snapshot() []EndpointSnapshot {
	s.mu.RLock()
	eps := make([]*EndpointHealth, 0, len(s.endpoints))
	for _, e := range s.endpoints {
		eps = append(eps, e)
	}
	s.mu.RUnlock()
	out := make([]EndpointSnapshot, len(eps))
	for i, e := range eps {
		out[i] = e.Snapshot()
	}
	slices.SortFunc(out, func(a, b EndpointSnapshot) int {
		switch {
		case a.Address < b.Address:
			return -1
		case a.Address > b.Address:
			return 1
		}
		return 0
	})
	return out
}

// EndpointSnapshot is the health of one endpoint for the admin API.
type EndpointSnapshot struct {
	Address              string    `json:"address"`
	Breaker              string    `json:"breaker"` // closed, half-open, open
	Requests             uint32    `json:"requests"`
	Successes            uint32    `json:"successes"`
	Failures             uint32    `json:"failures"`
	Exclusions           uint32    `json:"exclusions"`
	ConsecutiveFailures  uint32    `json:"consecutiveFailures"`
	Ejected              bool      `json:"ejected"`
	EjectedUntil         time.Time `json:"ejectedUntil,omitzero"`
	TimesEjected         int       `json:"timesEjected"`
	ConsecutiveGateway   int64     `json:"consecutiveGatewayErrors"`
	Consecutive5xx       int64     `json:"consecutive5xx"`
	ConsecutiveConnFails int64     `json:"consecutiveConnectFailures"`
}

// EndpointHealth is the breaker and outlier state of one endpoint.
type EndpointHealth struct {
	svc  *ServiceHealth
	addr string
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]

	// Hot-path mirrors, read without locks by Available.
	state     atomic.Uint32 // BreakerState
	openUntil atomic.Int64  // unix nanoseconds when an open breaker turns half-open
	ejectedTo atomic.Int64  // unix nanoseconds until which the endpoint is ejected; 0: never was

	consec5xx, consecGateway, consecConnect atomic.Int64

	mu           sync.Mutex // outlier bookkeeping, under svc's ejection decisions
	timesEjected int
	lastReturn   time.Time // when the last ejection ended
}

// Failure markers passed to the breaker's done function.
var (
	errAttemptFailed   = errors.New("attempt failed")
	errAttemptExcluded = errors.New("attempt excluded")
)

func newEndpointHealth(s *ServiceHealth, addr string) *EndpointHealth {
	e := &EndpointHealth{svc: s, addr: addr}
	b := s.breaker
	settings := gobreaker.Settings{
		Name:         s.name + "/" + addr,
		MaxRequests:  uint32(b.HalfOpenProbes),
		Interval:     b.Window,
		BucketPeriod: b.Window / 10,
		Timeout:      b.OpenFor,
		ReadyToTrip:  b.readyToTrip,
		IsSuccessful: func(err error) bool { return err == nil },
		IsExcluded:   func(err error) bool { return errors.Is(err, errAttemptExcluded) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			// Called with the breaker's lock held.
			if to == gobreaker.StateOpen {
				e.openUntil.Store(time.Now().Add(b.OpenFor).UnixNano())
			}
			e.state.Store(uint32(fromGobreaker(to)))
			if h := s.hooks.BreakerTransition; h != nil {
				h(s.name, addr, fromGobreaker(from), fromGobreaker(to))
			}
		},
	}
	e.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](settings)
	return e
}

// readyToTrip applies ConsecutiveFailures and FailureRatio.
func (b Breaker) readyToTrip(c gobreaker.Counts) bool {
	if b.ConsecutiveFailures > 0 && c.ConsecutiveFailures >= uint32(b.ConsecutiveFailures) {
		return true
	}
	if b.FailureRatio > 0 {
		n := c.TotalSuccesses + c.TotalFailures
		return n >= uint32(b.MinRequests) && float64(c.TotalFailures) >= b.FailureRatio*float64(n)
	}
	return false
}

// Address returns the endpoint's HOST:PORT.
func (e *EndpointHealth) Address() string { return e.addr }

// Available reports whether the endpoint may be picked: its breaker is
// closed, half-open, or open with its open time over (the next Allow
// turns it half-open), and it is not ejected.
func (e *EndpointHealth) Available() bool {
	ej := e.ejectedTo.Load()
	st := BreakerState(e.state.Load())
	if ej == 0 && st != BreakerOpen {
		return true // the common case: no clock read
	}
	now := time.Now().UnixNano()
	if ej > now {
		return false
	}
	return st != BreakerOpen || e.openUntil.Load() <= now
}

// Allow asks the breaker to let an attempt through; see
// [ServiceHealth.Allow].
func (e *EndpointHealth) Allow() (done func(Result), err error) {
	cbDone, err := e.cb.Allow()
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w (%w)", e.addr, ErrCircuitOpen, err)
	}
	return func(r Result) {
		switch r.Outcome {
		case Success:
			cbDone(nil)
		case Failure:
			cbDone(errAttemptFailed)
		default:
			cbDone(errAttemptExcluded)
		}
		e.observe(r)
	}, nil
}

// observe updates outlier detection with a result.
func (e *EndpointHealth) observe(r Result) {
	switch r.Outcome {
	case Excluded:
		return
	case Success:
		e.consec5xx.Store(0)
		e.consecGateway.Store(0)
		e.consecConnect.Store(0)
		return
	}
	o := e.svc.outlier
	var tripped bool
	if counts5xx(r) {
		tripped = bump(&e.consec5xx, o.Consecutive5xx) || tripped
	} else {
		e.consec5xx.Store(0)
	}
	if countsGateway(r) {
		tripped = bump(&e.consecGateway, o.ConsecutiveGatewayErrors) || tripped
	} else {
		e.consecGateway.Store(0)
	}
	if r.Kind == KindConnectFailure {
		tripped = bump(&e.consecConnect, o.ConsecutiveConnectFailures) || tripped
	} else {
		e.consecConnect.Store(0)
	}
	if tripped {
		e.svc.eject(e, r.Kind)
	}
}

// bump increments a consecutive counter and reports whether it reached a
// non-zero threshold.
func bump(c *atomic.Int64, threshold int) bool {
	n := c.Add(1)
	return threshold > 0 && n >= int64(threshold)
}

// counts5xx: results the proxy would report as a 5xx.
func counts5xx(r Result) bool {
	switch r.Kind {
	case KindConnectFailure, KindRefusedStream, KindReset, KindTimeout, KindGateway, KindStatus5xx:
		return true
	}
	return false
}

// countsGateway: 502/503/504 and the local failures the proxy answers
// with them, and gRPC UNAVAILABLE.
func countsGateway(r Result) bool {
	switch r.Kind {
	case KindConnectFailure, KindRefusedStream, KindReset, KindTimeout, KindGateway, KindGRPCUnavailable:
		return true
	}
	return false
}

// eject ejects e unless MaxEjectionPercent of the service's endpoints
// are already ejected: at most floor(endpoints × percent / 100), so a
// service with one endpoint never loses it.
func (s *ServiceHealth) eject(e *EndpointHealth, cause Kind) {
	now := time.Now()
	o := s.outlier
	s.mu.Lock()
	if e.ejectedTo.Load() > now.UnixNano() {
		s.mu.Unlock()
		return // already ejected: results of attempts sent before it
	}
	ejected := 0
	for _, x := range s.endpoints {
		if x.ejectedTo.Load() > now.UnixNano() {
			ejected++
		}
	}
	if ejected+1 > len(s.endpoints)*o.MaxEjectionPercent/100 {
		s.mu.Unlock()
		if h := s.hooks.EjectionSkipped; h != nil {
			h(s.name, e.addr)
		}
		return
	}
	e.mu.Lock()
	// The multiplier drops by one for each Interval the endpoint stayed
	// healthy since its last ejection ended.
	if e.timesEjected > 0 && o.Interval > 0 && now.After(e.lastReturn) {
		healthy := int(now.Sub(e.lastReturn) / o.Interval)
		e.timesEjected = max(e.timesEjected-healthy, 0)
	}
	e.timesEjected++
	d := min(o.BaseEjection*time.Duration(e.timesEjected), o.MaxEjection)
	e.lastReturn = now.Add(d)
	e.ejectedTo.Store(e.lastReturn.UnixNano())
	e.mu.Unlock()
	s.mu.Unlock()
	e.consec5xx.Store(0)
	e.consecGateway.Store(0)
	e.consecConnect.Store(0)
	if h := s.hooks.Ejected; h != nil {
		h(s.name, e.addr, d, cause)
	}
}

// Snapshot returns the endpoint's state for the admin API.
func (e *EndpointHealth) Snapshot() EndpointSnapshot {
	c := e.cb.Counts()
	st := fromGobreaker(e.cb.State())
	e.mu.Lock()
	times := e.timesEjected
	e.mu.Unlock()
	snap := EndpointSnapshot{
		Address: e.addr, Breaker: st.String(),
		Requests: c.Requests, Successes: c.TotalSuccesses, Failures: c.TotalFailures, Exclusions: c.TotalExclusions,
		ConsecutiveFailures: c.ConsecutiveFailures, TimesEjected: times,
		ConsecutiveGateway: e.consecGateway.Load(), Consecutive5xx: e.consec5xx.Load(), ConsecutiveConnFails: e.consecConnect.Load(),
	}
	if to := e.ejectedTo.Load(); to > time.Now().UnixNano() {
		snap.Ejected = true
		snap.EjectedUntil = time.Unix(0, to)
	}
	return snap
}
