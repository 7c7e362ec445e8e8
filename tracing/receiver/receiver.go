// Package receiver is an embedded OTLP trace receiver: it accepts spans over
// gRPC (TraceService/Export) and HTTP (POST /v1/traces, protobuf or JSON),
// keeps the most recent ones in memory, optionally forwards everything to a
// real collector, and answers queries over a small JSON API:
//
//	POST /v1/traces                    OTLP/HTTP (application/x-protobuf or application/json, gzip allowed)
//	GET  /api/v1/traces?limit=N        recent traces, newest first (default 50, at most 1000)
//	GET  /api/v1/traces/{traceID}      one trace's spans, by start time
//	GET  /api/v1/traces/{traceID}/causal   the trace in happens-before order (causal.Result)
//
// Memory is bounded by span count and by trace count; the oldest traces (by
// first arrival) are evicted first.
package receiver

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/causeway-mesh/causeway/tracing/causal"
)

// Defaults for Config.
const (
	DefaultMaxSpans  = 100_000
	DefaultMaxTraces = 10_000
)

// Config bounds the store and configures forwarding.
type Config struct {
	// MaxSpans bounds the spans kept; 0 means DefaultMaxSpans.
	MaxSpans int
	// MaxTraces bounds the traces kept; 0 means DefaultMaxTraces.
	MaxTraces int
	// ForwardURL, when set, is an OTLP/HTTP traces endpoint
	// (http://collector:4318/v1/traces) every received request is forwarded
	// to, asynchronously; see Forwarder.
	ForwardURL string
	// ForwardQueue bounds the requests waiting to be forwarded; 0 means 256.
	ForwardQueue int
}

// Span is a stored span, as served by the query API.
type Span struct {
	TraceID       string         `json:"traceId"`
	SpanID        string         `json:"spanId"`
	ParentSpanID  string         `json:"parentSpanId,omitempty"`
	Name          string         `json:"name"`
	Kind          string         `json:"kind"`
	Service       string         `json:"service"`
	Start         time.Time      `json:"start"`
	End           time.Time      `json:"end"`
	StatusCode    string         `json:"statusCode"`
	StatusMessage string         `json:"statusMessage,omitempty"`
	Attributes    map[string]any `json:"attributes"`
	Events        []SpanEvent    `json:"events,omitempty"`
}

// SpanEvent is an event recorded on a span.
type SpanEvent struct {
	Name       string         `json:"name"`
	Time       time.Time      `json:"time"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// TraceSummary describes one stored trace.
type TraceSummary struct {
	TraceID    string    `json:"traceId"`
	RootName   string    `json:"rootName"`
	Services   []string  `json:"services"`
	SpanCount  int       `json:"spanCount"`
	Start      time.Time `json:"start"`
	DurationMS float64   `json:"durationMs"`
}

// Stats are cumulative counts.
type Stats struct {
	Spans          int    `json:"spans"`
	Traces         int    `json:"traces"`
	Received       uint64 `json:"received"`
	EvictedTraces  uint64 `json:"evictedTraces"`
	ForwardDropped uint64 `json:"forwardDropped"`
	ForwardFailed  uint64 `json:"forwardFailed"`
}

type trace struct {
	id    string
	spans []Span
	seen  map[string]struct{} // span ids, to drop duplicates from exporter retries
}

// Receiver stores recent spans. Its methods are safe for concurrent use.
type Receiver struct {
	coltracepb.UnimplementedTraceServiceServer

	maxSpans, maxTraces int

	mu     sync.Mutex
	traces map[string]*trace
	order  []string // trace ids by first arrival; order[head:] are live
	head   int
	nspans int

	received, evicted atomic.Uint64
	fwd               *Forwarder
}

// New returns a receiver; with cfg.ForwardURL it starts a forwarder, which
// Close stops.
func New(cfg Config) (*Receiver, error) {
	if cfg.MaxSpans <= 0 {
		cfg.MaxSpans = DefaultMaxSpans
	}
	if cfg.MaxTraces <= 0 {
		cfg.MaxTraces = DefaultMaxTraces
	}
	r := &Receiver{maxSpans: cfg.MaxSpans, maxTraces: cfg.MaxTraces, traces: map[string]*trace{}}
	if cfg.ForwardURL != "" {
		f, err := NewForwarder(cfg.ForwardURL, cfg.ForwardQueue, nil)
		if err != nil {
			return nil, err
		}
		r.fwd = f
	}
	return r, nil
}

// Close stops forwarding; stored spans stay queryable.
func (r *Receiver) Close() error {
	if r.fwd != nil {
		r.fwd.Close()
	}
	return nil
}

// RegisterGRPC registers the OTLP TraceService on s.
func (r *Receiver) RegisterGRPC(s *grpc.Server) { coltracepb.RegisterTraceServiceServer(s, r) }

// Export implements the OTLP TraceService.
func (r *Receiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.Ingest(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// Stats returns the current counts.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	s := Stats{Spans: r.nspans, Traces: len(r.traces)}
	r.mu.Unlock()
	s.Received, s.EvictedTraces = r.received.Load(), r.evicted.Load()
	if r.fwd != nil {
		s.ForwardDropped, s.ForwardFailed = r.fwd.Stats()
	}
	return s
}

// Ingest stores the spans of req and hands req to the forwarder.
func (r *Receiver) Ingest(req *coltracepb.ExportTraceServiceRequest) {
	if r.fwd != nil {
		r.fwd.Enqueue(req)
	}
	var spans []Span
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				spans = append(spans, convert(sp, service))
			}
		}
	}
	r.received.Add(uint64(len(spans)))
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range spans {
		if len(s.TraceID) != 32 {
			continue
		}
		t := r.traces[s.TraceID]
		if t == nil {
			t = &trace{id: s.TraceID, seen: map[string]struct{}{}}
			r.traces[s.TraceID] = t
			r.order = append(r.order, s.TraceID)
		}
		if _, dup := t.seen[s.SpanID]; dup {
			continue
		}
		t.seen[s.SpanID] = struct{}{}
		t.spans = append(t.spans, s)
		r.nspans++
		r.evictLocked(s.TraceID)
	}
}

// evictLocked drops the oldest traces until both bounds hold. The trace
// being added is evicted last: a single trace larger than MaxSpans keeps its
// newest MaxSpans spans.
func (r *Receiver) evictLocked(current string) {
	for (r.nspans > r.maxSpans || len(r.traces) > r.maxTraces) && r.head < len(r.order) {
		id := r.order[r.head]
		if id == current && len(r.traces) == 1 {
			t := r.traces[id]
			excess := r.nspans - r.maxSpans
			for _, s := range t.spans[:excess] {
				delete(t.seen, s.SpanID)
			}
			t.spans = slices.Delete(t.spans, 0, excess)
			r.nspans -= excess
			return
		}
		if id == current {
			// Move the current trace to the back and evict the next oldest.
			r.order = append(r.order, id)
			r.head++
			continue
		}
		r.head++
		if t := r.traces[id]; t != nil {
			r.nspans -= len(t.spans)
			delete(r.traces, id)
			r.evicted.Add(1)
		}
	}
	if r.head > 1024 && r.head > len(r.order)/2 {
		r.order = append([]string(nil), r.order[r.head:]...)
		r.head = 0
	}
}

// Traces returns up to limit summaries, newest first.
func (r *Receiver) Traces(limit int) []TraceSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []TraceSummary{}
	for i := len(r.order) - 1; i >= r.head && len(out) < limit; i-- {
		t := r.traces[r.order[i]]
		if t == nil || t.id != r.order[i] {
			continue
		}
		out = append(out, summarize(t))
	}
	return out
}

// Trace returns a copy of one trace's spans sorted by start time.
func (r *Receiver) Trace(traceID string) ([]Span, bool) {
	r.mu.Lock()
	t := r.traces[traceID]
	var spans []Span
	if t != nil {
		spans = slices.Clone(t.spans)
	}
	r.mu.Unlock()
	if t == nil {
		return nil, false
	}
	slices.SortStableFunc(spans, func(a, b Span) int { return a.Start.Compare(b.Start) })
	return spans, true
}

// Causal returns the causal view of one trace.
func (r *Receiver) Causal(traceID string) (causal.Result, bool) {
	spans, ok := r.Trace(traceID)
	if !ok {
		return causal.Result{}, false
	}
	in := make([]causal.Span, len(spans))
	for i, s := range spans {
		in[i] = CausalSpan(s)
	}
	return causal.Analyze(traceID, in), true
}

// CausalSpan extracts what causal.Analyze needs from a stored span.
func CausalSpan(s Span) causal.Span {
	c := causal.Span{SpanID: s.SpanID, ParentSpanID: s.ParentSpanID, Name: s.Name, Kind: s.Kind,
		Service: s.Service, Start: s.Start, End: s.End}
	c.Node, _ = s.Attributes["mesh.node"].(string)
	c.VClock, _ = s.Attributes["mesh.vclock"].(string)
	if l, ok := s.Attributes["mesh.lamport"].(int64); ok && l > 0 {
		c.Lamport = uint64(l)
	}
	return c
}

func summarize(t *trace) TraceSummary {
	s := TraceSummary{TraceID: t.id, SpanCount: len(t.spans), Services: []string{}}
	var end time.Time
	for i, sp := range t.spans {
		if i == 0 || sp.Start.Before(s.Start) {
			s.Start = sp.Start
		}
		if sp.End.After(end) {
			end = sp.End
		}
		if sp.ParentSpanID == "" || s.RootName == "" {
			if sp.ParentSpanID == "" {
				s.RootName = sp.Name
			}
		}
		if sp.Service != "" && !slices.Contains(s.Services, sp.Service) {
			s.Services = append(s.Services, sp.Service)
		}
	}
	slices.Sort(s.Services)
	s.DurationMS = float64(end.Sub(s.Start).Microseconds()) / 1000
	return s
}

var kindNames = map[tracepb.Span_SpanKind]string{
	tracepb.Span_SPAN_KIND_INTERNAL: "internal",
	tracepb.Span_SPAN_KIND_SERVER:   "server",
	tracepb.Span_SPAN_KIND_CLIENT:   "client",
	tracepb.Span_SPAN_KIND_PRODUCER: "producer",
	tracepb.Span_SPAN_KIND_CONSUMER: "consumer",
}

func convert(sp *tracepb.Span, service string) Span {
	s := Span{
		TraceID:      hex.EncodeToString(sp.GetTraceId()),
		SpanID:       hex.EncodeToString(sp.GetSpanId()),
		ParentSpanID: hex.EncodeToString(sp.GetParentSpanId()),
		Name:         sp.GetName(),
		Kind:         kindNames[sp.GetKind()],
		Service:      service,
		Start:        unixNano(sp.GetStartTimeUnixNano()),
		End:          unixNano(sp.GetEndTimeUnixNano()),
		Attributes:   attrs(sp.GetAttributes()),
	}
	if s.Kind == "" {
		s.Kind = "unspecified"
	}
	switch sp.GetStatus().GetCode() {
	case tracepb.Status_STATUS_CODE_OK:
		s.StatusCode = "ok"
	case tracepb.Status_STATUS_CODE_ERROR:
		s.StatusCode = "error"
	default:
		s.StatusCode = "unset"
	}
	s.StatusMessage = sp.GetStatus().GetMessage()
	for _, e := range sp.GetEvents() {
		s.Events = append(s.Events, SpanEvent{Name: e.GetName(), Time: unixNano(e.GetTimeUnixNano()), Attributes: attrs(e.GetAttributes())})
	}
	return s
}

func unixNano(n uint64) time.Time {
	if n > 1<<63-1 {
		n = 1<<63 - 1
	}
	return time.Unix(0, int64(n)).UTC()
}

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue(), 0)
	}
	return m
}

// value converts an OTLP AnyValue; nesting deeper than 8 is cut.
func value(v *commonpb.AnyValue, depth int) any {
	if depth > 8 {
		return nil
	}
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return base64.StdEncoding.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		out := make([]any, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e, depth+1))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		out := make(map[string]any, len(x.KvlistValue.GetValues()))
		for _, kv := range x.KvlistValue.GetValues() {
			out[kv.GetKey()] = value(kv.GetValue(), depth+1)
		}
		return out
	default:
		return nil
	}
}
