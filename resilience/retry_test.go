package resilience

import (
	"context"
	"math/rand/v2"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
)

func TestParseConditions(t *testing.T) {
	c, err := ParseConditions([]string{"connect-failure", "gateway-error"})
	if err != nil || c != OnConnectFailure|OnGatewayError || c.String() != "connect-failure,gateway-error" {
		t.Fatalf("ParseConditions = %v (%s), %v", c, c, err)
	}
	if _, err := ParseConditions([]string{"5xx-ish"}); err == nil {
		t.Fatal("unknown condition accepted")
	}
}

func TestDecide(t *testing.T) {
	p := DefaultPolicy().Retry
	p.Statuses = []int{429}
	p.GRPCCodes = []codes.Code{codes.ResourceExhausted}
	p.IdempotentGRPCMethods = []string{"/shop.Cart/Get", "/shop.Catalog/*"}
	get := Request{Method: "GET", Replayable: true}
	post := Request{Method: "POST", Replayable: true}
	connect := Classify(Attempt{Err: errDial()})
	s503 := Result{Outcome: Failure, Kind: KindGateway, Status: 503}
	s502 := Result{Outcome: Failure, Kind: KindGateway, Status: 502}
	reset := Result{Outcome: Failure, Kind: KindReset}
	grpcUnavail := Result{Outcome: Failure, Kind: KindGRPCUnavailable, Status: 200, GRPCStatus: codes.Unavailable, HasGRPCStatus: true}
	tests := []struct {
		name    string
		req     Request
		res     Result
		attempt int
		want    Reason
	}{
		{"success", get, Result{Status: 200}, 1, ReasonSucceeded},
		{"configured 429", get, Result{Status: 429}, 1, ReasonRetry},
		{"configured grpc code", Request{GRPC: true, Path: "/shop.Cart/Get", Replayable: true}, Result{Status: 200, GRPCStatus: codes.ResourceExhausted, HasGRPCStatus: true}, 1, ReasonRetry},
		{"excluded", get, Result{Outcome: Excluded, Kind: KindClientGone}, 1, ReasonExcluded},
		{"503 get", get, s503, 1, ReasonRetry},
		{"503 last attempt", get, s503, 3, ReasonAttemptsExhausted},
		{"502 not enabled", get, s502, 1, ReasonNotRetriable},
		{"reset get", get, reset, 1, ReasonRetry},
		{"reset post (may have reached the upstream)", post, reset, 1, ReasonNotIdempotent},
		{"reset put (idempotent, but not safe)", Request{Method: "PUT", Replayable: true}, reset, 1, ReasonNotIdempotent},
		{"503 put", Request{Method: "PUT", Replayable: true}, s503, 1, ReasonRetry},
		{"503 post", post, s503, 1, ReasonNotIdempotent},
		{"connect failure post", post, connect, 1, ReasonRetry},
		{"refused stream post", post, Result{Outcome: Failure, Kind: KindRefusedStream, Unsent: true}, 1, ReasonRetry},
		{"body not replayable", Request{Method: "POST"}, connect, 1, ReasonBodyNotReplayable},
		{"grpc unavailable, idempotent method", Request{GRPC: true, Path: "/shop.Catalog/List", Replayable: true}, grpcUnavail, 1, ReasonRetry},
		{"grpc unavailable, other method", Request{GRPC: true, Path: "/shop.Cart/Add", Replayable: true}, grpcUnavail, 1, ReasonNotIdempotent},
		{"timeout not per-try", get, Result{Outcome: Failure, Kind: KindTimeout}, 1, ReasonNotRetriable},
	}
	for _, tt := range tests {
		if got := p.Decide(tt.req, tt.res, tt.attempt); got != tt.want {
			t.Errorf("%s: Decide = %v, want %v", tt.name, got, tt.want)
		}
	}

	p.On |= OnReset | OnGatewayError | OnPerTryTimeout
	if got := p.Decide(get, reset, 1); got != ReasonRetry {
		t.Errorf("reset enabled: %v", got)
	}
	if got := p.Decide(post, reset, 1); got != ReasonNotIdempotent {
		t.Errorf("reset of a POST: %v, want not idempotent", got)
	}
	if got := p.Decide(Request{Method: "GET", Replayable: true, PerTryTimedOut: true}, Result{Outcome: Failure, Kind: KindTimeout}, 1); got != ReasonRetry {
		t.Errorf("per-try timeout enabled: %v", got)
	}
}

func TestBackoffBounds(t *testing.T) {
	p := Retry{BackoffBase: 25 * time.Millisecond, BackoffMax: time.Second}
	rnd := rand.New(rand.NewPCG(1, 2))
	for retry := 1; retry <= 70; retry++ {
		ceiling := p.BackoffBase
		for i := 1; i < retry && ceiling < p.BackoffMax; i++ {
			ceiling *= 2
		}
		ceiling = min(ceiling, p.BackoffMax)
		var maxSeen time.Duration
		for range 2000 {
			d := p.Backoff(retry, rnd)
			if d < 0 || d > ceiling {
				t.Fatalf("Backoff(%d) = %v, want within [0, %v]", retry, d, ceiling)
			}
			maxSeen = max(maxSeen, d)
		}
		// Full jitter spreads over the whole range.
		if maxSeen < ceiling*9/10 {
			t.Errorf("Backoff(%d): max of 2000 draws %v, want near %v", retry, maxSeen, ceiling)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{"Sun, 01 Jun 2025 12:00:30 GMT", 30 * time.Second, true},
		{"Sun, 01 Jun 2025 11:00:00 GMT", 0, true}, // past
		{"Sunday, 01-Jun-25 12:01:00 GMT", time.Minute, true},
		{"99999999999999999999", time.Duration(1<<63 - 1), true},
		{"1.5", 0, false},
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDelay(t *testing.T) {
	p := DefaultPolicy().Retry
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	rnd := rand.New(rand.NewPCG(3, 4))
	if d, r := p.Delay(1, http.Header{"Retry-After": {"2"}}, now, time.Time{}, rnd); r != ReasonRetry || d != 2*time.Second {
		t.Errorf("Retry-After 2: %v %v", d, r)
	}
	if _, r := p.Delay(1, http.Header{"Retry-After": {"60"}}, now, time.Time{}, rnd); r != ReasonRetryAfterTooLong {
		t.Errorf("Retry-After over the cap: %v", r)
	}
	if _, r := p.Delay(1, http.Header{"Retry-After": {"2"}}, now, now.Add(time.Second), rnd); r != ReasonNoTimeLeft {
		t.Errorf("Retry-After past the deadline: %v", r)
	}
	if d, r := p.Delay(1, nil, now, time.Time{}, rnd); r != ReasonRetry || d > p.BackoffBase {
		t.Errorf("plain backoff: %v %v", d, r)
	}
	p.RetryAfterMax = 0
	if d, r := p.Delay(1, http.Header{"Retry-After": {"60"}}, now, time.Time{}, rnd); r != ReasonRetry || d > p.BackoffBase {
		t.Errorf("Retry-After ignored when RetryAfterMax is 0: %v %v", d, r)
	}
}

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Sleep(t.Context(), time.Second); err != nil || time.Since(start) != time.Second {
			t.Errorf("Sleep = %v after %v", err, time.Since(start))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		if err := Sleep(ctx, time.Hour); err == nil || time.Since(start) != 100*time.Millisecond {
			t.Errorf("Sleep with a short context = %v after %v", err, time.Since(start))
		}
	})
}
