package resilience

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func TestDefaultPolicyIsValid(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatalf("DefaultPolicy().Validate() = %v, want nil", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(p *Policy)
		want   []string // field errors, in order
	}{
		{"defaults", func(*Policy) {}, nil},
		{"max attempts zero", func(p *Policy) { p.Retry.MaxAttempts = 0 }, []string{"retry.maxAttempts: must be between 1 and 10"}},
		{"max attempts 11", func(p *Policy) { p.Retry.MaxAttempts = 11 }, []string{"retry.maxAttempts: must be between 1 and 10"}},
		{"unknown condition", func(p *Policy) { p.Retry.On |= 1 << 20 }, []string{"retry.on: unknown condition bits"}},
		{"status out of range", func(p *Policy) { p.Retry.Statuses = []int{503, 200} }, []string{"retry.statuses[1]: must be between 400 and 599"}},
		{"grpc code OK", func(p *Policy) { p.Retry.GRPCCodes = []codes.Code{codes.OK} }, []string{"retry.grpcCodes[0]"}},
		{"backoff cap too large", func(p *Policy) { p.Retry.BackoffMax = 2 * time.Minute }, []string{"retry.backoffMax: must be between 1ms and 1m0s"}},
		{"backoff base over cap", func(p *Policy) { p.Retry.BackoffBase = time.Second }, []string{"retry.backoffBase: must be between 1ms and retry.backoffMax (250ms)"}},
		{"buffer negative", func(p *Policy) { p.Retry.BufferLimit = -1 }, []string{"retry.bufferLimit"}},
		{"grpc method pattern", func(p *Policy) { p.Retry.IdempotentGRPCMethods = []string{"/a.B/Get", "a.B/Get", "/a.B/Ge*"} }, []string{"retry.idempotentGRPCMethods[1]", "retry.idempotentGRPCMethods[2]"}},
		{"per try over overall", func(p *Policy) { p.Timeouts.PerTry = 20 * time.Second }, []string{"timeouts.perTry: must not exceed timeouts.overall (15s)"}},
		{"connect zero", func(p *Policy) { p.Timeouts.Connect = 0 }, []string{"timeouts.connect"}},
		{"budget ratio", func(p *Policy) { p.Budget.Ratio = 1.5 }, []string{"budget.ratio: must be between 0 and 1"}},
		{"budget window", func(p *Policy) { p.Budget.Window = 0 }, []string{"budget.window"}},
		{"breaker ratio needs min requests", func(p *Policy) { p.Breaker.FailureRatio = 0.5; p.Breaker.MinRequests = 0 }, []string{"breaker.minRequests"}},
		{"breaker probes", func(p *Policy) { p.Breaker.HalfOpenProbes = 0 }, []string{"breaker.halfOpenProbes: must be between 1 and 100"}},
		{"limits negative", func(p *Policy) { p.Limits.MaxRequests = -1 }, []string{"limits.maxRequests"}},
		{"outlier percent", func(p *Policy) { p.Outlier.MaxEjectionPercent = 101 }, []string{"outlier.maxEjectionPercent"}},
		{"outlier base over max", func(p *Policy) { p.Outlier.BaseEjection = time.Hour }, []string{"outlier.baseEjection"}},
		{"fault abort without status", func(p *Policy) { p.Fault.AbortPercent = 10 }, []string{"fault.abortStatus"}},
		{"fault delay without duration", func(p *Policy) { p.Fault.DelayPercent = 10 }, []string{"fault.delay"}},
		{"rate limit negative", func(p *Policy) { p.RateLimit.PerSecond = -1 }, []string{"rateLimit.perSecond"}},
		{"several at once", func(p *Policy) { p.Retry.MaxAttempts = 0; p.Budget.Ratio = -1 }, []string{"retry.maxAttempts", "budget.ratio"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPolicy()
			tt.modify(&p)
			err := p.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fes FieldErrors
			if !errors.As(err, &fes) {
				t.Fatalf("Validate() = %v, want FieldErrors", err)
			}
			if len(fes) != len(tt.want) {
				t.Fatalf("Validate() = %v, want %d errors %q", err, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(fes[i].Error(), w) {
					t.Errorf("error %d = %q, want prefix %q", i, fes[i].Error(), w)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe != fes[0] {
				t.Errorf("errors.As(*FieldError) did not find the first field error")
			}
		})
	}
}
