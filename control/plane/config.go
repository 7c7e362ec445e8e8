package plane

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// EnvPrefix prefixes every flag's environment variable: --data-dir is
// MESH_DATA_DIR.
const EnvPrefix = "MESH_"

// EnvName is the environment variable that sets flag name.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// GossipOff disables the gossip watcher.
const GossipOff = "off"

// Config is the control plane's configuration. The YAML file uses the
// json field names.
type Config struct {
	// XDS is the gRPC ADS listener. Default ":18000".
	XDS string `json:"xds"`
	// API is the HTTP API listener. Default ":18080".
	API string `json:"api"`
	// DataDir holds the policy database and the API token file. Default
	// "./causeway-data".
	DataDir string `json:"dataDir"`
	// NodeName is the control plane's gossip member name. Default
	// "controlplane-HOSTNAME".
	NodeName string `json:"nodeName"`
	// Gossip is the gossip HOST:PORT, or "off" (then the control plane
	// knows only the services of connected sidecars and named by
	// policy, with no endpoints). Default "off".
	Gossip string `json:"gossip"`
	// Join lists gossip seeds (sidecars' gossip HOST:PORT).
	Join []string `json:"join"`
	// GossipLabel must match the sidecars' --gossip-label.
	GossipLabel string `json:"gossipLabel"`
	// Debounce and DebounceMax bound how xDS pushes coalesce. Defaults
	// 100ms and 1s.
	Debounce    Duration `json:"debounce"`
	DebounceMax Duration `json:"debounceMax"`
	// ShutdownTimeout bounds the graceful stop. Default 10s.
	ShutdownTimeout Duration `json:"shutdownTimeout"`
	Log             Log      `json:"log"`
	// Trace configures the embedded OTLP trace receiver.
	Trace Trace `json:"trace"`
	// TLS makes the control plane the mesh's certificate authority and
	// serves xDS (with the Identity service) and the API over TLS.
	TLS TLS `json:"tls"`
}

// TLS configures the control plane's certificate authority (package
// control/ca) and its TLS listeners.
type TLS struct {
	// Enabled turns the CA and TLS on. Default false.
	Enabled bool `json:"enabled"`
	// TrustDomain names the mesh in SPIFFE IDs. Default "causeway.local".
	TrustDomain string `json:"trustDomain"`
	// Hosts are the DNS names and IPs in the control plane's serving
	// certificate. Default: localhost, 127.0.0.1 and the host name.
	Hosts []string `json:"hosts"`
	// RenewWindow: once a rotated CA root is activated, every sidecar
	// renews onto it at a random moment within this window (told to it
	// over WatchBundle), which spreads the signing load: a fleet of N
	// sidecars makes about N/RenewWindow requests a second. Default 2m,
	// at most 1h.
	RenewWindow Duration `json:"renewWindow"`
	// Kubernetes lets sidecars in a Kubernetes cluster obtain their first
	// certificate with a service-account token, verified offline.
	Kubernetes Kubernetes `json:"kubernetes"`
}

// Kubernetes configures the offline verification of Kubernetes
// service-account tokens (package control/ca/k8stoken): a sidecar that
// sends one instead of a bootstrap token is issued
// spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICEACCOUNT. Off unless Issuer
// and JWKSFile are set; needs TLS.
type Kubernetes struct {
	// Issuer is the cluster's service-account issuer, compared exactly
	// with the tokens' "iss" (`kubectl get --raw
	// /.well-known/openid-configuration`).
	Issuer string `json:"issuer"`
	// JWKSFile holds the cluster's service-account signing keys as a JWK
	// set (`kubectl get --raw /openid/v1/jwks`). It is read at start;
	// restart the control plane after the cluster's keys change.
	JWKSFile string `json:"jwksFile"`
	// Audience must be among the tokens' audiences. Default "causeway".
	Audience string `json:"audience"`
}

// DefaultRenewWindow is the default TLS.RenewWindow.
const DefaultRenewWindow = 2 * time.Minute

// maxRenewWindow bounds TLS.RenewWindow (the sidecars cap it there too).
const maxRenewWindow = time.Hour

// Trace configures the embedded OTLP trace receiver: OTLP/HTTP on the API
// listener (POST /v1/traces, no token) and OTLP/gRPC on the xDS listener
// (TraceService), queried under /api/v1/traces with the token.
type Trace struct {
	// BufferSpans bounds the spans kept in memory; the oldest traces are
	// evicted first. Default 100000.
	BufferSpans int `json:"bufferSpans"`
	// Forward, when set, is a collector's OTLP/HTTP endpoint every export
	// is also sent to, such as http://collector:4318 (a URL without a
	// path gets /v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT does) or the
	// full http://collector:4318/v1/traces. Forwarding never blocks ingest:
	// when the collector is slow, exports are dropped and counted. Default
	// "" (no forwarding).
	Forward string `json:"forward"`
}

// DefaultTraceBufferSpans is the default Trace.BufferSpans.
const DefaultTraceBufferSpans = 100_000

// ForwardURL is the OTLP/HTTP traces URL spans are forwarded to: Forward
// with /v1/traces appended when it has no path, or "".
func (t Trace) ForwardURL() string {
	u, err := url.Parse(t.Forward)
	if t.Forward == "" || err != nil {
		return t.Forward
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String()
}

// Log configures logging.
type Log struct {
	Level  string `json:"level"`  // debug, info, warn or error; default info
	Format string `json:"format"` // text or json; default text
}

// Duration is a time.Duration written as a Go duration string.
type Duration struct{ time.Duration }

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a duration string such as "100ms"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Default returns the defaults.
func Default() Config {
	return Config{
		XDS: ":18000", API: ":18080", DataDir: "./causeway-data", Gossip: GossipOff,
		Debounce: Duration{100 * time.Millisecond}, DebounceMax: Duration{time.Second},
		ShutdownTimeout: Duration{10 * time.Second},
		Log:             Log{Level: "info", Format: "text"},
		Trace:           Trace{BufferSpans: DefaultTraceBufferSpans},
		TLS: TLS{
			TrustDomain: "causeway.local", RenewWindow: Duration{DefaultRenewWindow},
			Kubernetes: Kubernetes{Audience: "causeway"},
		},
	}
}

// Validate checks every field and returns all problems, each naming its
// field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.TLS.Enabled {
		if err := spiffeid.ValidateTrustDomain(c.TLS.TrustDomain); err != nil {
			bad("tls.trustDomain", "%v", err)
		}
	}
	if w := c.TLS.RenewWindow.Duration; w <= 0 || w > maxRenewWindow {
		bad("tls.renewWindow", "%v: must be greater than 0 and at most %v", w, maxRenewWindow)
	}
	if k := c.TLS.Kubernetes; k.Issuer != "" || k.JWKSFile != "" {
		switch {
		case !c.TLS.Enabled:
			bad("tls.kubernetes", "service-account tokens need the certificate authority: set --tls")
		case k.Issuer == "":
			bad("tls.kubernetes.issuer", "required with tls.kubernetes.jwksFile (the tokens' \"iss\")")
		case k.JWKSFile == "":
			bad("tls.kubernetes.jwksFile", "required with tls.kubernetes.issuer (kubectl get --raw /openid/v1/jwks > FILE)")
		}
		if k.Audience == "" {
			bad("tls.kubernetes.audience", "must not be empty")
		}
	}
	hostPort := func(field, v string) {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			bad(field, "%q: want HOST:PORT", v)
		}
	}
	hostPort("xds", c.XDS)
	hostPort("api", c.API)
	if c.DataDir == "" {
		bad("dataDir", "required")
	}
	if c.Gossip != GossipOff {
		hostPort("gossip", c.Gossip)
	}
	for i, j := range c.Join {
		hostPort(fmt.Sprintf("join[%d]", i), j)
	}
	if len(c.Join) > 0 && c.Gossip == GossipOff {
		bad("join", "given, but gossip is off; set --gossip HOST:PORT")
	}
	if c.Debounce.Duration <= 0 {
		bad("debounce", "must be greater than 0")
	}
	if c.DebounceMax.Duration < c.Debounce.Duration {
		bad("debounceMax", "must be at least debounce (%v)", c.Debounce.Duration)
	}
	if c.ShutdownTimeout.Duration <= 0 {
		bad("shutdownTimeout", "must be greater than 0")
	}
	if c.Trace.BufferSpans < 1 {
		bad("trace.bufferSpans", "must be at least 1")
	}
	if c.Trace.Forward != "" {
		u, err := url.Parse(c.Trace.Forward)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad("trace.forward", "%q: want an http:// or https:// URL of an OTLP/HTTP endpoint, such as http://collector:4318", c.Trace.Forward)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// DecodeFile strictly decodes YAML over cfg: unknown keys, duplicates and
// wrong types are errors naming the field.
func DecodeFile(data []byte, cfg *Config) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	var raw any
	if err := json.Unmarshal(js, &raw); err != nil {
		return err
	}
	if err := exactKeys(raw, reflect.TypeFor[Config](), ""); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// exactKeys refuses keys that match a field only without regard to case
// (encoding/json would accept "xDS" for "xds" and silently let a second
// spelling win).
func exactKeys(v any, t reflect.Type, path string) error {
	m, ok := v.(map[string]any)
	if !ok || t.Kind() != reflect.Struct {
		return nil
	}
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		fields[name] = f.Type
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ft, ok := fields[k]
		if !ok {
			return fmt.Errorf("%s%s: unknown field", path, k)
		}
		if err := exactKeys(m[k], ft, path+k+"."); err != nil {
			return err
		}
	}
	return nil
}

// ErrHelp is returned by Load when -h or --help was given.
var ErrHelp = pflag.ErrHelp

// Load builds the configuration from, in increasing precedence: defaults,
// the YAML file (--config or MESH_CONFIG), MESH_* variables, flags.
func Load(args []string, lookupEnv func(string) (string, bool), out io.Writer) (*Config, error) {
	return LoadWith(args, lookupEnv, out, nil)
}

// LoadWith is Load with flags of the caller's own beside the server's, for
// a command that must see the server's configuration exactly as the
// server does (controlplane healthcheck). extra registers them; it is
// called once for each flag set Load builds, so it must register the same
// variables each time. They take MESH_* variables like every other flag.
func LoadWith(args []string, lookupEnv func(string) (string, bool), out io.Writer, extra func(*pflag.FlagSet)) (*Config, error) {
	scratch := Default()
	var file string
	fs := newFlagSet(&scratch, &file, out, extra)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if !fs.Changed("config") {
		if v, ok := lookupEnv(EnvName("config")); ok {
			file = v
		}
	}
	cfg := Default()
	if file != "" {
		data, err := os.ReadFile(file) //nolint:gosec // the operator names the file
		if err != nil {
			return nil, err
		}
		if err := DecodeFile(data, &cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	var unused string
	fs2 := newFlagSet(&cfg, &unused, io.Discard, extra)
	var errs []error
	fs2.VisitAll(func(f *pflag.Flag) {
		if fs.Changed(f.Name) || f.Name == "config" {
			return
		}
		if v, ok := lookupEnv(EnvName(f.Name)); ok {
			if err := fs2.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(f.Name), err))
			}
		}
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := fs2.Parse(args); err != nil {
		return nil, err
	}
	if cfg.NodeName == "" {
		host, _ := os.Hostname()
		cfg.NodeName = "controlplane-" + host
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func newFlagSet(cfg *Config, file *string, out io.Writer, extra func(*pflag.FlagSet)) *pflag.FlagSet {
	fs := pflag.NewFlagSet("controlplane", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.SortFlags = false
	fs.StringVar(file, "config", "", "YAML configuration file (flags and MESH_* variables override it)")
	fs.StringVar(&cfg.XDS, "xds", cfg.XDS, "xDS (gRPC ADS, SotW and delta) listener HOST:PORT")
	fs.StringVar(&cfg.API, "api", cfg.API, "HTTP API listener HOST:PORT")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the policy database and the API token file (api-token)")
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "gossip member name (default controlplane-HOSTNAME)")
	fs.StringVar(&cfg.Gossip, "gossip", cfg.Gossip, `gossip HOST:PORT to watch the mesh's membership, or "off"`)
	fs.StringSliceVar(&cfg.Join, "join", cfg.Join, "gossip seeds HOST:PORT, comma-separated")
	fs.StringVar(&cfg.GossipLabel, "gossip-label", cfg.GossipLabel, "gossip cluster label (must match the sidecars')")
	fs.BoolVar(&cfg.TLS.Enabled, "tls", cfg.TLS.Enabled, "be the mesh's certificate authority; serve xDS, identity and the API over TLS")
	fs.StringVar(&cfg.TLS.TrustDomain, "trust-domain", cfg.TLS.TrustDomain, "the mesh's SPIFFE trust domain")
	fs.StringSliceVar(&cfg.TLS.Hosts, "tls-host", cfg.TLS.Hosts, "DNS names and IPs of the serving certificate (default localhost, 127.0.0.1, the host name)")
	fs.DurationVar(&cfg.TLS.RenewWindow.Duration, "ca-renew-window", cfg.TLS.RenewWindow.Duration, "after a CA root rotation is activated, sidecars renew onto the new root at random within this window")
	fs.StringVar(&cfg.TLS.Kubernetes.Issuer, "k8s-issuer", cfg.TLS.Kubernetes.Issuer, "accept Kubernetes service-account tokens from this issuer (the tokens' iss; with --k8s-jwks)")
	fs.StringVar(&cfg.TLS.Kubernetes.JWKSFile, "k8s-jwks", cfg.TLS.Kubernetes.JWKSFile, "the cluster's service-account signing keys as a JWK set (kubectl get --raw /openid/v1/jwks)")
	fs.StringVar(&cfg.TLS.Kubernetes.Audience, "k8s-audience", cfg.TLS.Kubernetes.Audience, "audience a service-account token must carry")
	fs.DurationVar(&cfg.Debounce.Duration, "debounce", cfg.Debounce.Duration, "push once changes have been quiet this long")
	fs.DurationVar(&cfg.DebounceMax.Duration, "debounce-max", cfg.DebounceMax.Duration, "push at most this long after the first change")
	fs.DurationVar(&cfg.ShutdownTimeout.Duration, "shutdown-timeout", cfg.ShutdownTimeout.Duration, "graceful stop deadline")
	fs.StringVar(&cfg.Log.Level, "log-level", cfg.Log.Level, "debug, info, warn or error")
	fs.StringVar(&cfg.Log.Format, "log-format", cfg.Log.Format, "text or json")
	fs.IntVar(&cfg.Trace.BufferSpans, "trace-buffer-spans", cfg.Trace.BufferSpans, "spans the embedded trace receiver keeps in memory (oldest traces evicted first)")
	fs.StringVar(&cfg.Trace.Forward, "trace-forward", cfg.Trace.Forward, "also send every received span to this OTLP/HTTP endpoint (http://collector:4318)")
	if extra != nil {
		extra(fs)
	}
	return fs
}
