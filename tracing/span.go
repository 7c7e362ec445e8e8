package tracing

import (
	"context"
	"net"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/causeway-mesh/causeway/tracing/clock"
)

// Span attributes and events Causeway adds beside the HTTP semantic
// conventions.
const (
	AttrNode    = "mesh.node"    // node id of the sidecar that made the span
	AttrLamport = "mesh.lamport" // Lamport value of the span's hop event (int)
	AttrVClock  = "mesh.vclock"  // x-mesh-vclock value of that event
	AttrAttempt = "mesh.attempt" // attempt number on a retry event
	EventRetry  = "mesh.retry"   // one per retry on a client span
)

// Span is a request span, or a no-op when tracing is off. It is a small
// value: pass it by value, and call End exactly once.
type Span struct {
	s      trace.Span
	client bool
}

// Recording reports whether the span records anything; when false, callers
// may skip building attributes.
func (s Span) Recording() bool { return s.s != nil && s.s.IsRecording() }

// SpanContext returns the span's context (invalid for a no-op span).
func (s Span) SpanContext() trace.SpanContext {
	if s.s == nil {
		return trace.SpanContext{}
	}
	return s.s.SpanContext()
}

// StartServer starts the server span of an inbound request r (a request from
// another sidecar). The parent comes from r's propagation headers, so the
// span joins the caller's trace. route is the matched route name, or "".
// Call Inject with the returned context on the request forwarded to the app
// so that the app's spans become children of this one.
func (p *Provider) StartServer(r *http.Request, route string) (context.Context, Span) {
	ctx := r.Context()
	if !p.Enabled() {
		return ctx, Span{}
	}
	ctx = p.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	host, port := splitHostPort(r.Host)
	var buf [9]attribute.KeyValue
	attrs := append(buf[:0],
		methodAttr(r.Method),
		semconv.URLPath(r.URL.Path),
		semconv.URLScheme(scheme(r)),
		semconv.ServerAddress(host),
		semconv.NetworkProtocolVersion(protoVersion(r)),
		p.node,
	)
	attrs = optionalAttrs(attrs, port, route)
	ctx, sp := p.tracer.Start(ctx, spanName(r.Method, route),
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	if !knownMethod(r.Method) {
		sp.SetAttributes(semconv.HTTPRequestMethodOriginal(r.Method))
	}
	return ctx, Span{s: sp}
}

// StartClient starts the client span of an outbound request out and injects
// its context into out.Header. The parent is the span in ctx if there is
// one, else the trace context the app sent (already in out.Header), so mesh
// spans join the app's own trace.
func (p *Provider) StartClient(ctx context.Context, out *http.Request, route string) (context.Context, Span) {
	if !p.Enabled() {
		return ctx, Span{}
	}
	carrier := propagation.HeaderCarrier(out.Header)
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = p.prop.Extract(ctx, carrier)
	}
	host, port := splitHostPort(out.URL.Host)
	if host == "" {
		host, port = splitHostPort(out.Host)
	}
	var buf [7]attribute.KeyValue
	attrs := append(buf[:0],
		methodAttr(out.Method),
		semconv.URLFull(urlWithoutQuery(out)),
		semconv.ServerAddress(host),
		p.node,
	)
	attrs = optionalAttrs(attrs, port, route)
	ctx, sp := p.tracer.Start(ctx, spanName(out.Method, route),
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	if !knownMethod(out.Method) {
		sp.SetAttributes(semconv.HTTPRequestMethodOriginal(out.Method))
	}
	p.prop.Inject(ctx, carrier)
	return ctx, Span{s: sp, client: true}
}

func optionalAttrs(attrs []attribute.KeyValue, port int, route string) []attribute.KeyValue {
	if port > 0 {
		attrs = append(attrs, semconv.ServerPort(port))
	}
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	return attrs
}

// Inject writes the trace context of ctx into h (no-op when tracing is off).
func (p *Provider) Inject(ctx context.Context, h http.Header) {
	if !p.Enabled() {
		return
	}
	p.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// SetClock records the hop's logical clocks as mesh.lamport and mesh.vclock.
// Record the stamp of the event the span stands for: the Send of a client
// span, the Receive of a server span.
func (s Span) SetClock(st clock.Stamp) {
	if s.s == nil || st.Lamport == 0 {
		return
	}
	s.s.SetAttributes(
		attribute.Int64(AttrLamport, int64(st.Lamport)), // #nosec G115 -- at most 2^63-1
		attribute.String(AttrVClock, st.Vector),
	)
}

// AddRetry records that attempt (2 for the first retry) is about to be sent
// because of errorType (a low-cardinality cause such as "timeout" or "503").
func (s Span) AddRetry(attempt int, errorType string) {
	if s.s == nil {
		return
	}
	attrs := [...]attribute.KeyValue{attribute.Int(AttrAttempt, attempt), semconv.ErrorTypeKey.String(errorType)}
	n := len(attrs)
	if errorType == "" {
		n--
	}
	s.s.AddEvent(EventRetry, trace.WithAttributes(attrs[:n]...))
	s.s.SetAttributes(semconv.HTTPRequestResendCount(attempt - 1))
}

// End ends the span with the response status (0 when there was no response)
// and errorType, the low-cardinality cause of a failure ("" when none; the
// proxy passes its x-mesh-error value). Status codes 5xx (server) or 4xx and
// 5xx (client), and any errorType, mark the span as an error; error.type is
// errorType, or the status code when errorType is empty.
func (s Span) End(status int, errorType string) {
	if s.s == nil {
		return
	}
	if status > 0 {
		s.s.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	failed := status >= 500 || (s.client && status >= 400)
	if errorType == "" && failed {
		errorType = strconv.Itoa(status)
	}
	if errorType != "" {
		s.s.SetAttributes(semconv.ErrorTypeKey.String(errorType))
		s.s.SetStatus(codes.Error, errorType)
	}
	s.s.End()
}

// spanName follows the HTTP semantic conventions: "{method} {route}", or
// just "{method}" without a route; "HTTP" for a method that is not standard.
// The raw path never becomes the name (unbounded cardinality).
func spanName(method, route string) string {
	if !knownMethod(method) {
		method = "HTTP"
	}
	if route == "" {
		return method
	}
	return method + " " + route
}

func knownMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

func methodAttr(m string) attribute.KeyValue {
	if !knownMethod(m) {
		return semconv.HTTPRequestMethodKey.String("_OTHER")
	}
	return semconv.HTTPRequestMethodKey.String(m)
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func protoVersion(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "2"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "1.0"
	default:
		return "1.1"
	}
}

func splitHostPort(hp string) (string, int) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return hp, 0
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

// urlWithoutQuery returns scheme://host/path; the query is left out because
// it may carry credentials or personal data.
func urlWithoutQuery(r *http.Request) string {
	u := *r.URL
	u.RawQuery, u.ForceQuery, u.Fragment, u.User = "", false, "", nil
	if u.Host == "" {
		u.Host = r.Host
	}
	if u.Scheme == "" {
		u.Scheme = "http"
	}
	return u.String()
}
