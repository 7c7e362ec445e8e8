package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
	"github.com/causeway-mesh/causeway/resilience"
)

// End-to-end tests of the outbound resilience layers (resilient.go):
// every request crosses client sidecar → server sidecar → app, the apps
// inject faults and count what reached them by x-request-id, and the
// sidecars' /metrics and /clusters are read to check what they decided.

// resFault is what a resFaultyApp does with a request.
type resFault int

const (
	resOK          resFault = iota
	resUnavailable          // answer 503
	resReset                // hijack the connection and close it
	resStall                // block until the request's context ends
)

// resFaultOf spreads faults over request ids deterministically: 10 % 503,
// 9 % resets, 1 % stalls (20 % in all), so the client knows what each
// request should get back whichever upstream served it. Stalls are few
// because each holds a client worker for the whole per-try timeout.
func resFaultOf(id string) resFault {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	switch n := h.Sum32() % 100; {
	case n < 10:
		return resUnavailable
	case n < 19:
		return resReset
	case n < 20:
		return resStall
	}
	return resOK
}

// resStallBound caps a stall so that a request the proxy failed to
// cancel still ends; reaching it is counted and fails the test.
const resStallBound = 10 * time.Second

// resFaultyApp is an upstream app that injects resFaultOf's faults and
// records, by x-request-id, every request that reached it.
type resFaultyApp struct {
	mu       sync.Mutex
	seen     map[string]int // request id → times received
	attempts map[string]int // request id → x-mesh-attempt of the last receipt

	stallsCancelled atomic.Int64 // stalls ended by the request's context
	stallsEscaped   atomic.Int64 // stalls that reached resStallBound
}

func newResFaultyApp() *resFaultyApp {
	return &resFaultyApp{seen: map[string]int{}, attempts: map[string]int{}}
}

func (a *resFaultyApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	id := r.Header.Get("X-Request-Id")
	attempt, _ := strconv.Atoi(r.Header.Get(HeaderAttempt))
	a.mu.Lock()
	a.seen[id]++
	a.attempts[id] = attempt
	a.mu.Unlock()
	switch resFaultOf(id) {
	case resUnavailable:
		http.Error(w, "injected 503", http.StatusServiceUnavailable)
	case resReset:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
			return
		}
		_ = conn.Close()
	case resStall:
		if resStallUntilDone(r.Context()) {
			a.stallsCancelled.Add(1)
		} else {
			a.stallsEscaped.Add(1)
		}
	default:
		_, _ = io.WriteString(w, id)
	}
}

// counts returns a copy of what the app received.
func (a *resFaultyApp) counts() (seen, attempts map[string]int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen, attempts = make(map[string]int, len(a.seen)), make(map[string]int, len(a.attempts))
	for k, v := range a.seen {
		seen[k] = v
	}
	for k, v := range a.attempts {
		attempts[k] = v
	}
	return seen, attempts
}

// resStallUntilDone blocks until ctx ends (true) or resStallBound passes
// (false).
func resStallUntilDone(ctx context.Context) bool {
	t := time.NewTimer(resStallBound)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return true
	case <-t.C:
		return false
	}
}

// resSwitchApp answers status (an atomic, changeable mid-test) and counts
// the requests that reached it.
type resSwitchApp struct {
	status atomic.Int64
	hits   atomic.Int64
}

func newResSwitchApp(status int) *resSwitchApp {
	a := &resSwitchApp{}
	a.status.Store(int64(status))
	return a
}

func (a *resSwitchApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	a.hits.Add(1)
	st := int(a.status.Load())
	w.WriteHeader(st)
	_, _ = io.WriteString(w, http.StatusText(st))
}

// resResult is what a client got for one request.
type resResult struct {
	status  int
	meshErr string
	body    string
	err     error
}

// resDo sends one request with the given x-request-id and reads the whole
// response.
func resDo(ctx context.Context, c *http.Client, method, url, host, id, body string) resResult {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return resResult{err: err}
	}
	req.Host = host
	if id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	resp, err := c.Do(req)
	if err != nil {
		return resResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resResult{status: resp.StatusCode, meshErr: resp.Header.Get(HeaderError), body: string(b), err: err}
}

// resClosedPort returns a loopback address nothing listens on: connecting
// to it is refused at once.
func resClosedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func resPtr[T any](v T) *T { return &v }

func resDur(d time.Duration) *config.Duration { return &config.Duration{Duration: d} }

// resClientConfig is a client sidecar's configuration routing each
// service to its upstream.
func resClientConfig(upstreams map[string]config.Upstream) *config.Config {
	cfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	cfg.Upstreams = upstreams
	return cfg
}

// resMetric sums the samples of the series name on s's admin /metrics
// whose labels include every given name/value pair.
func resMetric(t testing.TB, s *runningSidecar, name string, labelPairs ...string) float64 {
	t.Helper()
	resp, err := h1Client().Get("http://" + s.addr("admin") + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		metric, labels, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		for i := 0; i+1 < len(labelPairs); i += 2 {
			if !strings.Contains(labels, labelPairs[i]+`="`+labelPairs[i+1]+`"`) {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	return sum
}

// resEndpoint is one endpoint of /clusters.
type resEndpoint struct {
	Address    string                       `json:"address"`
	Requests   uint64                       `json:"requests"`
	Resilience *resilience.EndpointSnapshot `json:"resilience"`
}

// breaker returns the endpoint's breaker state ("closed" before any
// request created its health).
func (e resEndpoint) breaker() string {
	if e.Resilience == nil {
		return "closed"
	}
	return e.Resilience.Breaker
}

func (e resEndpoint) ejected() bool { return e.Resilience != nil && e.Resilience.Ejected }

// resClusters reads s's /clusters and returns service's endpoints by
// address.
func resClusters(t testing.TB, s *runningSidecar, service string) map[string]resEndpoint {
	t.Helper()
	resp, err := h1Client().Get("http://" + s.addr("admin") + "/clusters")
	if err != nil {
		t.Fatalf("GET /clusters: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Clusters []struct {
			Name      string        `json:"name"`
			Endpoints []resEndpoint `json:"endpoints"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding /clusters: %v", err)
	}
	for _, c := range body.Clusters {
		if c.Name == service {
			out := make(map[string]resEndpoint, len(c.Endpoints))
			for _, e := range c.Endpoints {
				out[e.Address] = e
			}
			return out
		}
	}
	t.Fatalf("/clusters has no service %q", service)
	return nil
}

// TestResilienceNoDuplicateUnderFaults sends 10,000 POSTs through one
// client sidecar to four upstream sidecars whose apps fail 20 % of
// requests (503, reset, stall) plus one endpoint that refuses
// connections. POSTs are not idempotent: only attempts that provably never
// reached an app (refused connections) may be retried, so no app may see
// any request id twice, and every request gets exactly one response that
// says what happened to it.
func TestResilienceNoDuplicateUnderFaults(t *testing.T) {
	const (
		requests = 10_000
		workers  = 32
		// Well above the p99.9 latency of this load under the race
		// detector on two cores (about 0.5 s), so that nearly only stalls
		// meet it.
		perTry  = time.Second
		service = "orders"
	)
	var apps []*resFaultyApp
	var endpoints []string
	for range 4 {
		app := newResFaultyApp()
		s := startSidecar(t, testConfig(service, startApp(t, app), config.ProtocolHTTP1))
		apps = append(apps, app)
		endpoints = append(endpoints, s.addr("inbound"))
	}
	refused := resClosedPort(t)
	endpoints = append(endpoints, refused)
	// Breakers and outlier detection off, round robin: the refused
	// endpoint keeps getting a fifth of first tries, so the retry path is
	// exercised thousands of times; a budget ratio of 0.5 lets nearly all
	// of those retries through.
	client := startSidecar(t, resClientConfig(map[string]config.Upstream{service: {
		Endpoints:    endpoints,
		LoadBalancer: config.LBRoundRobin,
		Resilience: &config.Resilience{
			Timeouts: &config.TimeoutsSpec{PerTry: resDur(perTry)},
			Breaker:  &config.BreakerSpec{ConsecutiveFailures: resPtr(0)},
			Outlier:  &config.OutlierSpec{ConsecutiveGatewayErrors: resPtr(0)},
			Budget:   &config.BudgetSpec{Ratio: resPtr(0.5)},
		},
	}}))
	url := "http://" + client.addr("outbound") + "/orders"

	ctx := testContext(t, 2*time.Minute)
	results := make([]resResult, requests)
	ids := make([]string, requests)
	for i := range ids {
		ids[i] = fmt.Sprintf("dup-%05d", i)
	}
	work := make(chan int)
	var wg sync.WaitGroup
	c := h1Client()
	for range workers {
		wg.Go(func() {
			for i := range work {
				results[i] = resDo(ctx, c, "POST", url, service, ids[i], "order "+ids[i])
			}
		})
	}
	start := time.Now()
	for i := range requests {
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)

	// What the apps received, merged: no id may appear twice, on one app
	// or across them.
	seen := map[string]int{}
	retriedAtApps := 0
	for n, app := range apps {
		s, attempts := app.counts()
		if len(s) == 0 {
			t.Errorf("app %d received nothing: traffic was not spread", n)
		}
		for id, k := range s {
			seen[id] += k
			if attempts[id] > 1 {
				retriedAtApps++
			}
		}
		if e := app.stallsEscaped.Load(); e != 0 {
			t.Errorf("app %d: %d stalls were never cancelled by the per-try timeout", n, e)
		}
	}
	dups := 0
	for id, k := range seen {
		if k > 1 {
			dups++
			if dups <= 10 {
				t.Errorf("request %s reached the apps %d times", id, k)
			}
		}
	}
	if dups > 0 {
		t.Errorf("%d request ids were delivered more than once, want none", dups)
	}

	// Every request got one response, and the right one.
	outcomes := map[string]int{}
	bad := 0
	for i, res := range results {
		id := ids[i]
		var ok bool
		var what string
		switch {
		case res.err != nil:
			what = "transport error"
		case res.status == 503 && (res.meshErr == "retry_budget_exhausted" || res.meshErr == "upstream_connect_failure"):
			// Refused, and its retry was not allowed: it reached no app.
			what, ok = "refused, not retried ("+res.meshErr+")", seen[id] == 0
		case res.status == 504 && res.meshErr == "timeout":
			// Cut by the per-try timeout: every stall, and any request
			// slower than it on a loaded machine. The app may or may not
			// have received it when the timeout fired, but once at most.
			what, ok = "per-try timeout", seen[id] <= 1
			if resFaultOf(id) != resStall {
				what = "per-try timeout (slow, not a stall)"
			}
		default:
			switch resFaultOf(id) {
			case resOK:
				what, ok = "ok", res.status == 200 && res.meshErr == "" && res.body == id
			case resUnavailable:
				what, ok = "upstream 503", res.status == 503 && res.meshErr == ""
			case resReset:
				what, ok = "upstream reset", res.status == 502 && res.meshErr == "upstream_reset"
			case resStall:
				what = "stall answered other than 504 timeout"
			}
			ok = ok && seen[id] == 1
		}
		outcomes[what]++
		if !ok {
			bad++
			if bad <= 10 {
				t.Errorf("request %s (fault %d): got %d x-mesh-error %q body %.40q err %v, delivered %d times; classed %q",
					id, resFaultOf(id), res.status, res.meshErr, res.body, res.err, seen[id], what)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d responses were wrong", bad, requests)
	}

	retries := resMetric(t, client, "mesh_retry_decisions_total", "destination_service", service, "decision", "retry")
	connectFailures := 0
	for _, res := range results {
		if res.meshErr == "retry_budget_exhausted" || res.meshErr == "upstream_connect_failure" {
			connectFailures++
		}
	}
	// Every retry follows a refused connection and goes to a live
	// endpoint: each one that reached an app carries x-mesh-attempt 2.
	if float64(retriedAtApps) > retries {
		t.Errorf("apps saw %d retried requests but the sidecar counted %v retries", retriedAtApps, retries)
	}
	if retries == 0 {
		t.Error("no POST was retried: the refused endpoint never got a first try")
	}
	if other := resMetric(t, client, "mesh_retry_decisions_total", "destination_service", service, "decision", "not_idempotent"); other == 0 {
		t.Error("no failed POST was refused a retry as not idempotent: the faults did not reach the client sidecar")
	}
	t.Logf("%d POSTs in %v with %d workers: outcomes %v; %v retried after a refused connection (%d seen retried at the apps), %d refused and not retried",
		requests, elapsed.Round(time.Millisecond), workers, outcomes, retries, retriedAtApps, connectFailures)
}

// TestResilienceRetryBudgetBounds fails every attempt (503 to GETs, which
// are idempotent and retried on unavailable by default) and checks that
// the retry budget caps the attempts: retries ≤ ratio × requests +
// minPerSecond × window, the budget's documented bound over any window.
// The same load without a budget makes three attempts per request, so the
// bound is what stopped them.
func TestResilienceRetryBudgetBounds(t *testing.T) {
	const (
		requests     = 300
		workers      = 8
		maxAttempts  = 3
		ratio        = 0.1
		minPerSecond = 5
		window       = 10 * time.Second
		service      = "flaky"
	)
	type counted struct {
		mu   sync.Mutex
		seen map[string]int
	}
	apps := &counted{seen: map[string]int{}}
	var endpoints []string
	for range 2 {
		app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			apps.mu.Lock()
			apps.seen[r.Header.Get("X-Request-Id")]++
			apps.mu.Unlock()
			http.Error(w, "down", http.StatusServiceUnavailable)
		})
		endpoints = append(endpoints, startSidecar(t, testConfig(service, startApp(t, app), config.ProtocolHTTP1)).addr("inbound"))
	}
	upstream := func(b *config.BudgetSpec) map[string]config.Upstream {
		return map[string]config.Upstream{service: {Endpoints: endpoints, Resilience: &config.Resilience{
			Retry: &config.RetrySpec{MaxAttempts: resPtr(maxAttempts),
				BackoffBase: resDur(time.Millisecond), BackoffMax: resDur(2 * time.Millisecond)},
			Budget:  b,
			Breaker: &config.BreakerSpec{ConsecutiveFailures: resPtr(0)},
			Outlier: &config.OutlierSpec{ConsecutiveGatewayErrors: resPtr(0)},
		}}}
	}
	// run sends the requests through client and returns, per request id,
	// the attempts the apps received and the response's x-mesh-error.
	run := func(client *runningSidecar, prefix string) (attempts map[string]int, meshErrs map[string]string, elapsed time.Duration) {
		url := "http://" + client.addr("outbound") + "/item"
		ctx := testContext(t, time.Minute)
		meshErrs = make(map[string]string, requests)
		var mu sync.Mutex
		work := make(chan string)
		var wg sync.WaitGroup
		c := h1Client()
		for range workers {
			wg.Go(func() {
				for id := range work {
					res := resDo(ctx, c, "GET", url, service, id, "")
					if res.err != nil || res.status != 503 {
						t.Errorf("%s: got %d, %v; want 503", id, res.status, res.err)
					}
					mu.Lock()
					meshErrs[id] = res.meshErr
					mu.Unlock()
				}
			})
		}
		start := time.Now()
		for i := range requests {
			work <- fmt.Sprintf("%s-%04d", prefix, i)
		}
		close(work)
		wg.Wait()
		elapsed = time.Since(start)
		attempts = map[string]int{}
		apps.mu.Lock()
		for id, n := range apps.seen {
			if strings.HasPrefix(id, prefix+"-") {
				attempts[id] = n
			}
		}
		apps.mu.Unlock()
		return attempts, meshErrs, elapsed
	}
	total := func(m map[string]int) (n int) {
		for _, v := range m {
			n += v
		}
		return n
	}

	// Unbudgeted: a ratio of 1 and a floor far above the load.
	free := startSidecar(t, resClientConfig(upstream(&config.BudgetSpec{Ratio: resPtr(1.0), MinPerSecond: resPtr(10_000)})))
	freeAttempts, freeErrs, _ := run(free, "free")
	if got := total(freeAttempts); got != maxAttempts*requests {
		t.Errorf("without a budget: %d attempts, want every request tried %d times (%d)", got, maxAttempts, maxAttempts*requests)
	}
	for id, e := range freeErrs {
		if e != "" {
			t.Errorf("without a budget, %s got x-mesh-error %q, want the upstream's plain 503", id, e)
		}
	}

	// Budgeted.
	client := startSidecar(t, resClientConfig(upstream(&config.BudgetSpec{
		Ratio: resPtr(ratio), MinPerSecond: resPtr(minPerSecond), Window: resDur(window)})))
	attempts, meshErrs, elapsed := run(client, "budget")
	got := total(attempts)
	// Each request deposits 1/ratio of a retry's cost; the floor is a
	// standing reserve of minPerSecond × window retries. Deposits and
	// withdrawals leave the window in tenths of it, so while the run is
	// shorter than nine tenths of the window nothing expires and the bound
	// is exact, with no slack: every request wants two retries, so the
	// budget is spent to below one retry's worth.
	reserve := minPerSecond * int(window/time.Second)
	bound := requests + int(math.Floor(ratio*requests)) + reserve
	if elapsed < window*9/10 {
		if got != bound {
			t.Errorf("with the budget: %d attempts in %v, want exactly %d (%d requests + %v × %d + %d × %v)",
				got, elapsed, bound, requests, ratio, requests, minPerSecond, window)
		}
	} else {
		// The window slid during the run: each window may spend the
		// reserve once more.
		bound += reserve * int(elapsed/window+1)
		if got > bound {
			t.Errorf("with the budget: %d attempts in %v, want at most %d", got, elapsed, bound)
		}
	}
	if got >= total(freeAttempts) {
		t.Errorf("the budget did not bind: %d attempts with it, %d without", got, total(freeAttempts))
	}
	// Requests that used every attempt got the upstream's 503; every other
	// one was refused a retry by the budget and says so.
	exhausted := 0
	for id, e := range meshErrs {
		full := attempts[id] == maxAttempts
		switch {
		case full && e != "":
			t.Errorf("%s used all %d attempts but got x-mesh-error %q", id, maxAttempts, e)
		case !full && e != "retry_budget_exhausted":
			t.Errorf("%s made %d attempts and got x-mesh-error %q, want retry_budget_exhausted", id, attempts[id], e)
		case !full:
			exhausted++
		}
	}
	if m := resMetric(t, client, "mesh_retry_budget_exhausted_total", "destination_service", service); int(m) != exhausted {
		t.Errorf("mesh_retry_budget_exhausted_total = %v, want %d (responses that said so)", m, exhausted)
	}
	briefBound := requests + int(ratio*requests) + minPerSecond*min(int(math.Ceil(elapsed.Seconds())), int(window/time.Second))
	t.Logf("%d requests: %d attempts with the budget (bound %d; a floor accruing per elapsed second would allow %d) in %v, %d without; %d answered retry_budget_exhausted",
		requests, got, bound, briefBound, elapsed.Round(time.Millisecond), total(freeAttempts), exhausted)
}

// TestResilienceCircuitBreaker opens an endpoint's breaker after
// consecutive failures, answers circuit_open without reaching the app
// while it is open, lets a probe through after openFor and closes on its
// success; with a second, healthy endpoint, traffic flows around an open
// breaker.
func TestResilienceCircuitBreaker(t *testing.T) {
	const threshold = 3
	policy := func(openFor time.Duration) *config.Resilience {
		return &config.Resilience{
			Retry:   &config.RetrySpec{MaxAttempts: resPtr(1)},
			Breaker: &config.BreakerSpec{ConsecutiveFailures: resPtr(threshold), OpenFor: resDur(openFor)},
			Outlier: &config.OutlierSpec{ConsecutiveGatewayErrors: resPtr(0)},
		}
	}

	t.Run("one endpoint opens, probes and closes", func(t *testing.T) {
		const openFor = time.Second
		app := newResSwitchApp(503)
		server := startSidecar(t, testConfig("pay", startApp(t, app), config.ProtocolHTTP1))
		ep := server.addr("inbound")
		client := startSidecar(t, resClientConfig(map[string]config.Upstream{"pay": {Endpoints: []string{ep}, Resilience: policy(openFor)}}))
		url := "http://" + client.addr("outbound") + "/charge"
		ctx := testContext(t, 30*time.Second)
		c := h1Client()

		for i := range threshold {
			if res := resDo(ctx, c, "GET", url, "pay", "", ""); res.status != 503 || res.meshErr != "" {
				t.Fatalf("failure %d: got %d %q, %v; want the app's 503", i+1, res.status, res.meshErr, res.err)
			}
		}
		openedAt := time.Now()
		// gobreaker reports half-open once openFor has passed: only a read
		// made within openFor must say open.
		if st := resClusters(t, client, "pay")[ep].breaker(); st != "open" && time.Since(openedAt) < openFor {
			t.Fatalf("after %d failures the breaker is %q, want open", threshold, st)
		}
		res := resDo(ctx, c, "GET", url, "pay", "", "")
		if time.Since(openedAt) < openFor && (res.status != 503 || res.meshErr != "circuit_open") {
			t.Fatalf("while open: got %d %q, %v; want 503 circuit_open", res.status, res.meshErr, res.err)
		}
		if n := app.hits.Load(); n != threshold {
			t.Fatalf("the app received %d requests, want %d: an open breaker let one through", n, threshold)
		}

		// Healthy again: after openFor a probe reaches the app and closes
		// the breaker.
		app.status.Store(200)
		waitFor(t, 10*time.Second, "a request to succeed after openFor", func() bool {
			res := resDo(ctx, c, "GET", url, "pay", "", "")
			switch {
			case res.status == 200:
				return true
			case res.status == 503 && res.meshErr == "circuit_open":
				return false
			}
			t.Fatalf("while waiting for the probe: got %d %q, %v", res.status, res.meshErr, res.err)
			return false
		})
		if waited := time.Since(openedAt); waited < openFor {
			t.Errorf("a request reached the app %v after the breaker opened, before openFor (%v)", waited, openFor)
		}
		if st := resClusters(t, client, "pay")[ep].breaker(); st != "closed" {
			t.Fatalf("after the probe succeeded the breaker is %q, want closed", st)
		}
		for range 5 {
			if res := resDo(ctx, c, "GET", url, "pay", "", ""); res.status != 200 {
				t.Fatalf("after closing: got %d %q, %v", res.status, res.meshErr, res.err)
			}
		}
		for _, to := range []string{"open", "half-open", "closed"} {
			if n := resMetric(t, client, "mesh_circuit_breaker_transitions_total", "destination_service", "pay", "to", to); n != 1 {
				t.Errorf("breaker transitions to %s: %v, want 1", to, n)
			}
		}
	})

	t.Run("traffic flows around an open breaker", func(t *testing.T) {
		good, bad := newResSwitchApp(200), newResSwitchApp(503)
		goodEP := startSidecar(t, testConfig("pay", startApp(t, good), config.ProtocolHTTP1)).addr("inbound")
		badEP := startSidecar(t, testConfig("pay", startApp(t, bad), config.ProtocolHTTP1)).addr("inbound")
		client := startSidecar(t, resClientConfig(map[string]config.Upstream{"pay": {
			Endpoints: []string{goodEP, badEP}, LoadBalancer: config.LBRoundRobin, Resilience: policy(time.Minute)}}))
		url := "http://" + client.addr("outbound") + "/charge"
		ctx := testContext(t, 30*time.Second)
		c := h1Client()
		waitFor(t, 10*time.Second, "the failing endpoint's breaker to open", func() bool {
			res := resDo(ctx, c, "GET", url, "pay", "", "")
			if res.err != nil || (res.status != 200 && res.status != 503) {
				t.Fatalf("got %d, %v", res.status, res.err)
			}
			return resClusters(t, client, "pay")[badEP].breaker() == "open"
		})
		if n := bad.hits.Load(); n != threshold {
			t.Errorf("the failing app received %d requests before its breaker opened, want %d", n, threshold)
		}
		for i := range 20 {
			if res := resDo(ctx, c, "GET", url, "pay", "", ""); res.status != 200 {
				t.Fatalf("request %d with one breaker open: got %d %q, %v; want 200 from the healthy endpoint", i, res.status, res.meshErr, res.err)
			}
		}
		if n := bad.hits.Load(); n != threshold {
			t.Errorf("the failing app received %d requests, want %d: its open breaker let traffic through", n, threshold)
		}
		if st := resClusters(t, client, "pay")[goodEP].breaker(); st != "closed" {
			t.Errorf("the healthy endpoint's breaker is %q, want closed", st)
		}
	})
}

// TestResilienceOutlierDetection ejects an endpoint that returns
// consecutive 502s, never more than maxEjectionPercent of the endpoints,
// and lets it back after the ejection time.
func TestResilienceOutlierDetection(t *testing.T) {
	const (
		threshold = 3
		ejection  = time.Second // the least Validate allows
	)
	start := func(t *testing.T, a, b *resSwitchApp) (client *runningSidecar, epA, epB, url string) {
		epA = startSidecar(t, testConfig("stock", startApp(t, a), config.ProtocolHTTP1)).addr("inbound")
		epB = startSidecar(t, testConfig("stock", startApp(t, b), config.ProtocolHTTP1)).addr("inbound")
		client = startSidecar(t, resClientConfig(map[string]config.Upstream{"stock": {
			Endpoints: []string{epA, epB}, LoadBalancer: config.LBRoundRobin,
			Resilience: &config.Resilience{
				Retry:   &config.RetrySpec{MaxAttempts: resPtr(1)},
				Breaker: &config.BreakerSpec{ConsecutiveFailures: resPtr(0)},
				Outlier: &config.OutlierSpec{ConsecutiveGatewayErrors: resPtr(threshold),
					BaseEjection: resDur(ejection), MaxEjectionPercent: resPtr(50)},
			},
		}}))
		return client, epA, epB, "http://" + client.addr("outbound") + "/level"
	}

	t.Run("eject and return", func(t *testing.T) {
		good, bad := newResSwitchApp(200), newResSwitchApp(502)
		client, _, badEP, url := start(t, good, bad)
		ctx := testContext(t, 30*time.Second)
		c := h1Client()
		waitFor(t, 10*time.Second, "the failing endpoint to be ejected", func() bool {
			if res := resDo(ctx, c, "GET", url, "stock", "", ""); res.err != nil {
				t.Fatal(res.err)
			}
			return resClusters(t, client, "stock")[badEP].ejected()
		})
		if n := bad.hits.Load(); n != threshold {
			t.Errorf("the failing app received %d requests before ejection, want %d", n, threshold)
		}
		ep := resClusters(t, client, "stock")[badEP]
		if until := ep.Resilience.EjectedUntil; !until.IsZero() && time.Until(until) > ejection {
			t.Errorf("ejected until %v from now, want at most the base ejection %v", time.Until(until), ejection)
		}
		// While ejected, everything goes to the other endpoint (sent only
		// while the ejection has a comfortable margin left).
		ejectedFor := func() time.Duration {
			if ep := resClusters(t, client, "stock")[badEP]; ep.ejected() {
				return time.Until(ep.Resilience.EjectedUntil)
			}
			return 0
		}
		for i := 0; i < 10 && ejectedFor() > ejection/4; i++ {
			if res := resDo(ctx, c, "GET", url, "stock", "", ""); res.status != 200 {
				t.Fatalf("while one endpoint is ejected: got %d %q, %v", res.status, res.meshErr, res.err)
			}
		}
		if n := bad.hits.Load(); n != threshold {
			t.Errorf("the ejected app received %d requests, want %d", n, threshold)
		}
		// It returns after the ejection time and serves again.
		bad.status.Store(200)
		ejectedAt := time.Now()
		waitFor(t, 10*time.Second, "the ejection to end", func() bool { return !resClusters(t, client, "stock")[badEP].ejected() })
		waitFor(t, 10*time.Second, "the returned endpoint to serve", func() bool {
			if res := resDo(ctx, c, "GET", url, "stock", "", ""); res.status != 200 {
				t.Fatalf("after the ejection: got %d %q, %v", res.status, res.meshErr, res.err)
			}
			return bad.hits.Load() > threshold
		})
		if n := resMetric(t, client, "mesh_outlier_ejections_total", "destination_service", "stock"); n != 1 {
			t.Errorf("mesh_outlier_ejections_total = %v, want 1", n)
		}
		t.Logf("returned within %v of the ejection being seen", time.Since(ejectedAt).Round(time.Millisecond))
	})

	t.Run("at most max ejection percent", func(t *testing.T) {
		a, b := newResSwitchApp(502), newResSwitchApp(502)
		client, epA, epB, url := start(t, a, b)
		ctx := testContext(t, 30*time.Second)
		c := h1Client()
		everEjected := 0
		for i := range 4 * threshold {
			if res := resDo(ctx, c, "GET", url, "stock", "", ""); res.status != 502 {
				t.Fatalf("request %d: got %d %q, %v; want the apps' 502", i, res.status, res.meshErr, res.err)
			}
			eps := resClusters(t, client, "stock")
			n := 0
			for _, ep := range []string{epA, epB} {
				if eps[ep].ejected() {
					n++
				}
			}
			if n > 1 {
				t.Fatalf("after request %d both endpoints are ejected; 50 %% of 2 allows one", i)
			}
			everEjected = max(everEjected, n)
		}
		if everEjected != 1 {
			t.Errorf("no endpoint was ejected after %d consecutive 502s each", threshold)
		}
		if a.hits.Load()+b.hits.Load() != 4*threshold {
			t.Errorf("the apps received %d requests, want %d", a.hits.Load()+b.hits.Load(), 4*threshold)
		}
	})
}

// resGRPCCall sends a unary gRPC-shaped request (an empty message) over
// h2c and returns the response and its grpc-status (from the headers of a
// trailers-only response, or the trailers).
func resGRPCCall(ctx context.Context, outbound, host, path, timeout string) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+outbound+path, bytes.NewReader(make([]byte, 5)))
	if err != nil {
		return nil, "", err
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	if timeout != "" {
		req.Header.Set("Grpc-Timeout", timeout)
	}
	resp, err := h2cClient().Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return resp, "", err
	}
	st := resp.Header.Get("Grpc-Status")
	if st == "" {
		st = resp.Trailer.Get("Grpc-Status")
	}
	return resp, st, nil
}

// TestResilienceDeadlines checks deadlines across two hops: a gRPC call's
// grpc-timeout reaches the app as what is left of it, a call that
// outlives it is answered DEADLINE_EXCEEDED and the app's request is
// cancelled; a plain request past the overall timeout is answered 504
// timeout; an idempotent request refused by one endpoint is retried on
// another.
func TestResilienceDeadlines(t *testing.T) {
	var (
		grpcTimeouts     = make(chan string, 1)
		grpcCancelled    = make(chan bool, 1)
		plainCancelled   = make(chan bool, 1)
		attemptsMu       sync.Mutex
		attemptsSeen     []string
		grpcApp, httpApp http.HandlerFunc
	)
	grpcApp = func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/res.Deadlines/Fast":
			grpcTimeouts <- r.Header.Get("Grpc-Timeout")
		case "/res.Deadlines/Stall":
			grpcCancelled <- resStallUntilDone(r.Context())
			return
		case "/res.Deadlines/StallStreaming":
			// Headers and a first message, then silence: the stream outlives
			// its deadline after the response began.
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(make([]byte, 5))
			http.NewResponseController(w).Flush()
			grpcCancelled <- resStallUntilDone(r.Context())
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "0")
		w.WriteHeader(http.StatusOK)
	}
	httpApp = func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stall":
			plainCancelled <- resStallUntilDone(r.Context())
			return
		case "/attempt":
			attemptsMu.Lock()
			attemptsSeen = append(attemptsSeen, r.Header.Get(HeaderAttempt))
			attemptsMu.Unlock()
		}
		_, _ = io.WriteString(w, "ok")
	}
	grpcEP := startSidecar(t, testConfig("deadlines", startApp(t, grpcApp), config.ProtocolGRPC)).addr("inbound")
	httpEP := startSidecar(t, testConfig("slow", startApp(t, httpApp), config.ProtocolHTTP1)).addr("inbound")
	const overall = 300 * time.Millisecond
	client := startSidecar(t, resClientConfig(map[string]config.Upstream{
		"deadlines": {Endpoints: []string{grpcEP}},
		"slow": {Endpoints: []string{httpEP}, Resilience: &config.Resilience{
			Timeouts: &config.TimeoutsSpec{Overall: resDur(overall)}}},
		"retried": {Endpoints: []string{resClosedPort(t), httpEP}, LoadBalancer: config.LBRoundRobin},
	}))
	out := client.addr("outbound")
	ctx := testContext(t, 30*time.Second)

	t.Run("grpc-timeout reaches the app as the time left", func(t *testing.T) {
		resp, st, err := resGRPCCall(ctx, out, "deadlines", "/res.Deadlines/Fast", "500m")
		if err != nil || resp.StatusCode != 200 || st != "0" {
			t.Fatalf("got %v, grpc-status %q, %v; want OK", resp, st, err)
		}
		v := <-grpcTimeouts
		d, err := resilience.ParseGRPCTimeout(v)
		if err != nil {
			t.Fatalf("the app saw grpc-timeout %q: %v", v, err)
		}
		if d <= 0 || d >= 500*time.Millisecond {
			t.Errorf("the app saw grpc-timeout %q (%v), want what is left of the caller's 500ms, less than it", v, d)
		}
	})

	t.Run("a stalled gRPC call ends DEADLINE_EXCEEDED", func(t *testing.T) {
		start := time.Now()
		resp, st, err := resGRPCCall(ctx, out, "deadlines", "/res.Deadlines/Stall", "500m")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || st != "4" || resp.Header.Get("Grpc-Status") != "4" || resp.Header.Get(HeaderError) != "timeout" {
			t.Errorf("got HTTP %d grpc-status %q (in headers: %q) x-mesh-error %q; want a trailers-only DEADLINE_EXCEEDED (4) with timeout",
				resp.StatusCode, st, resp.Header.Get("Grpc-Status"), resp.Header.Get(HeaderError))
		}
		if elapsed := time.Since(start); elapsed < 500*time.Millisecond {
			t.Errorf("answered after %v, before the 500ms deadline", elapsed)
		}
		if !<-grpcCancelled {
			t.Error("the app's stalled request was never cancelled")
		}
	})

	t.Run("a gRPC stream past its deadline ends with DEADLINE_EXCEEDED trailers", func(t *testing.T) {
		resp, st, err := resGRPCCall(ctx, out, "deadlines", "/res.Deadlines/StallStreaming", "300m")
		if err != nil {
			t.Fatalf("got %v: the stream was reset instead of ended with trailers", err)
		}
		if resp.StatusCode != 200 || st != "4" || resp.Trailer.Get(HeaderError) != "timeout" {
			t.Errorf("got HTTP %d grpc-status %q x-mesh-error trailer %q; want DEADLINE_EXCEEDED (4) with timeout in the trailers",
				resp.StatusCode, st, resp.Trailer.Get(HeaderError))
		}
		if !<-grpcCancelled {
			t.Error("the app's stalled stream was never cancelled")
		}
	})

	t.Run("a plain request past the overall timeout gets 504", func(t *testing.T) {
		start := time.Now()
		res := resDo(ctx, h1Client(), "GET", "http://"+out+"/stall", "slow", "", "")
		if res.status != 504 || res.meshErr != "timeout" {
			t.Errorf("got %d %q, %v; want 504 timeout", res.status, res.meshErr, res.err)
		}
		if elapsed := time.Since(start); elapsed < overall {
			t.Errorf("answered after %v, before the overall timeout %v", elapsed, overall)
		}
		if !<-plainCancelled {
			t.Error("the app's stalled request was never cancelled")
		}
	})

	t.Run("an idempotent request refused by one endpoint is retried on another", func(t *testing.T) {
		const n = 4 // round robin over two: half the first tries hit the refused endpoint
		c := h1Client()
		for i := range n {
			if res := resDo(ctx, c, "GET", "http://"+out+"/attempt", "retried", "", ""); res.status != 200 || res.body != "ok" {
				t.Fatalf("request %d: got %d %q %q, %v; want 200 after a retry", i, res.status, res.meshErr, res.body, res.err)
			}
		}
		attemptsMu.Lock()
		seen := append([]string(nil), attemptsSeen...)
		attemptsMu.Unlock()
		retried := 0
		for _, a := range seen {
			if a == "2" {
				retried++
			}
		}
		// Each first try that hit the refused endpoint failed once and was
		// retried once, on the live one.
		failed := resMetric(t, client, "mesh_upstream_attempts_total", "destination_service", "retried", "outcome", "failure")
		if len(seen) != n || retried == 0 || float64(retried) != failed {
			t.Errorf("the app saw x-mesh-attempt %v after %v refused attempts; want %d requests, each refused one on attempt 2", seen, failed, n)
		}
	})
}

// TestResilienceFaultInjectionAndRateLimit checks the file-level fault
// injection (abort and delay) on the outbound side and the instance-wide
// inbound rate limit.
func TestResilienceFaultInjectionAndRateLimit(t *testing.T) {
	ctx := testContext(t, 30*time.Second)

	t.Run("abort", func(t *testing.T) {
		app := newResSwitchApp(200)
		ep := startSidecar(t, testConfig("shop", startApp(t, app), config.ProtocolH2C)).addr("inbound")
		cfg := resClientConfig(map[string]config.Upstream{"shop": {Endpoints: []string{ep}}})
		cfg.Resilience = &config.Resilience{Fault: &config.FaultSpec{AbortPercent: 100, AbortStatus: 503}}
		client := startSidecar(t, cfg)
		for range 3 {
			res := resDo(ctx, h1Client(), "GET", "http://"+client.addr("outbound")+"/", "shop", "", "")
			if res.status != 503 || res.meshErr != "fault_injected" {
				t.Errorf("got %d %q, %v; want 503 fault_injected", res.status, res.meshErr, res.err)
			}
		}
		resp, st, err := resGRPCCall(ctx, client.addr("outbound"), "shop", "/res.Shop/Buy", "")
		if err != nil || resp.StatusCode != 200 || st != "14" || resp.Header.Get(HeaderError) != "fault_injected" {
			t.Errorf("gRPC: got %v grpc-status %q, %v; want UNAVAILABLE (14, from 503) with fault_injected", resp, st, err)
		}
		if n := app.hits.Load(); n != 0 {
			t.Errorf("the app received %d aborted requests, want none", n)
		}
		if n := resMetric(t, client, "mesh_faults_injected_total", "destination_service", "shop", "kind", "abort"); n != 4 {
			t.Errorf("aborts counted: %v, want 4", n)
		}
	})

	t.Run("delay", func(t *testing.T) {
		const delay = 200 * time.Millisecond
		app := newResSwitchApp(200)
		ep := startSidecar(t, testConfig("shop", startApp(t, app), config.ProtocolHTTP1)).addr("inbound")
		cfg := resClientConfig(map[string]config.Upstream{"shop": {Endpoints: []string{ep}}})
		cfg.Resilience = &config.Resilience{Fault: &config.FaultSpec{DelayPercent: 100, Delay: config.Duration{Duration: delay}}}
		client := startSidecar(t, cfg)
		start := time.Now()
		res := resDo(ctx, h1Client(), "GET", "http://"+client.addr("outbound")+"/", "shop", "", "")
		if res.status != 200 {
			t.Fatalf("got %d %q, %v; want 200 after the delay", res.status, res.meshErr, res.err)
		}
		if elapsed := time.Since(start); elapsed < delay {
			t.Errorf("answered after %v, want at least the injected %v", elapsed, delay)
		}
		if n := app.hits.Load(); n != 1 {
			t.Errorf("the app received %d requests, want 1", n)
		}
		if n := resMetric(t, client, "mesh_faults_injected_total", "destination_service", "shop", "kind", "delay"); n != 1 {
			t.Errorf("delays counted: %v, want 1", n)
		}
	})

	t.Run("inbound rate limit", func(t *testing.T) {
		const burst = 3
		app := newResSwitchApp(200)
		scfg := testConfig("shop", startApp(t, app), config.ProtocolHTTP1)
		// A refill of one token per 1000 s: nothing comes back during the test.
		scfg.Inbound.RateLimit = &config.RateLimitSpec{PerSecond: 0.001, Burst: burst}
		server := startSidecar(t, scfg)
		client := startSidecar(t, resClientConfig(map[string]config.Upstream{"shop": {Endpoints: []string{server.addr("inbound")}}}))
		c := h1Client()
		for i := range burst + 3 {
			res := resDo(ctx, c, "GET", "http://"+client.addr("outbound")+"/", "shop", "", "")
			switch {
			case i < burst && res.status != 200:
				t.Errorf("request %d within the burst: got %d %q, %v", i, res.status, res.meshErr, res.err)
			case i >= burst && (res.status != 429 || res.meshErr != "rate_limited"):
				t.Errorf("request %d past the burst: got %d %q, %v; want 429 rate_limited", i, res.status, res.meshErr, res.err)
			}
		}
		if n := app.hits.Load(); n != burst {
			t.Errorf("the app received %d requests, want %d", n, burst)
		}
		if n := resMetric(t, server, "mesh_rate_limited_total"); n != 3 {
			t.Errorf("mesh_rate_limited_total = %v, want 3", n)
		}
	})
}

// TestResilienceClientCancelIsExcluded cancels requests mid-flight: they
// are excluded from the endpoint's health, never counted as failures, so
// the breaker stays closed however many there are.
func TestResilienceClientCancelIsExcluded(t *testing.T) {
	const (
		cancelled = 20
		threshold = 2 // the breaker would open after two failures
	)
	var inFlight atomic.Int64
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			inFlight.Add(1)
			resStallUntilDone(r.Context())
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	ep := startSidecar(t, testConfig("feed", startApp(t, app), config.ProtocolHTTP1)).addr("inbound")
	client := startSidecar(t, resClientConfig(map[string]config.Upstream{"feed": {Endpoints: []string{ep}, Resilience: &config.Resilience{
		Breaker: &config.BreakerSpec{ConsecutiveFailures: resPtr(threshold)},
		Outlier: &config.OutlierSpec{ConsecutiveGatewayErrors: resPtr(threshold)},
	}}}))
	url := "http://" + client.addr("outbound")
	excludedBefore := resMetric(t, client, "mesh_upstream_attempts_total", "destination_service", "feed", "outcome", "excluded")
	attemptsBefore := resMetric(t, client, "mesh_upstream_attempts_total", "destination_service", "feed")

	ctx, cancel := context.WithCancel(testContext(t, 30*time.Second))
	var wg sync.WaitGroup
	c := h1Client()
	errs := make(chan error, cancelled)
	for range cancelled {
		wg.Go(func() {
			res := resDo(ctx, c, "GET", url+"/stall", "feed", "", "")
			errs <- res.err
		})
	}
	waitFor(t, 10*time.Second, "every request to reach the app", func() bool { return inFlight.Load() == cancelled })
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			t.Error("a cancelled request got a response")
		}
	}
	waitFor(t, 10*time.Second, "the sidecar to finish the cancelled attempts", func() bool {
		return resMetric(t, client, "mesh_upstream_attempts_total", "destination_service", "feed")-attemptsBefore >= cancelled
	})
	if n := resMetric(t, client, "mesh_upstream_attempts_total", "destination_service", "feed", "outcome", "excluded") - excludedBefore; n != cancelled {
		t.Errorf("mesh_upstream_attempts_total{outcome=\"excluded\"} grew by %v, want %d", n, cancelled)
	}
	h := resClusters(t, client, "feed")[ep]
	if h.Resilience == nil || h.breaker() != "closed" || h.Resilience.Failures != 0 || h.Resilience.Exclusions != cancelled || h.ejected() {
		t.Errorf("after %d cancelled requests the endpoint's health is %+v, want the breaker closed, no failures, %d exclusions, not ejected",
			cancelled, h.Resilience, cancelled)
	}
	if n := resMetric(t, client, "mesh_upstream_attempts_total", "destination_service", "feed", "outcome", "failure"); n != 0 {
		t.Errorf("%v attempts counted as failures, want none", n)
	}
	if res := resDo(testContext(t, 10*time.Second), c, "GET", url+"/", "feed", "", ""); res.status != 200 {
		t.Errorf("after the cancellations: got %d %q, %v; want 200", res.status, res.meshErr, res.err)
	}
}
