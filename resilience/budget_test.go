package resilience

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestRetryBudgetBoundsRetries(t *testing.T) {
	b := DefaultPolicy().Budget // 20 %, 10/s, 10 s
	clk := &fakeClock{}
	clk.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	rb := NewRetryBudget(b, clk.now)

	// 100 % failure: every one of N requests wants 2 retries, all within
	// one window.
	const n = 1000
	retries := 0
	for range n {
		rb.Deposit()
		for range 2 {
			if rb.Withdraw() {
				retries++
			}
		}
		clk.advance(5 * time.Millisecond) // 5 s in all: inside the window
	}
	limit := int(b.Ratio*n) + b.MinPerSecond*int(b.Window/time.Second)
	if retries > limit || retries < limit-2 {
		t.Fatalf("retries = %d, want at most and about %d (ratio·N + floor·window)", retries, limit)
	}

	// After a whole window everything has expired: only the floor remains.
	clk.advance(b.Window)
	floor := 0
	for rb.Withdraw() {
		floor++
		if floor > 1000 {
			t.Fatal("budget never ran out")
		}
	}
	if want := b.MinPerSecond * int(b.Window/time.Second); floor != want {
		t.Errorf("retries on the reserve alone = %d, want %d", floor, want)
	}
}

func TestRetryBudgetZeroRatio(t *testing.T) {
	clk := &fakeClock{}
	rb := NewRetryBudget(Budget{Ratio: 0, MinPerSecond: 1, Window: 2 * time.Second}, clk.now)
	for range 100 {
		rb.Deposit()
	}
	got := 0
	for rb.Withdraw() {
		got++
	}
	if got != 2 {
		t.Errorf("retries with ratio 0 = %d, want the floor 2", got)
	}
}

func TestRetryBudgetConcurrent(t *testing.T) {
	rb := NewRetryBudget(DefaultPolicy().Budget, nil)
	var wg sync.WaitGroup
	var retries atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				rb.Deposit()
				if rb.Withdraw() {
					retries.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := retries.Load(); got > 8000*2/10+100 {
		t.Errorf("retries = %d, want at most %d", got, 8000*2/10+100)
	}
}

func BenchmarkRetryBudget(b *testing.B) {
	rb := NewRetryBudget(DefaultPolicy().Budget, nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rb.Deposit()
			rb.Withdraw()
		}
	})
}
