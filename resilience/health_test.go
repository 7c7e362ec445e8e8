package resilience

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

var (
	ok503 = Result{Outcome: Failure, Kind: KindGateway, Status: 503}
	ok200 = Result{Outcome: Success, Kind: KindOK, Status: 200}
	gone  = Result{Outcome: Excluded, Kind: KindClientGone}
)

type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) hook(_, addr string, from, to BreakerState) {
	tr.mu.Lock()
	tr.got = append(tr.got, addr+":"+from.String()+">"+to.String())
	tr.mu.Unlock()
}

func (tr *transitions) list() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.got...)
}

// attempt runs one attempt through the breaker of addr with result r.
func attempt(t *testing.T, s *ServiceHealth, addr string, r Result) {
	t.Helper()
	done, err := s.Allow(addr)
	if err != nil {
		t.Fatalf("Allow(%s) = %v, want allowed", addr, err)
	}
	done(r)
}

func noOutlier() Outlier {
	o := DefaultPolicy().Outlier
	o.ConsecutiveGatewayErrors = 0
	return o
}

func TestBreakerLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var tr transitions
		reg := NewRegistry(Hooks{BreakerTransition: tr.hook})
		s := reg.Service("cart", DefaultPolicy().Breaker, noOutlier())
		const a = "10.0.0.1:7001"

		for range 4 {
			attempt(t, s, a, ok503)
		}
		attempt(t, s, a, gone) // excluded: neither resets nor counts
		if !s.Available(a) {
			t.Fatal("open after 4 failures and an exclusion, want closed")
		}
		attempt(t, s, a, ok503)
		if s.Available(a) {
			t.Fatal("available after 5 consecutive failures, want open")
		}
		if _, err := s.Allow(a); !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("Allow on an open breaker = %v, want ErrCircuitOpen", err)
		}

		time.Sleep(10*time.Second - time.Millisecond)
		if s.Available(a) {
			t.Fatal("available before OpenFor passed")
		}
		time.Sleep(2 * time.Millisecond)
		if !s.Available(a) {
			t.Fatal("not available after OpenFor, want half-open eligible")
		}
		probe, err := s.Allow(a)
		if err != nil {
			t.Fatalf("probe refused: %v", err)
		}
		if _, err := s.Allow(a); !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("second concurrent probe = %v, want ErrCircuitOpen (1 probe)", err)
		}
		probe(ok503) // probe fails: open again
		if s.Available(a) {
			t.Fatal("available after a failed probe, want open")
		}
		time.Sleep(10*time.Second + time.Millisecond)
		attempt(t, s, a, ok200) // probe succeeds: closed
		if snap := s.Snapshot(); len(snap) != 1 || snap[0].Breaker != "closed" {
			t.Fatalf("snapshot = %+v, want one closed endpoint", snap)
		}
		want := []string{
			a + ":closed>open", a + ":open>half-open", a + ":half-open>open",
			a + ":open>half-open", a + ":half-open>closed",
		}
		if got := tr.list(); !equalStrings(got, want) {
			t.Errorf("transitions = %q, want %q", got, want)
		}
	})
}

func TestBreakerFailureRatio(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := NewRegistry(Hooks{})
		b := DefaultPolicy().Breaker
		b.ConsecutiveFailures = 0
		b.FailureRatio = 0.5
		b.MinRequests = 10
		s := reg.Service("cart", b, noOutlier())
		const a = "10.0.0.1:7001"

		// 9 results, then the window slides past them.
		for i := range 9 {
			attempt(t, s, a, map[bool]Result{true: ok503, false: ok200}[i%2 == 0])
		}
		time.Sleep(11 * time.Second)
		attempt(t, s, a, ok503)
		if !s.Available(a) {
			t.Fatal("tripped on results that left the window")
		}
		// 10 fresh results at 50 % failures (with the one above: 6 of 11).
		for i := range 10 {
			if !s.Available(a) {
				t.Fatalf("tripped after %d results, before MinRequests", i+1)
			}
			attempt(t, s, a, map[bool]Result{true: ok503, false: ok200}[i%2 == 1])
		}
		if s.Available(a) {
			t.Fatal("not tripped at a 50 % failure ratio over 11 results")
		}
	})
}

func TestOutlierEjection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var ejections []time.Duration
		skipped := 0
		reg := NewRegistry(Hooks{
			Ejected: func(_, _ string, d time.Duration, _ Kind) {
				mu.Lock()
				ejections = append(ejections, d)
				mu.Unlock()
			},
			EjectionSkipped: func(string, string) { mu.Lock(); skipped++; mu.Unlock() },
		})
		b := DefaultPolicy().Breaker
		b.ConsecutiveFailures = 0 // isolate outlier detection
		s := reg.Service("cart", b, DefaultPolicy().Outlier)
		addrs := []string{"a:1", "b:1", "c:1", "d:1"}
		for _, a := range addrs {
			s.Endpoint(a)
		}
		fail := func(addr string, n int) {
			for range n {
				attempt(t, s, addr, ok503)
			}
		}

		fail("a:1", 4)
		attempt(t, s, "a:1", ok200) // a success resets the count
		fail("a:1", 4)
		if !s.Available("a:1") {
			t.Fatal("ejected without 5 consecutive gateway errors")
		}
		fail("a:1", 1)
		if s.Available("a:1") {
			t.Fatal("not ejected after 5 consecutive gateway errors")
		}
		snap := s.Snapshot()
		if !snap[0].Ejected || snap[0].TimesEjected != 1 {
			t.Fatalf("snapshot = %+v", snap[0])
		}
		time.Sleep(30*time.Second - time.Millisecond)
		if s.Available("a:1") {
			t.Fatal("returned before the base ejection time")
		}
		time.Sleep(time.Millisecond)
		if !s.Available("a:1") {
			t.Fatal("not returned after the base ejection time")
		}

		// Second ejection soon after: twice as long.
		fail("a:1", 5)
		time.Sleep(60*time.Second - time.Millisecond)
		if s.Available("a:1") {
			t.Fatal("second ejection shorter than 2 × base")
		}
		time.Sleep(time.Millisecond)

		// Max 50 % of 4: a and b may be out together, c may not.
		fail("a:1", 5)
		fail("b:1", 5)
		fail("c:1", 5)
		if s.Available("a:1") || s.Available("b:1") || !s.Available("c:1") {
			t.Fatalf("availability a=%v b=%v c=%v, want false false true", s.Available("a:1"), s.Available("b:1"), s.Available("c:1"))
		}
		mu.Lock()
		defer mu.Unlock()
		if want := []time.Duration{30 * time.Second, 60 * time.Second, 90 * time.Second, 30 * time.Second}; !equalDurations(ejections, want) {
			t.Errorf("ejection times = %v, want %v", ejections, want)
		}
		if skipped != 1 {
			t.Errorf("skipped ejections = %d, want 1", skipped)
		}
	})
}

func TestOutlierCapAndDecay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var last time.Duration
		reg := NewRegistry(Hooks{Ejected: func(_, _ string, d time.Duration, _ Kind) { mu.Lock(); last = d; mu.Unlock() }})
		o := DefaultPolicy().Outlier
		o.ConsecutiveGatewayErrors = 1
		s := reg.Service("svc", DefaultPolicy().Breaker, o)
		s.Endpoint("a:1")
		s.Endpoint("b:1")
		single := reg.Service("solo", DefaultPolicy().Breaker, o)
		attempt(t, single, "only:1", ok503)
		if !single.Available("only:1") {
			t.Error("the only endpoint of a service was ejected")
		}
		for range 12 { // each ejection runs out, then fails again at once
			attempt(t, s, "a:1", Result{Outcome: Failure, Kind: KindConnectFailure, Unsent: true})
			mu.Lock()
			d := last
			mu.Unlock()
			time.Sleep(d)
		}
		mu.Lock()
		if last != 300*time.Second {
			t.Errorf("12th ejection lasted %v, want the 300s cap", last)
		}
		mu.Unlock()
		// Healthy for 20 intervals: the multiplier drops from 12 by 20 → 0,
		// so the next ejection is the base again.
		time.Sleep(200 * time.Second)
		attempt(t, s, "a:1", ok503)
		mu.Lock()
		defer mu.Unlock()
		if last != 30*time.Second {
			t.Errorf("ejection after a long healthy spell lasted %v, want 30s", last)
		}
	})
}

func TestRetainAndRegistry(t *testing.T) {
	reg := NewRegistry(Hooks{})
	p := DefaultPolicy()
	s := reg.Service("cart", p.Breaker, p.Outlier)
	if reg.Service("cart", p.Breaker, p.Outlier) != s {
		t.Fatal("same settings gave a new service")
	}
	s.Endpoint("a:1")
	s.Endpoint("b:1")
	s.Retain([]string{"b:1"})
	if snap := s.Snapshot(); len(snap) != 1 || snap[0].Address != "b:1" {
		t.Fatalf("after Retain: %+v", snap)
	}
	p.Breaker.OpenFor = time.Minute
	if reg.Service("cart", p.Breaker, p.Outlier) == s {
		t.Fatal("changed settings kept the old service")
	}
	reg.RetainServices(nil)
	if len(reg.Snapshot()) != 0 {
		t.Fatal("RetainServices(nil) kept services")
	}
	if !s.Available("never-seen:1") {
		t.Fatal("an unknown endpoint is not available")
	}
}

func TestHealthConcurrent(t *testing.T) {
	reg := NewRegistry(Hooks{BreakerTransition: func(string, string, BreakerState, BreakerState) {}})
	p := DefaultPolicy()
	s := reg.Service("cart", p.Breaker, p.Outlier)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := []string{"a:1", "b:1", "c:1"}[g%3]
			for i := range 500 {
				s.Available(addr)
				if done, err := s.Allow(addr); err == nil {
					done(map[bool]Result{true: ok503, false: ok200}[i%3 == 0])
				}
				if i%100 == 0 {
					_ = reg.Snapshot()
				}
			}
		}()
	}
	wg.Wait()
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
