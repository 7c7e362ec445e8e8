package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/causeway-mesh/causeway/resilience"
)

// Resilience overrides the resilience policy (package resilience): every
// field is optional, and a field left out keeps the value beneath it. The
// layers, lowest first: resilience.DefaultPolicy, the file's top-level
// `resilience`, `upstreams.NAME.resilience`, then what the control plane
// sets for the service and the matched route. Durations are strings
// ("250ms"); defaults are documented on resilience.Policy.
type Resilience struct {
	Timeouts  *TimeoutsSpec  `json:"timeouts,omitempty"`
	Retry     *RetrySpec     `json:"retry,omitempty"`
	Budget    *BudgetSpec    `json:"budget,omitempty"`
	Breaker   *BreakerSpec   `json:"breaker,omitempty"`
	Limits    *LimitsSpec    `json:"limits,omitempty"`
	Outlier   *OutlierSpec   `json:"outlier,omitempty"`
	Fault     *FaultSpec     `json:"fault,omitempty"`
	RateLimit *RateLimitSpec `json:"rateLimit,omitempty"`
}

// TimeoutsSpec overrides resilience.Timeouts.
type TimeoutsSpec struct {
	Connect *Duration `json:"connect,omitempty"`
	PerTry  *Duration `json:"perTry,omitempty"`
	Overall *Duration `json:"overall,omitempty"`
	Idle    *Duration `json:"idle,omitempty"`
}

// RetrySpec overrides resilience.Retry. On lists conditions:
// connect-failure, refused-stream, reset, gateway-error, unavailable,
// per-try-timeout.
type RetrySpec struct {
	MaxAttempts           *int      `json:"maxAttempts,omitempty"`
	On                    []string  `json:"on,omitempty"`
	Statuses              []int     `json:"statuses,omitempty"`
	GRPCCodes             []uint32  `json:"grpcCodes,omitempty"`
	BackoffBase           *Duration `json:"backoffBase,omitempty"`
	BackoffMax            *Duration `json:"backoffMax,omitempty"`
	RetryAfterMax         *Duration `json:"retryAfterMax,omitempty"`
	BufferLimit           *int      `json:"bufferLimit,omitempty"`
	IdempotentGRPCMethods []string  `json:"idempotentGrpcMethods,omitempty"`
}

// BudgetSpec overrides resilience.Budget.
type BudgetSpec struct {
	Ratio        *float64  `json:"ratio,omitempty"`
	MinPerSecond *int      `json:"minPerSecond,omitempty"`
	Window       *Duration `json:"window,omitempty"`
}

// BreakerSpec overrides resilience.Breaker.
type BreakerSpec struct {
	ConsecutiveFailures *int      `json:"consecutiveFailures,omitempty"`
	FailureRatio        *float64  `json:"failureRatio,omitempty"`
	MinRequests         *int      `json:"minRequests,omitempty"`
	Window              *Duration `json:"window,omitempty"`
	OpenFor             *Duration `json:"openFor,omitempty"`
	HalfOpenProbes      *int      `json:"halfOpenProbes,omitempty"`
}

// LimitsSpec overrides resilience.Limits (0: unlimited).
type LimitsSpec struct {
	MaxConnections *int `json:"maxConnections,omitempty"`
	MaxPending     *int `json:"maxPending,omitempty"`
	MaxRequests    *int `json:"maxRequests,omitempty"`
	MaxRetries     *int `json:"maxRetries,omitempty"`
}

// OutlierSpec overrides resilience.Outlier.
type OutlierSpec struct {
	Consecutive5xx             *int      `json:"consecutive5xx,omitempty"`
	ConsecutiveGatewayErrors   *int      `json:"consecutiveGatewayErrors,omitempty"`
	ConsecutiveConnectFailures *int      `json:"consecutiveConnectFailures,omitempty"`
	BaseEjection               *Duration `json:"baseEjection,omitempty"`
	MaxEjection                *Duration `json:"maxEjection,omitempty"`
	MaxEjectionPercent         *int      `json:"maxEjectionPercent,omitempty"`
	Interval                   *Duration `json:"interval,omitempty"`
}

// FaultSpec sets resilience.Fault (off unless given).
type FaultSpec struct {
	DelayPercent    float64  `json:"delayPercent,omitempty"`
	Delay           Duration `json:"delay,omitzero"`
	AbortPercent    float64  `json:"abortPercent,omitempty"`
	AbortStatus     int      `json:"abortStatus,omitempty"`
	AbortGRPCStatus uint32   `json:"abortGrpcStatus,omitempty"`
}

// RateLimitSpec sets resilience.RateLimit (off unless given).
type RateLimitSpec struct {
	PerSecond float64 `json:"perSecond"`
	Burst     int     `json:"burst,omitempty"`
}

// Apply returns base with the overrides of r. r may be nil.
func (r *Resilience) Apply(base resilience.Policy) (resilience.Policy, error) {
	p := base
	if r == nil {
		return p, nil
	}
	if t := r.Timeouts; t != nil {
		setDur(&p.Timeouts.Connect, t.Connect)
		setDur(&p.Timeouts.PerTry, t.PerTry)
		setDur(&p.Timeouts.Overall, t.Overall)
		setDur(&p.Timeouts.Idle, t.Idle)
	}
	if t := r.Retry; t != nil {
		set(&p.Retry.MaxAttempts, t.MaxAttempts)
		if t.On != nil {
			on, err := resilience.ParseConditions(t.On)
			if err != nil {
				return p, fmt.Errorf("retry.on: %w", err)
			}
			p.Retry.On = on
		}
		if t.Statuses != nil {
			p.Retry.Statuses = t.Statuses
		}
		if t.GRPCCodes != nil {
			p.Retry.GRPCCodes = make([]codes.Code, len(t.GRPCCodes))
			for i, c := range t.GRPCCodes {
				p.Retry.GRPCCodes[i] = codes.Code(c)
			}
		}
		setDur(&p.Retry.BackoffBase, t.BackoffBase)
		setDur(&p.Retry.BackoffMax, t.BackoffMax)
		setDur(&p.Retry.RetryAfterMax, t.RetryAfterMax)
		set(&p.Retry.BufferLimit, t.BufferLimit)
		if t.IdempotentGRPCMethods != nil {
			p.Retry.IdempotentGRPCMethods = t.IdempotentGRPCMethods
		}
	}
	if t := r.Budget; t != nil {
		set(&p.Budget.Ratio, t.Ratio)
		set(&p.Budget.MinPerSecond, t.MinPerSecond)
		setDur(&p.Budget.Window, t.Window)
	}
	if t := r.Breaker; t != nil {
		set(&p.Breaker.ConsecutiveFailures, t.ConsecutiveFailures)
		set(&p.Breaker.FailureRatio, t.FailureRatio)
		set(&p.Breaker.MinRequests, t.MinRequests)
		setDur(&p.Breaker.Window, t.Window)
		setDur(&p.Breaker.OpenFor, t.OpenFor)
		set(&p.Breaker.HalfOpenProbes, t.HalfOpenProbes)
	}
	if t := r.Limits; t != nil {
		set(&p.Limits.MaxConnections, t.MaxConnections)
		set(&p.Limits.MaxPending, t.MaxPending)
		set(&p.Limits.MaxRequests, t.MaxRequests)
		set(&p.Limits.MaxRetries, t.MaxRetries)
	}
	if t := r.Outlier; t != nil {
		set(&p.Outlier.Consecutive5xx, t.Consecutive5xx)
		set(&p.Outlier.ConsecutiveGatewayErrors, t.ConsecutiveGatewayErrors)
		set(&p.Outlier.ConsecutiveConnectFailures, t.ConsecutiveConnectFailures)
		setDur(&p.Outlier.BaseEjection, t.BaseEjection)
		setDur(&p.Outlier.MaxEjection, t.MaxEjection)
		set(&p.Outlier.MaxEjectionPercent, t.MaxEjectionPercent)
		setDur(&p.Outlier.Interval, t.Interval)
	}
	if t := r.Fault; t != nil {
		p.Fault = resilience.Fault{DelayPercent: t.DelayPercent, Delay: t.Delay.Duration, AbortPercent: t.AbortPercent,
			AbortStatus: t.AbortStatus, AbortGRPCStatus: codes.Code(t.AbortGRPCStatus)}
	}
	if t := r.RateLimit; t != nil {
		p.RateLimit = resilience.RateLimit{PerSecond: t.PerSecond, Burst: t.Burst}
	}
	return p, nil
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func setDur(dst *time.Duration, v *Duration) {
	if v != nil {
		*dst = v.Duration
	}
}

// ResilienceFor returns the file's policy for service: defaults, the
// top-level overrides, then the service's.
func (c *Config) ResilienceFor(service string) (resilience.Policy, error) {
	p, err := c.Resilience.Apply(resilience.DefaultPolicy())
	if err != nil {
		return p, err
	}
	if u, ok := c.Upstreams[service]; ok {
		return u.Resilience.Apply(p)
	}
	return p, nil
}

// validateResilience checks every resilience layer of the file as it would
// be applied, reporting errors under the path of the layer that set them.
func (c *Config) validateResilience(v *collector) {
	top, err := c.Resilience.Apply(resilience.DefaultPolicy())
	if err != nil {
		v.add("resilience", "%v", err)
		return
	}
	addAll := func(prefix string, err error) {
		var fes resilience.FieldErrors
		if errors.As(err, &fes) {
			for _, fe := range fes {
				v.add(prefix+"."+fe.Path, "%s", fe.Message)
			}
		} else if err != nil {
			v.add(prefix, "%v", err)
		}
	}
	addAll("resilience", top.Validate())
	for name, u := range c.Upstreams {
		p, err := u.Resilience.Apply(top)
		if err != nil {
			v.add("upstreams."+name+".resilience", "%v", err)
			continue
		}
		if u.Resilience != nil {
			addAll("upstreams."+name+".resilience", p.Validate())
		}
		seen := map[string]bool{}
		for i, rt := range u.Routes {
			at := fmt.Sprintf("upstreams.%s.routes[%d]", name, i)
			switch {
			case rt.Name == "":
				v.add(at+".name", "required")
			case seen[rt.Name]:
				v.add(at+".name", "%q is used by an earlier route", rt.Name)
			}
			seen[rt.Name] = true
			if rt.PathPrefix != "" && !strings.HasPrefix(rt.PathPrefix, "/") {
				v.add(at+".pathPrefix", "%q: must start with /", rt.PathPrefix)
			}
			if rt.Method != "" && strings.ToUpper(rt.Method) != rt.Method {
				v.add(at+".method", "%q: want an upper-case HTTP method", rt.Method)
			}
			rp, err := rt.Resilience.Apply(p)
			if err != nil {
				v.add(at+".resilience", "%v", err)
				continue
			}
			addAll(at+".resilience", rp.Validate())
		}
	}
	if rl := c.Inbound.RateLimit; rl != nil {
		p := resilience.DefaultPolicy()
		p.RateLimit = resilience.RateLimit{PerSecond: rl.PerSecond, Burst: rl.Burst}
		if rl.PerSecond <= 0 {
			v.add("inbound.rateLimit.perSecond", "must be positive")
		}
		var fes resilience.FieldErrors
		if errors.As(p.Validate(), &fes) {
			for _, fe := range fes {
				v.add("inbound."+fe.Path, "%s", fe.Message)
			}
		}
	}
}

// RouteFor returns the file's first route of service that matches a
// request, or nil.
func (c *Config) RouteFor(service, method, path string) *Route {
	u, ok := c.Upstreams[service]
	if !ok {
		return nil
	}
	for i := range u.Routes {
		if u.Routes[i].Matches(method, path) {
			return &u.Routes[i]
		}
	}
	return nil
}
