package cluster

import (
	"sync"
	"testing"
	"time"
)

func eps(addrs ...string) []string { return addrs }

func TestRoundRobinCyclesEvenly(t *testing.T) {
	tb := Build([]Spec{{Name: "s", Policy: RoundRobin, Endpoints: eps("a:1", "b:1", "c:1")}}, nil)
	svc := tb.Lookup("s")
	counts := map[string]int{}
	for range 300 {
		counts[svc.Pick(nil, nil).Addr]++
	}
	for _, a := range []string{"a:1", "b:1", "c:1"} {
		if counts[a] != 100 {
			t.Errorf("%s picked %d times of 300, want 100 (%v)", a, counts[a], counts)
		}
	}
}

func TestPickAvoidsTheGivenEndpoint(t *testing.T) {
	for _, p := range []Policy{RoundRobin, PeakEWMA} {
		svc := Build([]Spec{{Name: "s", Policy: p, Endpoints: eps("a:1", "b:1")}}, nil).Lookup("s")
		avoid := svc.Endpoints[0]
		for range 100 {
			if got := svc.Pick(avoid, nil); got == avoid {
				t.Fatalf("%s: picked the endpoint to avoid", p)
			}
		}
		one := Build([]Spec{{Name: "s", Policy: p, Endpoints: eps("a:1")}}, nil).Lookup("s")
		if got := one.Pick(one.Endpoints[0], nil); got != one.Endpoints[0] {
			t.Errorf("%s: with one endpoint, Pick(avoid) = %v, want the only endpoint", p, got)
		}
	}
}

func TestPickEmpty(t *testing.T) {
	svc := Build([]Spec{{Name: "s", Policy: PeakEWMA}}, nil).Lookup("s")
	if got := svc.Pick(nil, nil); got != nil {
		t.Fatalf("Pick on no endpoints = %v, want nil", got)
	}
	if got := (*Table)(nil).Lookup("s"); got != nil {
		t.Fatalf("nil table lookup = %v", got)
	}
}

func TestPeakEWMAPrefersFasterEndpoint(t *testing.T) {
	svc := Build([]Spec{{Name: "s", Policy: PeakEWMA, Endpoints: eps("fast:1", "slow:1", "mid:1")}}, nil).Lookup("s")
	now := time.Now()
	byAddr := map[string]*Endpoint{}
	for _, e := range svc.Endpoints {
		byAddr[e.Addr] = e
	}
	byAddr["fast:1"].observe(time.Millisecond, now)
	byAddr["mid:1"].observe(5*time.Millisecond, now)
	byAddr["slow:1"].observe(20*time.Millisecond, now)
	counts := map[string]int{}
	for range 3000 {
		counts[svc.Pick(nil, nil).Addr]++
	}
	// P2C: the slowest endpoint wins no comparison, the fastest wins all of
	// its own (it is in 2 of 3 pairs).
	if counts["slow:1"] != 0 {
		t.Errorf("slow endpoint picked %d times, want 0 (%v)", counts["slow:1"], counts)
	}
	if counts["fast:1"] < 1800 {
		t.Errorf("fast endpoint picked %d of 3000, want about 2000 (%v)", counts["fast:1"], counts)
	}
}

func TestPeakEWMAWeighsOutstandingRequests(t *testing.T) {
	svc := Build([]Spec{{Name: "s", Policy: PeakEWMA, Endpoints: eps("a:1", "b:1")}}, nil).Lookup("s")
	a, b := svc.Endpoints[0], svc.Endpoints[1]
	now := time.Now()
	a.observe(time.Millisecond, now)
	b.observe(2*time.Millisecond, now)
	// a is faster, but with 4 requests outstanding it costs 5 ms against 2.
	for range 4 {
		a.pending.Add(1)
	}
	if got := svc.Pick(nil, nil); got != b {
		t.Fatalf("picked %s, want b: a has 4 requests outstanding", got.Addr)
	}
}

func TestPeakEWMAReactsToPeaksAndDecays(t *testing.T) {
	e := NewEndpoint("a:1")
	t0 := time.Unix(1000, 0)
	e.observe(time.Millisecond, t0)
	e.observe(50*time.Millisecond, t0.Add(time.Millisecond))
	if got := e.load(t0.Add(time.Millisecond).UnixNano()); got < float64(49*time.Millisecond) {
		t.Fatalf("after a 50ms response the cost is %v, want the peak at once", time.Duration(got))
	}
	// Fast responses pull it down gradually.
	for i := range 100 {
		e.observe(time.Millisecond, t0.Add(time.Duration(i+2)*100*time.Millisecond))
	}
	got := time.Duration(e.load(t0.Add(10200 * time.Millisecond).UnixNano()))
	if got > 25*time.Millisecond || got < time.Millisecond {
		t.Fatalf("after 10s of 1ms responses the cost is %v, want between 1ms and 25ms", got)
	}
	// An idle endpoint's cost decays toward zero, so it is tried again.
	idle := time.Duration(e.load(t0.Add(100 * time.Second).UnixNano()))
	if idle > time.Millisecond/10 {
		t.Fatalf("after 90s idle the cost is %v, want near zero", idle)
	}
}

func TestFirstRequestIsNotALatencySample(t *testing.T) {
	e := NewEndpoint("a:1")
	done := e.Start()
	if e.pending.Load() != 1 {
		t.Fatalf("pending %d, want 1", e.pending.Load())
	}
	done()
	if s := e.Stats(); s.EWMAMillis != 0 || s.Pending != 0 || s.Requests != 1 {
		t.Fatalf("after the first request: %+v, want no latency sample, 0 pending, 1 request", s)
	}
	e.Start()()
	if e.stamp == 0 {
		t.Fatal("the second request was not sampled")
	}
}

func TestBuildKeepsEndpointHistory(t *testing.T) {
	t1 := Build([]Spec{{Name: "s", Policy: PeakEWMA, Endpoints: eps("a:1", "b:1")}}, nil)
	a := t1.Lookup("s").Endpoints[0]
	a.Start()()
	t2 := Build([]Spec{{Name: "s", Policy: PeakEWMA, Endpoints: eps("b:1", "a:1", "c:1")}, {Name: "t", Policy: RoundRobin, Endpoints: eps("a:1")}}, t1)
	if got := t2.Lookup("s").Endpoints[1]; got != a {
		t.Errorf("a:1 was rebuilt; want the same endpoint carried over with its history")
	}
	if got := t2.Lookup("t").Endpoints[0]; got == a {
		t.Errorf("another service's endpoint with the same address must not share history")
	}
	if got, want := t2.Names(), []string{"s", "t"}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Names() = %v, want %v", got, want)
	}
}

func TestConcurrentPicks(t *testing.T) {
	svc := Build([]Spec{{Name: "s", Policy: PeakEWMA, Endpoints: eps("a:1", "b:1", "c:1", "d:1")}}, nil).Lookup("s")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				e := svc.Pick(nil, nil)
				e.Start()()
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, e := range svc.Endpoints {
		if e.pending.Load() != 0 {
			t.Errorf("%s: %d pending after all requests finished", e.Addr, e.pending.Load())
		}
		total += e.total.Load()
	}
	if total != 16000 {
		t.Errorf("%d requests counted, want 16000", total)
	}
}

func BenchmarkPickPeakEWMA(b *testing.B) {
	svc := Build([]Spec{{Name: "s", Policy: PeakEWMA, Endpoints: eps("a:1", "b:1", "c:1", "d:1", "e:1")}}, nil).Lookup("s")
	for _, e := range svc.Endpoints {
		e.observe(time.Millisecond, time.Now())
	}
	b.ReportAllocs()
	for b.Loop() {
		svc.Pick(nil, nil)
	}
}

func TestPickSkipsUnusable(t *testing.T) {
	for _, policy := range []Policy{PeakEWMA, RoundRobin} {
		tbl := Build([]Spec{{Name: "s", Policy: policy, Endpoints: []string{"a:1", "b:1", "c:1"}}}, nil)
		svc := tbl.Lookup("s")
		open := map[string]bool{"a:1": true, "b:1": true}
		usable := func(e *Endpoint) bool { return !open[e.Addr] }
		for range 50 {
			if got := svc.Pick(nil, usable); got == nil || got.Addr != "c:1" {
				t.Fatalf("%s: picked %v, want the only usable endpoint c:1", policy, got)
			}
		}
		c := svc.Endpoints[2]
		if got := svc.Pick(c, usable); got != c {
			t.Fatalf("%s: picked %v, want the avoided endpoint when it is the only usable one", policy, got)
		}
		open["c:1"] = true
		if got := svc.Pick(nil, usable); got != nil {
			t.Fatalf("%s: picked %v with every endpoint unusable", policy, got)
		}
	}
}
