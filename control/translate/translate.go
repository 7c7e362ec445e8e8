package translate

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/policy"
)

// MetadataKey is the FilterMetadata key of Causeway's own settings on
// clusters and endpoints.
const MetadataKey = "causeway"

// ExtensionName is the name of the TypedExtensionConfig that carries
// Causeway's policy with no Envoy field.
const ExtensionName = "causeway.mesh"

// Defaults applied when policy sets nothing.
const (
	// DefaultConnectTimeout matches the sidecar's own default for a
	// service's connect timeout (resilience.DefaultPolicy, 1 s, as Linkerd):
	// on the mesh hop a peer that does not accept within a second is cut
	// off or gone, and the attempt is better spent on another endpoint.
	DefaultConnectTimeout = time.Second
	// DefaultRetryBackoff is Envoy's and gRPC's base interval.
	DefaultRetryBackoff = 25 * time.Millisecond
	// DefaultRetryAttempts applies when a rule has a retry block without
	// attempts.
	DefaultRetryAttempts = 2
	// RetryOn is the retry condition of every generated RetryPolicy:
	// connection failures and resets for the sidecar, UNAVAILABLE for
	// gRPC; "retriable-status-codes" is added when codes are listed.
	RetryOn = "connect-failure,refused-stream,reset,unavailable"
)

// Input is everything a translation reads.
type Input struct {
	// Policies are the stored resources (validated).
	Policies []*policy.Resource
	// Instances are the mesh's instances (membership.Sort order).
	Instances []membership.Instance
	// Services are further service names that must get resources even
	// with no instance or policy (for example the services of connected
	// sidecars).
	Services []string
}

// Output is one complete, consistent set of xDS resources. Every slice is
// sorted by resource name.
type Output struct {
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Extension *corev3.TypedExtensionConfig
	// Warnings are problems that did not stop the translation, such as an
	// instance whose address cannot be parsed (it is left out).
	Warnings []string
}

// Resources returns the output in the form cachev3.NewSnapshot takes.
func (o *Output) Resources() map[resourcev3.Type][]types.Resource {
	m := map[resourcev3.Type][]types.Resource{}
	for _, c := range o.Clusters {
		m[resourcev3.ClusterType] = append(m[resourcev3.ClusterType], c)
	}
	for _, e := range o.Endpoints {
		m[resourcev3.EndpointType] = append(m[resourcev3.EndpointType], e)
	}
	for _, l := range o.Listeners {
		m[resourcev3.ListenerType] = append(m[resourcev3.ListenerType], l)
	}
	for _, r := range o.Routes {
		m[resourcev3.RouteType] = append(m[resourcev3.RouteType], r)
	}
	m[resourcev3.ExtensionConfigType] = []types.Resource{o.Extension}
	return m
}

// Translate builds the xDS resources for every mesh service from policy
// and membership. It fails only on input that validation should have
// refused; Validate checks the result.
func Translate(in Input) (*Output, error) {
	byService := indexPolicies(in.Policies)
	services := serviceNames(in, byService)
	instances := map[string][]membership.Instance{}
	for _, i := range in.Instances {
		instances[i.Service] = append(instances[i.Service], i)
	}
	out := &Output{}
	mesh := newMeshConfig()
	for _, s := range services {
		sp := byService[s]
		c, err := buildCluster(s, sp.backend)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", s, err)
		}
		out.Clusters = append(out.Clusters, c)
		cla, warns := buildLoadAssignment(s, instances[s])
		out.Endpoints = append(out.Endpoints, cla)
		out.Warnings = append(out.Warnings, warns...)
		l, err := buildListener(s)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", s, err)
		}
		out.Listeners = append(out.Listeners, l)
		rc, routeExt := buildRouteConfig(s, sp.routes)
		out.Routes = append(out.Routes, rc)
		mesh.addService(s, routeExt, sp.fencing, sp.authorization)
	}
	mesh.setMeshFencing(byService[""].fencing)
	ext, err := mesh.extension()
	if err != nil {
		return nil, err
	}
	out.Extension = ext
	return out, nil
}

// servicePolicy is the policy that applies to one service ("" holds the
// mesh-wide FencingPolicy).
type servicePolicy struct {
	routes        []routeRule
	backend       *policy.BackendPolicySpec
	fencing       *policy.FencingPolicySpec
	authorization *policy.AuthorizationPolicySpec
}

// routeRule is one HTTPRoute rule applied to a service.
type routeRule struct {
	rule policy.RouteRule
}

func indexPolicies(rs []*policy.Resource) map[string]*servicePolicy {
	sorted := slices.Clone(rs)
	policy.SortResources(sorted)
	m := map[string]*servicePolicy{"": {}}
	get := func(s string) *servicePolicy {
		if m[s] == nil {
			m[s] = &servicePolicy{}
		}
		return m[s]
	}
	for _, r := range sorted {
		switch {
		case r.HTTPRoute != nil:
			for _, p := range r.HTTPRoute.ParentRefs {
				sp := get(p.Name)
				for _, rule := range r.HTTPRoute.Rules {
					sp.routes = append(sp.routes, routeRule{rule: rule})
				}
				for _, rule := range r.HTTPRoute.Rules {
					for _, b := range rule.BackendRefs {
						get(b.Name)
					}
				}
			}
		case r.BackendPolicy != nil:
			get(r.BackendPolicy.TargetRef.Name).backend = r.BackendPolicy
		case r.AuthorizationPolicy != nil:
			get(r.AuthorizationPolicy.TargetRef.Name).authorization = r.AuthorizationPolicy
		case r.FencingPolicy != nil:
			if r.FencingPolicy.TargetRef.Kind == policy.TargetMesh {
				m[""].fencing = r.FencingPolicy
			} else {
				get(r.FencingPolicy.TargetRef.Name).fencing = r.FencingPolicy
			}
		}
	}
	return m
}

func serviceNames(in Input, byService map[string]*servicePolicy) []string {
	set := map[string]bool{}
	for s := range byService {
		set[s] = true
	}
	for _, i := range in.Instances {
		set[i.Service] = true
	}
	for _, s := range in.Services {
		set[s] = true
	}
	delete(set, "")
	names := make([]string, 0, len(set))
	for s := range set {
		if policy.ValidName(s) {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	// Every service gets an entry, so later lookups need no nil checks.
	for _, s := range names {
		if byService[s] == nil {
			byService[s] = &servicePolicy{}
		}
	}
	return names
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func u32(v *int64) *wrapperspb.UInt32Value {
	if v == nil {
		return nil
	}
	return wrapperspb.UInt32(uint32(min(max(*v, 0), math.MaxUint32)))
}

func dur(d *policy.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(d.Duration)
}

func buildCluster(s string, bp *policy.BackendPolicySpec) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:                 s,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{ServiceName: s, EdsConfig: adsSource()},
		LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
		ConnectTimeout:       durationpb.New(DefaultConnectTimeout),
	}
	if bp == nil {
		return c, nil
	}
	if bp.ConnectTimeout != nil {
		c.ConnectTimeout = durationpb.New(bp.ConnectTimeout.Duration)
	}
	if bp.LoadBalancer != nil && bp.LoadBalancer.Type == policy.LBRoundRobin {
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
	th := &clusterv3.CircuitBreakers_Thresholds{}
	set := false
	if l := bp.Limits; l != nil {
		th.MaxConnections, th.MaxPendingRequests = u32(l.MaxConnections), u32(l.MaxPendingRequests)
		th.MaxRequests, th.MaxRetries = u32(l.MaxRequests), u32(l.MaxRetries)
		set = true
	}
	meta := map[string]any{}
	if rb := bp.RetryBudget; rb != nil {
		budget := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{MinRetryConcurrency: u32(rb.MinRetryConcurrency)}
		if rb.Percent != nil {
			budget.BudgetPercent = &typev3.Percent{Value: *rb.Percent}
		}
		th.RetryBudget = budget
		set = true
		m := map[string]any{}
		if rb.MinPerSecond != nil {
			m["minPerSecond"] = float64(*rb.MinPerSecond)
		}
		if rb.Window != nil {
			m["window"] = rb.Window.String()
		}
		if len(m) > 0 {
			meta["retryBudget"] = m
		}
	}
	if set {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}
	if od := bp.OutlierDetection; od != nil {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx: u32(od.Consecutive5xx), ConsecutiveGatewayFailure: u32(od.ConsecutiveGatewayFailure),
			Interval: dur(od.Interval), BaseEjectionTime: dur(od.BaseEjectionTime), MaxEjectionTime: dur(od.MaxEjectionTime),
			MaxEjectionPercent: u32(od.MaxEjectionPercent),
		}
	}
	if cb := bp.CircuitBreaker; cb != nil {
		m := map[string]any{}
		if cb.ConsecutiveFailures != nil {
			m["consecutiveFailures"] = float64(*cb.ConsecutiveFailures)
		}
		if cb.FailureRatio != nil {
			m["failureRatio"] = *cb.FailureRatio
		}
		if cb.MinRequests != nil {
			m["minRequests"] = float64(*cb.MinRequests)
		}
		if cb.Window != nil {
			m["window"] = cb.Window.String()
		}
		if cb.OpenFor != nil {
			m["openFor"] = cb.OpenFor.String()
		}
		if cb.HalfOpenProbes != nil {
			m["halfOpenProbes"] = float64(*cb.HalfOpenProbes)
		}
		meta["breaker"] = m
	}
	if len(meta) > 0 {
		st, err := structpb.NewStruct(meta)
		if err != nil {
			return nil, fmt.Errorf("cluster metadata: %w", err)
		}
		c.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: st}}
	}
	return c, nil
}

func buildLoadAssignment(s string, instances []membership.Instance) (*endpointv3.ClusterLoadAssignment, []string) {
	var warns []string
	byZone := map[string][]*endpointv3.LbEndpoint{}
	seen := map[string]int{} // address -> rank of the health kept
	rank := map[membership.Health]int{membership.Healthy: 3, membership.Draining: 2, membership.Unhealthy: 1}
	// Healthiest first, so a restarted instance reusing an address wins
	// over the failed record of its previous run (gRPC refuses repeated
	// addresses).
	sorted := slices.Clone(instances)
	slices.SortStableFunc(sorted, func(a, b membership.Instance) int { return cmp.Compare(rank[b.Health], rank[a.Health]) })
	for _, i := range sorted {
		host, portStr, err := net.SplitHostPort(i.Addr)
		port, perr := strconv.ParseUint(portStr, 10, 16)
		if err != nil || perr != nil || host == "" || port == 0 {
			warns = append(warns, fmt.Sprintf("service %s: instance %s has an unusable inbound address %q; left out", s, i.Node, i.Addr))
			continue
		}
		if _, dup := seen[i.Addr]; dup {
			continue
		}
		seen[i.Addr] = rank[i.Health]
		meta, _ := structpb.NewStruct(map[string]any{"node": i.Node, "version": i.Version})
		ep := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Protocol: corev3.SocketAddress_TCP, Address: host,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
				}}},
			}},
			HealthStatus:        healthStatus(i.Health),
			LoadBalancingWeight: wrapperspb.UInt32(max(i.Weight, 1)),
			Metadata:            &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: meta}},
		}
		byZone[i.Zone] = append(byZone[i.Zone], ep)
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: s}
	zones := make([]string, 0, len(byZone))
	for z := range byZone {
		zones = append(zones, z)
	}
	slices.Sort(zones)
	for _, z := range zones {
		eps := byZone[z]
		slices.SortFunc(eps, func(a, b *endpointv3.LbEndpoint) int {
			return cmp.Compare(a.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()+":"+
				strconv.Itoa(int(a.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue())),
				b.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()+":"+
					strconv.Itoa(int(b.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue())))
		})
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Zone: z},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints:         eps,
		})
	}
	return cla, warns
}

func healthStatus(h membership.Health) corev3.HealthStatus {
	switch h {
	case membership.Healthy:
		return corev3.HealthStatus_HEALTHY
	case membership.Draining:
		return corev3.HealthStatus_DRAINING
	default:
		return corev3.HealthStatus_UNHEALTHY
	}
}

func mustAny(m proto.Message) (*anypb.Any, error) { return anypb.New(m) }

func buildListener(s string) (*listenerv3.Listener, error) {
	router, err := mustAny(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: s,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: s, ConfigSource: adsSource(),
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	}
	anyHCM, err := mustAny(hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:        s,
		ApiListener: &listenerv3.ApiListener{ApiListener: anyHCM},
		// The same HCM in a filter chain, only so that
		// Snapshot.Consistent() sees the RDS reference (it ignores
		// api_listener); proxyless gRPC and the sidecar read api_listener.
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: wellknown.HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyHCM},
		}}}},
	}, nil
}

// routeExtension is the causeway.mesh entry of one route.
type routeExtension struct {
	name string
	rule policy.RouteRule
}

func buildRouteConfig(s string, rules []routeRule) (*routev3.RouteConfiguration, []routeExtension) {
	vh := &routev3.VirtualHost{Name: s, Domains: []string{s, s + ":*"}}
	var ext []routeExtension
	for i, rr := range rules {
		base := rr.rule.Name
		if base == "" {
			base = s + "/" + strconv.Itoa(i)
		}
		matches := rr.rule.Matches
		if len(matches) == 0 {
			matches = []policy.RouteMatch{{}}
		}
		for j, m := range matches {
			name := base
			if j > 0 {
				name = base + "/" + strconv.Itoa(j)
			}
			vh.Routes = append(vh.Routes, &routev3.Route{
				Name:   name,
				Match:  buildMatch(m),
				Action: &routev3.Route_Route{Route: buildAction(s, rr.rule)},
			})
			if rr.rule.Fault != nil || rr.rule.RateLimit != nil {
				ext = append(ext, routeExtension{name: name, rule: rr.rule})
			}
		}
	}
	vh.Routes = append(vh.Routes, &routev3.Route{
		Name:   s + "/default",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: s}}},
	})
	return &routev3.RouteConfiguration{Name: s, VirtualHosts: []*routev3.VirtualHost{vh}}, ext
}

func buildMatch(m policy.RouteMatch) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if p := m.Path; p != nil {
		switch p.Type {
		case policy.PathExact:
			rm.PathSpecifier = &routev3.RouteMatch_Path{Path: p.Value}
		case policy.PathRegularExpression:
			rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: p.Value}}
		default:
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: p.Value}
		}
	}
	for _, h := range m.Headers {
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Value}}
		if h.Type == policy.HeaderRegularExpression {
			sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Value}}}
		}
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name: lowerASCII(h.Name), HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm},
		})
	}
	if m.Method != "" {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.Method},
			}},
		})
	}
	return rm
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func buildAction(s string, rule policy.RouteRule) *routev3.RouteAction {
	a := &routev3.RouteAction{}
	var weighted []*routev3.WeightedCluster_ClusterWeight
	for _, b := range rule.BackendRefs {
		w := int64(1)
		if b.Weight != nil {
			w = *b.Weight
		}
		if w > 0 {
			weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{Name: b.Name, Weight: wrapperspb.UInt32(uint32(w))})
		}
	}
	switch {
	case len(rule.BackendRefs) == 0:
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: s}
	case len(rule.BackendRefs) == 1:
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: rule.BackendRefs[0].Name}
	default:
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: weighted}}
	}
	var request, backend *policy.Duration
	if t := rule.Timeouts; t != nil {
		request, backend = t.Request, t.BackendRequest
	}
	retries := 0
	if r := rule.Retry; r != nil {
		retries = DefaultRetryAttempts
		if r.Attempts != nil {
			retries = int(*r.Attempts)
		}
	}
	// Without retries a backendRequest timeout bounds the only attempt,
	// so it is the route's timeout when it is the shorter one.
	total := request
	if retries == 0 && backend != nil && (total == nil || backend.Duration < total.Duration) {
		total = backend
	}
	if total != nil {
		a.Timeout = durationpb.New(total.Duration)
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(total.Duration)}
	}
	if retries > 0 {
		r := rule.Retry
		backoff := DefaultRetryBackoff
		if r.Backoff != nil {
			backoff = r.Backoff.Duration
		}
		rp := &routev3.RetryPolicy{
			RetryOn:      RetryOn,
			NumRetries:   wrapperspb.UInt32(uint32(retries)),
			RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(backoff), MaxInterval: durationpb.New(10 * backoff)},
		}
		if backend != nil {
			rp.PerTryTimeout = durationpb.New(backend.Duration)
		}
		if len(r.Codes) > 0 {
			rp.RetryOn += ",retriable-status-codes"
			for _, c := range r.Codes {
				rp.RetriableStatusCodes = append(rp.RetriableStatusCodes, uint32(c))
			}
		}
		a.RetryPolicy = rp
	}
	return a
}
