package proxy

import (
	"io"
	"net/http"
	"testing"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// Benchmarks of the request path in one process (client, sidecars and app
// share the CPU): useful for allocations per request and relative cost;
// `make bench` measures the real thing with separate processes.

var helloApp = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "Hello, World!")
})

func benchmarkGet(b *testing.B, url, host string, c *http.Client) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkDirect is the baseline: client to app.
func BenchmarkDirect(b *testing.B) {
	app := startApp(b, helloApp)
	benchmarkGet(b, "http://"+app+"/", "bench", h1Client())
}

// BenchmarkInbound is client → sidecar inbound → app, all HTTP/1.1.
func BenchmarkInbound(b *testing.B) {
	app := startApp(b, helloApp)
	s := startSidecar(b, testConfig("bench", app, config.ProtocolHTTP1))
	benchmarkGet(b, "http://"+s.addr("inbound")+"/", "bench", h1Client())
}

// BenchmarkMeshHop is client → outbound sidecar → HTTP/2 → inbound sidecar → app.
func BenchmarkMeshHop(b *testing.B) {
	app := startApp(b, helloApp)
	m := startMesh(b, "bench", app, config.ProtocolHTTP1)
	benchmarkGet(b, "http://"+m.client.addr("outbound")+"/", "bench", h1Client())
}
