package resilience

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Conditions is a set of retry conditions.
type Conditions uint32

// Retry conditions. Their names (for configuration) are given by
// [ParseConditions] and String.
const (
	// OnConnectFailure: no connection could be opened.
	OnConnectFailure Conditions = 1 << iota
	// OnRefusedStream: HTTP/2 REFUSED_STREAM, or a GOAWAY that excluded
	// the stream.
	OnRefusedStream
	// OnReset: the connection or stream was lost before any response.
	OnReset
	// OnGatewayError: status 502, 503 or 504.
	OnGatewayError
	// OnUnavailable: status 503 or grpc-status UNAVAILABLE.
	OnUnavailable
	// OnPerTryTimeout: the attempt's own deadline (Timeouts.PerTry) passed
	// while the request's deadline had time left.
	OnPerTryTimeout

	allConditions = OnConnectFailure | OnRefusedStream | OnReset | OnGatewayError | OnUnavailable | OnPerTryTimeout
)

var conditionNames = []struct {
	c    Conditions
	name string
}{
	{OnConnectFailure, "connect-failure"},
	{OnRefusedStream, "refused-stream"},
	{OnReset, "reset"},
	{OnGatewayError, "gateway-error"},
	{OnUnavailable, "unavailable"},
	{OnPerTryTimeout, "per-try-timeout"},
}

// ParseConditions parses condition names: connect-failure,
// refused-stream, reset, gateway-error, unavailable, per-try-timeout.
func ParseConditions(names []string) (Conditions, error) {
	var c Conditions
	for _, n := range names {
		i := slices.IndexFunc(conditionNames, func(cn struct {
			c    Conditions
			name string
		}) bool {
			return cn.name == n
		})
		if i < 0 {
			return 0, fmt.Errorf("unknown retry condition %q", n)
		}
		c |= conditionNames[i].c
	}
	return c, nil
}

func (c Conditions) String() string {
	var names []string
	for _, cn := range conditionNames {
		if c&cn.c != 0 {
			names = append(names, cn.name)
		}
	}
	return strings.Join(names, ",")
}

// Request is what a retry decision needs to know about the request.
type Request struct {
	// Method is the HTTP method.
	Method string
	// GRPC is set for gRPC calls; Path is then the gRPC method path.
	GRPC bool
	Path string
	// Replayable is set when the body can be sent again: the request has
	// none, or its [ReplayBody] kept all of it.
	Replayable bool
	// PerTryTimedOut is set when the attempt ended because its per-try
	// deadline passed (not the request's).
	PerTryTimedOut bool
}

// Reason says why a request is or is not retried; metrics use its String.
type Reason uint8

// Reasons.
const (
	ReasonRetry             Reason = iota // the attempt is retried
	ReasonSucceeded                       // nothing to retry
	ReasonExcluded                        // the client went away or sent a broken request
	ReasonNotRetriable                    // no enabled condition matches the result
	ReasonAttemptsExhausted               // MaxAttempts reached
	ReasonNotIdempotent                   // the request may have reached the upstream and is not idempotent
	ReasonBodyNotReplayable               // the body was larger than the buffer or was streamed
	ReasonRetryAfterTooLong               // the upstream asked to wait longer than RetryAfterMax
	ReasonNoTimeLeft                      // the request's deadline passes before the retry could start
	ReasonBudgetExhausted                 // the retry budget is spent (decided by the caller with Budget.Withdraw)
	ReasonOverflow                        // Limits.MaxRetries reached (decided by the caller)
)

var reasonNames = [...]string{
	ReasonRetry:             "retry",
	ReasonSucceeded:         "succeeded",
	ReasonExcluded:          "excluded",
	ReasonNotRetriable:      "not_retriable",
	ReasonAttemptsExhausted: "attempts_exhausted",
	ReasonNotIdempotent:     "not_idempotent",
	ReasonBodyNotReplayable: "body_not_replayable",
	ReasonRetryAfterTooLong: "retry_after_too_long",
	ReasonNoTimeLeft:        "no_time_left",
	ReasonBudgetExhausted:   "budget_exhausted",
	ReasonOverflow:          "overflow",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Decide says whether the attempt number attempt (1 for the first try)
// that ended with res may be tried again. It does not consult the budget,
// the concurrency limits or the deadline: the caller does that next.
//
// A request that may have reached the upstream is retried only when it is
// idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE; a gRPC method listed
// in IdempotentGRPCMethods). A request that provably did not (res.Unsent)
// is retried whatever its method. Either way its body must be replayable.
func (p Retry) Decide(req Request, res Result, attempt int) Reason {
	switch {
	case res.Outcome == Excluded:
		return ReasonExcluded
	case res.Outcome == Success && !p.matchesConfigured(res):
		return ReasonSucceeded
	case !p.matches(req, res):
		return ReasonNotRetriable
	case attempt >= p.MaxAttempts:
		return ReasonAttemptsExhausted
	case !res.Unsent && !p.idempotent(req):
		return ReasonNotIdempotent
	case !res.Unsent && res.Kind == KindReset && !req.GRPC && !safeMethod(req.Method):
		// A reset mid-request says nothing about whether the upstream
		// acted: only a safe method (no effect) is sent again, so that a
		// PUT or DELETE is never applied twice by the mesh.
		return ReasonNotIdempotent
	case !req.Replayable:
		return ReasonBodyNotReplayable
	}
	return ReasonRetry
}

// matches reports whether an enabled condition covers res.
func (p Retry) matches(req Request, res Result) bool {
	on := p.On
	switch res.Kind {
	case KindConnectFailure:
		return on&OnConnectFailure != 0
	case KindRefusedStream:
		return on&(OnRefusedStream|OnReset) != 0
	case KindReset:
		return on&OnReset != 0
	case KindTimeout:
		return on&OnPerTryTimeout != 0 && req.PerTryTimedOut
	case KindGRPCUnavailable:
		if on&OnUnavailable != 0 {
			return true
		}
	case KindGateway:
		if on&OnGatewayError != 0 || (on&OnUnavailable != 0 && res.Status == http.StatusServiceUnavailable) {
			return true
		}
	}
	return p.matchesConfigured(res)
}

// matchesConfigured reports whether res has a status or gRPC code listed
// in Statuses or GRPCCodes.
func (p Retry) matchesConfigured(res Result) bool {
	if res.Status != 0 && slices.Contains(p.Statuses, res.Status) {
		return true
	}
	return res.HasGRPCStatus && slices.Contains(p.GRPCCodes, res.GRPCStatus)
}

func (p Retry) idempotent(req Request) bool {
	if req.GRPC {
		return p.GRPCMethodIdempotent(req.Path)
	}
	return idempotentMethod(req.Method)
}

// GRPCMethodIdempotent reports whether the gRPC method path
// ("/pkg.Service/Method") is listed in IdempotentGRPCMethods, by name or
// by its service's wildcard.
func (p Retry) GRPCMethodIdempotent(path string) bool {
	for _, m := range p.IdempotentGRPCMethods {
		if m == path {
			return true
		}
		if svc, ok := strings.CutSuffix(m, "/*"); ok && strings.HasPrefix(path, svc+"/") {
			return true
		}
	}
	return false
}

// Rand is the random source of backoff and fault decisions;
// *math/rand/v2.Rand satisfies it. A nil Rand means the global source.
type Rand interface {
	Int64N(n int64) int64
	Float64() float64
}

type globalRand struct{}

func (globalRand) Int64N(n int64) int64 { return rand.Int64N(n) } //nolint:gosec // jitter needs no unpredictability
func (globalRand) Float64() float64     { return rand.Float64() } //nolint:gosec

func orGlobal(r Rand) Rand {
	if r == nil {
		return globalRand{}
	}
	return r
}

// Backoff returns the wait before retry number retry (1 for the first
// retry) with full jitter: uniform in [0, min(BackoffMax,
// BackoffBase·2^(retry-1))].
func (p Retry) Backoff(retry int, rnd Rand) time.Duration {
	ceiling := p.BackoffMax
	if retry < 1 {
		retry = 1
	}
	if n := retry - 1; n < 63 && p.BackoffBase > 0 && p.BackoffBase <= ceiling>>n {
		ceiling = p.BackoffBase << n // no overflow: at most BackoffMax
	}
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(orGlobal(rnd).Int64N(int64(ceiling) + 1))
}

// Delay returns how long to wait before retry number retry: the jittered
// backoff, or the upstream's Retry-After (from the failed attempt's
// response header h, which may be nil) if that is longer. It returns
// ReasonRetryAfterTooLong when Retry-After exceeds RetryAfterMax, and
// ReasonNoTimeLeft when the wait would end after deadline (zero: none).
func (p Retry) Delay(retry int, h http.Header, now, deadline time.Time, rnd Rand) (time.Duration, Reason) {
	d := p.Backoff(retry, rnd)
	if p.RetryAfterMax > 0 && h != nil {
		if v := h.Get("Retry-After"); v != "" {
			if ra, ok := ParseRetryAfter(v, now); ok {
				if ra > p.RetryAfterMax {
					return 0, ReasonRetryAfterTooLong
				}
				d = max(d, ra)
			}
		}
	}
	if !deadline.IsZero() && !now.Add(d).Before(deadline) {
		return 0, ReasonNoTimeLeft
	}
	return d, ReasonRetry
}

// ParseRetryAfter parses a Retry-After value, delay-seconds or an
// HTTP-date (RFC 9110 §10.2.3), into a wait from now. A date in the past
// is a zero wait. It returns false when v is neither.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return time.Duration(1<<63 - 1), true
			}
			return 0, false
		}
		if n > uint64((1<<63-1)/int64(time.Second)) {
			return time.Duration(1<<63 - 1), true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// Sleep waits for d or until ctx is done, whichever is first, and returns
// ctx's error in the latter case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// safeMethod reports whether an HTTP method has no effect on the server
// (RFC 9110 §9.2.1): GET, HEAD, OPTIONS, TRACE.
func safeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}
