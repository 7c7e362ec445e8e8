package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// APIVersion is the only apiVersion this control plane serves.
const APIVersion = "causeway.dev/v1alpha1"

// DefaultNamespace is the namespace of a resource whose metadata names
// none.
const DefaultNamespace = "default"

// Kind names a resource type.
type Kind string

// The resource kinds.
const (
	KindHTTPRoute     Kind = "HTTPRoute"
	KindBackendPolicy Kind = "BackendPolicy"
	KindFencingPolicy Kind = "FencingPolicy"
	// KindAuthorizationPolicy allows or denies callers of a service by
	// their verified identity and what they ask for.
	KindAuthorizationPolicy Kind = "AuthorizationPolicy"
)

// Kinds lists every kind, in the order `meshctl get all` prints them.
var Kinds = []Kind{KindHTTPRoute, KindBackendPolicy, KindFencingPolicy, KindAuthorizationPolicy}

// Resource is one policy object: the envelope every kind shares, with the
// kind's spec in exactly one of the Spec fields. It is what the store keeps
// and the API serves.
type Resource struct {
	APIVersion string   `json:"apiVersion"`
	Kind       Kind     `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	// Spec holds the kind's spec; decode it with Decode, which fills the
	// typed field that matches Kind.
	Spec json.RawMessage `json:"spec"`

	// Exactly one of these is set once the resource is decoded.
	HTTPRoute     *HTTPRouteSpec     `json:"-"`
	BackendPolicy *BackendPolicySpec `json:"-"`
	FencingPolicy *FencingPolicySpec `json:"-"`
	// AuthorizationPolicy is set for kind AuthorizationPolicy.
	AuthorizationPolicy *AuthorizationPolicySpec `json:"-"`
}

// Metadata is the Kubernetes-style object metadata.
type Metadata struct {
	// Name is a DNS label (lower-case letters, digits and '-', at most 63).
	Name string `json:"name"`
	// Namespace groups resources; default "default".
	Namespace string `json:"namespace,omitempty"`
	// ResourceVersion is set by the store on every write (a decimal,
	// monotonically increasing across all resources). A client that sends
	// it on an update asks for optimistic concurrency: the write fails
	// with a conflict if the stored object has moved on.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Labels are free-form key/value pairs.
	Labels map[string]string `json:"labels,omitempty"`
	// CreationTimestamp and UpdateTimestamp are set by the store.
	CreationTimestamp *time.Time `json:"creationTimestamp,omitempty"`
	UpdateTimestamp   *time.Time `json:"updateTimestamp,omitempty"`
}

// Key identifies a resource in the store: kind, namespace and name.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

func (k Key) String() string { return string(k.Kind) + "/" + k.Namespace + "/" + k.Name }

// Key returns the resource's identity, with the default namespace filled in.
func (r *Resource) Key() Key {
	ns := r.Metadata.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	return Key{Kind: r.Kind, Namespace: ns, Name: r.Metadata.Name}
}

// ParseKind accepts a kind as written in YAML ("HTTPRoute"), in lower case
// ("httproute") or as a plural ("httproutes"), and returns the canonical
// kind.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		l := lower(string(k))
		switch lower(s) {
		case l, l + "s", l + "es", strings.TrimSuffix(l, "y") + "ies":
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown kind %q (want one of HTTPRoute, BackendPolicy, FencingPolicy, AuthorizationPolicy)", s)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Duration is a time.Duration written as a Go duration string ("2s",
// "250ms").
type Duration struct{ time.Duration }

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a duration string such as "2s"`)
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

// ---- HTTPRoute (Gateway API shape) ----

// HTTPRouteSpec routes requests to a service. Field names follow the
// Gateway API HTTPRoute (gateway.networking.k8s.io/v1); ParentRefs name
// the mesh services whose callers the route applies to (GAMMA style).
// Fault and RateLimit on a rule are Causeway extensions.
type HTTPRouteSpec struct {
	ParentRefs []ParentRef `json:"parentRefs"`
	Rules      []RouteRule `json:"rules"`
}

// ParentRef names a mesh service. Kind, if given, must be "Service".
type ParentRef struct {
	Kind string `json:"kind,omitempty"`
	Name string `json:"name"`
}

// RouteRule is one rule: requests matching any of Matches (all when
// empty) go to BackendRefs.
type RouteRule struct {
	// Name, if set, names the xDS route (unique within a service);
	// otherwise it is "SERVICE/INDEX".
	Name        string         `json:"name,omitempty"`
	Matches     []RouteMatch   `json:"matches,omitempty"`
	BackendRefs []BackendRef   `json:"backendRefs,omitempty"`
	Timeouts    *RouteTimeouts `json:"timeouts,omitempty"`
	Retry       *RouteRetry    `json:"retry,omitempty"`
	Fault       *Fault         `json:"fault,omitempty"`
	RateLimit   *RateLimit     `json:"rateLimit,omitempty"`
}

// RouteMatch matches requests; all of its parts must hold.
type RouteMatch struct {
	Path    *PathMatch    `json:"path,omitempty"`
	Headers []HeaderMatch `json:"headers,omitempty"`
	Method  string        `json:"method,omitempty"`
}

// Path match types (Gateway API).
const (
	PathPrefix            = "PathPrefix"
	PathExact             = "Exact"
	PathRegularExpression = "RegularExpression"
)

// PathMatch matches the request path. Type defaults to PathPrefix.
type PathMatch struct {
	Type  string `json:"type,omitempty"`
	Value string `json:"value"`
}

// Header match types (Gateway API).
const (
	HeaderExact             = "Exact"
	HeaderRegularExpression = "RegularExpression"
)

// HeaderMatch matches one request header. Type defaults to Exact.
type HeaderMatch struct {
	Type  string `json:"type,omitempty"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// BackendRef is a weighted destination service.
type BackendRef struct {
	Kind string `json:"kind,omitempty"`
	Name string `json:"name"`
	// Weight is the relative share of traffic, 0 to 1,000,000; default 1.
	// A weight of 0 sends nothing to this backend.
	Weight *int64 `json:"weight,omitempty"`
}

// RouteTimeouts are Gateway API's HTTPRouteTimeouts. Request bounds the
// whole exchange, retries included; BackendRequest bounds each attempt and
// must not exceed Request.
type RouteTimeouts struct {
	Request        *Duration `json:"request,omitempty"`
	BackendRequest *Duration `json:"backendRequest,omitempty"`
}

// RouteRetry is Gateway API's HTTPRouteRetry.
type RouteRetry struct {
	// Attempts is how many times a request may be retried; 0 turns
	// retries off.
	Attempts *int64 `json:"attempts,omitempty"`
	// Backoff is the base interval of the exponential backoff (the maximum
	// is ten times it); default 25ms.
	Backoff *Duration `json:"backoff,omitempty"`
	// Codes are the HTTP status codes (500–599) that make a request
	// retriable, besides connection failures.
	Codes []int64 `json:"codes,omitempty"`
}

// Fault injects delays and aborts into a share of requests (Causeway
// extension, carried in the causeway.mesh extension config).
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay delays Percent of requests by Duration.
type FaultDelay struct {
	Percent  float64  `json:"percent"`
	Duration Duration `json:"duration"`
}

// FaultAbort answers Percent of requests at once with HTTPStatus (or, for
// gRPC, GRPCStatus).
type FaultAbort struct {
	Percent    float64 `json:"percent"`
	HTTPStatus int64   `json:"httpStatus,omitempty"`
	GRPCStatus *int64  `json:"grpcStatus,omitempty"`
}

// RateLimit is a token bucket per sidecar for the route (Causeway
// extension).
type RateLimit struct {
	PerSecond float64 `json:"perSecond"`
	Burst     int64   `json:"burst,omitempty"`
}

// ---- BackendPolicy ----

// TargetRef names what a policy applies to: a Service by name, or (for
// FencingPolicy) the whole Mesh.
type TargetRef struct {
	Kind string `json:"kind,omitempty"`
	Name string `json:"name,omitempty"`
}

// Target kinds.
const (
	TargetService = "Service"
	TargetMesh    = "Mesh"
)

// BackendPolicySpec sets how callers treat one service's endpoints.
type BackendPolicySpec struct {
	TargetRef        TargetRef         `json:"targetRef"`
	ConnectTimeout   *Duration         `json:"connectTimeout,omitempty"`
	LoadBalancer     *LoadBalancer     `json:"loadBalancer,omitempty"`
	Limits           *Limits           `json:"limits,omitempty"`
	CircuitBreaker   *CircuitBreaker   `json:"circuitBreaker,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	RetryBudget      *RetryBudget      `json:"retryBudget,omitempty"`
}

// Load balancer types, named as the sidecar's --lb flag names them.
const (
	LBRoundRobin = "round-robin"
	LBPeakEWMA   = "p2c-peak-ewma"
)

// LoadBalancer picks the balancing algorithm; Type defaults to
// p2c-peak-ewma.
type LoadBalancer struct {
	Type string `json:"type"`
}

// Limits are the connection and concurrency limits toward the service
// (Envoy circuit-breaker thresholds). Zero or absent: no limit set.
type Limits struct {
	MaxConnections     *int64 `json:"maxConnections,omitempty"`
	MaxPendingRequests *int64 `json:"maxPendingRequests,omitempty"`
	MaxRequests        *int64 `json:"maxRequests,omitempty"`
	MaxRetries         *int64 `json:"maxRetries,omitempty"`
}

// CircuitBreaker configures the sidecar's per-endpoint breaker: it opens
// after ConsecutiveFailures failures in a row, or when FailureRatio of at
// least MinRequests requests within Window failed; it stays open for
// OpenFor, then lets HalfOpenProbes requests through.
type CircuitBreaker struct {
	ConsecutiveFailures *int64    `json:"consecutiveFailures,omitempty"`
	FailureRatio        *float64  `json:"failureRatio,omitempty"`
	MinRequests         *int64    `json:"minRequests,omitempty"`
	Window              *Duration `json:"window,omitempty"`
	OpenFor             *Duration `json:"openFor,omitempty"`
	HalfOpenProbes      *int64    `json:"halfOpenProbes,omitempty"`
}

// OutlierDetection ejects endpoints that fail on real traffic.
type OutlierDetection struct {
	Consecutive5xx            *int64    `json:"consecutive5xx,omitempty"`
	ConsecutiveGatewayFailure *int64    `json:"consecutiveGatewayFailure,omitempty"`
	Interval                  *Duration `json:"interval,omitempty"`
	BaseEjectionTime          *Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionTime           *Duration `json:"maxEjectionTime,omitempty"`
	MaxEjectionPercent        *int64    `json:"maxEjectionPercent,omitempty"`
}

// RetryBudget bounds retries to Percent of active requests, but always
// allows MinRetryConcurrency concurrent retries and MinPerSecond retries
// per second, measured over Window.
type RetryBudget struct {
	Percent             *float64  `json:"percent,omitempty"`
	MinRetryConcurrency *int64    `json:"minRetryConcurrency,omitempty"`
	MinPerSecond        *int64    `json:"minPerSecond,omitempty"`
	Window              *Duration `json:"window,omitempty"`
}

// ---- FencingPolicy ----

// FencingMode turns fencing on or off for the target.
type FencingMode string

// Fencing modes.
const (
	FencingOn  FencingMode = "on"
	FencingOff FencingMode = "off"
)

// UnmarshalJSON accepts "on" and "off", and also the booleans true and
// false, because YAML 1.1 reads a bare on/off as a boolean.
func (m *FencingMode) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case bool:
		*m = FencingOff
		if v {
			*m = FencingOn
		}
	case string:
		*m = FencingMode(v)
	default:
		return errors.New(`want "on" or "off"`)
	}
	return nil
}

// FencingPolicySpec scopes quorum-based write fencing. It is stored and
// validated; the sidecars enforce it (see PRODUCT.md, Fencing semantics).
type FencingPolicySpec struct {
	TargetRef TargetRef   `json:"targetRef"`
	Mode      FencingMode `json:"mode"`
	// ExpectedSize is the number of instances the quorum is computed
	// against; 0 means the gossip view's size.
	ExpectedSize *int64 `json:"expectedSize,omitempty"`
	// WriteMethods lists gRPC methods that are writes, as
	// "/package.Service/Method" or "/package.Service/*".
	WriteMethods []string `json:"writeMethods,omitempty"`
}

// ---- AuthorizationPolicy ----

// AuthorizationPolicySpec decides which callers may call a service, and
// what they may ask for. The receiving sidecar evaluates it on every
// inbound request, after normalizing the path; DENY rules win over ALLOW
// rules, and Default applies when no rule matches. A caller without a
// verified identity (plaintext, permissive mTLS) matches only rules
// without From.
type AuthorizationPolicySpec struct {
	// TargetRef names the service (kind Service).
	TargetRef TargetRef `json:"targetRef"`
	// Default is "allow" (the default) or "deny".
	Default string `json:"default,omitempty"`
	// Rules are evaluated all; names are unique.
	Rules []AuthorizationRule `json:"rules,omitempty"`
}

// AuthorizationRule allows or denies the requests it matches.
type AuthorizationRule struct {
	Name string `json:"name"`
	// Action is ALLOW or DENY.
	Action string `json:"action"`
	// From lists the callers; empty matches every caller.
	From []AuthorizationSource `json:"from,omitempty"`
	// To lists the operations; empty matches every operation.
	To []AuthorizationOperation `json:"to,omitempty"`
}

// AuthorizationSource matches a caller's SPIFFE ID; names may be "*",
// "prefix*" or "*suffix"; empty lists match any.
type AuthorizationSource struct {
	Namespaces []string `json:"namespaces,omitempty"`
	Services   []string `json:"services,omitempty"`
}

// AuthorizationOperation matches what a request does: paths ("/exact",
// "/prefix/*", "*"), HTTP methods, gRPC services ("pkg.Service") and
// methods ("pkg.Service/Method").
type AuthorizationOperation struct {
	Paths        []string `json:"paths,omitempty"`
	Methods      []string `json:"methods,omitempty"`
	GRPCServices []string `json:"grpcServices,omitempty"`
	GRPCMethods  []string `json:"grpcMethods,omitempty"`
}
