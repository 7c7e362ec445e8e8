package resilience

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func TestServiceLimits(t *testing.T) {
	l := NewServiceLimits(Limits{MaxRequests: 2, MaxRetries: 1})
	r1, err1 := l.AcquireRequest()
	r2, err2 := l.AcquireRequest()
	if err1 != nil || err2 != nil {
		t.Fatalf("acquires within the limit failed: %v %v", err1, err2)
	}
	if _, err := l.AcquireRequest(); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third acquire = %v, want ErrOverflow", err)
	}
	r1()
	r1() // a second release must not free another slot
	if _, _, n, _ := l.InUse(); n != 1 {
		t.Fatalf("in use after double release = %d, want 1", n)
	}
	if _, err := l.AcquireRequest(); err != nil {
		t.Fatalf("acquire after release = %v", err)
	}
	r2()
	if _, err := l.AcquireRetry(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AcquireRetry(); !errors.Is(err, ErrOverflow) {
		t.Fatalf("second retry = %v, want ErrOverflow", err)
	}
	for range 10000 { // zero: unlimited
		if _, err := l.AcquireConnection(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFaultDecide(t *testing.T) {
	if d, a := (Fault{}).Decide(nil); d != 0 || a != nil {
		t.Fatalf("zero Fault injected %v %v", d, a)
	}
	f := Fault{DelayPercent: 25, Delay: time.Second, AbortPercent: 10, AbortStatus: 503}
	rnd := rand.New(rand.NewPCG(7, 7))
	delays, aborts := 0, 0
	const n = 20000
	for range n {
		d, a := f.Decide(rnd)
		if d > 0 {
			if d != time.Second {
				t.Fatalf("delay %v", d)
			}
			delays++
		}
		if a != nil {
			if a.Status != 503 || a.GRPC != codes.Unavailable {
				t.Fatalf("abort %+v, want 503/UNAVAILABLE", a)
			}
			aborts++
		}
	}
	if delays < n*23/100 || delays > n*27/100 || aborts < n*8/100 || aborts > n*12/100 {
		t.Errorf("delays %d aborts %d of %d, want about 25 %% and 10 %%", delays, aborts, n)
	}
	f = Fault{AbortPercent: 100, AbortStatus: 500, AbortGRPCStatus: codes.Aborted}
	if _, a := f.Decide(rnd); a == nil || a.GRPC != codes.Aborted {
		t.Errorf("configured gRPC status not used: %+v", a)
	}
}

func TestRateLimiter(t *testing.T) {
	off := NewRateLimiter(RateLimit{})
	if off != nil || !off.Allow() {
		t.Fatal("zero RateLimit must allow everything")
	}
	rl := NewRateLimiter(RateLimit{PerSecond: 0.001, Burst: 3})
	for i := range 3 {
		if !rl.Allow() {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	if rl.Allow() {
		t.Fatal("request beyond the burst allowed")
	}
}
