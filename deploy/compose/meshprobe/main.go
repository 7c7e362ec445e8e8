// Command meshprobe is the HTTP client of the container test
// (deploy/compose/test.sh). It has two jobs:
//
//	meshprobe load --url URL [--rps 20] [--duration 20s] [--timeout 2s] [--tally FIELD] [--max-failures 0]
//	    sends GET URL at a steady rate for a while and reports every request
//	    that did not answer 200 (transport error, timeout or other status),
//	    with the latency distribution; exits 1 when more than --max-failures
//	    requests failed.
//
//	meshprobe get [--token-file FILE] [--timeout 5s] URL
//	    prints the body of GET URL (with "Authorization: Bearer TOKEN" when
//	    --token-file is given); exits 1 unless the status is 2xx. It is a
//	    static binary, so the test runs it inside a scratch container that
//	    shares a sidecar's network namespace to read the loopback-only admin
//	    API (docker run --network container:ID).
//
// Exit status: 0 success, 1 a failed check or request, 2 bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxBody caps how much of a response body is read.
const maxBody = 1 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: meshprobe load|get [flags] (see the package documentation)")
		return 2
	}
	switch args[0] {
	case "load":
		return load(ctx, args[1:], stdout, stderr)
	case "get":
		return get(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "meshprobe: unknown command %q (want load or get)\n", args[0])
		return 2
	}
}

// get implements `meshprobe get`.
func get(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tokenFile := fs.String("token-file", "", "file holding a bearer token to send")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "meshprobe get: want exactly one URL")
		return 2
	}
	target := fs.Arg(0)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "meshprobe get: %v\n", err)
		return 2
	}
	if *tokenFile != "" {
		tok, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "meshprobe get: reading the token: %v\n", err)
			return 1
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "meshprobe get: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if _, werr := stdout.Write(body); werr != nil {
		fmt.Fprintf(stderr, "meshprobe get: %v\n", werr)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshprobe get %s: reading the body: %v\n", target, err)
		return 1
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "meshprobe get %s: %s\n", target, resp.Status)
		return 1
	}
	return 0
}

// loadConfig is what `meshprobe load` was asked to do.
type loadConfig struct {
	url         string
	rps         int
	duration    time.Duration
	timeout     time.Duration
	tally       string
	maxFailures int
}

// outcome is one request of a load run.
type outcome struct {
	start   time.Duration // since the run began
	latency time.Duration
	status  int    // 0 when no response came
	err     string // transport error, or the body of a non-200 answer
	tally   string // the --tally field of a 200 answer
}

// load implements `meshprobe load`.
func load(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg loadConfig
	fs.StringVar(&cfg.url, "url", "", "URL to GET (required)")
	fs.IntVar(&cfg.rps, "rps", 20, "requests per second, sent at a steady pace whatever the answers take")
	fs.DurationVar(&cfg.duration, "duration", 20*time.Second, "how long to send")
	fs.DurationVar(&cfg.timeout, "timeout", 2*time.Second, "a request that takes longer fails")
	fs.StringVar(&cfg.tally, "tally", "", "count the values of this top-level JSON field of the 200 answers")
	fs.IntVar(&cfg.maxFailures, "max-failures", 0, "exit 1 when more requests than this fail")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "meshprobe load: %v\n", err)
		return 2
	}
	results := runLoad(ctx, cfg)
	failed := report(stdout, cfg, results)
	if failed > cfg.maxFailures {
		fmt.Fprintf(stderr, "meshprobe load: %d of %d requests failed (at most %d allowed)\n", failed, len(results), cfg.maxFailures)
		return 1
	}
	return 0
}

func (c loadConfig) validate() error {
	switch {
	case c.url == "":
		return errors.New("--url is required")
	case c.rps < 1 || c.rps > 1000:
		return fmt.Errorf("--rps must be between 1 and 1000, got %d", c.rps)
	case c.duration <= 0 || c.duration > 10*time.Minute:
		return fmt.Errorf("--duration must be positive and at most 10m, got %s", c.duration)
	case c.timeout <= 0:
		return fmt.Errorf("--timeout must be positive, got %s", c.timeout)
	case c.maxFailures < 0:
		return fmt.Errorf("--max-failures must not be negative, got %d", c.maxFailures)
	}
	return nil
}

// runLoad sends cfg.rps requests a second for cfg.duration, each in its own
// goroutine so that a slow answer does not delay the next request, and
// returns every outcome in the order the requests were sent.
func runLoad(ctx context.Context, cfg loadConfig) []outcome {
	client := &http.Client{
		Timeout:   cfg.timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.rps, IdleConnTimeout: 30 * time.Second},
	}
	defer client.CloseIdleConnections()

	total := int(cfg.duration.Seconds() * float64(cfg.rps))
	results := make([]outcome, total)
	interval := time.Second / time.Duration(cfg.rps)
	began := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()

	var wg sync.WaitGroup
	for i := range total {
		if i > 0 {
			select {
			case <-ctx.Done():
				// Interrupted: the requests never sent count as failures.
				for j := i; j < total; j++ {
					results[j] = outcome{start: time.Since(began), err: "not sent: " + ctx.Err().Error()}
				}
				wg.Wait()
				return results
			case <-tick.C:
			}
		}
		wg.Go(func() { results[i] = probe(ctx, client, cfg, began) })
	}
	wg.Wait()
	return results
}

// probe sends one GET and classifies the answer.
func probe(ctx context.Context, client *http.Client, cfg loadConfig, began time.Time) outcome {
	start := time.Now()
	o := outcome{start: start.Sub(began)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.url, nil)
	if err != nil {
		o.err = err.Error()
		return o
	}
	resp, err := client.Do(req)
	if err != nil {
		o.latency = time.Since(start)
		o.err = err.Error()
		return o
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	o.latency = time.Since(start)
	o.status = resp.StatusCode
	switch {
	case err != nil:
		o.err = "reading the body: " + err.Error()
	case resp.StatusCode != http.StatusOK:
		o.err = strings.TrimSpace(string(body))
	case cfg.tally != "":
		o.tally = field(body, cfg.tally)
	}
	return o
}

// field returns the top-level JSON string field name of body, or "?" when
// body is not a JSON object with such a string.
func field(body []byte, name string) string {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return "?"
	}
	if s, ok := m[name].(string); ok {
		return s
	}
	return "?"
}

// report prints the run's summary and every failure (the first 20 in
// full), and returns the number of failed requests.
func report(w io.Writer, cfg loadConfig, results []outcome) int {
	var failed []outcome
	latencies := make([]time.Duration, 0, len(results))
	tallies := map[string]int{}
	statuses := map[int]int{}
	for _, o := range results {
		statuses[o.status]++
		if o.err != "" {
			failed = append(failed, o)
			continue
		}
		latencies = append(latencies, o.latency)
		if cfg.tally != "" {
			tallies[o.tally]++
		}
	}
	slices.Sort(latencies)
	fmt.Fprintf(w, "load: GET %s, %d rps for %s: %d sent, %d ok, %d failed\n",
		cfg.url, cfg.rps, cfg.duration, len(results), len(results)-len(failed), len(failed))
	if len(latencies) > 0 {
		fmt.Fprintf(w, "load: latency of the ok requests: p50 %s, p99 %s, max %s\n",
			percentile(latencies, 0.50), percentile(latencies, 0.99), latencies[len(latencies)-1])
	}
	fmt.Fprintf(w, "load: statuses: %s\n", countsOf(statuses, func(s int) string {
		if s == 0 {
			return "no-response"
		}
		return fmt.Sprint(s)
	}))
	if cfg.tally != "" {
		fmt.Fprintf(w, "load: %s: %s\n", cfg.tally, countsOf(tallies, func(s string) string { return s }))
	}
	for i, o := range failed {
		if i == 20 {
			fmt.Fprintf(w, "load: ... and %d more failures\n", len(failed)-i)
			break
		}
		fmt.Fprintf(w, "load: FAILED at +%s after %s: status %d: %s\n",
			o.start.Round(time.Millisecond), o.latency.Round(time.Millisecond), o.status, oneLine(o.err))
	}
	return len(failed)
}

// percentile returns the q-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i].Round(100 * time.Microsecond)
}

// countsOf renders counts as "key=n, key=n" in key order.
func countsOf[K int | string](counts map[K]int, name func(K) string) string {
	keys := make([]K, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", name(k), counts[k])
	}
	return strings.Join(parts, ", ")
}

// oneLine folds s onto one line and caps it at 300 bytes.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
