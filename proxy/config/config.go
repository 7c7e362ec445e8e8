// Package config defines the sidecar's configuration: its shape, its
// defaults, strict decoding from YAML, and validation with field paths.
//
// A Config is built once (defaults, then the file, then MESH_* environment
// variables, then flags; see Load) and validated before anything is
// constructed from it. Code that receives a *Config may assume Validate
// returned nil.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Protocol is what the local application speaks on its port.
type Protocol string

// The application protocols a sidecar can forward to.
const (
	ProtocolHTTP1 Protocol = "http1" // HTTP/1.1 (keep-alive pool)
	ProtocolH2C   Protocol = "h2c"   // cleartext HTTP/2 with prior knowledge
	ProtocolGRPC  Protocol = "grpc"  // gRPC, carried as h2c
	ProtocolTCP   Protocol = "tcp"   // opaque bytes, passed through untouched
)

// Protocols lists the valid Protocol values, in documentation order.
var Protocols = []Protocol{ProtocolHTTP1, ProtocolH2C, ProtocolGRPC, ProtocolTCP}

// IsHTTP2 reports whether the app is reached over cleartext HTTP/2.
func (p Protocol) IsHTTP2() bool { return p == ProtocolH2C || p == ProtocolGRPC }

// LBPolicy selects how a service's endpoints are chosen.
type LBPolicy string

// Load-balancing policies.
const (
	// LBPeakEWMA is power-of-two-choices over a peak-sensitive moving
	// average of latency, weighted by outstanding requests (Linkerd's
	// default). It is the default.
	LBPeakEWMA LBPolicy = "p2c-peak-ewma"
	// LBRoundRobin cycles through endpoints in order.
	LBRoundRobin LBPolicy = "round-robin"
)

// LBPolicies lists the valid LBPolicy values.
var LBPolicies = []LBPolicy{LBPeakEWMA, LBRoundRobin}

// Config is the whole sidecar configuration. The zero value is not useful;
// start from Default.
type Config struct {
	// Service is the name of the service this sidecar fronts. Required.
	Service string `json:"service"`
	// NodeID identifies this instance in the mesh. Default: SERVICE-HOSTNAME.
	NodeID string `json:"nodeID,omitempty"`
	// App is the local application's HOST:PORT. Default 127.0.0.1:8080.
	App string `json:"app"`
	// AppProtocol is what the app speaks. Default http1.
	AppProtocol Protocol `json:"appProtocol"`

	// Listeners are the addresses this sidecar binds.
	Listeners Listeners `json:"listeners"`

	// LoadBalancer is the default policy for every upstream service.
	// Default p2c-peak-ewma.
	LoadBalancer LBPolicy `json:"loadBalancer"`

	// Upstreams are static endpoints per service name: other sidecars'
	// inbound addresses. Used beside or instead of discovery.
	Upstreams map[string]Upstream `json:"upstreams,omitempty"`

	// TCPOutbound maps local listen addresses to services for opaque TCP:
	// a connection accepted on Listen is spliced to an endpoint of Service.
	TCPOutbound []TCPRoute `json:"tcpOutbound,omitempty"`

	// Gossip makes this sidecar a member of the mesh's SWIM pool, which
	// discovers every service's endpoints.
	Gossip Gossip `json:"gossip"`

	// DataDir holds what the sidecar keeps across restarts (the Lamport
	// clock's high-water mark). Default: none, in which case the Lamport
	// clock restarts at 0 (vector-clock entries are still never reused:
	// each start is a new incarnation).
	DataDir string `json:"dataDir,omitempty"`

	// ControlPlane is the control plane's xDS HOST:PORT. When set, the
	// sidecar takes routes, policies and (for services its own gossip view
	// does not know) endpoints from it, keeps the last configuration while
	// it is away, and is not ready before the first one is applied.
	// Default: none.
	ControlPlane string `json:"controlPlane,omitempty"`

	// Zone, AppVersion and Weight are advertised to the mesh with this
	// instance (locality, version for canaries, relative traffic share).
	Zone       string `json:"zone,omitempty"`
	AppVersion string `json:"appVersion,omitempty"`
	// Weight is this instance's relative share of traffic. Default 1.
	Weight uint32 `json:"weight"`

	// Resilience is the default resilience policy for every upstream
	// service (timeouts, retries, budget, breakers, limits, outlier
	// detection); see Resilience.
	Resilience *Resilience `json:"resilience,omitempty"`

	// Inbound configures what applies to calls into the local app.
	Inbound Inbound `json:"inbound,omitzero"`

	// Fencing configures quorum-based write fencing.
	Fencing Fencing `json:"fencing,omitzero"`

	// MTLS configures mutual TLS between sidecars, with certificates
	// issued by the control plane.
	MTLS MTLS `json:"mtls,omitzero"`

	// Limits bound what a client may make the sidecar hold.
	Limits Limits `json:"limits"`

	// Drain controls graceful shutdown.
	Drain Drain `json:"drain"`

	// Log controls logging.
	Log Log `json:"log"`
}

// Listeners holds the bind addresses (HOST:PORT; port 0 picks a free port).
type Listeners struct {
	// Inbound receives calls from other sidecars. Default 0.0.0.0:15006.
	Inbound string `json:"inbound"`
	// Outbound receives the local app's calls. Default 127.0.0.1:15001.
	Outbound string `json:"outbound"`
	// Admin serves the admin API, which may change state. Default 127.0.0.1:15000.
	Admin string `json:"admin"`
	// Health serves read-only /ready, /live and /metrics. Default 0.0.0.0:15020.
	Health string `json:"health"`
}

// GossipOff disables gossip when given as Gossip.Bind.
const GossipOff = "off"

// Gossip configures membership (package discovery).
type Gossip struct {
	// Bind is the gossip HOST:PORT (TCP and UDP), or "off" to run without
	// gossip (static upstreams only). Default 0.0.0.0:7946.
	Bind string `json:"bind"`
	// Advertise is the host other sidecars reach this one on (its gossip
	// and inbound ports). Default: the bind host, or, for 0.0.0.0, the
	// first private address.
	Advertise string `json:"advertise,omitempty"`
	// Join lists seed members' gossip HOST:PORT. The sidecar retries with
	// backoff until one answers, and reports not ready until then.
	Join []string `json:"join,omitempty"`
	// KeyFile holds the gossip keyring: base64 keys of 16, 24 or 32 bytes,
	// one per line, the first being the one used to encrypt. The variable
	// MESH_GOSSIP_KEY (one base64 key) is used when no file is given.
	// Without either, gossip is not encrypted.
	KeyFile string `json:"keyFile,omitempty"`
	// Label isolates pools sharing a network: a member with another label
	// cannot join or talk to this pool.
	Label string `json:"label,omitempty"`
	// ReapAfter is how long a failed member is remembered, retried and
	// counted toward the cluster size. Default 24h.
	ReapAfter Duration `json:"reapAfter"`
	// ReconnectInterval is how often failed members and absent seeds are
	// re-joined (partition heal). Default 1s.
	ReconnectInterval Duration `json:"reconnectInterval"`
}

// Enabled reports whether this sidecar gossips.
func (g Gossip) Enabled() bool { return g.Bind != GossipOff && g.Bind != "" }

// Upstream is one service's static endpoints and policy.
type Upstream struct {
	// Endpoints are HOST:PORT addresses of the service's sidecars' inbound
	// listeners. Required, at least one.
	Endpoints []string `json:"endpoints"`
	// LoadBalancer overrides Config.LoadBalancer for this service.
	LoadBalancer LBPolicy `json:"loadBalancer,omitempty"`
	// Resilience overrides the top-level resilience policy for calls to
	// this service.
	Resilience *Resilience `json:"resilience,omitempty"`
	// Routes override the service's policy for the requests they match,
	// first match wins (the control plane's HTTPRoutes, when present,
	// replace them).
	Routes []Route `json:"routes,omitempty"`
	// MaxRequestBodyBytes caps the request bodies the local app sends to
	// this service (outbound), replacing limits.maxRequestBodyBytes for
	// them. 0, the default, means the sidecar's limit applies.
	MaxRequestBodyBytes int64 `json:"maxRequestBodyBytes,omitempty"`
}

// Route is a part of a service's traffic with its own resilience
// settings (timeouts, retries, fault injection).
type Route struct {
	// Name identifies the route in logs and spans. Required.
	Name string `json:"name"`
	// PathPrefix matches paths starting with it (default "/": all).
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Method, when set, matches only that HTTP method.
	Method string `json:"method,omitempty"`
	// Resilience overrides the service's settings for matching requests.
	Resilience *Resilience `json:"resilience,omitempty"`
}

// Matches reports whether a request with method and path is the route's.
func (r *Route) Matches(method, path string) bool {
	return strings.HasPrefix(path, r.PathPrefix) && (r.Method == "" || r.Method == method)
}

// FencingMode switches write fencing.
type FencingMode string

// Fencing modes.
const (
	// FencingAuto (the default) fences when a control plane is configured,
	// as its policy says; without one, fencing is off.
	FencingAuto FencingMode = "auto"
	// FencingOn fences from this sidecar's gossip view even without a
	// control plane: writes pass only while it reaches more than half of
	// the mesh (alive and failed members, not those that left).
	FencingOn FencingMode = "on"
	// FencingOff never fences (a control plane's policy cannot turn it on).
	FencingOff FencingMode = "off"
)

// Fencing configures write fencing (PRODUCT.md, Fencing semantics).
type Fencing struct {
	// Mode is auto, on or off. Default auto.
	Mode FencingMode `json:"mode,omitempty"`
}

// MTLS configures the mesh identity of this sidecar. With a mode other
// than off, the sidecar generates its key, obtains a SPIFFE certificate
// from the control plane with a bootstrap token, renews it, and speaks
// mutual TLS to other sidecars and to the control plane.
type MTLS struct {
	// Mode is strict (inbound accepts mutual TLS only), permissive
	// (inbound also accepts plaintext, for migration) or off. Default:
	// strict when CABundle or CAPin is set (the control plane issues
	// certificates), else off.
	Mode string `json:"mode,omitempty"`
	// TrustDomain is the mesh's SPIFFE trust domain. Default
	// causeway.local.
	TrustDomain string `json:"trustDomain,omitempty"`
	// Namespace is this service's namespace in its SPIFFE ID. Default
	// "default".
	Namespace string `json:"namespace,omitempty"`
	// TokenFile holds the bootstrap token (or MESH_BOOTSTRAP_TOKEN).
	TokenFile string `json:"tokenFile,omitempty"`
	// K8sTokenFile is a Kubernetes projected service-account token (audience
	// "causeway"), sent in place of a bootstrap token when none is given and
	// read again at every use. Empty: /var/run/secrets/causeway/token when
	// that file exists.
	K8sTokenFile string `json:"k8sTokenFile,omitempty"`
	// CABundle is a PEM file of the mesh's root(s), to trust the control
	// plane at bootstrap; or give CAPin instead.
	CABundle string `json:"caBundle,omitempty"`
	// CAPin is the control plane's root key hash, sha256:<hex>, as its log
	// prints it.
	CAPin string `json:"caPin,omitempty"`
}

// Inbound holds policy for calls into the local app.
type Inbound struct {
	// RateLimit bounds the requests per second this instance accepts
	// from other sidecars (a token bucket; over it: 429). Off by default.
	// The control plane can set limits per route.
	RateLimit *RateLimitSpec `json:"rateLimit,omitempty"`
}

// TCPRoute is an opaque TCP forward from a local port to a service.
type TCPRoute struct {
	// Listen is the local HOST:PORT the app connects to.
	Listen string `json:"listen"`
	// Service is the target service; its endpoints must be tcp sidecars.
	Service string `json:"service"`
}

// Limits are the resource bounds applied to every listener.
type Limits struct {
	// MaxHeaderBytes caps a request's header block. Default 64 KiB.
	MaxHeaderBytes int `json:"maxHeaderBytes"`
	// MaxHeaderCount caps the number of request header fields. Default 100.
	MaxHeaderCount int `json:"maxHeaderCount"`
	// ReadHeaderTimeout bounds the time to receive a request's headers
	// (slowloris). Default 10s.
	ReadHeaderTimeout Duration `json:"readHeaderTimeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default 60s.
	IdleTimeout Duration `json:"idleTimeout"`
	// MaxConcurrentStreams caps HTTP/2 streams per connection. Default 100.
	MaxConcurrentStreams uint32 `json:"maxConcurrentStreams"`
	// MaxConnections caps accepted connections per listener; further
	// connections wait in the kernel backlog. Default 4096.
	MaxConnections int `json:"maxConnections"`
	// AppMaxIdleConns caps idle keep-alive connections to the local app
	// (HTTP/1.1 apps). Default 256.
	AppMaxIdleConns int `json:"appMaxIdleConns"`
	// AppMaxConns caps all connections to the local app; 0 means no cap.
	// Default 0.
	AppMaxConns int `json:"appMaxConns"`
	// ConnectTimeout bounds dialing the app, and a mesh endpoint no
	// service lists; a peer of a known service gets that service's
	// resilience timeouts.connect instead (default 1 s). Default 5s.
	ConnectTimeout Duration `json:"connectTimeout"`

	// MaxRequestBodyBytes caps a request body on both listeners. A
	// request declaring a larger Content-Length is answered 413 before
	// anything is forwarded; a streamed body that crosses the cap is cut
	// off there: the upstream request is aborted (the upstream has seen at
	// most the cap, never a complete request) and the client gets 413 if
	// no response has started. gRPC callers get RESOURCE_EXHAUSTED
	// instead. 0, the default, means no cap: the mesh streams bodies of
	// any size. upstreams.NAME.maxRequestBodyBytes overrides it for calls
	// to one service.
	MaxRequestBodyBytes int64 `json:"maxRequestBodyBytes"`
	// BodyIdleTimeout aborts a request whose body makes no progress for
	// this long while the sidecar waits for it (the upstream request is
	// cancelled; 408 if no response has started; the HTTP/1 connection
	// is closed, the HTTP/2 stream reset), and a response the client
	// stops reading for this long (one write blocked this long: the
	// stream is reset or the connection closed, and the upstream request
	// cancelled). For gRPC the request side stops applying once the
	// response has started (a streaming call the server accepted). It
	// counts only time spent waiting for the client, never time the
	// upstream takes. Default 30s.
	BodyIdleTimeout Duration `json:"bodyIdleTimeout"`
	// MinBodyRate is the slowest a request body may arrive, in bytes per
	// second, averaged over each MinBodyRateWindow of time spent waiting
	// for it; the first window is the grace. Slower: aborted as for
	// BodyIdleTimeout. gRPC bodies are exempt (their messages may be
	// legitimately sparse). 0 turns the check off. Default 1024.
	MinBodyRate int64 `json:"minBodyRate"`
	// MinBodyRateWindow is the window MinBodyRate is averaged over.
	// Default 10s.
	MinBodyRateWindow Duration `json:"minBodyRateWindow"`
}

// Drain controls what happens on SIGTERM or POST /quitquitquit.
type Drain struct {
	// Period is how long the sidecar keeps serving after it reports not
	// ready, so that callers following readiness move away. Default 5s.
	Period Duration `json:"period"`
	// Timeout bounds the wait for in-flight requests after listeners stop;
	// what remains is then closed. Default 25s.
	Timeout Duration `json:"timeout"`
}

// Log controls the structured logger.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `json:"level"`
	// Format is text or json. Default text.
	Format string `json:"format"`
}

// Default returns a configuration with every default filled in except
// Service, which has none.
func Default() Config {
	return Config{
		App:          "127.0.0.1:8080",
		AppProtocol:  ProtocolHTTP1,
		LoadBalancer: LBPeakEWMA,
		Listeners: Listeners{
			Inbound:  "0.0.0.0:15006",
			Outbound: "127.0.0.1:15001",
			Admin:    "127.0.0.1:15000",
			Health:   "0.0.0.0:15020",
		},
		Limits: Limits{
			MaxHeaderBytes:       64 << 10,
			MaxHeaderCount:       100,
			ReadHeaderTimeout:    Duration{10 * time.Second},
			IdleTimeout:          Duration{60 * time.Second},
			MaxConcurrentStreams: 100,
			MaxConnections:       4096,
			AppMaxIdleConns:      256,
			ConnectTimeout:       Duration{5 * time.Second},
			BodyIdleTimeout:      Duration{30 * time.Second},
			MinBodyRate:          1024,
			MinBodyRateWindow:    Duration{10 * time.Second},
		},
		Gossip: Gossip{
			Bind:              "0.0.0.0:7946",
			ReapAfter:         Duration{24 * time.Hour},
			ReconnectInterval: Duration{time.Second},
		},
		Weight: 1,
		Drain:  Drain{Period: Duration{5 * time.Second}, Timeout: Duration{25 * time.Second}},
		Log:    Log{Level: "info", Format: "text"},
	}
}

// serviceName is what a service name may look like: a DNS label, as in
// Kubernetes Service names.
var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidServiceName reports whether s can name a service.
func ValidServiceName(s string) bool { return serviceName.MatchString(s) }

// Errors collects validation errors, each naming a field path.
type Errors []error

func (e Errors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

// FieldError is one invalid field.
type FieldError struct {
	Path string // e.g. upstreams.orders.endpoints[0]
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

type collector struct{ errs Errors }

func (c *collector) add(path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (c *collector) addr(path, v string, required bool) {
	if v == "" {
		if required {
			c.add(path, "required")
		}
		return
	}
	if err := CheckHostPort(v); err != nil {
		c.add(path, "%v", err)
	}
}

// CheckHostPort validates a HOST:PORT address (port 0 allowed).
func CheckHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("invalid address %q: want HOST:PORT", v)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("invalid host in %q", v)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("invalid port in %q: want 0-65535", v)
	}
	return nil
}

// Validate checks every field and returns all problems at once, as Errors.
func (c *Config) Validate() error {
	var v collector
	switch {
	case c.Service == "":
		v.add("service", "required (the name of the service this sidecar fronts)")
	case !ValidServiceName(c.Service):
		v.add("service", "%q is not a valid service name (lowercase letters, digits and '-', at most 63)", c.Service)
	}
	if len(c.NodeID) > 128 || strings.ContainsAny(c.NodeID, " \t\r\n/") {
		v.add("nodeID", "%q: at most 128 characters, no whitespace or '/'", c.NodeID)
	}
	v.addr("app", c.App, true)
	if !slices.Contains(Protocols, c.AppProtocol) {
		v.add("appProtocol", "%q: want one of %v", c.AppProtocol, Protocols)
	}
	v.addr("listeners.inbound", c.Listeners.Inbound, true)
	v.addr("listeners.outbound", c.Listeners.Outbound, true)
	v.addr("listeners.admin", c.Listeners.Admin, true)
	v.addr("listeners.health", c.Listeners.Health, true)
	if !slices.Contains(LBPolicies, c.LoadBalancer) {
		v.add("loadBalancer", "%q: want one of %v", c.LoadBalancer, LBPolicies)
	}
	for _, name := range sortedKeys(c.Upstreams) {
		u := c.Upstreams[name]
		p := "upstreams." + name
		if !ValidServiceName(name) {
			v.add(p, "%q is not a valid service name", name)
		}
		if len(u.Endpoints) == 0 {
			v.add(p+".endpoints", "at least one endpoint required")
		}
		seen := map[string]bool{}
		for i, ep := range u.Endpoints {
			path := fmt.Sprintf("%s.endpoints[%d]", p, i)
			v.addr(path, ep, true)
			if seen[ep] {
				v.add(path, "duplicate endpoint %q", ep)
			}
			seen[ep] = true
		}
		if u.LoadBalancer != "" && !slices.Contains(LBPolicies, u.LoadBalancer) {
			v.add(p+".loadBalancer", "%q: want one of %v", u.LoadBalancer, LBPolicies)
		}
		if u.MaxRequestBodyBytes < 0 {
			v.add(p+".maxRequestBodyBytes", "must not be negative (0 means limits.maxRequestBodyBytes applies)")
		}
	}
	for i, r := range c.TCPOutbound {
		p := fmt.Sprintf("tcpOutbound[%d]", i)
		v.addr(p+".listen", r.Listen, true)
		if !ValidServiceName(r.Service) {
			v.add(p+".service", "%q is not a valid service name", r.Service)
		}
	}
	if c.Gossip.Enabled() {
		v.addr("gossip.bind", c.Gossip.Bind, true)
		for i, j := range c.Gossip.Join {
			v.addr(fmt.Sprintf("gossip.join[%d]", i), j, true)
		}
		if c.Gossip.ReapAfter.Duration <= 0 {
			v.add("gossip.reapAfter", "must be positive")
		}
		if c.Gossip.ReconnectInterval.Duration <= 0 {
			v.add("gossip.reconnectInterval", "must be positive")
		}
		if len(c.Gossip.Label) > 255 {
			v.add("gossip.label", "at most 255 bytes")
		}
	} else if len(c.Gossip.Join) > 0 {
		v.add("gossip.join", "given while gossip is off (gossip.bind: off)")
	}
	if strings.ContainsAny(c.Gossip.Advertise, " /:") && net.ParseIP(c.Gossip.Advertise) == nil {
		v.add("gossip.advertise", "%q: want a host name or IP address, without a port", c.Gossip.Advertise)
	}
	if c.ControlPlane != "" {
		v.addr("controlPlane", c.ControlPlane, false)
	}
	c.validateResilience(&v)
	mtlsMode := c.MTLS.Mode
	if mtlsMode == "" && (c.MTLS.CABundle != "" || c.MTLS.CAPin != "") {
		mtlsMode = "strict" // the default once the control plane's CA is trusted
	}
	switch mtlsMode {
	case "", "off":
	case "permissive", "strict":
		if c.ControlPlane == "" {
			v.add("mtls.mode", "%q needs a control plane to issue certificates (controlPlane)", c.MTLS.Mode)
		}
		if c.MTLS.CABundle == "" && c.MTLS.CAPin == "" {
			v.add("mtls", "caBundle or caPin is required to trust the control plane")
		}
	default:
		v.add("mtls.mode", "%q: want off, permissive or strict", c.MTLS.Mode)
	}
	switch c.Fencing.Mode {
	case "", FencingAuto, FencingOn, FencingOff:
	default:
		v.add("fencing.mode", "%q: want auto, on or off", c.Fencing.Mode)
	}
	if c.Weight < 1 || c.Weight > 10000 {
		v.add("weight", "%d: want 1..10000", c.Weight)
	}
	if len(c.Zone) > 63 || len(c.AppVersion) > 63 {
		v.add("zone", "zone and appVersion: at most 63 bytes each")
	}
	l := c.Limits
	if l.MaxHeaderBytes < 4<<10 || l.MaxHeaderBytes > 1<<20 {
		v.add("limits.maxHeaderBytes", "%d: want 4096..1048576", l.MaxHeaderBytes)
	}
	if l.MaxHeaderCount < 8 || l.MaxHeaderCount > 1000 {
		v.add("limits.maxHeaderCount", "%d: want 8..1000", l.MaxHeaderCount)
	}
	if l.ReadHeaderTimeout.Duration <= 0 {
		v.add("limits.readHeaderTimeout", "must be positive")
	}
	if l.IdleTimeout.Duration <= 0 {
		v.add("limits.idleTimeout", "must be positive")
	}
	if l.MaxConcurrentStreams < 1 || l.MaxConcurrentStreams > 10000 {
		v.add("limits.maxConcurrentStreams", "%d: want 1..10000", l.MaxConcurrentStreams)
	}
	if l.MaxConnections < 1 {
		v.add("limits.maxConnections", "%d: must be at least 1", l.MaxConnections)
	}
	if l.AppMaxIdleConns < 0 {
		v.add("limits.appMaxIdleConns", "must not be negative")
	}
	if l.AppMaxConns < 0 {
		v.add("limits.appMaxConns", "must not be negative (0 means no cap)")
	}
	if l.ConnectTimeout.Duration <= 0 {
		v.add("limits.connectTimeout", "must be positive")
	}
	if l.MaxRequestBodyBytes < 0 {
		v.add("limits.maxRequestBodyBytes", "must not be negative (0 means no cap)")
	}
	if l.BodyIdleTimeout.Duration <= 0 {
		v.add("limits.bodyIdleTimeout", "must be positive")
	}
	if l.MinBodyRate < 0 || l.MinBodyRate > 1<<30 {
		v.add("limits.minBodyRate", "%d: want 0..1073741824 bytes per second (0 turns the check off)", l.MinBodyRate)
	}
	if l.MinBodyRate > 0 && l.MinBodyRateWindow.Duration <= 0 {
		v.add("limits.minBodyRateWindow", "must be positive while limits.minBodyRate is set")
	}
	if c.Drain.Period.Duration < 0 {
		v.add("drain.period", "must not be negative")
	}
	if c.Drain.Timeout.Duration <= 0 {
		v.add("drain.timeout", "must be positive")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		v.add("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		v.add("log.format", "%q: want text or json", c.Log.Format)
	}
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

// MaxRequestBodyFor is the request-body cap for calls to service name
// (outbound): the service's own, else limits.maxRequestBodyBytes; 0 means
// no cap.
func (c *Config) MaxRequestBodyFor(name string) int64 {
	if u, ok := c.Upstreams[name]; ok && u.MaxRequestBodyBytes > 0 {
		return u.MaxRequestBodyBytes
	}
	return c.Limits.MaxRequestBodyBytes
}

// EffectiveLB is the policy that applies to service name.
func (c *Config) EffectiveLB(name string) LBPolicy {
	if u, ok := c.Upstreams[name]; ok && u.LoadBalancer != "" {
		return u.LoadBalancer
	}
	return c.LoadBalancer
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Duration is a time.Duration written as a Go duration string ("10s",
// "250ms") in YAML and JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("want a duration string such as \"10s\"")
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
