package tracing

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Protocols for the OTLP exporter.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Defaults from the OpenTelemetry SDK environment specification.
const (
	DefaultMaxQueueSize       = 2048
	DefaultMaxExportBatchSize = 512
	DefaultScheduleDelay      = 5 * time.Second
	DefaultExportTimeout      = 30 * time.Second
	DefaultSampler            = "parentbased_always_on"
	DefaultPropagators        = "tracecontext,baggage"
)

// Config is the tracing configuration, normally read from the standard
// OTEL_* environment by ConfigFromEnv.
type Config struct {
	// Disabled turns tracing off (OTEL_SDK_DISABLED=true).
	Disabled bool
	// Endpoint is the full URL spans are exported to: for http/protobuf
	// including the path (…/v1/traces), for grpc scheme://host:port (http
	// means no TLS). Empty turns tracing off unless an exporter is given in
	// Options.
	Endpoint string
	// Protocol is ProtocolGRPC or ProtocolHTTPProtobuf (the default).
	Protocol string
	// ServiceName is OTEL_SERVICE_NAME; empty falls back to service.name in
	// Resource, then to Options.DefaultServiceName.
	ServiceName string
	// Resource holds the OTEL_RESOURCE_ATTRIBUTES attributes.
	Resource []attribute.KeyValue
	// Sampler and SamplerArg are OTEL_TRACES_SAMPLER(_ARG): always_on,
	// always_off, traceidratio, parentbased_always_on (the default),
	// parentbased_always_off, parentbased_traceidratio.
	Sampler    string
	SamplerArg string
	// Propagators are the OTEL_PROPAGATORS names (default tracecontext,
	// baggage): tracecontext, baggage, b3, b3multi, jaeger, xray, ottrace,
	// none.
	Propagators []string
	// Batch configures the span queue (OTEL_BSP_*).
	Batch BatchConfig
}

// BatchConfig configures the bounded span queue and its exports.
type BatchConfig struct {
	// MaxQueueSize bounds the spans waiting for export; a span ended while
	// the queue is full is dropped and counted. Default 2048.
	MaxQueueSize int
	// MaxExportBatchSize is the most spans sent in one export; at most
	// MaxQueueSize. Default 512.
	MaxExportBatchSize int
	// ScheduleDelay is the longest a span waits before an export. Default 5s.
	ScheduleDelay time.Duration
	// ExportTimeout bounds one export. Default 30s.
	ExportTimeout time.Duration
}

func (b *BatchConfig) applyDefaults() {
	if b.MaxQueueSize <= 0 {
		b.MaxQueueSize = DefaultMaxQueueSize
	}
	if b.MaxExportBatchSize <= 0 {
		b.MaxExportBatchSize = DefaultMaxExportBatchSize
	}
	b.MaxExportBatchSize = min(b.MaxExportBatchSize, b.MaxQueueSize)
	if b.ScheduleDelay <= 0 {
		b.ScheduleDelay = DefaultScheduleDelay
	}
	if b.ExportTimeout <= 0 {
		b.ExportTimeout = DefaultExportTimeout
	}
}

// LookupFunc reads one environment variable; os.LookupEnv fits.
type LookupFunc func(key string) (string, bool)

// ConfigFromEnv reads the OpenTelemetry SDK environment variables through
// lookup: OTEL_SDK_DISABLED, OTEL_EXPORTER_OTLP_{TRACES_,}ENDPOINT,
// OTEL_EXPORTER_OTLP_{TRACES_,}PROTOCOL, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_PROPAGATORS and
// OTEL_BSP_{MAX_QUEUE_SIZE,MAX_EXPORT_BATCH_SIZE,SCHEDULE_DELAY,EXPORT_TIMEOUT}.
// A present but invalid value is an error naming the variable; an empty one
// counts as unset.
//
// Endpoints follow the specification: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// used as is; OTEL_EXPORTER_OTLP_ENDPOINT gets "/v1/traces" appended for
// http/protobuf. Both must be http:// or https:// URLs. With neither set,
// tracing is off.
func ConfigFromEnv(lookup LookupFunc) (Config, error) {
	get := func(k string) string {
		v, _ := lookup(k)
		return strings.TrimSpace(v)
	}
	var cfg Config
	var errs []error
	cfg.Disabled = strings.EqualFold(get("OTEL_SDK_DISABLED"), "true")

	cfg.Protocol = ProtocolHTTPProtobuf
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := get(k); v != "" {
			if v != ProtocolGRPC && v != ProtocolHTTPProtobuf {
				errs = append(errs, fmt.Errorf("%s=%q: want %s or %s", k, v, ProtocolGRPC, ProtocolHTTPProtobuf))
			}
			cfg.Protocol = v
			break
		}
	}
	if v := get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
		if err := checkEndpoint(v); err != nil {
			errs = append(errs, fmt.Errorf("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: %w", err))
		}
		cfg.Endpoint = v
	} else if v := get("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		if err := checkEndpoint(v); err != nil {
			errs = append(errs, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err))
		}
		cfg.Endpoint = v
		if cfg.Protocol == ProtocolHTTPProtobuf {
			cfg.Endpoint = strings.TrimSuffix(v, "/") + "/v1/traces"
		}
	}

	cfg.ServiceName = get("OTEL_SERVICE_NAME")
	if v := get("OTEL_RESOURCE_ATTRIBUTES"); v != "" {
		attrs, err := parseResourceAttributes(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err))
		}
		cfg.Resource = attrs
	}

	cfg.Sampler = DefaultSampler
	if v := get("OTEL_TRACES_SAMPLER"); v != "" {
		cfg.Sampler = v
	}
	cfg.SamplerArg = get("OTEL_TRACES_SAMPLER_ARG")
	if _, err := newSampler(cfg.Sampler, cfg.SamplerArg); err != nil {
		errs = append(errs, err)
	}

	props := DefaultPropagators
	if v := get("OTEL_PROPAGATORS"); v != "" {
		props = v
	}
	for _, p := range strings.Split(props, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Propagators = append(cfg.Propagators, p)
		}
	}
	if _, err := newPropagator(cfg.Propagators); err != nil {
		errs = append(errs, fmt.Errorf("OTEL_PROPAGATORS: %w", err))
	}

	intVar := func(k string, dst *int) {
		if v := get(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive integer", k, v))
				return
			}
			*dst = n
		}
	}
	msVar := func(k string, dst *time.Duration) {
		if v := get(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive number of milliseconds", k, v))
				return
			}
			*dst = time.Duration(n) * time.Millisecond
		}
	}
	intVar("OTEL_BSP_MAX_QUEUE_SIZE", &cfg.Batch.MaxQueueSize)
	intVar("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &cfg.Batch.MaxExportBatchSize)
	msVar("OTEL_BSP_SCHEDULE_DELAY", &cfg.Batch.ScheduleDelay)
	msVar("OTEL_BSP_EXPORT_TIMEOUT", &cfg.Batch.ExportTimeout)
	cfg.Batch.applyDefaults()

	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("tracing config: %w", err)
	}
	return cfg, nil
}

func checkEndpoint(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL with a host", v)
	}
	return nil
}

// parseResourceAttributes parses key1=value1,key2=value2 with
// percent-encoded values (W3C Baggage octets).
func parseResourceAttributes(s string) ([]attribute.KeyValue, error) {
	var out []attribute.KeyValue
	for _, pair := range strings.Split(s, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", pair)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("value of %q: %w", k, err)
		}
		out = append(out, attribute.String(k, val))
	}
	return out, nil
}

func newSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio in [0,1]", arg)
		}
		return r, nil
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.TraceIDRatioBased(r), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", name)
	}
}
