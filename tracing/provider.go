package tracing

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the spans Causeway creates.
const ScopeName = "github.com/causeway-mesh/causeway/tracing"

// Options are what the embedding binary knows beyond the environment.
type Options struct {
	// DefaultServiceName is service.name when neither OTEL_SERVICE_NAME nor
	// OTEL_RESOURCE_ATTRIBUTES names one (the sidecar passes --service).
	DefaultServiceName string
	// NodeID becomes service.instance.id and the mesh.node attribute of
	// every span.
	NodeID string
	// Exporter replaces the OTLP exporter (tests, debugging). It turns
	// tracing on even without an endpoint; OTEL_SDK_DISABLED still wins.
	Exporter sdktrace.SpanExporter
}

// Provider owns the tracer provider, the propagator and the span queue. A
// Provider that is off (no endpoint, or OTEL_SDK_DISABLED) is valid: its
// Start methods return a no-op Span at the cost of a nil check, and callers
// may test Enabled to skip work. A nil *Provider behaves as one that is off.
type Provider struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	proc   *BatchProcessor
	prop   propagation.TextMapPropagator
	node   attribute.KeyValue
}

// New builds a Provider from cfg. It does not contact the endpoint: OTLP
// exporters connect lazily and export failures are counted, never fatal.
// The OTLP exporters still read the OTEL_EXPORTER_OTLP_{HEADERS,
// CERTIFICATE,COMPRESSION,TIMEOUT…} variables from the process environment
// themselves; the endpoint and protocol always come from cfg.
func New(ctx context.Context, cfg Config, opts Options) (*Provider, error) {
	prop, err := newPropagator(cfg.Propagators)
	if err != nil {
		return nil, fmt.Errorf("tracing: propagators: %w", err)
	}
	p := &Provider{prop: prop, node: attribute.String(AttrNode, opts.NodeID)}
	if cfg.Disabled || (cfg.Endpoint == "" && opts.Exporter == nil) {
		return p, nil
	}
	sampler, err := newSampler(cfg.Sampler, cfg.SamplerArg)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := newResource(ctx, cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	exp := opts.Exporter
	if exp == nil {
		exp, err = newExporter(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("tracing: exporter for %s: %w", cfg.Endpoint, err)
		}
	}
	p.proc = NewBatchProcessor(exp, cfg.Batch)
	p.tp = sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler),
		sdktrace.WithSpanProcessor(p.proc),
	)
	p.tracer = p.tp.Tracer(ScopeName)
	return p, nil
}

// Enabled reports whether spans are recorded and exported.
func (p *Provider) Enabled() bool { return p != nil && p.tp != nil }

// Propagator returns the configured propagator (also when tracing is off,
// for callers that forward trace context untouched).
func (p *Provider) Propagator() propagation.TextMapPropagator {
	if p == nil {
		return propagation.NewCompositeTextMapPropagator()
	}
	return p.prop
}

// TracerProvider returns the SDK provider, or nil when tracing is off.
func (p *Provider) TracerProvider() *sdktrace.TracerProvider {
	if p == nil {
		return nil
	}
	return p.tp
}

// Stats returns the span queue counts (all zero when tracing is off).
// Dropped is the figure to export as a Prometheus counter.
func (p *Provider) Stats() ProcessorStats {
	if !p.Enabled() {
		return ProcessorStats{}
	}
	return p.proc.Stats()
}

// ForceFlush exports every ended span now.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	return p.tp.ForceFlush(ctx)
}

// Shutdown flushes and stops exporting; spans ended afterwards are dropped.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	return p.tp.Shutdown(ctx)
}

func newPropagator(names []string) (propagation.TextMapPropagator, error) {
	if len(names) == 0 {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}), nil
	}
	p, err := autoprop.TextMapPropagator(names...)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func newResource(ctx context.Context, cfg Config, opts Options) (*resource.Resource, error) {
	attrs := append([]attribute.KeyValue(nil), cfg.Resource...)
	name := cfg.ServiceName
	if name == "" {
		for _, kv := range cfg.Resource {
			if kv.Key == semconv.ServiceNameKey {
				name = kv.Value.AsString()
			}
		}
	}
	if name == "" {
		name = opts.DefaultServiceName
	}
	if name == "" {
		name = "unknown_service:causeway"
	}
	attrs = append(attrs, semconv.ServiceName(name))
	if opts.NodeID != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(opts.NodeID))
	}
	// Built from explicit detectors only: resource.Default() would read the
	// process environment behind the caller's LookupFunc.
	return resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attrs...),
	)
}

func newExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	switch cfg.Protocol {
	case ProtocolGRPC:
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
	case ProtocolHTTPProtobuf, "":
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.Endpoint))
	default:
		return nil, errors.New("unsupported protocol " + cfg.Protocol)
	}
}
