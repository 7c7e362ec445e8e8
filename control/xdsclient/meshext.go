package xdsclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/causeway-mesh/causeway/proxy/authz"
)

// MeshExtensionName is the name of the TypedExtensionConfig that carries
// Causeway's own policy (see the package documentation for its shape).
const MeshExtensionName = "causeway.mesh"

// MetadataKey is the FilterMetadata key of Causeway's metadata on clusters
// and endpoints.
const MetadataKey = "causeway"

// FaultPolicy injects delays and aborts into a route's requests.
type FaultPolicy struct {
	// DelayPercent of requests (0–100) are delayed by Delay.
	DelayPercent float64  `json:"delayPercent"`
	Delay        Duration `json:"delay"`
	// AbortPercent of requests (0–100) fail at once with AbortStatus (HTTP)
	// or, for gRPC requests, AbortGRPCStatus.
	AbortPercent    float64 `json:"abortPercent"`
	AbortStatus     int     `json:"abortStatus"`
	AbortGRPCStatus int     `json:"abortGrpcStatus"`
}

// RateLimit is a token bucket per route and sidecar.
type RateLimit struct {
	// PerSecond is the refill rate (> 0).
	PerSecond float64 `json:"perSecond"`
	// Burst is the bucket size (≥ 1).
	Burst int `json:"burst"`
}

// FencingMode switches write fencing on or off for a scope.
type FencingMode string

// Fencing modes. FencingUnset means no FencingPolicy targets the scope:
// the enclosing scope's policy applies (a service's, then the mesh's, then
// the default, on).
const (
	FencingUnset FencingMode = ""
	FencingOn    FencingMode = "on"
	FencingOff   FencingMode = "off"
)

// FencingPolicy is the FencingPolicy of one scope (a service, or the mesh):
// causeway.mesh services.S.fencing or the top-level fencing. The JSON is
// {} when no policy targets the scope, else
//
//	{"mode": "on"|"off", "expectedSize": 3,
//	 "grpcWriteMethods": ["/pkg.Svc/Method", "/pkg.Svc/*"]}
//
// with expectedSize (an integer ≥ 1) and grpcWriteMethods optional. Unknown
// keys are an error.
type FencingPolicy struct {
	// Mode is FencingUnset when the entry was {}.
	Mode FencingMode
	// ExpectedSize is the quorum domain's size set by policy; 0 means the
	// size is counted (alive and failed members).
	ExpectedSize int
	// GRPCWriteMethods lists the gRPC methods that are writes, as
	// "/package.Service/Method" or "/package.Service/*" (every gRPC call
	// is an HTTP POST, so only listed methods are fenced).
	GRPCWriteMethods []string
}

// Enabled reports whether fencing is on in this scope (an unset policy
// counts as on: fencing is on by default).
func (p FencingPolicy) Enabled() bool { return p.Mode != FencingOff }

// FencingFor returns the fencing policy in force for the sidecars of
// service: the service's own policy, else the mesh-wide one, else the
// default (on, counted size, no gRPC method is a write).
func (m *Model) FencingFor(service string) FencingPolicy {
	if svc, ok := m.Services[service]; ok && svc.Fencing.Mode != FencingUnset {
		return svc.Fencing
	}
	if m.Fencing.Mode != FencingUnset {
		return m.Fencing
	}
	return FencingPolicy{Mode: FencingOn}
}

// fencingWire is the JSON form of FencingPolicy, with pointers so that an
// explicit zero is told apart from absence.
type fencingWire struct {
	Mode             *string  `json:"mode"`
	ExpectedSize     *int     `json:"expectedSize"`
	GRPCWriteMethods []string `json:"grpcWriteMethods"`
}

// grpcWriteMethod is the form of a grpcWriteMethods entry, as the
// control plane's policy validation accepts it.
var grpcWriteMethod = regexp.MustCompile(`^/[A-Za-z_][A-Za-z0-9_.]*/(\*|[A-Za-z_][A-Za-z0-9_]*)$`)

// decodeFencing decodes and checks one "fencing" object.
func decodeFencing(b json.RawMessage) (FencingPolicy, error) {
	var w fencingWire
	if err := decodeRaw(b, &w); err != nil {
		return FencingPolicy{}, err
	}
	var p FencingPolicy
	switch {
	case w.Mode == nil:
		if w.ExpectedSize != nil || w.GRPCWriteMethods != nil {
			return p, errors.New("mode: required when expectedSize or grpcWriteMethods is set")
		}
		return p, nil
	case *w.Mode != string(FencingOn) && *w.Mode != string(FencingOff):
		return p, fmt.Errorf("mode: want \"on\" or \"off\", got %q", *w.Mode)
	}
	p.Mode = FencingMode(*w.Mode)
	if w.ExpectedSize != nil {
		if *w.ExpectedSize < 1 {
			return p, fmt.Errorf("expectedSize: must be ≥ 1, got %d", *w.ExpectedSize)
		}
		p.ExpectedSize = *w.ExpectedSize
	}
	seen := map[string]bool{}
	for i, m := range w.GRPCWriteMethods {
		if !grpcWriteMethod.MatchString(m) {
			return p, fmt.Errorf("grpcWriteMethods[%d]: %q is not /package.Service/Method or /package.Service/*", i, m)
		}
		if seen[m] {
			return p, fmt.Errorf("grpcWriteMethods[%d]: %q is listed twice", i, m)
		}
		seen[m] = true
	}
	if len(w.GRPCWriteMethods) > 0 {
		p.GRPCWriteMethods = w.GRPCWriteMethods
	}
	return p, nil
}

// ClockSettings is reserved for the logical-clock settings. It has no
// fields yet, so only {} (or absence) is accepted; any key is an error,
// which keeps a newer control plane from being silently half-understood.
type ClockSettings struct{}

// Duration is a time.Duration written as a Go duration string ("100ms") in
// JSON. Negative values are rejected.
type Duration time.Duration

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"100ms\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// meshPolicy is the decoded causeway.mesh extension.
type meshPolicy struct {
	Services map[string]meshService
	Fencing  FencingPolicy
	Clock    ClockSettings
}

type meshService struct {
	Routes        map[string]meshRoute
	Fencing       FencingPolicy
	Authorization *authz.Compiled
}

// authorizationWire is the JSON form of a service's authorization policy.
type authorizationWire struct {
	Default string `json:"default"`
	Rules   []struct {
		Name   string `json:"name"`
		Action string `json:"action"`
		From   []struct {
			Namespaces []string `json:"namespaces"`
			Services   []string `json:"services"`
		} `json:"from"`
		To []struct {
			Paths        []string `json:"paths"`
			Methods      []string `json:"methods"`
			GRPCServices []string `json:"grpcServices"`
			GRPCMethods  []string `json:"grpcMethods"`
		} `json:"to"`
	} `json:"rules"`
}

// decodeAuthorization decodes and compiles a service's authorization
// policy; absent or null means none (every caller allowed).
func decodeAuthorization(service string, raw json.RawMessage) (*authz.Compiled, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	var w authorizationWire
	if err := decodeRaw(raw, &w); err != nil {
		return nil, err
	}
	p := authz.Policy{Service: service}
	switch w.Default {
	case "allow":
	case "deny":
		p.Default = authz.Deny
	default:
		return nil, fmt.Errorf("default: %q: want allow or deny", w.Default)
	}
	for i, r := range w.Rules {
		a, err := authz.ParseAction(r.Action)
		if err != nil || r.Action == "" {
			return nil, fmt.Errorf("rules[%d].action: %q: want ALLOW or DENY", i, r.Action)
		}
		rule := authz.Rule{Name: r.Name, Action: a}
		for _, f := range r.From {
			rule.From = append(rule.From, authz.Source{Namespaces: f.Namespaces, Services: f.Services})
		}
		for _, o := range r.To {
			rule.To = append(rule.To, authz.Operation{Paths: o.Paths, Methods: o.Methods, GRPCServices: o.GRPCServices, GRPCMethods: o.GRPCMethods})
		}
		p.Rules = append(p.Rules, rule)
	}
	return authz.Compile(p)
}

type meshRoute struct {
	Fault     *FaultPolicy `json:"fault"`
	RateLimit *RateLimit   `json:"rateLimit"`
}

// decodeMeshPolicy decodes and checks the causeway.mesh Struct. Errors name
// the JSON path of the offending key.
func decodeMeshPolicy(st *structpb.Struct) (meshPolicy, error) {
	var top struct {
		Services map[string]json.RawMessage `json:"services"`
		Fencing  json.RawMessage            `json:"fencing"`
		Clock    json.RawMessage            `json:"clock"`
	}
	out := meshPolicy{Services: map[string]meshService{}}
	if err := decodeStruct(st, &top); err != nil {
		return out, err
	}
	fencing, err := decodeFencing(top.Fencing)
	if err != nil {
		return out, fmt.Errorf("fencing: %w", err)
	}
	out.Fencing = fencing
	if err := decodeRaw(top.Clock, &out.Clock); err != nil {
		return out, fmt.Errorf("clock: %w", err)
	}
	for _, svcName := range sortedKeys(top.Services) {
		var svc struct {
			Routes        map[string]json.RawMessage `json:"routes"`
			Fencing       json.RawMessage            `json:"fencing"`
			Authorization json.RawMessage            `json:"authorization"`
		}
		path := "services." + svcName
		if err := decodeRaw(top.Services[svcName], &svc); err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		ms := meshService{Routes: map[string]meshRoute{}}
		if ms.Fencing, err = decodeFencing(svc.Fencing); err != nil {
			return out, fmt.Errorf("%s.fencing: %w", path, err)
		}
		if ms.Authorization, err = decodeAuthorization(svcName, svc.Authorization); err != nil {
			return out, fmt.Errorf("%s.authorization: %w", path, err)
		}
		for _, routeName := range sortedKeys(svc.Routes) {
			rpath := path + ".routes." + routeName
			var mr meshRoute
			if err := decodeRaw(svc.Routes[routeName], &mr); err != nil {
				return out, fmt.Errorf("%s: %w", rpath, err)
			}
			if err := checkFault(mr.Fault); err != nil {
				return out, fmt.Errorf("%s.fault.%w", rpath, err)
			}
			if err := checkRateLimit(mr.RateLimit); err != nil {
				return out, fmt.Errorf("%s.rateLimit.%w", rpath, err)
			}
			ms.Routes[routeName] = mr
		}
		out.Services[svcName] = ms
	}
	return out, nil
}

func checkFault(f *FaultPolicy) error {
	if f == nil {
		return nil
	}
	if err := checkPercent("delayPercent", f.DelayPercent); err != nil {
		return err
	}
	if err := checkPercent("abortPercent", f.AbortPercent); err != nil {
		return err
	}
	if f.DelayPercent > 0 && f.Delay == 0 {
		return errors.New("delay: must be > 0 when delayPercent is set")
	}
	if f.AbortStatus != 0 && (f.AbortStatus < 200 || f.AbortStatus > 599) {
		return fmt.Errorf("abortStatus: %d is not an HTTP status in [200, 599]", f.AbortStatus)
	}
	if f.AbortGRPCStatus < 0 || f.AbortGRPCStatus > 16 {
		return fmt.Errorf("abortGrpcStatus: %d is not a gRPC status code in [0, 16]", f.AbortGRPCStatus)
	}
	if f.AbortPercent > 0 && f.AbortStatus == 0 && f.AbortGRPCStatus == 0 {
		return errors.New("abortStatus: abortPercent is set but neither abortStatus nor abortGrpcStatus is")
	}
	return nil
}

func checkRateLimit(r *RateLimit) error {
	if r == nil {
		return nil
	}
	if !(r.PerSecond > 0) || math.IsInf(r.PerSecond, 0) {
		return fmt.Errorf("perSecond: must be > 0, got %v", r.PerSecond)
	}
	if r.Burst < 1 {
		return fmt.Errorf("burst: must be ≥ 1, got %d", r.Burst)
	}
	return nil
}

func checkPercent(field string, v float64) error {
	if v < 0 || v > 100 || math.IsNaN(v) {
		return fmt.Errorf("%s: %v is outside [0, 100]", field, v)
	}
	return nil
}

// clusterMetadata is the causeway FilterMetadata of a Cluster.
type clusterMetadata struct {
	Breaker *struct {
		ConsecutiveFailures uint32   `json:"consecutiveFailures"`
		FailureRatio        float64  `json:"failureRatio"`
		MinRequests         uint32   `json:"minRequests"`
		Window              Duration `json:"window"`
		OpenFor             Duration `json:"openFor"`
		HalfOpenProbes      uint32   `json:"halfOpenProbes"`
	} `json:"breaker"`
	RetryBudget *struct {
		MinPerSecond float64  `json:"minPerSecond"`
		Window       Duration `json:"window"`
	} `json:"retryBudget"`
}

// endpointMetadata is the causeway FilterMetadata of an LbEndpoint.
type endpointMetadata struct {
	Node    string `json:"node"`
	Version string `json:"version"`
}

// decodeStruct decodes a Struct into out strictly: unknown keys, wrong
// types and fractional numbers for integer fields are errors.
func decodeStruct(st *structpb.Struct, out any) error {
	if st == nil {
		return nil
	}
	b, err := protojson.Marshal(st)
	if err != nil {
		return err
	}
	return decodeRaw(b, out)
}

func decodeRaw(b json.RawMessage, out any) error {
	if len(bytes.TrimSpace(b)) == 0 || bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return cleanJSONError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// cleanJSONError turns encoding/json's messages into ones that name the key.
func cleanJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Errorf("%s: cannot use JSON %s as %s", te.Field, te.Value, te.Type)
		}
		return fmt.Errorf("cannot use JSON %s as %s", te.Value, te.Type)
	}
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
