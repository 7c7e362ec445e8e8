package resilience

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// Policy is the resilience configuration of one upstream service. The
// proxy merges per-route overrides into a copy before use. Every field
// documents its default (the value [DefaultPolicy] sets) and what zero
// means; validate a Policy with [Policy.Validate] before building anything
// from it.
type Policy struct {
	Timeouts  Timeouts
	Retry     Retry
	Budget    Budget
	Breaker   Breaker
	Limits    Limits
	Outlier   Outlier
	Fault     Fault
	RateLimit RateLimit
}

// Timeouts bound the phases of an upstream call.
type Timeouts struct {
	// Connect bounds opening a connection to an endpoint. Default 1 s;
	// must be positive and at most 60 s.
	Connect time.Duration
	// PerTry bounds one attempt, up to its response headers. Default 0: an
	// attempt is bounded only by Overall. At most Overall when both are set.
	PerTry time.Duration
	// Overall bounds the whole request across all attempts and backoffs,
	// up to the response headers. Default 15 s (Envoy's route timeout); 0:
	// no bound other than the caller's grpc-timeout.
	Overall time.Duration
	// Idle closes a stream on which nothing was sent or received for this
	// long. Default 5 min (Envoy's stream idle timeout); 0: never.
	Idle time.Duration
}

// Retry says when and how a failed attempt is tried again.
type Retry struct {
	// MaxAttempts counts the first try: 1 disables retries. Default 3;
	// must be between 1 and 10.
	MaxAttempts int
	// On lists the conditions that make an attempt retriable. Default
	// connect-failure, refused-stream, reset, unavailable. A request that
	// may have reached the upstream is retried only when idempotent, and
	// after a reset only when safe (GET, HEAD, OPTIONS, TRACE).
	On Conditions
	// Statuses are further HTTP statuses to retry on (400-599). Default none.
	Statuses []int
	// GRPCCodes are further gRPC status codes to retry on (1-16). Default
	// none; UNAVAILABLE is covered by the unavailable condition.
	GRPCCodes []codes.Code
	// BackoffBase is the first backoff ceiling; it doubles per retry up to
	// BackoffMax and the wait is uniform below it (full jitter). Default
	// 25 ms; must be between 1 ms and BackoffMax.
	BackoffBase time.Duration
	// BackoffMax caps the backoff ceiling. Default 250 ms; at most 60 s.
	BackoffMax time.Duration
	// RetryAfterMax is the longest Retry-After the proxy waits for; an
	// upstream that asks for longer is not retried. Default 10 s; 0: a
	// Retry-After header is ignored (backoff only); at most 60 s.
	RetryAfterMax time.Duration
	// BufferLimit is how many request-body bytes are kept for replay. A
	// longer or streaming body is not retried once sending began. Default
	// 64 KiB; 0: bodies are never replayed; at most 16 MiB.
	BufferLimit int
	// IdempotentGRPCMethods marks gRPC methods safe to retry after they may
	// have reached the upstream: full paths ("/pkg.Service/Method") or a
	// whole service ("/pkg.Service/*"). Default none: a gRPC call is retried
	// only when it provably never reached the upstream.
	IdempotentGRPCMethods []string
}

// Budget caps retries as a share of requests over a sliding window, with a
// floor so that low-traffic services can still retry (Linkerd's retry
// budget): over any Window, retries ≤ Ratio × requests + MinPerSecond ×
// Window.
type Budget struct {
	// Ratio is the share of requests that may be retried. Default 0.2;
	// must be between 0 and 1 (0: only the floor).
	Ratio float64
	// MinPerSecond is the floor of retries per second. Default 10; at
	// most 10000.
	MinPerSecond int
	// Window is the sliding window. Default 10 s; between 1 s and 60 s.
	Window time.Duration
}

// Breaker configures the circuit breaker of each endpoint. It trips on
// ConsecutiveFailures or on FailureRatio, whichever comes first.
type Breaker struct {
	// ConsecutiveFailures trips the breaker after this many failures in a
	// row. Default 5; 0: this trigger is off; at most 1000.
	ConsecutiveFailures int
	// FailureRatio trips the breaker when failures/(failures+successes)
	// over Window reaches it with at least MinRequests results. Default 0
	// (off); between 0 and 1.
	FailureRatio float64
	// MinRequests is the least number of results in Window before
	// FailureRatio applies. Default 20; must be positive when FailureRatio
	// is set.
	MinRequests int
	// Window is the rolling window of FailureRatio, kept in 10 buckets.
	// Default 10 s; between 1 s and 10 min.
	Window time.Duration
	// OpenFor is how long a tripped breaker stays open before it lets
	// probes through (half-open). Default 10 s; between 100 ms and 10 min.
	OpenFor time.Duration
	// HalfOpenProbes is how many requests a half-open breaker lets through;
	// as many successes close it, one failure re-opens it. Default 1;
	// between 1 and 100.
	HalfOpenProbes int
}

// Limits are concurrency thresholds for a whole upstream service (Envoy's
// circuit-breaking thresholds). An acquire beyond one fails at once with
// [ErrOverflow]. Zero means unlimited.
type Limits struct {
	// MaxConnections bounds open connections. Default 1024.
	MaxConnections int
	// MaxPending bounds requests waiting for a connection or stream.
	// Default 1024.
	MaxPending int
	// MaxRequests bounds requests in flight. Default 1024.
	MaxRequests int
	// MaxRetries bounds retries in flight. Default 128 (the retry budget is
	// the main guard; this one stops bursts).
	MaxRetries int
}

// Outlier configures passive outlier detection: an endpoint that fails
// repeatedly is ejected from balancing for a while.
type Outlier struct {
	// Consecutive5xx ejects after this many 5xx results (including connect
	// failures, resets and timeouts) in a row. Default 0 (off); at most 1000.
	Consecutive5xx int
	// ConsecutiveGatewayErrors ejects after this many 502/503/504, connect
	// failures, resets, timeouts or gRPC UNAVAILABLE in a row. Default 5;
	// 0: off; at most 1000.
	ConsecutiveGatewayErrors int
	// ConsecutiveConnectFailures ejects after this many failed connects
	// in a row. Default 0 (off); at most 1000.
	ConsecutiveConnectFailures int
	// BaseEjection is the ejection time; the n-th ejection lasts n times
	// as long, capped at MaxEjection. Default 30 s; between 1 s and
	// MaxEjection.
	BaseEjection time.Duration
	// MaxEjection caps one ejection. Default 300 s; at most 1 h.
	MaxEjection time.Duration
	// MaxEjectionPercent caps the share of a service's endpoints ejected at
	// once: floor(endpoints × percent / 100). A service with one endpoint
	// never has it ejected. Default 50; between 0 and 100.
	MaxEjectionPercent int
	// Interval is how long an endpoint must stay healthy for its ejection
	// multiplier to drop by one. Default 10 s; between 1 s and 10 min.
	Interval time.Duration
}

// Fault injects delays and aborts into a share of requests, for testing a
// caller's resilience. The zero value injects nothing.
type Fault struct {
	// DelayPercent of requests (0-100) wait Delay before being forwarded.
	DelayPercent float64
	// Delay is the injected delay; positive and at most 60 s when
	// DelayPercent is set.
	Delay time.Duration
	// AbortPercent of requests (0-100) are answered with AbortStatus
	// without being forwarded.
	AbortPercent float64
	// AbortStatus is the HTTP status of an injected abort (200-599);
	// required when AbortPercent is set.
	AbortStatus int
	// AbortGRPCStatus is the status gRPC callers get (1-16). 0: derived
	// from AbortStatus as gRPC's HTTP mapping does.
	AbortGRPCStatus codes.Code
}

// RateLimit is a local token bucket per inbound route; a request over the
// limit is answered 429. The zero value means no limit.
type RateLimit struct {
	// PerSecond is the sustained rate; 0: no limit; at most 1e6.
	PerSecond float64
	// Burst is the bucket size. 0: ceil(PerSecond), at least 1.
	Burst int
}

// DefaultPolicy returns the settings used when nothing is configured.
func DefaultPolicy() Policy {
	return Policy{
		Timeouts: Timeouts{Connect: time.Second, Overall: 15 * time.Second, Idle: 5 * time.Minute},
		Retry: Retry{
			MaxAttempts:   3,
			On:            OnConnectFailure | OnRefusedStream | OnReset | OnUnavailable,
			BackoffBase:   25 * time.Millisecond,
			BackoffMax:    250 * time.Millisecond,
			RetryAfterMax: 10 * time.Second,
			BufferLimit:   64 << 10,
		},
		Budget:  Budget{Ratio: 0.2, MinPerSecond: 10, Window: 10 * time.Second},
		Breaker: Breaker{ConsecutiveFailures: 5, MinRequests: 20, Window: 10 * time.Second, OpenFor: 10 * time.Second, HalfOpenProbes: 1},
		Limits:  Limits{MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 128},
		Outlier: Outlier{
			ConsecutiveGatewayErrors: 5,
			BaseEjection:             30 * time.Second,
			MaxEjection:              300 * time.Second,
			MaxEjectionPercent:       50,
			Interval:                 10 * time.Second,
		},
	}
}

// FieldError is one invalid setting.
type FieldError struct {
	Path    string // e.g. "retry.maxAttempts"
	Message string // e.g. "must be between 1 and 10"
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Message }

// FieldErrors lists every invalid setting of a Policy.
type FieldErrors []*FieldError

func (es FieldErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.As find each *FieldError.
func (es FieldErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

type validator struct{ errs FieldErrors }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) intRange(path string, x, lo, hi int) {
	if x < lo || x > hi {
		v.add(path, "must be between %d and %d", lo, hi)
	}
}

func (v *validator) floatRange(path string, x, lo, hi float64) {
	if !(x >= lo && x <= hi) { // also catches NaN
		v.add(path, "must be between %g and %g", lo, hi)
	}
}

func (v *validator) durRange(path string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		v.add(path, "must be between %v and %v", lo, hi)
	}
}

// Validate reports every invalid setting, each with its field path, as
// [FieldErrors]; nil if the policy is usable.
func (p Policy) Validate() error {
	var v validator
	p.Timeouts.validate(&v)
	p.Retry.validate(&v)
	p.Budget.validate(&v)
	p.Breaker.validate(&v)
	p.Limits.validate(&v)
	p.Outlier.validate(&v)
	p.Fault.validate(&v)
	p.RateLimit.validate(&v)
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

const maxTimeout = 24 * time.Hour

func (t Timeouts) validate(v *validator) {
	v.durRange("timeouts.connect", t.Connect, time.Millisecond, time.Minute)
	v.durRange("timeouts.perTry", t.PerTry, 0, maxTimeout)
	v.durRange("timeouts.overall", t.Overall, 0, maxTimeout)
	v.durRange("timeouts.idle", t.Idle, 0, maxTimeout)
	if t.PerTry > 0 && t.Overall > 0 && t.PerTry > t.Overall {
		v.add("timeouts.perTry", "must not exceed timeouts.overall (%v)", t.Overall)
	}
}

func (r Retry) validate(v *validator) {
	v.intRange("retry.maxAttempts", r.MaxAttempts, 1, 10)
	if r.On&^allConditions != 0 {
		v.add("retry.on", "unknown condition bits %#x", uint32(r.On&^allConditions))
	}
	for i, s := range r.Statuses {
		if s < 400 || s > 599 {
			v.add(fmt.Sprintf("retry.statuses[%d]", i), "must be between 400 and 599")
		}
	}
	for i, c := range r.GRPCCodes {
		if c < 1 || c > 16 {
			v.add(fmt.Sprintf("retry.grpcCodes[%d]", i), "must be between 1 and 16")
		}
	}
	v.durRange("retry.backoffMax", r.BackoffMax, time.Millisecond, time.Minute)
	if r.BackoffBase < time.Millisecond || (r.BackoffMax >= time.Millisecond && r.BackoffBase > r.BackoffMax) {
		v.add("retry.backoffBase", "must be between 1ms and retry.backoffMax (%v)", r.BackoffMax)
	}
	v.durRange("retry.retryAfterMax", r.RetryAfterMax, 0, time.Minute)
	v.intRange("retry.bufferLimit", r.BufferLimit, 0, 16<<20)
	for i, m := range r.IdempotentGRPCMethods {
		if err := validGRPCMethodPattern(m); err != nil {
			v.add(fmt.Sprintf("retry.idempotentGRPCMethods[%d]", i), "%v", err)
		}
	}
}

func validGRPCMethodPattern(m string) error {
	svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
	if !strings.HasPrefix(m, "/") || !ok || svc == "" || method == "" || strings.Contains(method, "/") {
		return errors.New(`must be "/package.Service/Method" or "/package.Service/*"`)
	}
	if strings.Contains(method, "*") && method != "*" {
		return errors.New(`a wildcard must be the whole method name ("/package.Service/*")`)
	}
	return nil
}

func (b Budget) validate(v *validator) {
	v.floatRange("budget.ratio", b.Ratio, 0, 1)
	v.intRange("budget.minPerSecond", b.MinPerSecond, 0, 10000)
	v.durRange("budget.window", b.Window, time.Second, time.Minute)
}

func (b Breaker) validate(v *validator) {
	v.intRange("breaker.consecutiveFailures", b.ConsecutiveFailures, 0, 1000)
	v.floatRange("breaker.failureRatio", b.FailureRatio, 0, 1)
	if b.FailureRatio > 0 {
		v.intRange("breaker.minRequests", b.MinRequests, 1, 1_000_000)
	}
	v.durRange("breaker.window", b.Window, time.Second, 10*time.Minute)
	v.durRange("breaker.openFor", b.OpenFor, 100*time.Millisecond, 10*time.Minute)
	v.intRange("breaker.halfOpenProbes", b.HalfOpenProbes, 1, 100)
}

func (l Limits) validate(v *validator) {
	const hi = 1 << 30
	v.intRange("limits.maxConnections", l.MaxConnections, 0, hi)
	v.intRange("limits.maxPending", l.MaxPending, 0, hi)
	v.intRange("limits.maxRequests", l.MaxRequests, 0, hi)
	v.intRange("limits.maxRetries", l.MaxRetries, 0, hi)
}

func (o Outlier) validate(v *validator) {
	v.intRange("outlier.consecutive5xx", o.Consecutive5xx, 0, 1000)
	v.intRange("outlier.consecutiveGatewayErrors", o.ConsecutiveGatewayErrors, 0, 1000)
	v.intRange("outlier.consecutiveConnectFailures", o.ConsecutiveConnectFailures, 0, 1000)
	v.durRange("outlier.maxEjection", o.MaxEjection, time.Second, time.Hour)
	if o.BaseEjection < time.Second || (o.MaxEjection >= time.Second && o.BaseEjection > o.MaxEjection) {
		v.add("outlier.baseEjection", "must be between 1s and outlier.maxEjection (%v)", o.MaxEjection)
	}
	v.intRange("outlier.maxEjectionPercent", o.MaxEjectionPercent, 0, 100)
	v.durRange("outlier.interval", o.Interval, time.Second, 10*time.Minute)
}

func (f Fault) validate(v *validator) {
	v.floatRange("fault.delayPercent", f.DelayPercent, 0, 100)
	v.floatRange("fault.abortPercent", f.AbortPercent, 0, 100)
	if f.DelayPercent > 0 {
		v.durRange("fault.delay", f.Delay, time.Nanosecond, time.Minute)
	}
	if f.AbortPercent > 0 && (f.AbortStatus < 200 || f.AbortStatus > 599) {
		v.add("fault.abortStatus", "must be between 200 and 599 when fault.abortPercent is set")
	}
	if f.AbortGRPCStatus > 16 {
		v.add("fault.abortGRPCStatus", "must be between 0 and 16")
	}
}

func (r RateLimit) validate(v *validator) {
	v.floatRange("rateLimit.perSecond", r.PerSecond, 0, 1e6)
	v.intRange("rateLimit.burst", r.Burst, 0, 1<<30)
}

// idempotentMethods are the HTTP methods RFC 9110 §9.2.2 defines as
// idempotent; only they are retried after they may have reached the
// upstream.
func idempotentMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}
