package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/causeway-mesh/causeway/tracing/clock"
)

type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkRequestSpan measures what the proxy pays per request for a
// server span with clock attributes, with tracing off and on.
func BenchmarkRequestSpan(b *testing.B) {
	st := clock.Stamp{Lamport: 123456, Vector: "AAAAAAAB=17,AAAAAAAC=4"}
	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			opts := Options{NodeID: "orders-host1"}
			if mode == "on" {
				opts.Exporter = discardExporter{}
			}
			cfg, _ := ConfigFromEnv(env(nil))
			p, err := New(context.Background(), cfg, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			r := httptest.NewRequest(http.MethodGet, "http://inventory:8080/items/42", nil)
			r.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			b.ReportAllocs()
			for b.Loop() {
				_, sp := p.StartServer(r, "items")
				sp.SetClock(st)
				sp.End(200, "")
			}
		})
	}
}
