// Package resilience holds the building blocks that keep a sidecar's
// upstream calls safe when upstreams misbehave: timeouts and gRPC deadline
// propagation, budgeted retries with full-jitter backoff, replayable
// request bodies, per-endpoint circuit breakers and outlier detection,
// per-service concurrency limits, fault injection and local rate limits.
//
// Every block reads its settings from a [Policy] (validated with
// [Policy.Validate]; [DefaultPolicy] works with no configuration) and none
// of them writes HTTP responses: they return typed errors ([ErrCircuitOpen],
// [ErrOverflow], [ErrRetryBudgetExhausted], ...) that the proxy turns into
// a status and x-mesh-error in one place.
//
// One classifier, [Classify], decides for every attempt whether it was a
// success, a failure or excluded (the client went away, or its own request
// was broken), and why (a [Kind]). Retries, breakers, outlier detection and
// metrics all take its [Result], so they never disagree.
//
// A retrying round tripper built from these blocks does, per request:
//
//	deadline, err := policy.Timeouts.RequestDeadline(now, r.Header) // 400 on a malformed grpc-timeout
//	budget.Deposit()
//	body := NewReplayBody(r.Body, policy.Retry.BufferLimit)          // if r has a body
//	for attempt := 1; ; attempt++ {
//	    addr := pick an endpoint with health.Available(addr), avoiding the last one
//	    done, err := health.Allow(addr)                             // ErrCircuitOpen: pick another
//	    view, _ := body.NewAttempt()
//	    resp, err := next.RoundTrip(r with view, ctx bounded by Timeouts.TryDeadline)
//	    res := Classify(Attempt{Status, GRPCStatus, Err: err, ClientGone: ...})
//	    done(res)
//	    d := policy.Retry.Decide(facts, res, attempt)               // why-not for metrics
//	    if !d.Retry || !budget.Withdraw() { return resp, err }
//	    wait := policy.Retry.Delay(attempt, resp header, rnd)       // backoff and Retry-After
//	    Sleep(ctx, wait)
//	}
//
// Clocks: breakers and outlier detection read time.Now, so tests run them
// inside testing/synctest bubbles; [Budget] takes an injectable clock.
// Random sources are injected wherever a decision is random.
package resilience
