package tracing

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/causeway-mesh/causeway/tracing/clock"
	"github.com/causeway-mesh/causeway/tracing/receiver"
)

func env(m map[string]string) LookupFunc {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "nothing set: off, defaults", env: nil, check: func(t *testing.T, c Config) {
			if c.Endpoint != "" || c.Protocol != ProtocolHTTPProtobuf || c.Sampler != DefaultSampler ||
				strings.Join(c.Propagators, ",") != "tracecontext,baggage" || c.Batch.MaxQueueSize != 2048 ||
				c.Batch.MaxExportBatchSize != 512 || c.Batch.ScheduleDelay != 5*time.Second || c.Batch.ExportTimeout != 30*time.Second {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "generic endpoint gets /v1/traces for http", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, check: func(t *testing.T, c Config) {
			if c.Endpoint != "http://c:4318/v1/traces" {
				t.Errorf("endpoint %q", c.Endpoint)
			}
		}},
		{name: "generic endpoint as is for grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, check: func(t *testing.T, c Config) {
			if c.Endpoint != "http://c:4317" || c.Protocol != ProtocolGRPC {
				t.Errorf("endpoint %q protocol %q", c.Endpoint, c.Protocol)
			}
		}},
		{name: "traces-specific wins", env: map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/x",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
		}, check: func(t *testing.T, c Config) {
			if c.Endpoint != "https://b/x" || c.Protocol != ProtocolHTTPProtobuf {
				t.Errorf("endpoint %q protocol %q", c.Endpoint, c.Protocol)
			}
		}},
		{name: "resource, service, sampler, propagators, bsp", env: map[string]string{
			"OTEL_SERVICE_NAME": "orders", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%20b",
			"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25",
			"OTEL_PROPAGATORS": "b3, tracecontext", "OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "500",
			"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BSP_EXPORT_TIMEOUT": "1000", "OTEL_SDK_DISABLED": "TRUE",
		}, check: func(t *testing.T, c Config) {
			if c.ServiceName != "orders" || len(c.Resource) != 2 || c.Resource[1] != attribute.String("team", "a b") {
				t.Errorf("resource: %q %v", c.ServiceName, c.Resource)
			}
			if c.Sampler != "parentbased_traceidratio" || c.SamplerArg != "0.25" || strings.Join(c.Propagators, ",") != "b3,tracecontext" {
				t.Errorf("sampler/propagators: %+v", c)
			}
			if c.Batch.MaxQueueSize != 100 || c.Batch.MaxExportBatchSize != 100 || c.Batch.ScheduleDelay != 200*time.Millisecond || c.Batch.ExportTimeout != time.Second {
				t.Errorf("batch: %+v", c.Batch)
			}
			if !c.Disabled {
				t.Error("OTEL_SDK_DISABLED=TRUE not honoured")
			}
		}},
		{name: "bad protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "endpoint without scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, wantErr: "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{name: "bad sampler", env: map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, wantErr: "OTEL_TRACES_SAMPLER"},
		{name: "bad ratio", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, wantErr: "OTEL_TRACES_SAMPLER_ARG"},
		{name: "bad propagator", env: map[string]string{"OTEL_PROPAGATORS": "tracecontext,smoke-signals"}, wantErr: "OTEL_PROPAGATORS"},
		{name: "bad bsp", env: map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "-3"}, wantErr: "OTEL_BSP_MAX_QUEUE_SIZE"},
		{name: "bad resource", env: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, wantErr: "OTEL_RESOURCE_ATTRIBUTES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ConfigFromEnv(env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestOffPath(t *testing.T) {
	for _, m := range []map[string]string{nil, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}} {
		cfg, err := ConfigFromEnv(env(m))
		if err != nil {
			t.Fatal(err)
		}
		p, err := New(context.Background(), cfg, Options{NodeID: "n"})
		if err != nil {
			t.Fatal(err)
		}
		if p.Enabled() {
			t.Fatalf("enabled with %v", m)
		}
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		_, sp := p.StartServer(r, "")
		sp.SetClock(clock.Stamp{Lamport: 1, Vector: "AAAAAAAB=1"})
		sp.AddRetry(2, "timeout")
		sp.End(200, "")
		if sp.Recording() || r.Header.Get("traceparent") != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
			t.Fatal("off path touched the request")
		}
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var nilP *Provider
	if nilP.Enabled() {
		t.Fatal("nil provider enabled")
	}
}

func newTestProvider(t *testing.T, exp sdktrace.SpanExporter, node string) *Provider {
	t.Helper()
	cfg, err := ConfigFromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(context.Background(), cfg, Options{NodeID: node, DefaultServiceName: node, Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p
}

// TestTwoHopChain runs app → outbound sidecar → inbound sidecar → app on
// loopback and checks kinds, names, attributes, linkage and the clocks.
func TestTwoHopChain(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	outP, inP := newTestProvider(t, exp, "orders-host1"), newTestProvider(t, exp, "inventory-host1")
	outClock, _ := clock.New(clock.Config{NodeID: "orders-host1", Incarnation: 1})
	inClock, _ := clock.New(clock.Config{NodeID: "inventory-host1", Incarnation: 1})

	var appSaw http.Header
	var mu sync.Mutex
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		appSaw = r.Header.Clone()
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer app.Close()

	inbound := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, sp := inP.StartServer(r, "items")
		st, err := inClock.Receive(r.Header)
		if err != nil {
			t.Error(err)
		}
		sp.SetClock(st)
		out, _ := http.NewRequestWithContext(ctx, r.Method, app.URL+r.URL.Path, nil)
		out.Header = r.Header.Clone()
		inP.Inject(ctx, out.Header)
		if _, err := inClock.Send(out.Header); err != nil {
			t.Error(err)
		}
		resp, err := http.DefaultClient.Do(out)
		if err != nil {
			t.Error(err)
			sp.End(0, "upstream_reset")
			return
		}
		resp.Body.Close()
		if _, err := inClock.Send(w.Header()); err != nil {
			t.Error(err)
		}
		w.WriteHeader(resp.StatusCode)
		sp.End(resp.StatusCode, "")
	}))
	defer inbound.Close()

	outbound := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, inbound.URL+r.URL.Path+"?secret=1", nil)
		out.Header = r.Header.Clone()
		ctx, sp := outP.StartClient(r.Context(), out, "")
		st, err := outClock.Send(out.Header)
		if err != nil {
			t.Error(err)
		}
		sp.SetClock(st)
		sp.AddRetry(2, "timeout")
		resp, err := http.DefaultClient.Do(out.WithContext(ctx))
		if err != nil {
			t.Error(err)
			sp.End(0, "upstream_reset")
			return
		}
		resp.Body.Close()
		if _, err := outClock.Receive(resp.Header); err != nil {
			t.Error(err)
		}
		w.WriteHeader(resp.StatusCode)
		sp.End(resp.StatusCode, "")
	}))
	defer outbound.Close()

	const appTrace, appSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	req, _ := http.NewRequest(http.MethodPost, outbound.URL+"/items/42", nil)
	req.Header.Set("traceparent", "00-"+appTrace+"-"+appSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := outP.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inP.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	var client, server tracetest.SpanStub
	for _, s := range spans {
		switch s.SpanKind {
		case trace.SpanKindClient:
			client = s
		case trace.SpanKindServer:
			server = s
		}
	}
	if client.Name != "POST" || server.Name != "POST items" {
		t.Errorf("names: client %q server %q", client.Name, server.Name)
	}
	if client.SpanContext.TraceID().String() != appTrace || client.Parent.SpanID().String() != appSpan {
		t.Errorf("client span not a child of the app's traceparent: %v parent %v", client.SpanContext.TraceID(), client.Parent.SpanID())
	}
	if server.Parent.SpanID() != client.SpanContext.SpanID() || server.SpanContext.TraceID() != client.SpanContext.TraceID() {
		t.Errorf("server span not a child of the client span")
	}
	mu.Lock()
	tp := appSaw.Get("traceparent")
	mu.Unlock()
	if want := "00-" + appTrace + "-" + server.SpanContext.SpanID().String() + "-01"; tp != want {
		t.Errorf("app saw traceparent %q, want %q", tp, want)
	}
	attrs := func(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
		m := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes {
			m[kv.Key] = kv.Value
		}
		return m
	}
	ca, sa := attrs(client), attrs(server)
	for k, want := range map[string]any{
		"http.request.method": "POST", "http.response.status_code": int64(201), "mesh.node": "orders-host1",
		"mesh.lamport": int64(1), "mesh.vclock": outClock.Key().String() + "=1", "http.request.resend_count": int64(1),
	} {
		if got := ca[attribute.Key(k)].AsInterface(); got != want {
			t.Errorf("client %s = %v, want %v", k, got, want)
		}
	}
	if u := ca["url.full"].AsString(); strings.Contains(u, "secret") || !strings.HasSuffix(u, "/items/42") {
		t.Errorf("url.full = %q", u)
	}
	for k, want := range map[string]any{
		"http.request.method": "POST", "url.path": "/items/42", "http.route": "items", "server.address": "127.0.0.1",
		"network.protocol.version": "1.1", "http.response.status_code": int64(201), "mesh.node": "inventory-host1",
		"mesh.lamport": int64(2), "mesh.vclock": inClock.Key().String() + "=1," + outClock.Key().String() + "=1",
	} {
		if got := sa[attribute.Key(k)].AsInterface(); got != want {
			t.Errorf("server %s = %v, want %v", k, got, want)
		}
	}
	if len(client.Events) != 1 || client.Events[0].Name != EventRetry {
		t.Errorf("client events = %+v", client.Events)
	}
	// The response carried the inbound side's clocks back.
	if got := outClock.Snapshot().Lamport; got != 5 {
		t.Errorf("outbound lamport after response = %d, want 5 (max(1, 4)+1)", got)
	}
}

func TestEndStatus(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := newTestProvider(t, exp, "n")
	r := httptest.NewRequest("BREW", "/pot", nil)
	_, sp := p.StartServer(r, "")
	sp.End(503, "")
	out := httptest.NewRequest(http.MethodGet, "http://inventory/x", nil)
	_, cs := p.StartClient(context.Background(), out, "")
	cs.End(0, "circuit_open")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	s, c := spans[0], spans[1]
	if s.Name != "HTTP" || s.Status.Description != "503" {
		t.Errorf("server: name %q status %+v", s.Name, s.Status)
	}
	if c.Status.Description != "circuit_open" {
		t.Errorf("client status %+v", c.Status)
	}
	found := false
	for _, kv := range s.Attributes {
		if kv.Key == "http.request.method" && kv.Value.AsString() == "_OTHER" {
			found = true
		}
	}
	if !found {
		t.Error("non-standard method not recorded as _OTHER")
	}
}

// blockingExporter holds every export until released.
type blockingExporter struct {
	release chan struct{}
	mu      sync.Mutex
	got     int
}

func (e *blockingExporter) ExportSpans(ctx context.Context, s []sdktrace.ReadOnlySpan) error {
	select {
	case <-e.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.mu.Lock()
	e.got += len(s)
	e.mu.Unlock()
	return nil
}
func (e *blockingExporter) Shutdown(context.Context) error { return nil }

func TestQueueDropsAndCounts(t *testing.T) {
	exp := &blockingExporter{release: make(chan struct{})}
	proc := NewBatchProcessor(exp, BatchConfig{MaxQueueSize: 4, MaxExportBatchSize: 1, ScheduleDelay: time.Hour})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(proc))
	tr := tp.Tracer("t")
	const n = 50
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			_, s := tr.Start(context.Background(), "s")
			s.End() // must never block, even with the exporter stuck
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("OnEnd blocked on a full queue")
	}
	close(exp.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	st := proc.Stats()
	if st.Dropped == 0 || st.Dropped+st.Exported != n || int(st.Exported) != exp.got {
		t.Fatalf("stats %+v, exporter got %d, want dropped>0 and dropped+exported=%d", st, exp.got, n)
	}
}

func TestExportReachesReceiver(t *testing.T) {
	recv, err := receiver.New(receiver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	httpSrv := httptest.NewServer(recv.Handler())
	defer httpSrv.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	recv.RegisterGRPC(gs)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	for _, tc := range []struct{ name, protocol, endpoint string }{
		{"http", "http/protobuf", httpSrv.URL},
		{"grpc", "grpc", "http://" + lis.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ConfigFromEnv(env(map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": tc.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": tc.protocol, "OTEL_SERVICE_NAME": "svc-" + tc.name,
			}))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p, err := New(ctx, cfg, Options{NodeID: "node-" + tc.name})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/hello", nil)
			_, sp := p.StartServer(r, "")
			sp.SetClock(clock.Stamp{Lamport: 7, Vector: "AAAAAAAB=3"})
			sp.End(200, "")
			if err := p.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats(); st.Exported != 1 {
				t.Fatalf("stats %+v", st)
			}
			id := sp.SpanContext().TraceID().String()
			spans, ok := recv.Trace(id)
			if !ok || len(spans) != 1 {
				t.Fatalf("receiver has %v for %s", spans, id)
			}
			s := spans[0]
			if s.Service != "svc-"+tc.name || s.Kind != "server" || s.Attributes["mesh.node"] != "node-"+tc.name || s.Attributes["mesh.lamport"] != int64(7) {
				t.Errorf("stored span %+v", s)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(context.Background(), Config{Endpoint: "http://x", Sampler: "nope"}, Options{})
	if err == nil {
		t.Fatal("bad sampler accepted")
	}
	_, err = New(context.Background(), Config{Propagators: []string{"nope"}}, Options{})
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatal("bad propagator accepted")
	}
}
