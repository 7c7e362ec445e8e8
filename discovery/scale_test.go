package discovery

import (
	"context"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// BenchmarkScale measures the gossip pool at 32, 64 and 128 in-process
// members over real loopback transports, with the product's defaults
// (LANProfile, ReconnectInterval 1s, coalescing 50ms–500ms):
//
//	join-s          a mass join (every member joins the seed at once) until
//	                every member's snapshot has all N alive
//	bytes/member/s  gossip bytes sent (UDP and TCP) per member per second
//	                over a 5 s steady-state window, taken once every
//	                member's periodic push/pull is in cycle (30 s after
//	                start); the probe-only rate seen as soon as the join's
//	                broadcasts die down is logged beside it
//	bytes/member/s-period
//	                the same over one whole push/pull period (15 s at 32
//	                members, 30 s at 64, 45 s at 128), which the 5 s
//	                window may under- or overstate (see runScale)
//	join-p95-s      the mass join until 95% of the members' views are whole
//	crash-detect-s  one member crashes (no leave) until every other
//	                member's snapshot counts it as failed
//
// The pool is whole (no failed member) during the steady-state window;
// the crash comes after it. Each sub-benchmark runs its scenario once,
// whatever b.N is; the figures are reported with ReportMetric (ns/op is
// suppressed: it would only be the scenario's wall time). Benchmarks never run under plain `go test`:
//
//	go test -run '^$' -bench Scale -benchtime 1x ./discovery/
//
// All members share this process, so at 128 members the CPU (and with it
// probe round trips) may be the limit rather than the protocol; the cpu
// figures logged beside each phase show how busy the process was.
func BenchmarkScale(b *testing.B) {
	for _, n := range []int{32, 64, 128} {
		b.Run("members="+strconv.Itoa(n), func(b *testing.B) { runScale(b, n) })
	}
}

// scaleWait bounds the waits of the scale scenario; the mass join gets
// longer at 64 and 128 members (see runScale).
const scaleWait = 60 * time.Second

type scaleMember struct {
	name   string
	a      *Agent
	cancel context.CancelFunc
	done   chan struct{}
}

// scalePool is a set of in-process agents, each on its own loopback
// NetTransport.
type scalePool struct {
	tb      testing.TB
	members []*scaleMember
}

// add creates (but does not run) an agent joining seeds.
func (p *scalePool) add(name string, seeds []string) *scaleMember {
	p.tb.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"}, BindPort: 0, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		p.tb.Fatalf("%s: loopback transport: %v", name, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort()))
	a, err := New(Config{NodeName: name, Bind: addr, Join: seeds, Transport: nt, Logger: testLogger().With("node", name)},
		Meta{Service: "svc", Inbound: "127.0.0.1:" + strconv.Itoa(20000+len(p.members)), Protocol: "http1", Ready: true})
	if err != nil {
		_ = nt.Shutdown()
		p.tb.Fatalf("%s: %v", name, err)
	}
	m := &scaleMember{name: name, a: a, done: make(chan struct{})}
	p.members = append(p.members, m)
	return m
}

// run starts an agent's Run loop (for a joiner: its join of the seeds).
func (m *scaleMember) run() {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { defer close(m.done); _ = m.a.Run(ctx) }()
}

// close crashes every member (a leave storm would only slow the teardown)
// and waits, bounded, for their loops to end.
func (p *scalePool) close() {
	for _, m := range p.members {
		m.a.Crash()
		if m.cancel != nil {
			m.cancel()
		}
	}
	deadline := time.After(30 * time.Second)
	for _, m := range p.members {
		if m.cancel == nil {
			continue
		}
		select {
		case <-m.done:
		case <-deadline:
			p.tb.Errorf("teardown: %s still running after 30s", m.name)
			return
		}
	}
}

// wait polls cond until it holds, or fails the benchmark after bound with
// what describe reports.
func (p *scalePool) wait(bound time.Duration, what string, cond func() bool, describe func() string) time.Duration {
	p.tb.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			p.tb.Fatalf("timed out after %v waiting for %s: %s", bound, what, describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// live is every member but skip.
func (p *scalePool) live(skip *scaleMember) []*scaleMember {
	out := make([]*scaleMember, 0, len(p.members))
	for _, m := range p.members {
		if m != skip {
			out = append(out, m)
		}
	}
	return out
}

// spread summarises one snapshot figure over members: how many have want,
// and the range of values.
func spread(ms []*scaleMember, f func(*Snapshot) int, want int) string {
	vals := make([]int, len(ms))
	ok := 0
	for i, m := range ms {
		vals[i] = f(m.a.Snapshot())
		if vals[i] == want {
			ok++
		}
	}
	return fmt.Sprintf("%d of %d members at %d (min %d, max %d)", ok, len(ms), want, slices.Min(vals), slices.Max(vals))
}

// missing names, for the first few members whose memberlist view is
// short, whom they do not know.
func missing(ms []*scaleMember) string {
	var out []string
	for _, m := range ms {
		known := map[string]bool{}
		for _, x := range m.a.ml.Members() {
			known[x.Name] = true
		}
		var miss []string
		for _, o := range ms {
			if !known[o.name] {
				miss = append(miss, o.name)
			}
		}
		if len(miss) > 0 && len(out) < 5 {
			out = append(out, fmt.Sprintf("%s does not know %v", m.name, miss))
		}
	}
	if len(out) == 0 {
		return "every memberlist view is whole"
	}
	return strings.Join(out, "; ")
}

// everyone reports whether f is want in every member's snapshot.
func everyone(ms []*scaleMember, f func(*Snapshot) int, want int) bool {
	for _, m := range ms {
		if f(m.a.Snapshot()) != want {
			return false
		}
	}
	return true
}

func bytesSent(ms []*scaleMember) uint64 {
	var sum uint64
	for _, m := range ms {
		sum += m.a.Counters().BytesSent.Load()
	}
	return sum
}

// pushPullPeriod is memberlist's push/pull interval at n members
// (memberlist.pushPullScale: doubled past 32 members, tripled past 64).
func pushPullPeriod(interval time.Duration, n int) time.Duration {
	const threshold = 32
	if n <= threshold {
		return interval
	}
	return time.Duration(math.Ceil(math.Log2(float64(n))-math.Log2(threshold))+1) * interval
}

// cpuClock reads this process's CPU time, to tell how busy it was.
type cpuClock struct {
	wall time.Time
	cpu  time.Duration
}

func readCPU() cpuClock {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpuClock{wall: time.Now(), cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
}

// busy is the share of the machine's CPUs this process used since c.
func (c cpuClock) busy() string {
	now := readCPU()
	frac := float64(now.cpu-c.cpu) / float64(now.wall.Sub(c.wall)) / float64(runtime.NumCPU())
	return fmt.Sprintf("cpu %.0f%% of %d cores", 100*frac, runtime.NumCPU())
}

func runScale(b *testing.B, n int) {
	p := &scalePool{tb: b}
	defer p.close()

	// The seed starts the pool alone.
	seed := p.add("m000", nil)
	seed.run()
	p.wait(scaleWait, "the seed to publish its own view", func() bool { return seed.a.Snapshot().Alive == 1 },
		func() string { return fmt.Sprintf("alive %d", seed.a.Snapshot().Alive) })

	// (i) Mass join: every other member is bound first, then all start
	// joining the seed at once.
	for i := 1; i < n; i++ {
		p.add(fmt.Sprintf("m%03d", i), []string{seed.a.Addr()})
	}
	created := time.Now() // every memberlist's timers are running from here on
	alive := func(s *Snapshot) int { return s.Alive }
	// Gossip usually completes a mass join within seconds, but a member
	// that missed every copy of another's alive broadcast only learns of
	// it at a push/pull, which memberlist schedules after a random stagger
	// of up to PushPullInterval and then every scaled interval: allow two
	// of those, and at least scaleWait.
	iv := LANProfile().PushPullInterval
	joinBound := max(scaleWait, 2*(iv+pushPullPeriod(iv, n)))
	cpu := readCPU()
	start := time.Now()
	for _, m := range p.members[1:] {
		m.run()
	}
	whole := make([]time.Duration, n) // when each member's view became whole
	join := p.wait(joinBound, fmt.Sprintf("all %d alive in every view", n), func() bool {
		all := true
		for i, m := range p.members {
			if whole[i] == 0 {
				if m.a.Snapshot().Alive == n {
					whole[i] = time.Since(start)
				} else {
					all = false
				}
			}
		}
		return all
	}, func() string { return spread(p.members, alive, n) + "; " + missing(p.members) })
	slices.Sort(whole)
	join95 := whole[(95*n+99)/100-1]
	b.Logf("n=%d: mass join whole in every view after %v, in 95%% of views after %v (%s)", n,
		join.Round(time.Millisecond), join95.Round(time.Millisecond), cpu.busy())

	// (iii) Steady state. First, once the join's broadcasts have died down
	// (the byte rate of two successive 1 s windows within 25%), note the
	// rate: after a quick join it is probes only, as no periodic push/pull
	// runs earlier than one scaled interval after start.
	settleStart := time.Now()
	prevRate := -1.0
	for {
		if time.Since(settleStart) > scaleWait {
			b.Fatalf("n=%d: the gossip byte rate did not settle within %v (last %.0f B/s)", n, scaleWait, prevRate)
		}
		t0, b0 := time.Now(), bytesSent(p.members)
		time.Sleep(time.Second) // a measurement window, not a wait for a state
		rate := float64(bytesSent(p.members)-b0) / time.Since(t0).Seconds()
		if prevRate > 0 && rate <= 1.25*prevRate && rate >= 0.75*prevRate {
			prevRate = rate
			break
		}
		prevRate = rate
	}
	note := "probes only: no periodic push/pull can have run yet"
	if time.Since(created) >= pushPullPeriod(iv, n) {
		note = "periodic push/pull may have started"
	}
	b.Logf("n=%d: settled %v after the join: %.0f bytes/member/s (%s)", n,
		time.Since(settleStart).Round(100*time.Millisecond), prevRate/float64(n), note)
	// memberlist starts each member's periodic push/pull after a random
	// stagger of up to PushPullInterval (15 s) and then runs it every
	// period P, PushPullInterval scaled by the pool size (15 s, 30 s,
	// 45 s). The staggers spread over 15 s only, so past 32 members the
	// full-state exchanges come in bands, 15 s of every P: a 5 s window
	// may or may not catch one. So, from 2 × PushPullInterval after start
	// (every member's push/pull is periodic by then), measure the 5 s
	// window asked for and, continuing it, one whole period P, which holds
	// exactly one push/pull started by each member. (A point in time fixed
	// by the configuration: there is no state to poll for.)
	period := pushPullPeriod(iv, n)
	from := created.Add(2 * iv)
	b.Logf("n=%d: waiting %v until every member's push/pull (every %v) is periodic", n,
		max(time.Until(from), 0).Round(time.Second), period)
	time.Sleep(time.Until(from))
	cpu = readCPU()
	t0, b0 := time.Now(), bytesSent(p.members)
	time.Sleep(5 * time.Second) // the 5 s measurement window
	t5, b5 := time.Now(), bytesSent(p.members)
	perMember := float64(b5-b0) / float64(n) / t5.Sub(t0).Seconds()
	time.Sleep(time.Until(t0.Add(period))) // the rest of one push/pull period
	tP, bP := time.Now(), bytesSent(p.members)
	perMemberPeriod := float64(bP-b0) / float64(n) / tP.Sub(t0).Seconds()
	b.Logf("n=%d: steady state %.0f bytes/member/s over 5 s, %.0f over one push/pull period of %v (%s)", n,
		perMember, perMemberPeriod, tP.Sub(t0).Round(time.Second), cpu.busy())
	if !everyone(p.members, alive, n) {
		b.Fatalf("n=%d: the pool is no longer whole after the steady-state window: %s", n, spread(p.members, alive, n))
	}

	// (ii) Crash one member (not the seed): every other member must count
	// it as failed.
	victim := p.members[n-1]
	others := p.live(victim)
	failed := func(s *Snapshot) int { return s.Failed }
	cpu = readCPU()
	crashed := time.Now()
	victim.a.Crash()
	victim.cancel()
	var first time.Duration
	detect := p.wait(scaleWait, fmt.Sprintf("%s failed in all %d other views", victim.name, n-1), func() bool {
		all := true
		for _, m := range others {
			if m.a.Snapshot().Failed == 1 {
				if first == 0 {
					first = time.Since(crashed)
				}
			} else {
				all = false
			}
		}
		return all
	}, func() string { return spread(others, failed, 1) })
	b.Logf("n=%d: crash seen by the first member after %v, by all %d after %v (%s)", n,
		first.Round(time.Millisecond), n-1, detect.Round(time.Millisecond), cpu.busy())
	if !everyone(others, alive, n-1) {
		b.Errorf("n=%d: after the crash, alive: %s", n, spread(others, alive, n-1))
	}
	var dropped uint64
	for _, m := range p.members {
		dropped += m.a.Counters().DroppedEvents.Load()
	}
	if dropped > 0 {
		b.Errorf("n=%d: %d membership events dropped (queue full)", n, dropped)
	}

	b.ReportMetric(0, "ns/op") // the scenario's wall time means nothing per op
	b.ReportMetric(join.Seconds(), "join-s")
	b.ReportMetric(join95.Seconds(), "join-p95-s")
	b.ReportMetric(detect.Seconds(), "crash-detect-s")
	b.ReportMetric(perMember, "bytes/member/s")
	b.ReportMetric(perMemberPeriod, "bytes/member/s-period")
}
