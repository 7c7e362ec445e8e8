package receiver

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func tid(n int) []byte { b := make([]byte, 16); b[15] = byte(n); b[0] = 1; return b }
func sid(n int) []byte { b := make([]byte, 8); b[7] = byte(n); b[0] = 1; return b }

func request(service string, trace int, spans ...int) *coltracepb.ExportTraceServiceRequest {
	ss := &tracepb.ScopeSpans{}
	for _, s := range spans {
		ss.Spans = append(ss.Spans, &tracepb.Span{
			TraceId: tid(trace), SpanId: sid(s), Name: fmt.Sprintf("GET %d", s), Kind: tracepb.Span_SPAN_KIND_SERVER,
			StartTimeUnixNano: uint64(1e18 + s*1000), EndTimeUnixNano: uint64(1e18 + s*1000 + 500),
			Attributes: []*commonpb.KeyValue{
				{Key: "mesh.lamport", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(s)}}},
				{Key: "mesh.vclock", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprintf("AAAAAAAB=%d", s)}}},
			},
		})
	}
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: service}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{ss},
	}}}
}

func traceHex(n int) string { return fmt.Sprintf("%x", tid(n)) }

func TestEvictionBounds(t *testing.T) {
	r, _ := New(Config{MaxSpans: 5, MaxTraces: 3})
	for i := 1; i <= 4; i++ {
		r.Ingest(request("s", i, 1))
	}
	if _, ok := r.Trace(traceHex(1)); ok {
		t.Error("oldest trace kept past MaxTraces")
	}
	if st := r.Stats(); st.Traces != 3 || st.Spans != 3 || st.EvictedTraces != 1 {
		t.Errorf("stats %+v", st)
	}
	r.Ingest(request("s", 5, 1, 2, 3)) // a 4th trace evicts trace 2; 5 spans fit
	for i, want := range map[int]bool{2: false, 3: true, 4: true, 5: true} {
		if _, ok := r.Trace(traceHex(i)); ok != want {
			t.Errorf("trace %d kept = %v, want %v", i, ok, want)
		}
	}
	r.Ingest(request("s", 6, 1, 2, 3, 4, 5, 6, 7)) // one trace larger than MaxSpans
	spans, ok := r.Trace(traceHex(6))
	if !ok || len(spans) != 5 || spans[0].Name != "GET 3" {
		t.Errorf("oversized trace: %d spans, %v", len(spans), ok)
	}
	if st := r.Stats(); st.Spans > 5 {
		t.Errorf("stats %+v over bound", st)
	}
	if got := r.Traces(10); len(got) != 1 || got[0].TraceID != traceHex(6) {
		t.Errorf("Traces = %+v", got)
	}
}

func post(t *testing.T, url, ct, enc string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/traces", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	if enc != "" {
		req.Header.Set("Content-Encoding", enc)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestHTTPIngestAndQuery(t *testing.T) {
	r, _ := New(Config{})
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()

	pb, _ := proto.Marshal(request("orders", 1, 1, 2))
	js, _ := protojson.Marshal(request("inventory", 2, 3))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(pb)
	zw.Close()
	for _, tc := range []struct {
		name, ct, enc string
		body          []byte
		want          int
	}{
		{"protobuf", "application/x-protobuf", "", pb, 200},
		{"json", "application/json", "", js, 200},
		{"gzip protobuf (a retry: deduplicated)", "application/x-protobuf", "gzip", gz.Bytes(), 200},
		{"bad protobuf", "application/x-protobuf", "", []byte{0xff, 0xff}, 400},
		{"bad json", "application/json", "", []byte("{"), 400},
		{"bad gzip", "application/x-protobuf", "gzip", []byte("nope"), 400},
		{"bad type", "text/plain", "", pb, 415},
		{"bad encoding", "application/x-protobuf", "br", pb, 415},
	} {
		resp := post(t, srv.URL, tc.ct, tc.enc, tc.body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}

	get := func(path string, want int, v any) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != want {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, b, want)
		}
		if v != nil {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	var list struct{ Traces []TraceSummary }
	get("/api/v1/traces", 200, &list)
	if len(list.Traces) != 2 || list.Traces[0].TraceID != traceHex(2) || list.Traces[1].SpanCount != 2 || list.Traces[1].Services[0] != "orders" {
		t.Errorf("list = %+v", list)
	}
	var one struct {
		TraceID string
		Spans   []Span
	}
	get("/api/v1/traces/"+traceHex(1), 200, &one)
	if len(one.Spans) != 2 || one.Spans[0].Attributes["mesh.vclock"] != "AAAAAAAB=1" {
		t.Errorf("trace = %+v", one)
	}
	var causal struct {
		Events []struct {
			Order   int
			SpanID  string
			Lamport uint64
		}
	}
	get("/api/v1/traces/"+traceHex(1)+"/causal", 200, &causal)
	if len(causal.Events) != 2 || causal.Events[0].Lamport != 1 || causal.Events[1].Lamport != 2 {
		t.Errorf("causal = %+v", causal)
	}
	get("/api/v1/traces/"+strings.Repeat("0", 32), 404, nil)
	get("/api/v1/traces/xyz", 400, nil)
	get("/api/v1/traces?limit=0", 400, nil)
}

func TestForwarding(t *testing.T) {
	var got atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m coltracepb.ExportTraceServiceRequest
		if r.URL.Path == "/v1/traces" && proto.Unmarshal(b, &m) == nil && len(m.ResourceSpans) == 1 {
			got.Add(1)
		}
	}))
	defer collector.Close()
	r, err := New(Config{ForwardURL: collector.URL + "/v1/traces"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Export(context.Background(), request("s", 1, 1)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("request not forwarded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := New(Config{ForwardURL: "collector:4318"}); err == nil {
		t.Error("forward URL without scheme accepted")
	}
}
