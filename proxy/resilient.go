package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/causeway-mesh/causeway/control/xdsclient"
	"github.com/causeway-mesh/causeway/proxy/cluster"
	"github.com/causeway-mesh/causeway/proxy/config"
	"github.com/causeway-mesh/causeway/resilience"
)

// Resilience on the outbound path (package resilience holds the blocks).
//
// The order, per request, is fixed:
//
//  1. route resolves the policy of the target service and matched route
//     (policyFor) and answers injected faults (faults layer);
//  2. resilientTransport, under the forwarder, bounds the request
//     (overall timeout, gRPC deadline), takes a concurrency slot for the
//     service, deposits in the service's retry budget, makes the body
//     replayable up to the buffer limit, then runs attempts: pick an
//     endpoint the breakers and outlier detection allow (avoiding the last
//     one), stamp x-mesh-attempt and the remaining grpc-timeout, send under
//     the per-try deadline, classify the result once (resilience.Classify)
//     and report it to the endpoint's breaker and outlier detector, and
//     decide: retry (conditions, attempts, idempotency or proof the
//     upstream never saw it, replayable body), within the budget and the
//     retry slots, after a jittered backoff or Retry-After;
//  3. the response body is watched for the idle timeout, and releases the
//     concurrency slot when it ends.
//
// The inbound path applies the local rate limits (rateLimit layer).

// HeaderAttempt numbers the tries of a request: 1, 2, …
const HeaderAttempt = "X-Mesh-Attempt"

// Errors the resilience layers answer with.
var (
	ErrCircuitOpen     = &Error{Status: 503, Code: "circuit_open", GRPC: codes.Unavailable}
	ErrOverflow        = &Error{Status: 503, Code: "overflow", GRPC: codes.Unavailable}
	ErrBudgetExhausted = &Error{Status: 503, Code: "retry_budget_exhausted", GRPC: codes.Unavailable}
	ErrRateLimited     = &Error{Status: 429, Code: "rate_limited", GRPC: codes.ResourceExhausted}
	ErrFaultAbort      = &Error{Status: 503, Code: "fault_injected", GRPC: codes.Unavailable}
)

// policies holds the per-service policies of one configuration (file and
// control plane), rebuilt with the routing table.
type policies struct {
	byService map[string]resilience.Policy
	fallback  resilience.Policy // services the configuration does not name
}

// buildPolicies resolves the file's layers and the control plane's
// service-level settings for every service known.
func (s *Sidecar) buildPolicies(names []string, m *xdsclient.Model) *policies {
	cfg := s.cfg.Load()
	top, err := cfg.Resilience.Apply(resilience.DefaultPolicy())
	if err != nil { // validated at load; keep the defaults if not
		top = resilience.DefaultPolicy()
	}
	p := &policies{byService: make(map[string]resilience.Policy, len(names)), fallback: top}
	for _, name := range names {
		pol, err := cfg.ResilienceFor(name)
		if err != nil {
			pol = top
		}
		if m != nil {
			if ms, ok := m.Services[name]; ok {
				pol = applyModelService(pol, &ms)
			}
		}
		p.byService[name] = pol
	}
	return p
}

func (p *policies) lookup(service string) resilience.Policy {
	if pol, ok := p.byService[service]; ok {
		return pol
	}
	return p.fallback
}

// applyModelService layers the control plane's cluster settings (Envoy
// circuit-breaker thresholds, outlier detection, retry budget, Causeway
// breaker, connect timeout) over pol.
func applyModelService(pol resilience.Policy, ms *xdsclient.Service) resilience.Policy {
	if ms.ConnectTimeout > 0 {
		pol.Timeouts.Connect = ms.ConnectTimeout
	}
	l := ms.Limits
	setNZ(&pol.Limits.MaxConnections, l.MaxConnections)
	setNZ(&pol.Limits.MaxPending, l.MaxPendingRequests)
	setNZ(&pol.Limits.MaxRequests, l.MaxRequests)
	setNZ(&pol.Limits.MaxRetries, l.MaxRetries)
	if b := ms.RetryBudget; b != nil {
		pol.Budget.Ratio = b.BudgetPercent / 100
		if b.MinPerSecond > 0 {
			pol.Budget.MinPerSecond = int(b.MinPerSecond)
		}
		if b.Window > 0 {
			pol.Budget.Window = b.Window
		}
	}
	if o := ms.Outlier; o != nil {
		pol.Outlier.Consecutive5xx = int(o.Consecutive5xx)
		pol.Outlier.ConsecutiveGatewayErrors = int(o.ConsecutiveGatewayFailure)
		pol.Outlier.BaseEjection = o.BaseEjectionTime
		pol.Outlier.MaxEjection = o.MaxEjectionTime
		pol.Outlier.MaxEjectionPercent = int(o.MaxEjectionPercent)
		if o.Interval > 0 {
			pol.Outlier.Interval = o.Interval
		}
	}
	if b := ms.Breaker; b != nil {
		setNZ(&pol.Breaker.ConsecutiveFailures, b.ConsecutiveFailures)
		if b.FailureRatio > 0 {
			pol.Breaker.FailureRatio = b.FailureRatio
		}
		setNZ(&pol.Breaker.MinRequests, b.MinRequests)
		if b.Window > 0 {
			pol.Breaker.Window = b.Window
		}
		if b.OpenFor > 0 {
			pol.Breaker.OpenFor = b.OpenFor
		}
		setNZ(&pol.Breaker.HalfOpenProbes, b.HalfOpenProbes)
	}
	return pol
}

func setNZ(dst *int, v uint32) {
	if v > 0 {
		*dst = int(v)
	}
}

// applyRoute layers a matched route's timeout, retry policy and fault
// injection over its service's policy.
func applyRoute(pol resilience.Policy, rt *xdsclient.Route) resilience.Policy {
	if rt == nil {
		return pol
	}
	if rt.Timeout > 0 {
		pol.Timeouts.Overall = rt.Timeout
	}
	if r := rt.Retry; r != nil {
		pol.Retry.MaxAttempts = min(int(r.NumRetries)+1, 10)
		on, statuses, grpcCodes := retryConditions(r)
		pol.Retry.On = on
		pol.Retry.Statuses = statuses
		pol.Retry.GRPCCodes = grpcCodes
		if r.PerTryTimeout > 0 {
			pol.Timeouts.PerTry = r.PerTryTimeout
		}
		if r.BackoffBase > 0 {
			pol.Retry.BackoffBase = r.BackoffBase
		}
		if r.BackoffMax > 0 {
			pol.Retry.BackoffMax = max(r.BackoffMax, pol.Retry.BackoffBase)
		}
	}
	if f := rt.Fault; f != nil {
		pol.Fault = resilience.Fault{DelayPercent: f.DelayPercent, Delay: time.Duration(f.Delay),
			AbortPercent: f.AbortPercent, AbortStatus: f.AbortStatus, AbortGRPCStatus: codes.Code(f.AbortGRPCStatus)}
	}
	return pol
}

// retryConditions maps Envoy's retry_on names to ours: 5xx covers gateway
// errors, resets, connect failures and every 5xx status; retriable-status-
// codes adds the route's list; the gRPC names add their codes.
func retryConditions(r *xdsclient.RetryPolicy) (resilience.Conditions, []int, []codes.Code) {
	var on resilience.Conditions
	var statuses []int
	var grpcCodes []codes.Code
	for _, c := range r.On {
		switch c {
		case "5xx":
			on |= resilience.OnGatewayError | resilience.OnReset | resilience.OnConnectFailure
			for st := 500; st <= 599; st++ {
				statuses = append(statuses, st)
			}
		case "gateway-error":
			on |= resilience.OnGatewayError
		case "reset":
			on |= resilience.OnReset
		case "connect-failure":
			on |= resilience.OnConnectFailure
		case "refused-stream":
			on |= resilience.OnRefusedStream
		case "retriable-status-codes":
			for _, st := range r.RetriableStatusCodes {
				statuses = append(statuses, int(st))
			}
		case "unavailable":
			on |= resilience.OnUnavailable
		case "cancelled":
			grpcCodes = append(grpcCodes, codes.Canceled)
		case "deadline-exceeded":
			grpcCodes = append(grpcCodes, codes.DeadlineExceeded)
		case "resource-exhausted":
			grpcCodes = append(grpcCodes, codes.ResourceExhausted)
		case "internal":
			grpcCodes = append(grpcCodes, codes.Internal)
		}
	}
	return on, statuses, grpcCodes
}

// upstreamState is a service's shared resilience state: retry budget and
// concurrency limits, rebuilt when their settings change.
type upstreamState struct {
	budgetCfg resilience.Budget
	budget    *resilience.RetryBudget
	limitsCfg resilience.Limits
	limits    *resilience.ServiceLimits
}

// upstream returns service's state for pol, creating or replacing it when
// the settings differ. Concurrent first requests agree on one state: a
// state built by a request that lost the race is dropped before anyone
// deposits into it or spends its reserve (each state starts with a full
// reserve, so two would let retries past the budget).
func (s *Sidecar) upstream(service string, pol *resilience.Policy) *upstreamState {
	v, ok := s.upstreams.Load(service)
	for {
		if !ok {
			fresh := newUpstreamState(pol)
			if v, ok = s.upstreams.LoadOrStore(service, fresh); !ok {
				return fresh
			}
			continue // another request stored one first: check it
		}
		st := v.(*upstreamState)
		if st.budgetCfg == pol.Budget && st.limitsCfg == pol.Limits {
			return st
		}
		fresh := newUpstreamState(pol)
		if s.upstreams.CompareAndSwap(service, st, fresh) {
			return fresh
		}
		v, ok = s.upstreams.Load(service)
	}
}

func newUpstreamState(pol *resilience.Policy) *upstreamState {
	return &upstreamState{
		budgetCfg: pol.Budget, budget: resilience.NewRetryBudget(pol.Budget, time.Now),
		limitsCfg: pol.Limits, limits: resilience.NewServiceLimits(pol.Limits),
	}
}

// notJudged is reported to an endpoint's breaker and outlier detector for
// an attempt that says nothing about the endpoint: not sent, or refused by
// a peer sidecar before anything was forwarded.
var notJudged = resilience.Result{Outcome: resilience.Excluded, Kind: resilience.KindNotSent}

// resilientTransport runs the attempts of one outbound request.
type resilientTransport struct {
	s    *Sidecar
	next http.RoundTripper
}

// timeoutCause marks a context the proxy cancelled because a timeout of
// its own passed (overall or per try), as opposed to the client leaving.
type timeoutCause struct{ what string }

func (c *timeoutCause) Error() string { return c.what + " timeout" }
func (c *timeoutCause) Timeout() bool { return true }

var (
	causeOverall = &timeoutCause{"request"}
	causePerTry  = &timeoutCause{"per-try"}
)

func (t *resilientTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s := t.s
	ex := exchangeFrom(r.Context())
	pol := &ex.policy
	svc := ex.service
	now := time.Now()

	deadline, err := pol.Timeouts.RequestDeadline(now, r.Header)
	if err != nil {
		return nil, ErrBadRequest.with(err)
	}
	up := s.upstream(svc.Name, pol)
	release, err := up.limits.AcquireRequest()
	if err != nil {
		return nil, ErrOverflow.with(err)
	}
	up.budget.Deposit()

	// The request's context: the client's, cancelled with causeOverall
	// when the overall deadline passes before response headers arrive.
	ctx, cancel := context.WithCancelCause(r.Context())
	var overall *time.Timer
	if !deadline.IsZero() {
		overall = time.AfterFunc(time.Until(deadline), func() { cancel(causeOverall) })
	}
	fin := &finisher{release: release, cancel: cancel}
	finish := func() {
		if overall != nil {
			overall.Stop()
		}
	}

	var body *resilience.ReplayBody
	if r.Body != nil && r.Body != http.NoBody {
		body = resilience.NewReplayBody(r.Body, pol.Retry.BufferLimit)
		fin.body = body
	}
	grpc := isGRPC(r)
	facts := resilience.Request{Method: r.Method, GRPC: grpc, Path: r.URL.Path}
	health := s.endpoints.Service(svc.Name, pol.Breaker, pol.Outlier)
	usable := func(e *cluster.Endpoint) bool { return health.Available(e.Addr) }

	var (
		last     *cluster.Endpoint
		lastResp *http.Response
		lastErr  error
		retryRel = func() {}
	)
	defer func() { retryRel() }()
	for attempt := 1; ; attempt++ {
		ep, done, err := pickAllowed(svc, health, last, usable)
		if err != nil {
			finish()
			fin.done()
			if lastResp != nil || lastErr != nil {
				return lastResp, lastErr
			}
			return nil, err
		}
		// The attempt's context: the request's, plus a per-try deadline
		// that cancels only this attempt when one applies.
		actx, acancel := ctx, context.CancelCauseFunc(func(error) {})
		var perTry *time.Timer
		if td := pol.Timeouts.TryDeadline(time.Now(), deadline); !td.IsZero() && (deadline.IsZero() || td.Before(deadline)) {
			actx, acancel = context.WithCancelCause(ctx)
			perTry = time.AfterFunc(time.Until(td), func() { acancel(causePerTry) })
		}
		// Pending: from the start of the attempt until it has a connection
		// (or stream) to be sent on; over the limit, fail fast.
		releasePending, perr := up.limits.AcquirePending()
		abandon := func() { // the attempt ends before it is sent
			done(notJudged)
			if perTry != nil {
				perTry.Stop()
			}
			acancel(nil)
			finish()
			fin.done()
		}
		if perr != nil {
			abandon()
			return nil, ErrOverflow.with(perr)
		}
		actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { releasePending() },
		})
		var out *http.Request
		if attempt > 1 {
			out = r.Clone(actx) // fresh header map: the previous try's may still be read
		} else {
			out = r.WithContext(actx)
		}
		u := *r.URL
		u.Host = ep.Addr
		out.URL = &u
		out.Header[HeaderAttempt] = []string{strconv.Itoa(attempt)}
		if grpc && !deadline.IsZero() && !resilience.SetGRPCTimeout(out.Header, time.Now(), deadline) {
			releasePending()
			abandon()
			return nil, ErrTimeout.with(causeOverall)
		}
		if body != nil {
			view, ok := body.NewAttempt()
			if !ok { // cannot happen after Decide checked Replayable; be safe
				releasePending()
				abandon()
				return lastResp, lastErr
			}
			out.Body = view
		}
		stop := ep.Start()
		resp, err := t.next.RoundTrip(out)
		stop()
		releasePending()
		if perTry != nil {
			perTry.Stop()
		}
		// Classify once; everything below uses res.
		a := resilience.Attempt{Err: err, ClientGone: r.Context().Err() != nil, ClientError: ex.bodyErr(r.Context()) != nil}
		if resp != nil {
			a.Status = resp.StatusCode
			a.GRPCStatus, a.HasGRPCStatus = resilience.GRPCStatusFrom(resp.Header)
		}
		if err != nil && errors.Is(context.Cause(actx), causePerTry) {
			err = ErrTimeout.with(causePerTry)
			a.Err = context.DeadlineExceeded
			facts.PerTryTimedOut = true
		} else {
			facts.PerTryTimedOut = false
		}
		if err != nil && errors.Is(context.Cause(ctx), causeOverall) {
			err = ErrTimeout.with(causeOverall)
			a.Err = context.DeadlineExceeded
		}
		res := resilience.Classify(a)
		if resp != nil && resp.Header.Get(HeaderError) == ErrFenced.Code {
			// The peer's sidecar refused a write without forwarding it (its
			// side lacks the quorum): not the endpoint's failure, and
			// provably unsent, so another endpoint may take it.
			done(notJudged)
			res = resilience.Result{Outcome: resilience.Failure, Kind: resilience.KindRefusedStream, Status: resp.StatusCode, Unsent: true}
		} else {
			done(res)
		}
		s.m.attempts.WithLabelValues(svc.Name, res.Outcome.String()).Inc()

		facts.Replayable = body == nil || body.Replayable()
		reason := pol.Retry.Decide(facts, res, attempt)
		var wait time.Duration
		if reason == resilience.ReasonRetry {
			retryRel()
			retryRel = func() {}
			switch rel, lerr := up.limits.AcquireRetry(); {
			case errors.Is(context.Cause(ctx), causeOverall):
				reason = resilience.ReasonNoTimeLeft
			case lerr != nil:
				reason = resilience.ReasonOverflow
			case !up.budget.Withdraw():
				rel()
				reason = resilience.ReasonBudgetExhausted
			default:
				retryRel = rel
				var h http.Header
				if resp != nil {
					h = resp.Header
				}
				wait, reason = pol.Retry.Delay(attempt, h, time.Now(), deadline, nil)
			}
		}
		if reason != resilience.ReasonRetry {
			if attempt > 1 || reason != resilience.ReasonSucceeded {
				s.m.retryDecisions.WithLabelValues(svc.Name, reason.String()).Inc()
			}
			if grpc && err == nil && overall != nil && resp.StatusCode != http.StatusSwitchingProtocols {
				// A gRPC deadline covers the whole call, its stream included:
				// the timer runs until the body ends. Other requests' overall
				// timeout ends at the response headers (the idle timeout
				// watches their bodies).
				fin.stop = overall.Stop
			} else {
				finish()
			}
			if reason == resilience.ReasonBudgetExhausted {
				s.m.budgetExhausted.WithLabelValues(svc.Name).Inc()
				if resp != nil {
					resp.Header.Set(HeaderError, ErrBudgetExhausted.Code)
				} else {
					err = ErrBudgetExhausted.with(err)
				}
			}
			if err != nil {
				acancel(nil)
				fin.done()
				return nil, err
			}
			if resp.StatusCode == http.StatusSwitchingProtocols {
				// An upgraded connection: its body is the connection, which
				// ReverseProxy needs as it is, and which lives on its own.
				release()
				context.AfterFunc(r.Context(), func() { acancel(nil) }) // ends with the client's request
				return resp, nil
			}
			// The response is the request's: the attempt's context lives
			// until its body is done.
			wb := newWatchedBody(resp.Body, pol.Timeouts.Idle, fin, func() { acancel(nil) })
			if grpc {
				wb.grpcEnd = func() bool { return endGRPCOnTimeout(ctx, deadline, resp) }
			}
			resp.Body = wb
			return resp, nil
		}
		s.m.retryDecisions.WithLabelValues(svc.Name, "retry").Inc()
		ex.span.AddRetry(attempt+1, res.Kind.String())
		if resp != nil {
			drainAndClose(resp.Body)
		}
		acancel(nil)
		lastResp, lastErr = nil, err
		last = ep
		if err := resilience.Sleep(ctx, wait); err != nil {
			finish()
			fin.done()
			if errors.Is(context.Cause(ctx), causeOverall) {
				return nil, ErrTimeout.with(causeOverall)
			}
			return nil, err
		}
	}
}

// pickAllowed picks an endpoint whose breaker lets a request through,
// trying each endpoint at most once. ErrCircuitOpen when none does.
func pickAllowed(svc *cluster.Service, health *resilience.ServiceHealth, avoid *cluster.Endpoint,
	usable func(*cluster.Endpoint) bool) (*cluster.Endpoint, func(resilience.Result), error) {
	tried := map[*cluster.Endpoint]bool{}
	ok := func(e *cluster.Endpoint) bool { return !tried[e] && usable(e) }
	for range len(svc.Endpoints) + 1 {
		ep := svc.Pick(avoid, ok)
		if ep == nil {
			break
		}
		done, err := health.Allow(ep.Addr)
		if err == nil {
			return ep, done, nil
		}
		tried[ep] = true
	}
	if len(svc.Endpoints) == 0 {
		return nil, nil, ErrNoHealthyUpstream.with(errNoEndpoints(svc.Name))
	}
	return nil, nil, ErrCircuitOpen.with(errAllOpen(svc.Name))
}

// finisher releases what a request holds once it is over: its
// concurrency slot, its replay buffer, its context.
type finisher struct {
	once    sync.Once
	release func()
	cancel  context.CancelCauseFunc
	body    *resilience.ReplayBody
	stop    func() bool // stops a deadline timer still running, if any
}

func (f *finisher) done() {
	f.once.Do(func() {
		if f.stop != nil {
			f.stop()
		}
		f.release()
		if f.body != nil {
			_ = f.body.Close()
		}
		f.cancel(nil)
	})
}

// watchedBody is a response body that ends its request when read to the
// end or closed, and cancels it when no byte arrives for idle.
type watchedBody struct {
	rc     io.ReadCloser
	fin    *finisher
	after  func()
	idle   time.Duration
	timer  *time.Timer
	last   atomic.Int64 // unix nanos of the last read progress
	closed atomic.Bool
	// grpcEnd, for a gRPC response, reports whether a failed read was the
	// mesh's own timeout, which then ends the stream with trailers.
	grpcEnd func() bool
}

func newWatchedBody(rc io.ReadCloser, idle time.Duration, fin *finisher, after func()) *watchedBody {
	b := &watchedBody{rc: rc, fin: fin, after: after, idle: idle}
	if idle > 0 {
		b.last.Store(time.Now().UnixNano())
		b.timer = time.AfterFunc(idle, b.check)
	}
	return b
}

// check fires after idle: cancel if nothing moved since, else re-arm.
func (b *watchedBody) check() {
	if b.closed.Load() {
		return
	}
	quiet := time.Since(time.Unix(0, b.last.Load()))
	if quiet >= b.idle {
		b.fin.cancel(errIdleTimeout)
		return
	}
	b.timer.Reset(b.idle - quiet)
}

var errIdleTimeout = &timeoutCause{"idle"}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 && b.timer != nil {
		b.last.Store(time.Now().UnixNano())
	}
	if err != nil {
		b.end()
		if err != io.EOF && b.grpcEnd != nil && b.grpcEnd() {
			err = io.EOF
		}
	}
	return n, err
}

// endGRPCOnTimeout ends a gRPC response whose stream broke off at its
// deadline (the mesh's own timer, the idle timeout, or the upstream giving
// up at the same deadline first) with trailers, grpc-status
// DEADLINE_EXCEEDED and x-mesh-error: timeout, as the mesh answers a call
// that times out before its response began, instead of a stream reset the
// caller can only report as INTERNAL. The forwarder sends resp.Trailer once
// the body ends. It reports false, changing nothing, for other failures.
func endGRPCOnTimeout(ctx context.Context, deadline time.Time, resp *http.Response) bool {
	var tc *timeoutCause
	switch {
	case errors.As(context.Cause(ctx), &tc):
	case !deadline.IsZero() && !time.Now().Before(deadline):
		tc = causeOverall
	default:
		return false
	}
	if resp.Trailer == nil {
		resp.Trailer = http.Header{}
	}
	resp.Trailer["Grpc-Status"] = []string{strconv.Itoa(int(codes.DeadlineExceeded))}
	resp.Trailer["Grpc-Message"] = []string{tc.Error()}
	resp.Trailer[HeaderError] = []string{ErrTimeout.Code}
	return true
}

func (b *watchedBody) Close() error {
	err := b.rc.Close()
	b.end()
	return err
}

func (b *watchedBody) end() {
	if b.closed.Swap(true) {
		return
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	b.after()
	b.fin.done()
}

// drainAndClose reads a little of a failed attempt's body so its
// connection or stream can be reused, then closes it.
func drainAndClose(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, 4<<10)
	_ = rc.Close()
}

// faults injects the matched route's delays and aborts, before anything
// is forwarded.
func (s *Sidecar) faults(ew *errorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ex := exchangeFrom(r.Context())
		delay, abort := ex.policy.Fault.Decide(nil)
		if delay > 0 {
			s.m.faults.WithLabelValues(ex.dst, "delay").Inc()
			if resilience.Sleep(r.Context(), delay) != nil {
				return // the client left
			}
		}
		if abort != nil {
			s.m.faults.WithLabelValues(ex.dst, "abort").Inc()
			e := *ErrFaultAbort
			e.Status, e.GRPC = abort.Status, abort.GRPC
			ew.write(w, r, &e)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// rateLimit applies the inbound token buckets: the matched route's from
// the control plane, else the file's instance-wide limit. Over: 429.
func (s *Sidecar) rateLimit(ew *errorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lim := s.inboundLimiter(r); lim != nil && !lim.Allow() {
			s.m.rateLimited.Inc()
			ew.write(w, r, ErrRateLimited.with(errRateLimited))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// inboundLimiter returns the limiter for r, or nil when none applies.
func (s *Sidecar) inboundLimiter(r *http.Request) *resilience.RateLimiter {
	if m := s.model.Load(); m != nil {
		if ms, ok := m.Services[s.service]; ok {
			if rt := matchRoute(ms.Routes, r); rt != nil && rt.RateLimit != nil {
				key := m.Version + "/" + rt.Name
				if v, ok := s.limiters.Load(key); ok {
					return v.(*resilience.RateLimiter)
				}
				lim := resilience.NewRateLimiter(resilience.RateLimit{PerSecond: rt.RateLimit.PerSecond, Burst: rt.RateLimit.Burst})
				v, _ := s.limiters.LoadOrStore(key, lim)
				return v.(*resilience.RateLimiter)
			}
		}
	}
	return s.fileLimiter.Load()
}

var errRateLimited = errors.New("over the inbound rate limit")

func errAllOpen(name string) error {
	return errors.New("every endpoint of " + strconv.Quote(name) + " has its circuit breaker open")
}

// publishTable installs a routing table with the policies of the current
// configuration, and forgets the health of endpoints that left it.
// Callers hold reloadMu (or are constructing the sidecar).
func (s *Sidecar) publishTable(t *cluster.Table) {
	names := t.Names()
	s.pols.Store(s.buildPolicies(names, s.model.Load()))
	s.table.Store(t)
	s.endpoints.RetainServices(names)
	for _, n := range names {
		svc := t.Lookup(n)
		addrs := make([]string, len(svc.Endpoints))
		for i, e := range svc.Endpoints {
			addrs[i] = e.Addr
		}
		pol := s.pols.Load().lookup(n)
		s.endpoints.Service(n, pol.Breaker, pol.Outlier).Retain(addrs)
	}
}

// fileRateLimiter is the instance-wide inbound limiter of the file, or nil.
func fileRateLimiter(cfg *config.Config) *resilience.RateLimiter {
	if rl := cfg.Inbound.RateLimit; rl != nil {
		return resilience.NewRateLimiter(resilience.RateLimit{PerSecond: rl.PerSecond, Burst: rl.Burst})
	}
	return nil
}

// healthHooks bind breaker and outlier events to metrics and logs.
func (s *Sidecar) healthHooks() resilience.Hooks {
	return resilience.Hooks{
		BreakerTransition: func(service, addr string, from, to resilience.BreakerState) {
			s.m.breakerTransitions.WithLabelValues(service, to.String()).Inc()
			s.log.Warn("circuit breaker", "service", service, "endpoint", addr, "from", from.String(), "to", to.String())
		},
		Ejected: func(service, addr string, d time.Duration, cause resilience.Kind) {
			s.m.ejections.WithLabelValues(service).Inc()
			s.log.Warn("endpoint ejected", "service", service, "endpoint", addr, "for", d, "cause", cause.String())
		},
	}
}

// connectionSlot takes a connection slot of the service whose endpoint is
// at addr (its Limits.MaxConnections) and returns that service's connect
// timeout (Timeouts.Connect; 0 for addresses no service lists, which are
// not limited either). Over the limit the dial fails as an overflow.
func (s *Sidecar) connectionSlot(addr string) (func(), time.Duration, error) {
	name, ok := s.serviceAt(addr)
	if !ok {
		return func() {}, 0, nil
	}
	pol := s.pols.Load().lookup(name)
	rel, err := s.upstream(name, &pol).limits.AcquireConnection()
	if err != nil {
		return nil, 0, ErrOverflow.with(err)
	}
	return rel, pol.Timeouts.Connect, nil
}

// serviceAt is the service the routing table lists an endpoint address
// under (dial time only: it scans the table).
func (s *Sidecar) serviceAt(addr string) (string, bool) {
	t := s.table.Load()
	for _, name := range t.Names() {
		for _, e := range t.Lookup(name).Endpoints {
			if e.Addr == addr {
				return name, true
			}
		}
	}
	return "", false
}
