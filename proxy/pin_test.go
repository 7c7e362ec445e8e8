package proxy

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// TestEndpointPin: x-mesh-endpoint sends every request to the named
// endpoint of the service; a name that is not one of its endpoints is
// refused without forwarding, and the header never reaches the upstream.
func TestEndpointPin(t *testing.T) {
	var leaked atomic.Int32
	servers := map[string]string{} // inbound address -> instance
	for _, name := range []string{"a", "b", "c"} {
		app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(HeaderEndpoint) != "" {
				leaked.Add(1)
			}
			echoserver.Handler(name).ServeHTTP(w, r)
		}))
		sc := startSidecar(t, testConfig("echo", app, config.ProtocolHTTP1))
		servers[sc.addr("inbound")] = name
	}
	ccfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	var eps []string
	for addr := range servers {
		eps = append(eps, addr)
	}
	ccfg.Upstreams = map[string]config.Upstream{"echo": {Endpoints: eps}}
	client := startSidecar(t, ccfg)
	c := h1Client()
	do := func(pins ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(testContext(t, 10*time.Second), "GET", "http://"+client.addr("outbound")+"/", nil)
		req.Host = "echo"
		for _, p := range pins {
			req.Header.Add(HeaderEndpoint, p)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for addr, name := range servers {
		for range 5 {
			resp, body := do(addr)
			if resp.StatusCode != 200 || resp.Header.Get(echoserver.InstanceHeader) != name {
				t.Fatalf("pinned to %s (%s): status %d body %s", addr, name, resp.StatusCode, body)
			}
		}
	}
	for _, tc := range []struct {
		pins   []string
		status int
		code   string
	}{
		{[]string{"127.0.0.1:1"}, 503, "no_healthy_upstream"},
		{[]string{"10.0.0.1:15006"}, 503, "no_healthy_upstream"},
		{[]string{eps[0], eps[1]}, 400, "bad_request"},
	} {
		resp, body := do(tc.pins...)
		if resp.StatusCode != tc.status || resp.Header.Get("X-Mesh-Error") != tc.code {
			t.Errorf("pin %v: %d %q (%s), want %d %s", tc.pins, resp.StatusCode, resp.Header.Get("X-Mesh-Error"), body, tc.status, tc.code)
		}
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("x-mesh-endpoint reached an app %d times", n)
	}
}
