package translate

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/causeway-mesh/causeway/control/policy"
)

// meshConfig builds the causeway.mesh Struct (shape in the package doc).
type meshConfig struct {
	services map[string]any
	fencing  map[string]any
}

func newMeshConfig() *meshConfig {
	return &meshConfig{services: map[string]any{}, fencing: map[string]any{}}
}

func (m *meshConfig) addService(s string, routes []routeExtension, fencing *policy.FencingPolicySpec, authz *policy.AuthorizationPolicySpec) {
	rs := map[string]any{}
	for _, r := range routes {
		entry := map[string]any{}
		if f := r.rule.Fault; f != nil {
			fault := map[string]any{}
			if d := f.Delay; d != nil {
				fault["delayPercent"] = d.Percent
				fault["delay"] = d.Duration.String()
			}
			if a := f.Abort; a != nil {
				fault["abortPercent"] = a.Percent
				if a.HTTPStatus != 0 {
					fault["abortStatus"] = float64(a.HTTPStatus)
				}
				if a.GRPCStatus != nil {
					fault["abortGrpcStatus"] = float64(*a.GRPCStatus)
				}
			}
			entry["fault"] = fault
		}
		if rl := r.rule.RateLimit; rl != nil {
			entry["rateLimit"] = map[string]any{"perSecond": rl.PerSecond, "burst": float64(rl.Burst)}
		}
		rs[r.name] = entry
	}
	entry := map[string]any{"routes": rs, "fencing": fencingEntry(fencing)}
	if authz != nil {
		entry["authorization"] = authorizationEntry(authz)
	}
	m.services[s] = entry
}

// authorizationEntry is a service's "authorization" object: the
// AuthorizationPolicy's spec without its targetRef (shape in the package
// doc): {"default": "allow"|"deny", "rules": [{"name", "action", "from":
// [{"namespaces", "services"}], "to": [{"paths", "methods",
// "grpcServices", "grpcMethods"}]}]}.
func authorizationEntry(a *policy.AuthorizationPolicySpec) map[string]any {
	def := a.Default
	if def == "" {
		def = "allow"
	}
	rules := []any{}
	for _, r := range a.Rules {
		rule := map[string]any{"name": r.Name, "action": strings.ToUpper(r.Action)}
		var from []any
		for _, f := range r.From {
			from = append(from, map[string]any{"namespaces": strs(f.Namespaces), "services": strs(f.Services)})
		}
		var to []any
		for _, o := range r.To {
			to = append(to, map[string]any{"paths": strs(o.Paths), "methods": strs(o.Methods),
				"grpcServices": strs(o.GRPCServices), "grpcMethods": strs(o.GRPCMethods)})
		}
		rule["from"], rule["to"] = orEmpty(from), orEmpty(to)
		rules = append(rules, rule)
	}
	return map[string]any{"default": strings.ToLower(def), "rules": rules}
}

func strs(in []string) []any {
	out := make([]any, len(in))
	for i, s := range in {
		out[i] = s
	}
	return out
}

func orEmpty(in []any) []any {
	if in == nil {
		return []any{}
	}
	return in
}

func (m *meshConfig) setMeshFencing(f *policy.FencingPolicySpec) { m.fencing = fencingEntry(f) }

// fencingEntry is a service's or the mesh's "fencing" object (shape in
// the package doc): {} without a FencingPolicy for the target, else
// {"mode": "on"|"off", "expectedSize": N, "grpcWriteMethods": [...]},
// with expectedSize and grpcWriteMethods only when the policy sets them.
func fencingEntry(f *policy.FencingPolicySpec) map[string]any {
	entry := map[string]any{}
	if f == nil {
		return entry
	}
	entry["mode"] = string(f.Mode)
	if f.ExpectedSize != nil && *f.ExpectedSize > 0 {
		entry["expectedSize"] = float64(*f.ExpectedSize)
	}
	if len(f.WriteMethods) > 0 {
		methods := make([]any, len(f.WriteMethods))
		for i, m := range f.WriteMethods {
			methods[i] = m
		}
		entry["grpcWriteMethods"] = methods
	}
	return entry
}

func (m *meshConfig) extension() (*corev3.TypedExtensionConfig, error) {
	st, err := structpb.NewStruct(map[string]any{
		"services": m.services,
		"fencing":  m.fencing,
		"clock":    map[string]any{},
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ExtensionName, err)
	}
	a, err := anypb.New(st)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ExtensionName, err)
	}
	return &corev3.TypedExtensionConfig{Name: ExtensionName, TypedConfig: a}, nil
}
