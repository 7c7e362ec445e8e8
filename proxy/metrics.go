package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the sidecar's Prometheus series. Labels never carry raw
// paths or client-chosen strings beyond a bounded set (see labelSet).
type metrics struct {
	reg *prometheus.Registry

	requests  *prometheus.CounterVec   // direction, source_service, destination_service, status_class
	duration  *prometheus.HistogramVec // same labels
	series    sync.Map                 // seriesKey → *requestSeries
	errors    *prometheus.CounterVec   // direction, code: responses the proxy generated
	rejected  *prometheus.CounterVec   // listener, reason: malformed requests refused
	active    *prometheus.GaugeVec     // listener: open downstream connections
	accepted  *prometheus.CounterVec   // listener
	upConns   *prometheus.GaugeVec     // pool: open upstream connections
	upDials   *prometheus.CounterVec   // pool, result
	h2Resets  prometheus.Counter       // connections closed for abusive stream resets
	tcpActive *prometheus.GaugeVec     // direction
	reloads   *prometheus.CounterVec   // result

	fencedWrites *prometheus.CounterVec // where: outbound, inbound, stale_epoch
	clockErrors  *prometheus.CounterVec // kind: malformed, jump, clock

	attempts           *prometheus.CounterVec // destination_service, outcome
	retryDecisions     *prometheus.CounterVec // destination_service, decision
	budgetExhausted    *prometheus.CounterVec // destination_service
	breakerTransitions *prometheus.CounterVec // destination_service, to
	ejections          *prometheus.CounterVec // destination_service
	faults             *prometheus.CounterVec // destination_service, kind
	rateLimited        prometheus.Counter
	authzDenied        *prometheus.CounterVec // reason: denied, bad_path
	bodyAborts         *prometheus.CounterVec // direction, reason: body_idle, body_slow, body_too_large, slow_reader

	sources labelSet // inbound source_service values seen
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	labels := []string{"direction", "source_service", "destination_service", "status_class"}
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_requests_total", Help: "Requests proxied, by direction, source and destination service and status class.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mesh_request_duration_seconds",
			Help:    "Time from request received to response complete.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, labels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_errors_total", Help: "Responses the proxy generated itself, by x-mesh-error code.",
		}, []string{"direction", "code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_rejected_requests_total", Help: "Malformed requests refused before forwarding.",
		}, []string{"listener", "reason"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mesh_active_connections", Help: "Open downstream connections per listener.",
		}, []string{"listener"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_connections_total", Help: "Downstream connections accepted per listener.",
		}, []string{"listener"}),
		upConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mesh_upstream_connections", Help: "Open upstream connections per pool (mesh: to other sidecars; app: to the local app).",
		}, []string{"pool"}),
		upDials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_upstream_connect_total", Help: "Upstream connection attempts per pool and result.",
		}, []string{"pool", "result"}),
		h2Resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_h2_abusive_reset_closes_total", Help: "HTTP/2 connections closed for resetting streams abusively (rapid reset).",
		}),
		tcpActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mesh_tcp_active_connections", Help: "Open proxied TCP connections.",
		}, []string{"direction"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_config_reloads_total", Help: "Configuration reloads (SIGHUP) by result.",
		}, []string{"result"}),
		fencedWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_fenced_writes_total", Help: "Writes refused by fencing: while fenced (outbound, inbound) or under a stale epoch.",
		}, []string{"where"}),
		clockErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_clock_header_errors_total", Help: "Logical-clock headers ignored (malformed, implausible jump) and clock failures.",
		}, []string{"kind"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_upstream_attempts_total", Help: "Attempts sent to upstream endpoints (first tries and retries), by outcome: success, failure, excluded.",
		}, []string{"destination_service", "outcome"}),
		retryDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_retry_decisions_total", Help: "After a failed attempt (or any retried request): retry, or why not (attempts_exhausted, not_idempotent, budget_exhausted, ...).",
		}, []string{"destination_service", "decision"}),
		budgetExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_retry_budget_exhausted_total", Help: "Retries refused because the service's retry budget was spent.",
		}, []string{"destination_service"}),
		breakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_circuit_breaker_transitions_total", Help: "Endpoint circuit-breaker state changes, by the state entered.",
		}, []string{"destination_service", "to"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_outlier_ejections_total", Help: "Endpoints ejected by outlier detection.",
		}, []string{"destination_service"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_faults_injected_total", Help: "Injected delays and aborts.",
		}, []string{"destination_service", "kind"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_rate_limited_total", Help: "Inbound requests refused by a local rate limit (429).",
		}),
		authzDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_authz_denied_total", Help: "Inbound requests refused by the service's AuthorizationPolicy (denied) or for a path that cannot be normalized (bad_path).",
		}, []string{"reason"}),
		bodyAborts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_body_aborts_total", Help: "Requests cut off by the body guard: request body stalled (body_idle) or too slow (body_slow), over the size cap (body_too_large), or a response the client stopped reading (slow_reader).",
		}, []string{"direction", "reason"}),
		sources: labelSet{max: 256},
	}
	reg.MustRegister(m.requests, m.duration, m.errors, m.rejected, m.active, m.accepted,
		m.upConns, m.upDials, m.h2Resets, m.tcpActive, m.reloads, m.fencedWrites, m.clockErrors,
		m.attempts, m.retryDecisions, m.budgetExhausted, m.breakerTransitions, m.ejections, m.faults, m.rateLimited, m.authzDenied, m.bodyAborts)
	return m
}

// observe records one finished request.
func (m *metrics) observe(direction, src, dst string, status int, elapsed time.Duration) {
	k := seriesKey{direction, src, dst, statusClass(status)}
	v, ok := m.series.Load(k)
	if !ok {
		v, _ = m.series.LoadOrStore(k, &requestSeries{
			count:    m.requests.WithLabelValues(k.direction, k.src, k.dst, k.class),
			duration: m.duration.WithLabelValues(k.direction, k.src, k.dst, k.class),
		})
	}
	rs := v.(*requestSeries)
	rs.count.Inc()
	rs.duration.Observe(elapsed.Seconds())
}

// seriesKey names one series of the request metrics. Its values are
// bounded (service names go through labelSet), so the cache of series is.
type seriesKey struct{ direction, src, dst, class string }

// requestSeries are the request count and duration of one seriesKey,
// resolved once: a label lookup hashes every value on each call.
type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// statusClass maps a status to its class; 0 (no response: the client went
// away) is "none".
func statusClass(code int) string {
	if code >= 100 && code < 600 {
		return classes[code/100-1]
	}
	return "none"
}

// labelSet bounds the distinct values a client-influenced label can take:
// after max distinct values, further ones are reported as "other".
type labelSet struct {
	max  int
	seen sync.Map // string → struct{}: read without a lock on every request
	mu   sync.Mutex
	n    int // values admitted, under mu
}

func (s *labelSet) value(v string) string {
	if v == "" {
		return "unknown"
	}
	if _, ok := s.seen.Load(v); ok {
		return v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen.Load(v); ok {
		return v
	}
	if s.n >= s.max {
		return "other"
	}
	s.seen.Store(v, struct{}{})
	s.n++
	return v
}

// countedConn decrements a gauge once when closed.
type countedConn struct {
	net.Conn
	gauge   prometheus.Gauge
	closed  atomic.Bool
	onClose func() // optional: releases a connection slot
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.gauge.Dec()
		if c.onClose != nil {
			c.onClose()
		}
	}
	return c.Conn.Close()
}
