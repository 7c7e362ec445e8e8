// Package cluster answers one question on the request path: which endpoint
// should serve a request for a service.
//
// A Table maps service names to their endpoints and balancer. Tables are
// immutable once built and are swapped atomically by their owner; the hot
// path only reads them. Endpoint objects carry live load figures
// (outstanding requests, latency average) and are carried over from the
// previous table when a new one is built, so a reload or a membership
// change does not forget what the balancer has learned.
package cluster

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Policy names a balancing algorithm (mirrors config.LBPolicy).
type Policy string

// Balancing policies.
const (
	PeakEWMA   Policy = "p2c-peak-ewma"
	RoundRobin Policy = "round-robin"
)

// Endpoint is one address that serves a service: another sidecar's inbound
// listener. Its methods are safe for concurrent use.
type Endpoint struct {
	// Addr is HOST:PORT.
	Addr string

	pending atomic.Int64 // requests sent whose response headers have not arrived
	total   atomic.Uint64

	mu    sync.Mutex
	cost  float64 // peak-EWMA latency, nanoseconds
	stamp int64   // last update, unix nanoseconds
}

// NewEndpoint returns an endpoint with no history.
func NewEndpoint(addr string) *Endpoint { return &Endpoint{Addr: addr} }

// decayTau is the peak-EWMA decay time constant (Linkerd's default).
const decayTau = float64(10 * time.Second)

// penaltyNanos is the cost assumed for an endpoint with requests in flight
// but no latency observed yet, so a new endpoint is not flooded.
const penaltyNanos = float64(time.Second)

// Start records that a request was sent and returns a function to call
// when its response headers arrive (or it fails). The first request's
// latency is not taken as a sample: it includes connection setup, which
// says nothing about how fast the endpoint serves.
func (e *Endpoint) Start() (done func()) {
	e.pending.Add(1)
	first := e.total.Add(1) == 1
	start := time.Now()
	return func() {
		e.pending.Add(-1)
		if !first {
			e.observe(time.Since(start), time.Now())
		}
	}
}

func (e *Endpoint) observe(rtt time.Duration, now time.Time) {
	ns := float64(rtt)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stamp == 0 || ns > e.cost {
		e.cost = ns // peak: jump up at once
	} else {
		w := math.Exp(-float64(now.UnixNano()-e.stamp) / decayTau)
		e.cost = e.cost*w + ns*(1-w)
	}
	e.stamp = now.UnixNano()
}

// load is the balancer's cost: the latency average, decayed toward zero
// while the endpoint is idle, times outstanding requests plus one.
func (e *Endpoint) load(now int64) float64 {
	e.mu.Lock()
	cost, stamp := e.cost, e.stamp
	e.mu.Unlock()
	pending := float64(e.pending.Load())
	if stamp != 0 {
		cost *= math.Exp(-float64(now-stamp) / decayTau)
	}
	if cost == 0 && pending > 0 {
		return penaltyNanos + pending
	}
	return cost * (pending + 1)
}

// Stats is a point-in-time view of an endpoint for the admin API.
type Stats struct {
	Address       string  `json:"address"`
	Pending       int64   `json:"pending"`
	Requests      uint64  `json:"requests"`
	EWMAMillis    float64 `json:"ewmaMillis"`
	Health        string  `json:"health"`
	LoadBalancing string  `json:"-"`
}

// Stats returns the endpoint's current figures.
func (e *Endpoint) Stats() Stats {
	e.mu.Lock()
	cost := e.cost
	e.mu.Unlock()
	return Stats{Address: e.Addr, Pending: e.pending.Load(), Requests: e.total.Load(),
		EWMAMillis: math.Round(cost/1e3) / 1e3, Health: "HEALTHY"}
}

// Service is one service's endpoints and balancer. Immutable.
type Service struct {
	Name      string
	Policy    Policy
	Endpoints []*Endpoint
	rr        *atomic.Uint64
}

// Pick chooses an endpoint, or nil if there is none. avoid, if non-nil, is
// skipped when another endpoint exists (a retry prefers a different one).
// usable, if non-nil, rules endpoints out (an open circuit breaker, an
// outlier ejection); nil is returned when it rules out every one.
func (s *Service) Pick(avoid *Endpoint, usable func(*Endpoint) bool) *Endpoint {
	e := s.pick(avoid)
	if e == nil || usable == nil || usable(e) {
		return e
	}
	// The balancer's choice is unusable: the first usable other endpoint,
	// from a random start so the load spreads, then avoid itself.
	eps := s.Endpoints
	start := rand.IntN(len(eps)) //nolint:gosec // balancing needs speed, not unpredictability
	for i := range eps {
		c := eps[(start+i)%len(eps)]
		if c != avoid && c != e && usable(c) {
			return c
		}
	}
	if avoid != nil && avoid != e && usable(avoid) {
		return avoid
	}
	return nil
}

// Only returns a view of the service restricted to its endpoint at addr
// (sharing that endpoint's load figures), or nil when addr is not one of
// its endpoints.
func (s *Service) Only(addr string) *Service {
	for _, e := range s.Endpoints {
		if e.Addr == addr {
			return &Service{Name: s.Name, Policy: s.Policy, Endpoints: []*Endpoint{e}, rr: s.rr}
		}
	}
	return nil
}

func (s *Service) pick(avoid *Endpoint) *Endpoint {
	eps := s.Endpoints
	switch len(eps) {
	case 0:
		return nil
	case 1:
		return eps[0]
	}
	if s.Policy == RoundRobin {
		for range 2 {
			e := eps[int(s.rr.Add(1)%uint64(len(eps)))]
			if e != avoid {
				return e
			}
		}
		return eps[0]
	}
	// Power of two choices: two distinct random endpoints, the cheaper wins.
	i := rand.IntN(len(eps))     //nolint:gosec // balancing needs speed, not unpredictability
	j := rand.IntN(len(eps) - 1) //nolint:gosec
	if j >= i {
		j++
	}
	a, b := eps[i], eps[j]
	if a == avoid {
		return b
	}
	if b == avoid {
		return a
	}
	now := time.Now().UnixNano()
	if b.load(now) < a.load(now) {
		return b
	}
	return a
}

// Table maps service names to services. Immutable; build with Builder.
type Table struct {
	services map[string]*Service
}

// Lookup returns the named service, or nil.
func (t *Table) Lookup(name string) *Service {
	if t == nil {
		return nil
	}
	return t.services[name]
}

// Names returns the service names in order.
func (t *Table) Names() []string {
	names := make([]string, 0, len(t.services))
	for n := range t.services {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Spec describes one service for Build.
type Spec struct {
	Name      string
	Policy    Policy
	Endpoints []string
}

// Build makes a table from specs. Endpoints whose address also appears in
// prev (for the same service) keep their load history.
func Build(specs []Spec, prev *Table) *Table {
	t := &Table{services: make(map[string]*Service, len(specs))}
	for _, sp := range specs {
		old := prev.Lookup(sp.Name)
		svc := &Service{Name: sp.Name, Policy: sp.Policy, rr: new(atomic.Uint64)}
		if old != nil {
			svc.rr = old.rr
		}
		for _, addr := range sp.Endpoints {
			ep := NewEndpoint(addr)
			if old != nil {
				if i := slices.IndexFunc(old.Endpoints, func(e *Endpoint) bool { return e.Addr == addr }); i >= 0 {
					ep = old.Endpoints[i]
				}
			}
			svc.Endpoints = append(svc.Endpoints, ep)
		}
		t.services[sp.Name] = svc
	}
	return t
}
