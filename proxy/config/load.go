package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// EnvPrefix prefixes the environment variable of every flag: --app-protocol
// is MESH_APP_PROTOCOL.
const EnvPrefix = "MESH_"

// EnvName is the environment variable that sets flag name.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Decode parses YAML (or JSON) strictly into cfg, over the values cfg
// already holds: an unknown, misspelt (wrong case included) or duplicate
// key, a value of the wrong type, or a second YAML document is an error.
func Decode(data []byte, cfg *Config) error {
	if err := singleDocument(data); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("decode: %w", cleanYAMLError(err))
	}
	var raw any
	if err := json.Unmarshal(js, &raw); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if err := checkKeys(raw, reflect.TypeFor[Config](), ""); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("decode: %w", cleanYAMLError(err))
	}
	return nil
}

// singleDocument refuses a stream with more than one YAML document: the
// decoder would silently ignore all but the first.
func singleDocument(data []byte) error {
	content := false
	for _, line := range strings.Split(string(data), "\n") {
		t := strings.TrimRight(line, " \t\r")
		switch {
		case t == "---" || strings.HasPrefix(t, "--- "):
			if content {
				return errors.New("more than one YAML document; a configuration file holds exactly one")
			}
		case t == "" || strings.HasPrefix(strings.TrimSpace(t), "#"):
		default:
			content = true
		}
	}
	return nil
}

// checkKeys walks decoded YAML against the Go type and refuses any key that
// is not exactly a field's name. encoding/json alone matches names without
// regard to case, so "Service" and "service" would both be accepted and one
// silently dropped.
func checkKeys(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(reflect.TypeFor[json.Unmarshaler]()) || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return nil
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type mismatch; the decoder reports it
		}
		fields := map[string]reflect.Type{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for _, k := range sortedKeys(m) {
			ft, ok := fields[k]
			if !ok {
				for name := range fields {
					if strings.EqualFold(name, k) {
						return fmt.Errorf("%s: unknown field (did you mean %q?)", join(k), name)
					}
				}
				return fmt.Errorf("%s: unknown field", join(k))
			}
			if err := checkKeys(m[k], ft, join(k)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if m, ok := v.(map[string]any); ok {
			for _, k := range sortedKeys(m) {
				if err := checkKeys(m[k], t.Elem(), join(k)); err != nil {
					return err
				}
			}
		}
	case reflect.Slice:
		if s, ok := v.([]any); ok {
			for i, e := range s {
				if err := checkKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// cleanYAMLError trims the decoder's layered prefixes so the message reads
// as "unknown field \"x\"".
func cleanYAMLError(err error) error {
	msg := err.Error()
	for _, p := range []string{"error unmarshaling JSON: ", "while decoding JSON: ", "json: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return errors.New(msg)
}

// LoadFile reads and strictly decodes the file at path over Default().
func LoadFile(path string) (*Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path) //nolint:gosec // the operator names the file
	if err != nil {
		return nil, err
	}
	if err := Decode(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &cfg, nil
}

// Loaded is the result of Load: the configuration and where it came from.
type Loaded struct {
	Config *Config
	// File is the configuration file used, or "".
	File string
	// Reload rebuilds the configuration from the same flags and
	// environment with the file read again (SIGHUP).
	Reload func() (*Config, error)
}

// ErrHelp is returned by Load when -h or --help was given; usage has been
// printed.
var ErrHelp = pflag.ErrHelp

// Load builds the configuration from, in increasing precedence: defaults,
// the YAML file named by --config (or MESH_CONFIG), MESH_* environment
// variables, and flags. The result is validated. Usage and flag errors are
// written to out.
func Load(args []string, lookupEnv func(string) (string, bool), out io.Writer) (*Loaded, error) {
	// Pass 1: syntax of the flags, and the file name.
	scratch := Default()
	var file string
	fs := newFlagSet(&scratch, &file, out)
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
	build := func() (*Config, error) {
		cfg := Default()
		if file != "" {
			data, err := os.ReadFile(file) //nolint:gosec // the operator names the file
			if err != nil {
				return nil, err
			}
			if err := Decode(data, &cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
		}
		// Pass 2: environment, then flags, over the file's values.
		var unused string
		fs2 := newFlagSet(&cfg, &unused, io.Discard)
		var errs Errors
		fs2.VisitAll(func(f *pflag.Flag) {
			if fs.Changed(f.Name) || f.Name == "config" {
				return
			}
			if v, ok := lookupEnv(EnvName(f.Name)); ok {
				if err := setEnv(fs2, f, v); err != nil {
					errs = append(errs, &FieldError{Path: EnvName(f.Name), Msg: err.Error()})
				}
			}
		})
		if len(errs) > 0 {
			return nil, errs
		}
		if err := fs2.Parse(args); err != nil {
			return nil, err
		}
		if cfg.NodeID == "" && cfg.Service != "" {
			host, _ := os.Hostname()
			cfg.NodeID = cfg.Service + "-" + host
			// Several instances on one host need distinct ids (gossip names
			// must be unique): a non-default inbound port tells them apart
			// and stays the same across restarts.
			if _, port, err := net.SplitHostPort(cfg.Listeners.Inbound); err == nil && port != "15006" {
				cfg.NodeID += "-" + port
			}
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return &cfg, nil
	}
	cfg, err := build()
	if err != nil {
		return nil, err
	}
	return &Loaded{Config: cfg, File: file, Reload: build}, nil
}

// setEnv applies an environment value to a flag. Repeatable flags take
// several values separated by ';' or whitespace.
func setEnv(fs *pflag.FlagSet, f *pflag.Flag, v string) error {
	if _, ok := f.Value.(*repeatable); ok {
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ' ' || r == '\n' || r == '\t' }) {
			if err := fs.Set(f.Name, part); err != nil {
				return err
			}
		}
		return nil
	}
	return fs.Set(f.Name, v)
}

func newFlagSet(cfg *Config, file *string, out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("sidecar", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.SortFlags = false
	fs.StringVar(file, "config", "", "YAML configuration file (flags and MESH_* variables override it)")
	fs.StringVar(&cfg.Service, "service", cfg.Service, "name of the service this sidecar fronts (required)")
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "this instance's id in the mesh (default SERVICE-HOSTNAME)")
	fs.StringVar(&cfg.App, "app", cfg.App, "the local app's HOST:PORT")
	fs.Var((*protocolValue)(&cfg.AppProtocol), "app-protocol", "what the app speaks: http1, h2c, grpc or tcp")
	fs.StringVar(&cfg.Listeners.Inbound, "inbound", cfg.Listeners.Inbound, "inbound listener: calls from other sidecars")
	fs.StringVar(&cfg.Listeners.Outbound, "outbound", cfg.Listeners.Outbound, "outbound listener: the app's calls to other services")
	fs.StringVar(&cfg.Listeners.Admin, "admin", cfg.Listeners.Admin, "admin API listener (may change state; keep it on loopback)")
	fs.StringVar(&cfg.Listeners.Health, "health", cfg.Listeners.Health, "read-only /ready, /live and /metrics listener")
	fs.Var(&repeatable{set: upstreamSetter(cfg)}, "upstream", "static endpoints: NAME=HOST:PORT[,HOST:PORT...] (repeatable; replaces the file's endpoints for NAME)")
	fs.Var(&repeatable{set: tcpSetter(cfg)}, "outbound-tcp", "opaque TCP forward: LISTEN_HOST:PORT=SERVICE (repeatable)")
	fs.StringVar(&cfg.Gossip.Bind, "gossip", cfg.Gossip.Bind, `gossip HOST:PORT (TCP and UDP), or "off"`)
	fs.StringVar(&cfg.Gossip.Advertise, "advertise", cfg.Gossip.Advertise, "host other sidecars reach this one on (default: bind host, or first private address)")
	fs.StringSliceVar(&cfg.Gossip.Join, "join", cfg.Gossip.Join, "seed members' gossip HOST:PORT, comma-separated; retried until one answers")
	fs.StringVar(&cfg.Gossip.KeyFile, "gossip-key-file", cfg.Gossip.KeyFile, "gossip keyring file: base64 keys, one per line, first encrypts (or MESH_GOSSIP_KEY)")
	fs.StringVar(&cfg.Gossip.Label, "gossip-label", cfg.Gossip.Label, "cluster label: pools with different labels cannot talk")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for state kept across restarts (the Lamport clock's high-water mark)")
	fs.StringVar(&cfg.ControlPlane, "control-plane", cfg.ControlPlane, "control plane xDS HOST:PORT (routes, policies, endpoints)")
	fs.StringVar(&cfg.MTLS.Mode, "mtls", cfg.MTLS.Mode, "mutual TLS between sidecars: off, permissive or strict (certificates from the control plane)")
	fs.StringVar(&cfg.MTLS.TrustDomain, "trust-domain", cfg.MTLS.TrustDomain, "the mesh's SPIFFE trust domain (default causeway.local)")
	fs.StringVar(&cfg.MTLS.TokenFile, "bootstrap-token-file", cfg.MTLS.TokenFile, "file holding the bootstrap token (or MESH_BOOTSTRAP_TOKEN)")
	fs.StringVar(&cfg.MTLS.K8sTokenFile, "k8s-token-file", cfg.MTLS.K8sTokenFile, "Kubernetes service-account token file (audience causeway) used instead of a bootstrap token; default /var/run/secrets/causeway/token when present")
	fs.StringVar(&cfg.MTLS.CABundle, "ca-bundle", cfg.MTLS.CABundle, "PEM file of the mesh's root(s), to trust the control plane")
	fs.StringVar(&cfg.MTLS.CAPin, "ca-pin", cfg.MTLS.CAPin, "the control plane's root key hash, sha256:<hex>")
	fs.StringVar(&cfg.Zone, "zone", cfg.Zone, "locality advertised with this instance")
	fs.StringVar(&cfg.AppVersion, "app-version", cfg.AppVersion, "the app's version, advertised with this instance")
	fs.Uint32Var(&cfg.Weight, "weight", cfg.Weight, "this instance's relative share of traffic")
	fs.Var((*lbValue)(&cfg.LoadBalancer), "lb", "default load balancer: p2c-peak-ewma or round-robin")
	fs.DurationVar(&cfg.Drain.Period.Duration, "drain-period", cfg.Drain.Period.Duration, "keep serving this long after turning not-ready on shutdown")
	fs.DurationVar(&cfg.Drain.Timeout.Duration, "drain-timeout", cfg.Drain.Timeout.Duration, "wait this long for in-flight requests after listeners stop")
	fs.StringVar(&cfg.Log.Level, "log-level", cfg.Log.Level, "debug, info, warn or error")
	fs.StringVar(&cfg.Log.Format, "log-format", cfg.Log.Format, "text or json")
	return fs
}

// repeatable is a flag that may be given several times; each value is
// handed to set.
type repeatable struct {
	set    func(string) error
	values []string
}

func (r *repeatable) String() string { return strings.Join(r.values, " ") }
func (r *repeatable) Type() string   { return "spec" }
func (r *repeatable) Set(v string) error {
	if err := r.set(v); err != nil {
		return err
	}
	r.values = append(r.values, v)
	return nil
}

// ParseUpstream parses NAME=HOST:PORT[,HOST:PORT...].
func ParseUpstream(v string) (string, []string, error) {
	name, list, ok := strings.Cut(v, "=")
	if !ok || name == "" || list == "" {
		return "", nil, fmt.Errorf("%q: want NAME=HOST:PORT[,HOST:PORT...]", v)
	}
	if !ValidServiceName(name) {
		return "", nil, fmt.Errorf("%q: %q is not a valid service name", v, name)
	}
	eps := strings.Split(list, ",")
	for _, ep := range eps {
		if err := CheckHostPort(ep); err != nil {
			return "", nil, fmt.Errorf("%q: %w", v, err)
		}
	}
	return name, eps, nil
}

func upstreamSetter(cfg *Config) func(string) error {
	replaced := map[string]bool{}
	return func(v string) error {
		name, eps, err := ParseUpstream(v)
		if err != nil {
			return err
		}
		if cfg.Upstreams == nil {
			cfg.Upstreams = map[string]Upstream{}
		}
		u := cfg.Upstreams[name]
		if !replaced[name] { // the first value for NAME replaces the file's list
			u.Endpoints = nil
			replaced[name] = true
		}
		u.Endpoints = append(u.Endpoints, eps...)
		cfg.Upstreams[name] = u
		return nil
	}
}

func tcpSetter(cfg *Config) func(string) error {
	return func(v string) error {
		listen, svc, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("%q: want LISTEN_HOST:PORT=SERVICE", v)
		}
		if err := CheckHostPort(listen); err != nil {
			return fmt.Errorf("%q: %w", v, err)
		}
		if !ValidServiceName(svc) {
			return fmt.Errorf("%q: %q is not a valid service name", v, svc)
		}
		cfg.TCPOutbound = append(cfg.TCPOutbound, TCPRoute{Listen: listen, Service: svc})
		return nil
	}
}

type protocolValue Protocol

func (p *protocolValue) String() string { return string(*p) }
func (p *protocolValue) Type() string   { return "protocol" }
func (p *protocolValue) Set(v string) error {
	for _, ok := range Protocols {
		if Protocol(v) == ok {
			*p = protocolValue(v)
			return nil
		}
	}
	return fmt.Errorf("want one of %v", Protocols)
}

type lbValue LBPolicy

func (l *lbValue) String() string { return string(*l) }
func (l *lbValue) Type() string   { return "policy" }
func (l *lbValue) Set(v string) error {
	for _, ok := range LBPolicies {
		if LBPolicy(v) == ok {
			*l = lbValue(v)
			return nil
		}
	}
	return fmt.Errorf("want one of %v", LBPolicies)
}
