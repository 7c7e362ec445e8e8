package resilience

import (
	"testing"
)

// BenchmarkHotPath is what the proxy does per attempt: classify, breaker
// and outlier bookkeeping, and the budget deposit.
func BenchmarkHotPath(b *testing.B) {
	p := DefaultPolicy()
	s := NewRegistry(Hooks{}).Service("cart", p.Breaker, p.Outlier)
	addrs := []string{"10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"}
	for _, a := range addrs {
		s.Endpoint(a)
	}
	rb := NewRetryBudget(p.Budget, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			rb.Deposit()
			done, err := s.Allow(addrs[i%len(addrs)])
			if err != nil {
				b.Fatal(err)
			}
			done(Classify(Attempt{Status: 200}))
		}
	})
}

// BenchmarkAvailable is the balancer's per-candidate check.
func BenchmarkAvailable(b *testing.B) {
	p := DefaultPolicy()
	s := NewRegistry(Hooks{}).Service("cart", p.Breaker, p.Outlier)
	e := s.Endpoint("10.0.0.1:7001")
	b.Run("endpoint", func(b *testing.B) {
		for b.Loop() {
			if !e.Available() {
				b.Fatal("unavailable")
			}
		}
	})
	b.Run("by-address", func(b *testing.B) {
		for b.Loop() {
			if !s.Available("10.0.0.1:7001") {
				b.Fatal("unavailable")
			}
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	a := Attempt{Status: 503}
	for b.Loop() {
		Classify(a)
	}
}
