package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// retryRequests is how many GETs the retries step sends to the flaky service.
const retryRequests = 20

// echoAttempt is the attempt number the echo app saw, from the request
// headers it echoes back.
func echoAttempt(body []byte) string {
	var v struct {
		Headers map[string]string `json:"headers"`
	}
	if json.Unmarshal(body, &v) != nil || v.Headers["X-Mesh-Attempt"] == "" {
		return "?"
	}
	return v.Headers["X-Mesh-Attempt"]
}

// stepRetries calls the flaky service and shows that the caller's sidecar
// retried the 503s it got.
func (d *demo) stepRetries(ctx context.Context, m *mesh) error {
	fmt.Printf("retries: flaky-1 answers 503 to 30%% of requests (echo --fail-rate 0.3); %d GETs through the mesh\n", retryRequests)
	fmt.Printf("   $ curl -H 'Host: flaky' http://%s/items/N\n", m.web.outbound)
	statuses, attempts := map[string]int{}, map[string]int{}
	for i := 1; i <= retryRequests; i++ {
		r, err := call(ctx, m, http.MethodGet, "flaky", fmt.Sprintf("/items/%d", i), "", nil)
		if err != nil {
			return err
		}
		statuses[fmt.Sprint(r.status)]++
		if r.status == http.StatusOK {
			attempts["attempt "+echoAttempt(r.body)]++
		}
	}
	fmt.Printf("   the caller got:   %s\n", sortedCounts(statuses))
	fmt.Printf("   answered on:      %s   (x-mesh-attempt as the app saw it)\n", sortedCounts(attempts))
	fmt.Println("   a GET is idempotent and 503 is retriable, so the web sidecar retried each 503 after a short")
	fmt.Println("   jittered backoff, within its retry budget (20% of requests, at least 10 a second)")
	fmt.Printf("   $ curl http://%s/metrics | grep -E 'mesh_(retry_decisions|upstream_attempts)_total.*flaky'\n", m.web.health)
	return printMetrics("http://"+m.web.health+"/metrics",
		[]string{"mesh_retry_decisions_total{", "mesh_upstream_attempts_total{"}, `destination_service="flaky"`)
}

// setFailRate tells an echo app (on its own port, not through the mesh)
// which share of requests to fail.
func setFailRate(ctx context.Context, app, rate string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+app+"/fail-rate", strings.NewReader(rate))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("PUT %s/fail-rate: %w", app, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT %s/fail-rate %s: %s", app, rate, resp.Status)
	}
	return nil
}

// breakerOf returns the breaker state web-1 keeps for the endpoint addr of
// service.
func breakerOf(admin, service, addr string) (string, error) {
	eps, err := endpointsOf(admin, service)
	if err != nil {
		return "", err
	}
	for _, e := range eps {
		if e.Address == addr {
			return e.breaker(), nil
		}
	}
	return "gone", nil
}

// stepBreaker makes echo-b fail, shows its breaker open on web-1 while
// echo-a serves, fails fast once echo-b is the only endpoint, and lets
// echo-b back in when it recovers.
func (d *demo) stepBreaker(ctx context.Context, m *mesh) error {
	fmt.Println("a circuit breaker: echo-b starts failing every request")
	fmt.Printf("   $ curl -X PUT -d 1 http://%s/fail-rate        (echo-b's own port)\n", m.echoBApp)
	if err := setFailRate(ctx, m.echoBApp, "1"); err != nil {
		return err
	}
	// Until the breaker opens, bounded in time rather than count: on a
	// loaded machine web-1 may briefly suspect echo-b (a probe answered
	// late) and route around it for a moment.
	served, sent, state := map[string]int{}, 0, ""
	deadline := time.Now().Add(15 * time.Second)
	for state != "open" && sent < 1000 && time.Now().Before(deadline) {
		r, err := call(ctx, m, http.MethodGet, "echo", "/", "", nil)
		if err != nil {
			return err
		}
		sent++
		served[fmt.Sprintf("%d from %s", r.status, r.header.Get("X-Echo-Instance"))]++
		if state, err = breakerOf(m.web.admin, "echo", m.echoB.inbound); err != nil {
			return err
		}
	}
	if state != "open" {
		return fmt.Errorf("echo-b's breaker on web-1 is %q after %d requests, want open", state, sent)
	}
	opened := time.Now()
	fmt.Printf("   %d requests (curl -H 'Host: echo' http://%s/): %s\n", sent, m.web.outbound, sortedCounts(served))
	fmt.Printf("   every attempt that reached echo-b got 503 and was retried on echo-a; after %d failures in a row\n", breakerFailures)
	fmt.Printf("   web-1's breaker for echo-b opened (open for %v, set in web-1's --config file): curl http://%s/clusters\n", breakerOpenFor, m.web.admin)
	if err := printClusters(m.web.admin, "echo"); err != nil {
		return err
	}

	fmt.Printf("   echo-a is stopped (kill -TERM %s): echo-b, still failing, is the only endpoint left\n", d.pids("echo-a-sidecar", "echo-a"))
	d.stop("echo-a-sidecar")
	d.stop("echo-a")
	m.gone[m.echoA.admin] = true
	if err := waitEndpoints(ctx, m.web.admin, "echo", 1); err != nil {
		return err
	}
	for range 3 {
		r, err := call(ctx, m, http.MethodGet, "echo", "/", "", nil)
		if err != nil {
			return err
		}
		note := "refused at once by web-1's sidecar: nothing sent to echo-b"
		if r.meshError() != "circuit_open" {
			note = "the open period had passed: a probe reached echo-b, failed, and re-opened the breaker"
		}
		fmt.Printf("     %d  x-mesh-error: %-14s %-8v %s\n", r.status, r.meshError(), r.elapsed.Round(10*time.Microsecond), note)
	}

	fmt.Println("   echo-b recovers:")
	fmt.Printf("   $ curl -X PUT -d 0 http://%s/fail-rate\n", m.echoBApp)
	if err := setFailRate(ctx, m.echoBApp, "0"); err != nil {
		return err
	}
	var last *reply
	tries := 0
	err := poll(ctx, 3*breakerOpenFor+5*time.Second, 100*time.Millisecond, func() (bool, error) {
		r, err := call(ctx, m, http.MethodGet, "echo", "/", "", nil)
		if err != nil {
			return false, err
		}
		tries, last = tries+1, r
		return r.status == http.StatusOK, nil
	}, func() string {
		return fmt.Sprintf("echo-b never served again (last: %d %s)", last.status, last.meshError())
	})
	if err != nil {
		return err
	}
	fmt.Printf("   polling every 100ms: %d refused, then 200 from %s, %v after the breaker opened:\n",
		tries-1, last.header.Get("X-Echo-Instance"), time.Since(opened).Round(100*time.Millisecond))
	fmt.Println("   once the open period passed the breaker let one probe through (half-open); it succeeded and")
	fmt.Println("   the breaker closed, so echo-b is back in the pool")
	return printClusters(m.web.admin, "echo")
}
