package main

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/control/fencing"
	"github.com/causeway-mesh/causeway/tracing/causal"
)

const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"

// testSpan is one span of the injected trace.
type testSpan struct {
	service, node, id, parent, name string
	kind                            tracepb.Span_SpanKind
	lamport                         int64
	vclock                          string
	startMS, endMS                  int
}

// injectTrace feeds a three-span trace across two services into the
// control plane's receiver, as the sidecars' exporters would.
func injectTrace(t *testing.T, ingest func(*coltracepb.ExportTraceServiceRequest)) {
	t.Helper()
	t0 := time.Now().Add(-time.Second)
	spans := []testSpan{
		{"orders", "orders-1", "00f067aa0ba902b7", "", "GET /orders", tracepb.Span_SPAN_KIND_SERVER, 1, "AAAAAAAB=1", 0, 30},
		{"orders", "orders-1", "00f067aa0ba902b8", "00f067aa0ba902b7", "GET inventory", tracepb.Span_SPAN_KIND_CLIENT, 2, "AAAAAAAB=2", 5, 25},
		{"inventory", "inventory-1", "00f067aa0ba902b9", "00f067aa0ba902b8", "GET /items", tracepb.Span_SPAN_KIND_SERVER, 3, "AAAAAAAC=1,AAAAAAAB=2", 8, 20},
	}
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, s := range spans {
		sp := &tracepb.Span{
			TraceId: unhex(traceID), SpanId: unhex(s.id), Name: s.name, Kind: s.kind,
			StartTimeUnixNano: uint64(t0.Add(time.Duration(s.startMS) * time.Millisecond).UnixNano()), //nolint:gosec // a recent time
			EndTimeUnixNano:   uint64(t0.Add(time.Duration(s.endMS) * time.Millisecond).UnixNano()),   //nolint:gosec // a recent time
			Attributes: []*commonpb.KeyValue{
				{Key: "mesh.lamport", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: s.lamport}}},
				str("mesh.vclock", s.vclock), str("mesh.node", s.node),
			},
		}
		if s.parent != "" {
			sp.ParentSpanId = unhex(s.parent)
		}
		ingest(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", s.service)}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{sp}}},
		}}})
	}
}

func TestTrace(t *testing.T) {
	p, _ := startPlane(t)
	env := map[string]string{"MESH_SERVER": "http://" + p.APIAddr(), "MESH_TOKEN": p.Token()}

	code, out, errs := meshctl(t, env, "trace")
	if code != 0 || out != "" || !strings.Contains(errs, "No traces yet") || !strings.Contains(errs, "OTEL_EXPORTER_OTLP_ENDPOINT") {
		t.Errorf("empty list: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	injectTrace(t, p.Traces().Ingest)

	code, out, errs = meshctl(t, env, "trace")
	if code != 0 {
		t.Fatalf("list: exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "TRACE-ID ROOT SERVICES SPANS DURATION AGE" {
		t.Fatalf("list: got\n%s", out)
	}
	row := strings.Fields(lines[1])
	// ROOT is "GET /orders": two fields.
	if len(row) != 7 || row[0] != traceID || row[1]+" "+row[2] != "GET /orders" || row[3] != "inventory,orders" || row[4] != "3" || row[5] != "30ms" {
		t.Errorf("list row: got %q", lines[1])
	}

	code, out, errs = meshctl(t, env, "trace", traceID)
	if code != 0 {
		t.Fatalf("trace: exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{
		"trace " + traceID + ": 3 events in causal order",
		"#  NODE",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("trace table: missing %q in\n%s", want, out)
		}
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")[2:]
	wantRows := [][]string{
		{"1", "orders-1", "GET", "/orders", "server", "1", "AAAAAAAB=1", "+0.000ms"},
		{"2", "orders-1", "GET", "inventory", "client", "2", "AAAAAAAB=2", "+5.000ms", "after", "#1"},
		{"3", "inventory-1", "GET", "/items", "server", "3", "AAAAAAAC=1,AAAAAAAB=2", "+8.000ms", "after", "#2"},
	}
	if len(rows) != len(wantRows) {
		t.Fatalf("trace table: got %d rows, want %d:\n%s", len(rows), len(wantRows), out)
	}
	for i, w := range wantRows {
		if got := strings.Fields(rows[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("row %d: got %q, want %q", i+1, got, w)
		}
	}

	// Upper case and a whole traceparent name the same trace.
	for _, arg := range []string{strings.ToUpper(traceID), "00-" + traceID + "-00f067aa0ba902b7-01"} {
		code, out, errs = meshctl(t, env, "trace", arg, "-o", "json")
		var res causal.Result
		if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil {
			t.Fatalf("trace %s -o json: exit %d, %v, stderr %q", arg, code, err, errs)
		}
		if res.TraceID != traceID || len(res.Events) != 3 || res.Events[2].Service != "inventory" || res.Events[2].Cause != 2 {
			t.Errorf("trace %s -o json: got %+v", arg, res)
		}
	}
	code, out, _ = meshctl(t, env, "trace", traceID, "-o", "yaml")
	if code != 0 || !strings.Contains(out, "traceId: "+traceID) || !strings.Contains(out, "vclock: AAAAAAAC=1,AAAAAAAB=2") {
		t.Errorf("trace -o yaml: exit %d\n%s", code, out)
	}
	code, out, _ = meshctl(t, env, "trace", "-o", "json")
	var list api.TraceList
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list.Traces) != 1 || list.Traces[0].SpanCount != 3 {
		t.Errorf("trace list -o json: exit %d, %v\n%s", code, err, out)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"trace", "0123456789abcdef0123456789abcdef"}, "no spans for trace 0123456789abcdef0123456789abcdef yet: spans are exported in batches; retry in a few seconds, or check OTEL_EXPORTER_OTLP_ENDPOINT on the sidecars points at the control plane"},
		{[]string{"trace", "xyz"}, "want 32 hex digits"},
		{[]string{"trace", strings.Repeat("0", 32)}, "not all zero"},
		{[]string{"trace", "--limit", "0"}, "--limit 0: want 1 to 1000"},
		{[]string{"trace", "a", "b"}, "accepts at most 1 arg"},
	} {
		code, _, errs := meshctl(t, env, tt.args...)
		if code != 1 || !strings.Contains(errs, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and %q", tt.args, code, errs, tt.want)
		}
	}
	code, _, errs = meshctl(t, map[string]string{"MESH_SERVER": "http://" + p.APIAddr()}, "trace", traceID)
	if code != 1 || !strings.Contains(errs, "401") || !strings.Contains(errs, "set --token or MESH_TOKEN") {
		t.Errorf("trace without a token: exit %d, stderr %q", code, errs)
	}
}

// fakeAPI answers status's reads; fencing is served only when given.
func fakeAPI(t *testing.T, fen *fencing.Status) string {
	t.Helper()
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api/v1/proxies", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]any{"proxies": []any{}, "build": map[string]any{"version": "b-1"}})
	})
	mux.HandleFunc("GET /api/v1/members", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, api.Members{Members: []api.Member{}})
	})
	mux.HandleFunc("GET /api/v1/fencing", func(w http.ResponseWriter, _ *http.Request) {
		if fen == nil {
			w.WriteHeader(http.StatusNotFound)
			reply(w, api.Error{Code: "NotFound", Message: "no API at GET /api/v1/fencing"})
			return
		}
		reply(w, fen)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestStatusFencingSection(t *testing.T) {
	env := map[string]string{"MESH_SERVER": fakeAPI(t, nil), "MESH_TOKEN": "t"}
	code, out, errs := meshctl(t, env, "status")
	if code != 0 || strings.Contains(out, "FENCING") || !strings.Contains(out, "configuration version: b-1") {
		t.Errorf("without a fencing API: exit %d, stderr %q\n%s", code, errs, out)
	}
	code, out, _ = meshctl(t, env, "status", "-o", "json")
	if code != 0 || strings.Contains(out, `"fencing"`) {
		t.Errorf("without a fencing API, -o json: exit %d\n%s", code, out)
	}

	st := &fencing.Status{
		Domains: []fencing.DomainStatus{
			{Name: "mesh", Enabled: true, Expected: 5, Needed: 3, Members: []string{"a", "b", "c", "d", "e"},
				Groups: []fencing.GroupStatus{{Members: []string{"a", "b", "c"}, Quorum: true}, {Members: []string{"d", "e"}}}, QuorumGroup: 0, Epoch: 7},
			{Name: "service/catalog", Service: "catalog", Enabled: false, Expected: 2, Needed: 2, Members: []string{"x", "y"}, Groups: []fencing.GroupStatus{}, QuorumGroup: -1},
			{Name: "service/orders", Service: "orders", Enabled: true, Expected: 4, ExpectedFromPolicy: true, Needed: 3, Members: []string{"o1", "o2"},
				Groups: []fencing.GroupStatus{{Members: []string{"o1"}}, {Members: []string{"o2"}}}, QuorumGroup: -1, Epoch: 2},
		},
		Nodes: []fencing.NodeStatus{{Node: "d", Domain: "mesh", Fresh: true, LastVerdict: fencing.VerdictStatus{Enabled: true, Fenced: true, Reason: "minority: 2 of 5", Epoch: 7}}},
	}
	env["MESH_SERVER"] = fakeAPI(t, st)
	code, out, errs = meshctl(t, env, "status")
	if code != 0 {
		t.Fatalf("status: exit %d, stderr %q", code, errs)
	}
	for _, want := range [][]string{
		{"FENCING-DOMAIN", "ENABLED", "EXPECTED", "NEEDED", "GROUPS", "QUORUM", "EPOCH"},
		{"mesh", "true", "5", "3", "3*,2", "yes", "(3", "members)", "7"},
		{"service/catalog", "false", "2", "2", "-", "-", "0"},
		{"service/orders", "true", "4", "(policy)", "3", "1,1", "none", "2"},
		{"d", "mesh", "true", "true", "7", "minority:", "2", "of", "5"},
	} {
		if !containsRow(out, want) {
			t.Errorf("status: no row %q in\n%s", want, out)
		}
	}
	code, out, _ = meshctl(t, env, "status", "-o", "json")
	var got struct {
		Fencing *fencing.Status `json:"fencing"`
	}
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.Fencing == nil || len(got.Fencing.Domains) != 3 || got.Fencing.Domains[0].Epoch != 7 {
		t.Errorf("status -o json: exit %d, %v\n%s", code, err, out)
	}
}

func containsRow(out string, fields []string) bool {
	want := strings.Join(fields, " ")
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Join(strings.Fields(line), " ") == want {
			return true
		}
	}
	return false
}
