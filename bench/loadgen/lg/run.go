package lg

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Config describes one load-generator run.
type Config struct {
	Target   Target
	Client   ClientKind
	Conns    int
	Rate     float64       // open loop: requests/s over all connections; 0 = closed loop
	Duration time.Duration // measured window
	Warmup   time.Duration // load before the window, not recorded
	// Grace is how long after the end of the schedule in-flight requests may
	// still complete; at start+Warmup+Duration+Grace every connection stops.
	Grace time.Duration
	Pacer PacerKind
	Spin  time.Duration
}

// Summary is a latency distribution in microseconds.
type Summary struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min_us"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p99_9_us"`
	Max   float64 `json:"max_us"`
}

// Summarize converts a histogram of nanoseconds into a Summary in µs.
func Summarize(h *Histogram) Summary {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return Summary{
		Count: h.Count(),
		Min:   us(h.Min()),
		Mean:  h.Mean() / 1e3,
		P50:   us(h.Quantile(0.50)),
		P90:   us(h.Quantile(0.90)),
		P99:   us(h.Quantile(0.99)),
		P999:  us(h.Quantile(0.999)),
		Max:   us(h.Max()),
	}
}

// Result is the JSON-serialisable outcome of a run.
type Result struct {
	Mode       string  `json:"mode"` // "open" or "closed"
	URL        string  `json:"url"`
	Host       string  `json:"host,omitempty"`
	BodyBytes  int     `json:"body_bytes"`
	Client     string  `json:"client"`
	Pacer      string  `json:"pacer,omitempty"`
	SpinUS     float64 `json:"spin_us,omitempty"`
	Conns      int     `json:"conns"`
	TargetRate float64 `json:"target_rate,omitempty"`
	DurationS  float64 `json:"duration_s"`
	WarmupS    float64 `json:"warmup_s"`

	// Responses received for requests in the measured window (any status).
	Requests uint64 `json:"requests"`
	// Every response received, warm-up and priming included (for CPU/request).
	CompletedTotal uint64 `json:"completed_total"`
	Errors         uint64 `json:"errors"`   // I/O or protocol errors before the hard stop
	Non2xx         uint64 `json:"non_2xx"`  // responses with a status outside 200-299
	Timeouts       uint64 `json:"timeouts"` // requests cut off by the hard stop
	// Open loop: measured requests never sent before the hard stop (the
	// target fell behind). They are included in co as a lower bound.
	Unsent     uint64 `json:"unsent,omitempty"`
	FirstError string `json:"first_error,omitempty"`

	ThroughputRPS float64 `json:"throughput_rps"`
	// Open loop: rate at which measured requests were actually sent.
	AchievedRate float64 `json:"achieved_rate_rps,omitempty"`
	ElapsedS     float64 `json:"elapsed_s"`

	Svc     Summary  `json:"svc"`                // actual send -> response done
	Co      *Summary `json:"co,omitempty"`       // intended send -> done (open loop)
	SendLag *Summary `json:"send_lag,omitempty"` // actual send - intended send (open loop)
}

// OK reports whether the run saw no errors, non-2xx, timeouts or unsent requests.
func (r *Result) OK() bool {
	return r.Errors == 0 && r.Non2xx == 0 && r.Timeouts == 0 && r.Unsent == 0
}

func (c *Config) validate() error {
	if c.Target.URL == nil {
		return errors.New("no target URL")
	}
	if c.Conns <= 0 || c.Conns > 4096 {
		return errors.New("conns must be in 1..4096")
	}
	if c.Duration <= 0 || c.Duration > 10*time.Minute {
		return errors.New("duration must be in (0, 10m]")
	}
	if c.Warmup < 0 || c.Warmup > time.Minute {
		return errors.New("warmup must be in [0, 1m]")
	}
	if c.Rate < 0 || c.Rate > 1e6 {
		return errors.New("rate must be in [0, 1e6]")
	}
	if c.Grace <= 0 {
		c.Grace = 2 * time.Second
	}
	if c.Grace > time.Minute {
		c.Grace = time.Minute
	}
	return nil
}

// worker-local counters, merged at the end.
type stats struct {
	svc, co, lag        Histogram
	requests, completed uint64
	errors, non2xx      uint64
	timeouts, unsent    uint64
	firstErr            error
	firstSend, lastSend time.Time
}

func (s *stats) noteErr(err error) {
	s.errors++
	if s.firstErr == nil {
		s.firstErr = err
	}
}

func (s *stats) merge(o *stats) {
	s.svc.Merge(&o.svc)
	s.co.Merge(&o.co)
	s.lag.Merge(&o.lag)
	s.requests += o.requests
	s.completed += o.completed
	s.errors += o.errors
	s.non2xx += o.non2xx
	s.timeouts += o.timeouts
	s.unsent += o.unsent
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
	if !o.firstSend.IsZero() && (s.firstSend.IsZero() || o.firstSend.Before(s.firstSend)) {
		s.firstSend = o.firstSend
	}
	if o.lastSend.After(s.lastSend) {
		s.lastSend = o.lastSend
	}
}

func is2xx(status int) bool { return status >= 200 && status < 300 }

// prepare creates one client per connection and sends one unmeasured priming
// request on each, so connections (and proxies' upstream pools) exist before
// the clock starts.
func prepare(cfg *Config, st []stats) ([]Client, error) {
	clients := make([]Client, cfg.Conns)
	for i := range clients {
		c, err := NewClient(cfg.Client, cfg.Target)
		if err != nil {
			return nil, err
		}
		clients[i] = c
	}
	var wg sync.WaitGroup
	primeStop := time.Now().Add(5 * time.Second)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(primeStop)
			if _, err := c.Do(); err == nil {
				st[i].completed++
			}
		}()
	}
	wg.Wait()
	return clients, nil
}

// Run executes cfg (open loop if cfg.Rate > 0, else closed loop).
func Run(cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	st := make([]stats, cfg.Conns)
	clients, err := prepare(&cfg, st)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	start := time.Now().Add(10 * time.Millisecond)
	var res *Result
	if cfg.Rate > 0 {
		res, err = runOpen(&cfg, clients, st, start)
	} else {
		res, err = runClosed(&cfg, clients, st, start)
	}
	if err != nil {
		return nil, err
	}
	res.Mode = map[bool]string{true: "open", false: "closed"}[cfg.Rate > 0]
	res.URL = cfg.Target.URL.String()
	res.Host = cfg.Target.Host
	res.BodyBytes = len(cfg.Target.Body)
	res.Client = string(cfg.Client)
	if res.Client == "" {
		res.Client = string(ClientRaw)
	}
	res.Conns = cfg.Conns
	res.DurationS = cfg.Duration.Seconds()
	res.WarmupS = cfg.Warmup.Seconds()
	res.ElapsedS = time.Since(start).Seconds()
	return res, nil
}

func fill(res *Result, all *stats) {
	res.Requests = all.requests
	res.CompletedTotal = all.completed
	res.Errors = all.errors
	res.Non2xx = all.non2xx
	res.Timeouts = all.timeouts
	res.Unsent = all.unsent
	if all.firstErr != nil {
		res.FirstError = all.firstErr.Error()
	}
	res.Svc = Summarize(&all.svc)
}

func runOpen(cfg *Config, clients []Client, st []stats, start time.Time) (*Result, error) {
	sched, err := NewSchedule(cfg.Rate, cfg.Warmup+cfg.Duration, cfg.Conns)
	if err != nil {
		return nil, err
	}
	firstMeasured := sched.FirstAtOrAfter(cfg.Warmup)
	hardStop := start.Add(cfg.Warmup + cfg.Duration + cfg.Grace)
	pacers := make([]Pacer, cfg.Conns)
	for i := range pacers {
		if cfg.Pacer == PacerNanosleep {
			continue // created on the worker's own (locked) thread
		}
		p, err := NewPacer(cfg.Pacer, cfg.Spin, hardStop)
		if err != nil {
			for _, q := range pacers[:i] {
				q.Close()
			}
			return nil, err
		}
		pacers[i] = p
	}
	var wg sync.WaitGroup
	for c := range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pacers[c]
			if p == nil {
				p, _ = NewPacer(cfg.Pacer, cfg.Spin, hardStop)
			}
			defer p.Close()
			openWorker(sched, c, firstMeasured, start, hardStop, clients[c], p, &st[c])
		}()
	}
	wg.Wait()

	var all stats
	for i := range st {
		all.merge(&st[i])
	}
	res := &Result{TargetRate: cfg.Rate, Pacer: string(cfg.Pacer), SpinUS: float64(cfg.Spin) / 1e3}
	if res.Pacer == "" {
		res.Pacer = string(PacerTimerfd)
	}
	fill(res, &all)
	co := Summarize(&all.co)
	lag := Summarize(&all.lag)
	res.Co, res.SendLag = &co, &lag
	res.ThroughputRPS = float64(all.requests) / cfg.Duration.Seconds()
	if n := all.lag.Count(); n > 1 {
		if span := all.lastSend.Sub(all.firstSend); span > 0 {
			res.AchievedRate = float64(n-1) / span.Seconds()
		}
	}
	return res, nil
}

func openWorker(sched Schedule, c int, firstMeasured int64, start, hardStop time.Time,
	cl Client, p Pacer, s *stats) {
	cl.SetDeadline(hardStop)
	for k := int64(0); ; k++ {
		i, ok := sched.Index(c, k)
		if !ok {
			return
		}
		intended := start.Add(sched.Offset(i))
		measured := i >= firstMeasured
		if !time.Now().Before(hardStop) {
			// Out of time: every remaining measured request is unsent.
			for ; ok; k++ {
				if i >= firstMeasured {
					s.unsent++
					s.co.Record(int64(hardStop.Sub(start.Add(sched.Offset(i)))))
				}
				i, ok = sched.Index(c, k+1)
			}
			return
		}
		if err := p.WaitUntil(intended); err != nil && !IsTimeout(err) {
			s.noteErr(fmt.Errorf("pacer: %w", err))
		}
		send := time.Now()
		status, err := cl.Do()
		done := time.Now()
		if err != nil {
			if measured {
				if !done.Before(hardStop) || IsTimeout(err) {
					s.timeouts++
				} else {
					s.noteErr(err)
				}
			}
			// A refused or failing connection must not turn into a busy loop:
			// the schedule already spaces requests, but back off a little when
			// the next slot is already due.
			if time.Until(start.Add(sched.Offset(i+int64(sched.Conns)))) < 0 {
				time.Sleep(time.Millisecond)
			}
			continue
		}
		s.completed++
		if !measured {
			continue
		}
		s.requests++
		if !is2xx(status) {
			s.non2xx++
		}
		s.svc.Record(int64(done.Sub(send)))
		s.co.Record(int64(done.Sub(intended)))
		s.lag.Record(int64(send.Sub(intended)))
		if s.firstSend.IsZero() {
			s.firstSend = send
		}
		s.lastSend = send
	}
}

func runClosed(cfg *Config, clients []Client, st []stats, start time.Time) (*Result, error) {
	mStart := start.Add(cfg.Warmup)
	end := mStart.Add(cfg.Duration)
	hardStop := end.Add(cfg.Grace)
	if d := time.Until(start); d > 0 {
		time.Sleep(d)
	}
	var wg sync.WaitGroup
	for c := range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			closedWorker(mStart, end, hardStop, clients[c], &st[c])
		}()
	}
	wg.Wait()
	var all stats
	for i := range st {
		all.merge(&st[i])
	}
	res := &Result{}
	fill(res, &all)
	res.ThroughputRPS = float64(all.requests) / cfg.Duration.Seconds()
	return res, nil
}

func closedWorker(mStart, end, hardStop time.Time, cl Client, s *stats) {
	cl.SetDeadline(hardStop)
	for {
		send := time.Now()
		if !send.Before(end) {
			return
		}
		status, err := cl.Do()
		done := time.Now()
		inWindow := !done.Before(mStart) && done.Before(end)
		if err != nil {
			if !done.Before(hardStop) || IsTimeout(err) {
				s.timeouts++
			} else if inWindow {
				s.noteErr(err)
			}
			if done.Before(end) {
				time.Sleep(10 * time.Millisecond) // no busy loop on a dead target
			}
			continue
		}
		s.completed++
		if !inWindow {
			continue
		}
		s.requests++
		if !is2xx(status) {
			s.non2xx++
		}
		s.svc.Record(int64(done.Sub(send)))
	}
}

// Probe sends GET requests to t until one returns status 200 (and, if
// expectBody is non-empty, exactly that body) or timeout passes.
func Probe(t Target, expectBody string, timeout time.Duration) error {
	return probe(t, expectBody, timeout)
}
