package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
	"github.com/causeway-mesh/causeway/tracing"
	"github.com/causeway-mesh/causeway/tracing/causal"
	"github.com/causeway-mesh/causeway/tracing/clock"
	"github.com/causeway-mesh/causeway/tracing/receiver"
)

// startTracedSidecar starts a sidecar that exports spans over OTLP/HTTP to
// endpoint.
func startTracedSidecar(t *testing.T, cfg *config.Config, endpoint string) (*runningSidecar, *tracing.Provider) {
	t.Helper()
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY":     "50",
	}
	tcfg, err := tracing.ConfigFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	p, err := tracing.New(context.Background(), tcfg, tracing.Options{DefaultServiceName: cfg.Service, NodeID: cfg.NodeID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return startSidecarWith(t, cfg, WithTracing(p)), p
}

// TestCausalTraceAcrossSidecars: an app's request enters the mesh at web,
// reaches orders, whose app calls inventory and payments concurrently.
// Every sidecar exports its spans over OTLP to one receiver; the trace
// keeps the app's trace id, and its causal view orders the hops and marks
// the two downstream receives as concurrent.
func TestCausalTraceAcrossSidecars(t *testing.T) {
	rcv, err := receiver.New(receiver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	otlp := httptest.NewServer(rcv.Handler())
	defer otlp.Close()

	// Both leaves answer only once both calls have arrived, so the two
	// calls are truly in flight together (neither reply is merged into
	// orders' clock before the other call is sent).
	var arrived sync.WaitGroup
	arrived.Add(2)
	both := make(chan struct{})
	go func() { arrived.Wait(); close(both) }()
	leaf := func(name string) string {
		return startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived.Done()
			select {
			case <-both:
			case <-time.After(5 * time.Second):
			}
			_, _ = io.WriteString(w, name)
		}))
	}
	inv, _ := startTracedSidecar(t, testConfig("inventory", leaf("inventory"), config.ProtocolHTTP1), otlp.URL)
	pay, _ := startTracedSidecar(t, testConfig("payments", leaf("payments"), config.ProtocolHTTP1), otlp.URL)

	var ordersOut string // the orders sidecar's outbound address, set below
	ordersApp := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var wg sync.WaitGroup
		for _, svc := range []string{"inventory", "payments"} {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://"+ordersOut+"/check", nil)
				req.Host = svc
				req.Header.Set("Traceparent", r.Header.Get("Traceparent"))
				if resp, err := h1Client().Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		_, _ = io.WriteString(w, "ordered")
	}))
	ocfg := testConfig("orders", ordersApp, config.ProtocolHTTP1)
	ocfg.Upstreams = map[string]config.Upstream{
		"inventory": {Endpoints: []string{inv.addr("inbound")}},
		"payments":  {Endpoints: []string{pay.addr("inbound")}},
	}
	orders, _ := startTracedSidecar(t, ocfg, otlp.URL)
	ordersOut = orders.addr("outbound")
	wcfg := testConfig("web", "127.0.0.1:1", config.ProtocolHTTP1)
	wcfg.Upstreams = map[string]config.Upstream{"orders": {Endpoints: []string{orders.addr("inbound")}}}
	web, _ := startTracedSidecar(t, wcfg, otlp.URL)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequestWithContext(testContext(t, 10*time.Second), "POST", "http://"+web.addr("outbound")+"/orders", nil)
	req.Host = "orders"
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ordered" {
		t.Fatalf("response %d %q", resp.StatusCode, b)
	}
	if resp.Header.Get(clock.HeaderLamport) == "" {
		t.Error("the response carries no Lamport clock back to the caller")
	}

	// 6 spans: web client, orders server, 2 orders clients, 2 servers.
	var res causal.Result
	waitFor(t, 10*time.Second, "6 spans of the app's trace at the receiver", func() bool {
		var ok bool
		res, ok = rcv.Causal(traceID)
		return ok && len(res.Events) == 6
	})
	order := map[string]int{} // "service kind" → position; the two orders clients share a key
	byKey := map[string][]causal.Event{}
	for _, e := range res.Events {
		k := e.Service + " " + e.Kind
		order[k] = e.Order
		byKey[k] = append(byKey[k], e)
		if e.Lamport == 0 || e.VClock == "" {
			t.Errorf("%s has no clocks", k)
		}
	}
	if len(byKey["orders client"]) != 2 {
		t.Fatalf("events %+v: want two orders client spans", res.Events)
	}
	mustBefore := func(a, b string) {
		t.Helper()
		if order[a] == 0 || order[b] == 0 || order[a] >= order[b] {
			var dump []string
			for _, e := range res.Events {
				dump = append(dump, fmt.Sprintf("#%d %s %s L=%d", e.Order, e.Service, e.Kind, e.Lamport))
			}
			t.Fatalf("%q (#%d) should come before %q (#%d): %v", a, order[a], b, order[b], dump)
		}
	}
	mustBefore("web client", "orders server")
	mustBefore("orders server", "inventory server")
	mustBefore("orders server", "payments server")
	inv1, pay1 := byKey["inventory server"][0].Order, byKey["payments server"][0].Order
	concurrent := false
	for _, p := range res.Concurrent {
		concurrent = concurrent || (p.A == inv1 && p.B == pay1) || (p.A == pay1 && p.B == inv1)
	}
	if !concurrent {
		t.Fatalf("inventory and payments receives are not marked concurrent: %+v", res.Concurrent)
	}
}

// A malformed clock header is ignored and counted, never fatal; /clock
// shows the node's clocks advancing.
func TestClockHeadersHostileInput(t *testing.T) {
	s := startSidecar(t, testConfig("orders", startApp(t, &recordingApp{}), config.ProtocolHTTP1))
	for _, h := range []map[string]string{
		{clock.HeaderLamport: "abc"},
		{clock.HeaderLamport: "99999999999999999999999"},
		{clock.HeaderVector: "=,=,~~"},
		{clock.HeaderVector: strings.Repeat("AAAAAAAA=1,", 400)},
	} {
		if resp, _ := send(t, "GET", "http://"+s.addr("inbound")+"/", "", h); resp.StatusCode != 200 {
			t.Fatalf("request with %v: %d", h, resp.StatusCode)
		}
	}
	_, body := send(t, "GET", "http://"+s.addr("admin")+"/metrics", "", nil)
	if !strings.Contains(body, `mesh_clock_header_errors_total{kind="malformed"}`) {
		t.Fatal("malformed clock headers were not counted")
	}
	_, body = send(t, "GET", "http://"+s.addr("admin")+"/clock", "", nil)
	if !strings.Contains(body, `"lamport"`) {
		t.Fatalf("/clock: %s", body)
	}
}
