package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// Routes in the sidecar's file give part of a service's traffic its own
// settings: here /slow has a 200 ms timeout and /broken an injected abort,
// while the rest keeps the service's defaults.
func TestFileRoutes(t *testing.T) {
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow/x" {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	server := startSidecar(t, testConfig("orders", app, config.ProtocolHTTP1))
	cfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	cfg.Upstreams = map[string]config.Upstream{"orders": {
		Endpoints: []string{server.addr("inbound")},
		Routes: []config.Route{
			{Name: "slow", PathPrefix: "/slow", Resilience: &config.Resilience{Timeouts: &config.TimeoutsSpec{Overall: &config.Duration{Duration: 200 * time.Millisecond}}}},
			{Name: "broken", PathPrefix: "/broken", Method: "GET", Resilience: &config.Resilience{Fault: &config.FaultSpec{AbortPercent: 100, AbortStatus: 418}}},
		},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	client := startSidecar(t, cfg)
	out := "http://" + client.addr("outbound")
	get := func(method, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(testContext(t, 5*time.Second), method, out+path, nil)
		req.Host = "orders"
		resp, err := h1Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	start := time.Now()
	if resp := get("GET", "/slow/x"); resp.StatusCode != 504 || resp.Header.Get(HeaderError) != "timeout" {
		t.Fatalf("/slow/x: %d %q, want 504 timeout", resp.StatusCode, resp.Header.Get(HeaderError))
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("/slow/x took %v: the route's 200 ms timeout did not apply", took)
	}
	if resp := get("GET", "/broken"); resp.StatusCode != 418 {
		t.Fatalf("/broken: %d, want the injected 418", resp.StatusCode)
	}
	if resp := get("POST", "/broken"); resp.StatusCode != 200 {
		t.Fatalf("POST /broken: %d, want 200 (the route is GET only)", resp.StatusCode)
	}
	if resp := get("GET", "/other"); resp.StatusCode != 200 {
		t.Fatalf("/other: %d", resp.StatusCode)
	}
}

func TestFileRoutesValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		route config.Route
		field string
	}{
		{"no name", config.Route{}, "upstreams.orders.routes[0].name"},
		{"relative prefix", config.Route{Name: "r", PathPrefix: "x"}, "upstreams.orders.routes[0].pathPrefix"},
		{"lower-case method", config.Route{Name: "r", Method: "get"}, "upstreams.orders.routes[0].method"},
		{"bad retry", config.Route{Name: "r", Resilience: &config.Resilience{Retry: &config.RetrySpec{MaxAttempts: ptr(99)}}}, "upstreams.orders.routes[0].resilience.retry.maxAttempts"},
	} {
		cfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
		cfg.Upstreams = map[string]config.Upstream{"orders": {Endpoints: []string{"127.0.0.1:1"}, Routes: []config.Route{tc.route}}}
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.field)
		}
	}
}

func ptr[T any](v T) *T { return &v }
