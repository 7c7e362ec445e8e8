package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/tracing/receiver"
)

// TestTraceRoutes: OTLP ingest is open and JSON-only on POST; every query
// needs the token and answers API errors; without Config.Traces no trace
// path exists.
func TestTraceRoutes(t *testing.T) {
	rcv, err := receiver.New(receiver.Config{MaxSpans: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	h, err := api.New(api.Config{Token: "secret", Traces: rcv, Mesh: membership.NewStatic(nil)})
	if err != nil {
		t.Fatal(err)
	}
	// Protobuf, as the Go SDK's otlptracehttp exporter sends it.
	body, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "orders"}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: []byte{0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c},
			SpanId:  []byte{0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74}, Name: "GET /a",
			StartTimeUnixNano: 1_000_000, EndTimeUnixNano: 2_000_000,
		}}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	export := string(body)
	for _, tt := range []struct {
		method, path, token, body string
		code                      int
		want                      string
	}{
		{"POST", "/v1/traces", "", export, http.StatusOK, ""},
		{"GET", "/v1/traces", "", "", http.StatusMethodNotAllowed, ""},
		{"GET", "/api/v1/traces", "", "", http.StatusUnauthorized, "Unauthorized"},
		{"GET", "/api/v1/traces/5b8efff798038103d269b633813fc60c", "", "", http.StatusUnauthorized, "Unauthorized"},
		{"GET", "/api/v1/traces/5b8efff798038103d269b633813fc60c/causal", "wrong", "", http.StatusUnauthorized, "Unauthorized"},
		{"GET", "/api/v1/traces", "secret", "", http.StatusOK, `"rootName": "GET /a"`},
		{"GET", "/api/v1/traces/5b8efff798038103d269b633813fc60c", "secret", "", http.StatusOK, `"service": "orders"`},
		{"GET", "/api/v1/traces/5b8efff798038103d269b633813fc60c/causal", "secret", "", http.StatusOK, `"reason": "no mesh clock"`},
		{"GET", "/api/v1/traces/5b8efff798038103d269b633813fc60d/causal", "secret", "", http.StatusNotFound, `"code": "NotFound"`},
		{"GET", "/api/v1/traces/zz/causal", "secret", "", http.StatusBadRequest, `"code": "BadRequest"`},
		{"DELETE", "/api/v1/traces", "secret", "", http.StatusMethodNotAllowed, "use GET"},
	} {
		req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
		if tt.body != "" {
			req.Header.Set("Content-Type", "application/x-protobuf")
		}
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.want) {
			t.Errorf("%s %s (token %q): %d %s, want %d containing %q", tt.method, tt.path, tt.token, rec.Code, rec.Body.String(), tt.code, tt.want)
		}
	}

	bare, err := api.New(api.Config{Token: "secret", Mesh: membership.NewStatic(nil)})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/traces", "/api/v1/traces"} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer secret")
		rec := httptest.NewRecorder()
		bare.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound {
			t.Errorf("without Traces, GET %s: %d, want 404", path, rec.Code)
		}
	}
}

func TestValidTraceID(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"5b8efff798038103d269b633813fc60c", true},
		{"5B8EFFF798038103D269B633813FC60C", false},
		{"00000000000000000000000000000000", false},
		{"5b8efff798038103d269b633813fc60", false},
		{"5b8efff798038103d269b633813fc60cc", false},
		{"5b8efff798038103d269b633813fc60g", false},
		{"", false},
	} {
		if got := api.ValidTraceID(tt.id); got != tt.want {
			t.Errorf("ValidTraceID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}
