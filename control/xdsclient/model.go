package xdsclient

import (
	"regexp"
	"time"

	"github.com/causeway-mesh/causeway/proxy/authz"
)

// Model is the decoded, neutral form of one applied configuration: what the
// sidecar honours, with Envoy's types and defaults already resolved. It is
// built by BuildModel, never mutated afterwards, and safe to share between
// goroutines.
type Model struct {
	// Version is the snapshot version the model was built from.
	Version string
	// Services maps a mesh service name to its configuration.
	Services map[string]Service
	// Fencing is the mesh-wide fencing policy (causeway.mesh "fencing").
	Fencing FencingPolicy
	// Clock holds the logical-clock settings (causeway.mesh "clock").
	Clock ClockSettings
}

// Service is everything the sidecar needs to call one mesh service.
type Service struct {
	Name string
	// Endpoints are the service's instances in CLA order (zone by zone).
	Endpoints []Endpoint
	// LB is the load-balancing policy.
	LB LBPolicy
	// ConnectTimeout bounds a TCP connect; Envoy's default of 5s when unset.
	ConnectTimeout time.Duration
	// Limits are the circuit-breaker thresholds; a zero field is unset and
	// the sidecar's own default applies.
	Limits ConnectionLimits
	// RetryBudget is nil when neither the thresholds nor the Causeway
	// metadata configure one.
	RetryBudget *RetryBudget
	// Outlier is nil when outlier detection is off.
	Outlier *OutlierDetection
	// Breaker is the Causeway-only breaker, nil when not configured.
	Breaker *BreakerSettings
	// Routes are matched in order; the first match wins. The contract puts a
	// catch-all prefix "/" route last.
	Routes []Route
	// Fencing is the per-service fencing policy (causeway.mesh
	// services.S.fencing).
	Fencing FencingPolicy
	// Authorization is the service's compiled authorization policy
	// (causeway.mesh services.S.authorization), evaluated by its own
	// sidecars on inbound requests; nil: every caller is allowed.
	Authorization *authz.Compiled
}

// LBPolicy names a load-balancing algorithm of the sidecar.
type LBPolicy string

const (
	// LBRoundRobin is Envoy's ROUND_ROBIN.
	LBRoundRobin LBPolicy = "round-robin"
	// LBPeakEWMA is Envoy's LEAST_REQUEST, which the sidecar implements as
	// power-of-two-choices over peak EWMA latency. It is the default.
	LBPeakEWMA LBPolicy = "p2c-peak-ewma"
)

// Health is an endpoint's health as the control plane sees it.
type Health int

const (
	// HealthHealthy (HEALTHY, or UNKNOWN as Envoy treats it): send traffic.
	HealthHealthy Health = iota + 1
	// HealthDraining (DRAINING): leaving or not ready; no new requests.
	HealthDraining
	// HealthUnhealthy (UNHEALTHY or TIMEOUT): failed or suspect.
	HealthUnhealthy
)

// String returns "healthy", "draining" or "unhealthy".
func (h Health) String() string {
	switch h {
	case HealthHealthy:
		return "healthy"
	case HealthDraining:
		return "draining"
	case HealthUnhealthy:
		return "unhealthy"
	default:
		return "unknown"
	}
}

// Endpoint is one instance of a service, addressed by its sidecar's inbound
// listener.
type Endpoint struct {
	// Addr is "host:port".
	Addr   string
	Health Health
	// Weight is ≥ 1 (1 when the control plane leaves it unset).
	Weight uint32
	// Zone is the locality zone the endpoint was listed under.
	Zone string
	// Node and Version come from the endpoint's causeway metadata; empty
	// when absent.
	Node    string
	Version string
}

// ConnectionLimits are Envoy's default-priority circuit-breaker thresholds.
// Zero means the control plane did not set the field.
type ConnectionLimits struct {
	MaxConnections     uint32
	MaxPendingRequests uint32
	MaxRequests        uint32
	MaxRetries         uint32
}

// RetryBudget caps retries as a share of active requests.
type RetryBudget struct {
	// BudgetPercent of active requests may be retries (0–100); Envoy's
	// default of 20 when the budget exists but the field is unset.
	BudgetPercent float64
	// MinRetryConcurrency is always allowed regardless of the percentage;
	// Envoy's default of 3 when unset.
	MinRetryConcurrency uint32
	// MinPerSecond and Window come from the causeway metadata; zero means
	// the sidecar's default.
	MinPerSecond float64
	Window       time.Duration
}

// OutlierDetection ejects endpoints that keep failing. Unset Envoy fields
// take Envoy's defaults, noted per field.
type OutlierDetection struct {
	// Consecutive5xx failures eject an endpoint (default 5).
	Consecutive5xx uint32
	// ConsecutiveGatewayFailure (502/503/504, connect errors) eject an
	// endpoint; 0 (the default) disables this detector, as Envoy's
	// enforcement default of 0% does.
	ConsecutiveGatewayFailure uint32
	// Interval between ejection sweeps (default 10s).
	Interval time.Duration
	// BaseEjectionTime is multiplied by the number of ejections (default 30s).
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps the ejection time (default 300s, ≥ base).
	MaxEjectionTime time.Duration
	// MaxEjectionPercent of endpoints may be ejected at once (default 10).
	MaxEjectionPercent uint32
}

// BreakerSettings is the Causeway-only circuit breaker, from the cluster's
// causeway metadata "breaker". Zero fields mean the sidecar's default.
type BreakerSettings struct {
	ConsecutiveFailures uint32
	// FailureRatio in [0, 1] trips the breaker once MinRequests were seen
	// in Window.
	FailureRatio float64
	MinRequests  uint32
	Window       time.Duration
	// OpenFor is how long the breaker stays open before probing.
	OpenFor time.Duration
	// HalfOpenProbes is how many requests may probe a half-open breaker.
	HalfOpenProbes uint32
}

// Route is one entry of a service's ordered route table.
type Route struct {
	// Name is unique within the service; causeway.mesh keys policy by it.
	Name  string
	Match RouteMatch
	// Backends has one entry for a plain cluster, several for a weighted
	// (canary) split; weights are relative and sum to more than 0.
	Backends []WeightedBackend
	// Timeout is the whole-request timeout; 0 means no per-route timeout
	// (the sidecar's default applies).
	Timeout time.Duration
	// Retry is nil when the route does not retry.
	Retry *RetryPolicy
	// Fault and RateLimit come from causeway.mesh; nil when not set.
	Fault     *FaultPolicy
	RateLimit *RateLimit
}

// PathMatchKind says how RouteMatch.Path is compared.
type PathMatchKind int

const (
	// PathPrefix matches when the request path starts with Path.
	PathPrefix PathMatchKind = iota + 1
	// PathExact matches the whole path.
	PathExact
	// PathRegex matches the whole path against PathRegex (RE2).
	PathRegex
)

// RouteMatch selects requests for a route. All set conditions must hold.
type RouteMatch struct {
	PathKind PathMatchKind
	// Path is the prefix, the exact path, or the regular expression source.
	Path string
	// PathRegex is the compiled, fully anchored expression for PathRegex.
	PathRegex *regexp.Regexp
	// Method is the required HTTP method (from a ":method" exact header
	// matcher); empty matches any method.
	Method string
	// Headers must all match.
	Headers []HeaderMatch
}

// HeaderMatchKind says how HeaderMatch.Value is compared.
type HeaderMatchKind int

const (
	HeaderExact HeaderMatchKind = iota + 1
	HeaderPrefix
	HeaderSuffix
	HeaderContains
	// HeaderRegex matches the whole value against Regex (RE2).
	HeaderRegex
	// HeaderPresent matches when the header is present at all.
	HeaderPresent
)

// HeaderMatch is one request-header condition.
type HeaderMatch struct {
	// Name is the lower-case header name.
	Name  string
	Kind  HeaderMatchKind
	Value string
	// Regex is the compiled, fully anchored expression for HeaderRegex.
	Regex      *regexp.Regexp
	IgnoreCase bool
	// Invert negates the result.
	Invert bool
}

// WeightedBackend is one destination service of a route.
type WeightedBackend struct {
	Service string
	Weight  uint32
}

// RetryPolicy says when and how often a request is retried.
type RetryPolicy struct {
	// On lists Envoy retry_on conditions ("5xx", "connect-failure",
	// "unavailable", …) in the order given.
	On []string
	// NumRetries is ≥ 1.
	NumRetries uint32
	// PerTryTimeout is 0 when each try may use the whole route timeout.
	PerTryTimeout time.Duration
	// BackoffBase and BackoffMax bound the jittered back-off between tries
	// (Envoy defaults: 25ms and 10 × base).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// RetriableStatusCodes are HTTP statuses retried under the
	// "retriable-status-codes" condition.
	RetriableStatusCodes []uint32
}
