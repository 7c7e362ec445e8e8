package plane

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/causeway-mesh/causeway/tracing/causal"
)

func TestTraceConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cp.yaml")
	if err := os.WriteFile(file, []byte("trace:\n  bufferSpans: 10\n  forward: http://file:4318\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := func(string) (string, bool) { return "", false }
	cfg, err := Load([]string{"--config", file}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Trace.BufferSpans != 10 || cfg.Trace.Forward != "http://file:4318" {
		t.Errorf("from the file: got %+v", cfg.Trace)
	}
	env := map[string]string{"MESH_TRACE_BUFFER_SPANS": "20", "MESH_TRACE_FORWARD": "http://env:4318"}
	cfg, err = Load([]string{"--config", file, "--trace-forward", "https://flag:4318/otlp/v1/traces"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Trace.BufferSpans != 20 || cfg.Trace.Forward != "https://flag:4318/otlp/v1/traces" {
		t.Errorf("env over file, flag over env: got %+v", cfg.Trace)
	}
	if d := Default(); d.Trace.BufferSpans != DefaultTraceBufferSpans || d.Trace.Forward != "" {
		t.Errorf("defaults: got %+v", d.Trace)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--trace-buffer-spans", "0"}, "trace.bufferSpans: must be at least 1"},
		{[]string{"--trace-buffer-spans", "many"}, "trace-buffer-spans"},
		{[]string{"--trace-forward", "collector:4318"}, "trace.forward"},
		{[]string{"--trace-forward", "ftp://collector/v1/traces"}, "trace.forward"},
		{[]string{"--trace-forward", "http:///v1/traces"}, "trace.forward"},
		{[]string{"--trace-forward", "http://c:4318/v1/traces?x=1"}, "trace.forward"},
	} {
		_, err := Load(tt.args, none, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want an error containing %q", tt.args, err, tt.want)
		}
	}

	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"http://c:4318", "http://c:4318/v1/traces"},
		{"http://c:4318/", "http://c:4318/v1/traces"},
		{"https://c/otlp/v1/traces", "https://c/otlp/v1/traces"},
	} {
		if got := (Trace{Forward: tt.in}).ForwardURL(); got != tt.want {
			t.Errorf("ForwardURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// exportSpans sends a parent and a child span through a real OTel SDK
// exporter and returns their trace id.
func exportSpans(t *testing.T, exp sdktrace.SpanExporter, service string) trace.TraceID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	tr := tp.Tracer("test")
	pctx, parent := tr.Start(ctx, "GET /orders", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.Int64("mesh.lamport", 1), attribute.String("mesh.vclock", "AAAAAAAB=1"), attribute.String("mesh.node", "orders-1")))
	_, child := tr.Start(pctx, "GET inventory", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.Int64("mesh.lamport", 2), attribute.String("mesh.vclock", "AAAAAAAB=2"), attribute.String("mesh.node", "orders-1")))
	child.End()
	parent.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("exporter shutdown: %v", err)
	}
	return parent.SpanContext().TraceID()
}

func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestTraceReceiverMounted: an OTLP/HTTP export to the API port needs no
// token and lands; reading it back needs the token; OTLP/gRPC on the xDS
// port works too.
func TestTraceReceiverMounted(t *testing.T) {
	p := startPlane(t, testConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	api := "http://" + p.APIAddr()

	hexp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(p.APIAddr()), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	id := exportSpans(t, hexp, "orders").String()
	if spans, ok := p.Traces().Trace(id); !ok || len(spans) != 2 || spans[0].Service != "orders" {
		t.Fatalf("OTLP/HTTP export: stored %+v %v, want the 2 spans of orders", spans, ok)
	}

	code, body := get(t, api+"/api/v1/traces/"+id+"/causal", "")
	if code != http.StatusUnauthorized || !strings.Contains(string(body), "Unauthorized") {
		t.Errorf("causal view without the token: %d %s, want 401", code, body)
	}
	code, _ = get(t, api+"/api/v1/traces", "")
	if code != http.StatusUnauthorized {
		t.Errorf("trace list without the token: %d, want 401", code)
	}
	code, body = get(t, api+"/api/v1/traces/"+id+"/causal", p.Token())
	var res causal.Result
	if err := json.Unmarshal(body, &res); code != http.StatusOK || err != nil {
		t.Fatalf("causal view: %d %v %s", code, err, body)
	}
	if res.TraceID != id || len(res.Events) != 2 || res.Events[0].Name != "GET /orders" || res.Events[1].Cause != 1 {
		t.Errorf("causal view: got %+v", res)
	}
	code, body = get(t, api+"/api/v1/traces/"+strings.ToUpper(id), p.Token())
	if code != http.StatusOK || !strings.Contains(string(body), `"spanId"`) {
		t.Errorf("spans of the trace (upper-case id): %d %s", code, body)
	}
	code, body = get(t, api+"/api/v1/traces?limit=5", p.Token())
	if code != http.StatusOK || !strings.Contains(string(body), id) || !strings.Contains(string(body), `"rootName": "GET /orders"`) {
		t.Errorf("trace list: %d %s", code, body)
	}

	for _, tt := range []struct {
		path string
		code int
		want string
	}{
		{"/api/v1/traces/0123456789abcdef0123456789abcdef/causal", http.StatusNotFound, "retry in a few seconds"},
		{"/api/v1/traces/not-a-trace", http.StatusBadRequest, "32 hex digits"},
		{"/api/v1/traces/00000000000000000000000000000000", http.StatusBadRequest, "32 hex digits"},
		{"/api/v1/traces?limit=0", http.StatusBadRequest, "limit"},
		{"/api/v1/traces?limit=1001", http.StatusBadRequest, "limit"},
	} {
		code, body := get(t, api+tt.path, p.Token())
		if code != tt.code || !strings.Contains(string(body), tt.want) {
			t.Errorf("GET %s: %d %s, want %d containing %q", tt.path, code, body, tt.code, tt.want)
		}
	}

	gexp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(p.XDSAddr()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	gid := exportSpans(t, gexp, "inventory").String()
	if spans, ok := p.Traces().Trace(gid); !ok || len(spans) != 2 || spans[0].Service != "inventory" {
		t.Errorf("OTLP/gRPC export on the xDS port: stored %+v %v", spans, ok)
	}
}

// TestTraceForward: with --trace-forward every export also reaches the
// collector.
func TestTraceForward(t *testing.T) {
	got := make(chan string, 4)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- r.Method + " " + r.URL.Path + " " + r.Header.Get("Content-Type")
	}))
	defer collector.Close()
	cfg := testConfig(t)
	cfg.Trace.Forward = collector.URL
	p := startPlane(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(p.APIAddr()), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	exportSpans(t, exp, "orders")
	select {
	case req := <-got:
		if req != "POST /v1/traces application/x-protobuf" {
			t.Errorf("the collector got %q", req)
		}
	case <-ctx.Done():
		t.Fatal("nothing was forwarded")
	}
}
