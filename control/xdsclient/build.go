package xdsclient

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Envoy's defaults for fields the control plane may leave unset.
const (
	defaultConnectTimeout         = 5 * time.Second
	defaultBudgetPercent          = 20.0
	defaultMinRetryConcurrency    = 3
	defaultConsecutive5xx         = 5
	defaultOutlierInterval        = 10 * time.Second
	defaultBaseEjectionTime       = 30 * time.Second
	defaultMaxEjectionTime        = 300 * time.Second
	defaultMaxEjectionPercent     = 10
	defaultRetryBackoffBase       = 25 * time.Millisecond
	retryBackoffMaxOverBaseFactor = 10
)

// retryConditions are the retry_on values the sidecar understands: Envoy's
// HTTP conditions and the gRPC status conditions (x-envoy-retry-grpc-on).
var retryConditions = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "reset-before-request": true,
	"connect-failure": true, "envoy-ratelimited": true, "retriable-4xx": true,
	"refused-stream": true, "retriable-status-codes": true, "retriable-headers": true,
	"http3-post-connect-failure": true,
	"cancelled":                  true, "deadline-exceeded": true, "internal": true,
	"resource-exhausted": true, "unavailable": true,
}

// BuildModel translates a consistent Snapshot into the Model the sidecar
// runs, checking every rule of the xDS contract (see the package
// documentation). Errors name the resource and the field, for example
//
//	cluster "orders": outlier_detection.max_ejection_percent: 120 > 100
//
// A caller's Apply returns such an error so the update is NACKed with it.
func BuildModel(s *Snapshot) (*Model, error) {
	if s == nil {
		return nil, errors.New("nil snapshot")
	}
	m := &Model{Version: s.Version, Services: make(map[string]Service, len(s.Clusters))}
	for _, name := range sortedKeys(s.Clusters) {
		svc, err := buildService(s, name)
		if err != nil {
			return nil, err
		}
		m.Services[name] = svc
	}
	for _, name := range sortedKeys(s.Listeners) {
		if _, ok := s.Clusters[name]; !ok {
			return nil, fmt.Errorf("listener %q: no cluster of the same name", name)
		}
	}
	if err := applyMeshPolicy(s, m); err != nil {
		return nil, err
	}
	return m, nil
}

func buildService(s *Snapshot, name string) (Service, error) {
	c := s.Clusters[name]
	svc := Service{Name: name}
	if err := buildCluster(c, &svc); err != nil {
		return svc, fmt.Errorf("cluster %q: %w", name, err)
	}
	claName := edsServiceName(c)
	cla, ok := s.Endpoints[claName]
	if !ok {
		return svc, fmt.Errorf("cluster %q: no cluster_load_assignment %q", name, claName)
	}
	eps, err := buildEndpoints(cla)
	if err != nil {
		return svc, fmt.Errorf("cluster_load_assignment %q: %w", claName, err)
	}
	svc.Endpoints = eps

	l, ok := s.Listeners[name]
	if !ok {
		return svc, fmt.Errorf("service %q: no listener of the same name", name)
	}
	rdsName, err := checkListener(l)
	if err != nil {
		return svc, fmt.Errorf("listener %q: %w", name, err)
	}
	rc, ok := s.Routes[rdsName]
	if !ok {
		return svc, fmt.Errorf("listener %q: no route_configuration %q", name, rdsName)
	}
	routes, err := buildRoutes(rc, s.Clusters)
	if err != nil {
		return svc, fmt.Errorf("route_configuration %q: %w", rdsName, err)
	}
	svc.Routes = routes
	return svc, nil
}

func buildCluster(c *clusterv3.Cluster, svc *Service) error {
	if t := c.GetType(); t != clusterv3.Cluster_EDS {
		return fmt.Errorf("type: %s is not supported, want EDS", t)
	}
	if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		return errors.New("eds_cluster_config.eds_config: must be ads")
	}
	switch p := c.GetLbPolicy(); p {
	case clusterv3.Cluster_ROUND_ROBIN:
		svc.LB = LBRoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		svc.LB = LBPeakEWMA
	default:
		return fmt.Errorf("lb_policy: %s is not supported, want ROUND_ROBIN or LEAST_REQUEST", p)
	}
	if c.GetLoadBalancingPolicy() != nil {
		return errors.New("load_balancing_policy: not supported, use lb_policy")
	}
	svc.ConnectTimeout = defaultConnectTimeout
	if ct := c.GetConnectTimeout(); ct != nil {
		d, err := positiveDuration(ct)
		if err != nil {
			return fmt.Errorf("connect_timeout: %w", err)
		}
		svc.ConnectTimeout = d
	}
	if err := buildThresholds(c.GetCircuitBreakers(), svc); err != nil {
		return fmt.Errorf("circuit_breakers.%w", err)
	}
	if od := c.GetOutlierDetection(); od != nil {
		o, err := buildOutlier(od)
		if err != nil {
			return fmt.Errorf("outlier_detection.%w", err)
		}
		svc.Outlier = o
	}
	return buildClusterMetadata(c.GetMetadata().GetFilterMetadata()[MetadataKey], svc)
}

func buildThresholds(cb *clusterv3.CircuitBreakers, svc *Service) error {
	th := cb.GetThresholds()
	if len(th) == 0 {
		return nil
	}
	if len(th) > 1 {
		return fmt.Errorf("thresholds: got %d entries, the sidecar honours only one (DEFAULT priority)", len(th))
	}
	t := th[0]
	if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
		return fmt.Errorf("thresholds[0].priority: %s is not supported, want DEFAULT", t.GetPriority())
	}
	svc.Limits = ConnectionLimits{
		MaxConnections:     t.GetMaxConnections().GetValue(),
		MaxPendingRequests: t.GetMaxPendingRequests().GetValue(),
		MaxRequests:        t.GetMaxRequests().GetValue(),
		MaxRetries:         t.GetMaxRetries().GetValue(),
	}
	if rb := t.GetRetryBudget(); rb != nil {
		b := &RetryBudget{BudgetPercent: defaultBudgetPercent, MinRetryConcurrency: defaultMinRetryConcurrency}
		if p := rb.GetBudgetPercent(); p != nil {
			if err := checkPercent("thresholds[0].retry_budget.budget_percent", p.GetValue()); err != nil {
				return err
			}
			b.BudgetPercent = p.GetValue()
		}
		if mc := rb.GetMinRetryConcurrency(); mc != nil {
			b.MinRetryConcurrency = mc.GetValue()
		}
		svc.RetryBudget = b
	}
	return nil
}

func buildOutlier(od *clusterv3.OutlierDetection) (*OutlierDetection, error) {
	o := &OutlierDetection{
		Consecutive5xx:            defaultConsecutive5xx,
		ConsecutiveGatewayFailure: od.GetConsecutiveGatewayFailure().GetValue(),
		Interval:                  defaultOutlierInterval,
		BaseEjectionTime:          defaultBaseEjectionTime,
		MaxEjectionTime:           defaultMaxEjectionTime,
		MaxEjectionPercent:        defaultMaxEjectionPercent,
	}
	if v := od.GetConsecutive_5Xx(); v != nil {
		o.Consecutive5xx = v.GetValue()
	}
	if v := od.GetMaxEjectionPercent(); v != nil {
		if v.GetValue() > 100 {
			return nil, fmt.Errorf("max_ejection_percent: %d > 100", v.GetValue())
		}
		o.MaxEjectionPercent = v.GetValue()
	}
	for _, f := range []struct {
		name string
		d    *durationpb.Duration
		dst  *time.Duration
	}{
		{"interval", od.GetInterval(), &o.Interval},
		{"base_ejection_time", od.GetBaseEjectionTime(), &o.BaseEjectionTime},
		{"max_ejection_time", od.GetMaxEjectionTime(), &o.MaxEjectionTime},
	} {
		if f.d == nil {
			continue
		}
		d, err := positiveDuration(f.d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		*f.dst = d
	}
	if o.MaxEjectionTime < o.BaseEjectionTime {
		return nil, fmt.Errorf("max_ejection_time: %s < base_ejection_time %s", o.MaxEjectionTime, o.BaseEjectionTime)
	}
	return o, nil
}

func buildClusterMetadata(st *structpb.Struct, svc *Service) error {
	var md clusterMetadata
	if err := decodeStruct(st, &md); err != nil {
		return fmt.Errorf("metadata.filter_metadata.%s: %w", MetadataKey, err)
	}
	if b := md.Breaker; b != nil {
		if b.FailureRatio < 0 || b.FailureRatio > 1 {
			return fmt.Errorf("metadata.filter_metadata.%s.breaker.failureRatio: %v is outside [0, 1]", MetadataKey, b.FailureRatio)
		}
		svc.Breaker = &BreakerSettings{
			ConsecutiveFailures: b.ConsecutiveFailures, FailureRatio: b.FailureRatio,
			MinRequests: b.MinRequests, Window: time.Duration(b.Window),
			OpenFor: time.Duration(b.OpenFor), HalfOpenProbes: b.HalfOpenProbes,
		}
	}
	if rb := md.RetryBudget; rb != nil {
		if rb.MinPerSecond < 0 {
			return fmt.Errorf("metadata.filter_metadata.%s.retryBudget.minPerSecond: %v < 0", MetadataKey, rb.MinPerSecond)
		}
		if svc.RetryBudget == nil {
			svc.RetryBudget = &RetryBudget{BudgetPercent: defaultBudgetPercent, MinRetryConcurrency: defaultMinRetryConcurrency}
		}
		svc.RetryBudget.MinPerSecond = rb.MinPerSecond
		svc.RetryBudget.Window = time.Duration(rb.Window)
	}
	return nil
}

func buildEndpoints(cla *endpointv3.ClusterLoadAssignment) ([]Endpoint, error) {
	var out []Endpoint
	seen := map[string]string{}
	for i, loc := range cla.GetEndpoints() {
		path := fmt.Sprintf("endpoints[%d]", i)
		// gRPC rejects a locality without a Locality message; the zone in
		// it may be empty (instances that advertise none).
		if loc.GetLocality() == nil {
			return nil, fmt.Errorf("%s.locality: must be set", path)
		}
		zone := loc.GetLocality().GetZone()
		if w := loc.GetLoadBalancingWeight().GetValue(); w < 1 {
			return nil, fmt.Errorf("%s.load_balancing_weight: must be ≥ 1 (gRPC drops localities without weight)", path)
		}
		if p := loc.GetPriority(); p != 0 {
			return nil, fmt.Errorf("%s.priority: %d is not supported, want 0", path, p)
		}
		for j, lbe := range loc.GetLbEndpoints() {
			epath := fmt.Sprintf("%s.lb_endpoints[%d]", path, j)
			ep, err := buildEndpoint(lbe, zone)
			if err != nil {
				return nil, fmt.Errorf("%s.%w", epath, err)
			}
			if prev, dup := seen[ep.Addr]; dup {
				return nil, fmt.Errorf("%s.endpoint.address: %s is also %s", epath, ep.Addr, prev)
			}
			seen[ep.Addr] = epath
			out = append(out, ep)
		}
	}
	return out, nil
}

func buildEndpoint(lbe *endpointv3.LbEndpoint, zone string) (Endpoint, error) {
	ep := Endpoint{Zone: zone, Weight: 1}
	sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
	if sa == nil {
		return ep, errors.New("endpoint.address.socket_address: must be set")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return ep, fmt.Errorf("endpoint.address.socket_address.protocol: %s is not supported, want TCP", sa.GetProtocol())
	}
	port, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	if !ok || port.PortValue == 0 {
		return ep, errors.New("endpoint.address.socket_address.port_value: must be set")
	}
	if sa.GetAddress() == "" {
		return ep, errors.New("endpoint.address.socket_address.address: must be set")
	}
	ep.Addr = net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port.PortValue), 10))
	switch hs := lbe.GetHealthStatus(); hs {
	case corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNKNOWN:
		ep.Health = HealthHealthy
	case corev3.HealthStatus_DRAINING:
		ep.Health = HealthDraining
	case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_TIMEOUT:
		ep.Health = HealthUnhealthy
	default:
		return ep, fmt.Errorf("health_status: %s is not supported", hs)
	}
	if w := lbe.GetLoadBalancingWeight(); w != nil {
		if w.GetValue() < 1 {
			return ep, errors.New("load_balancing_weight: must be ≥ 1")
		}
		ep.Weight = w.GetValue()
	}
	var md endpointMetadata
	if err := decodeStruct(lbe.GetMetadata().GetFilterMetadata()[MetadataKey], &md); err != nil {
		return ep, fmt.Errorf("metadata.filter_metadata.%s: %w", MetadataKey, err)
	}
	ep.Node, ep.Version = md.Node, md.Version
	return ep, nil
}

// checkListener checks the api_listener and returns its RDS route name.
func checkListener(l *listenerv3.Listener) (string, error) {
	api := l.GetApiListener().GetApiListener()
	if api == nil {
		return "", errors.New("api_listener: must be set")
	}
	hcm := new(hcmv3.HttpConnectionManager)
	if err := api.UnmarshalTo(hcm); err != nil {
		return "", fmt.Errorf("api_listener: want an HttpConnectionManager: %w", err)
	}
	rds := hcm.GetRds()
	if rds == nil {
		return "", errors.New("api_listener.rds: must be set (inline route_config is not supported)")
	}
	if rds.GetConfigSource().GetAds() == nil {
		return "", errors.New("api_listener.rds.config_source: must be ads")
	}
	filters := hcm.GetHttpFilters()
	if len(filters) == 0 || filters[len(filters)-1].GetName() != "envoy.filters.http.router" {
		return "", errors.New("api_listener.http_filters: the router filter must be last")
	}
	return rds.GetRouteConfigName(), nil
}

func buildRoutes(rc *routev3.RouteConfiguration, clusters map[string]*clusterv3.Cluster) ([]Route, error) {
	vhs := rc.GetVirtualHosts()
	if len(vhs) != 1 {
		return nil, fmt.Errorf("virtual_hosts: got %d, want exactly 1", len(vhs))
	}
	var out []Route
	names := map[string]int{}
	for i, r := range vhs[0].GetRoutes() {
		path := fmt.Sprintf("virtual_hosts[0].routes[%d]", i)
		name := r.GetName()
		if name == "" {
			return nil, fmt.Errorf("%s.name: must be set", path)
		}
		if prev, dup := names[name]; dup {
			return nil, fmt.Errorf("%s.name: %q is also routes[%d]", path, name, prev)
		}
		names[name] = i
		route, err := buildRoute(r, clusters)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", name, err)
		}
		out = append(out, route)
	}
	return out, nil
}

func buildRoute(r *routev3.Route, clusters map[string]*clusterv3.Cluster) (Route, error) {
	route := Route{Name: r.GetName()}
	match, err := buildMatch(r.GetMatch())
	if err != nil {
		return route, fmt.Errorf("match.%w", err)
	}
	route.Match = match
	ra := r.GetRoute()
	if ra == nil {
		return route, errors.New("action: only route actions are supported (no redirect or direct_response)")
	}
	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if _, ok := clusters[cs.Cluster]; !ok {
			return route, fmt.Errorf("route.cluster: unknown cluster %q", cs.Cluster)
		}
		route.Backends = []WeightedBackend{{Service: cs.Cluster, Weight: 1}}
	case *routev3.RouteAction_WeightedClusters:
		var total uint64
		for j, wc := range cs.WeightedClusters.GetClusters() {
			if _, ok := clusters[wc.GetName()]; !ok {
				return route, fmt.Errorf("route.weighted_clusters.clusters[%d].name: unknown cluster %q", j, wc.GetName())
			}
			w := wc.GetWeight().GetValue()
			total += uint64(w)
			route.Backends = append(route.Backends, WeightedBackend{Service: wc.GetName(), Weight: w})
		}
		if total == 0 || total > 1<<32-1 {
			return route, fmt.Errorf("route.weighted_clusters: total weight %d is outside [1, 4294967295]", total)
		}
	default:
		return route, errors.New("route: cluster or weighted_clusters must be set")
	}
	if t := ra.GetTimeout(); t != nil {
		d, err := nonNegativeDuration(t)
		if err != nil {
			return route, fmt.Errorf("route.timeout: %w", err)
		}
		route.Timeout = d
	}
	if msd := ra.GetMaxStreamDuration().GetMaxStreamDuration(); msd != nil {
		d, err := nonNegativeDuration(msd)
		if err != nil {
			return route, fmt.Errorf("route.max_stream_duration.max_stream_duration: %w", err)
		}
		switch {
		case ra.GetTimeout() == nil:
			route.Timeout = d
		case d != route.Timeout:
			return route, fmt.Errorf("route.max_stream_duration.max_stream_duration: %s differs from route.timeout %s", d, route.Timeout)
		}
	}
	if rp := ra.GetRetryPolicy(); rp != nil {
		retry, err := buildRetry(rp)
		if err != nil {
			return route, fmt.Errorf("route.retry_policy.%w", err)
		}
		route.Retry = retry
	}
	return route, nil
}

func buildMatch(m *routev3.RouteMatch) (RouteMatch, error) {
	var out RouteMatch
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		return out, errors.New("case_sensitive: false is not supported")
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.PathKind, out.Path = PathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		out.PathKind, out.Path = PathExact, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileAnchored(p.SafeRegex.GetRegex())
		if err != nil {
			return out, fmt.Errorf("safe_regex: %w", err)
		}
		out.PathKind, out.Path, out.PathRegex = PathRegex, p.SafeRegex.GetRegex(), re
	default:
		return out, errors.New("path_specifier: prefix, path or safe_regex must be set")
	}
	if len(m.GetQueryParameters()) > 0 {
		return out, errors.New("query_parameters: not supported")
	}
	for i, h := range m.GetHeaders() {
		hm, err := buildHeaderMatch(h)
		if err != nil {
			return out, fmt.Errorf("headers[%d] (%q): %w", i, h.GetName(), err)
		}
		if hm.Name == ":method" {
			if hm.Kind != HeaderExact || hm.Invert || hm.IgnoreCase {
				return out, fmt.Errorf("headers[%d] (\":method\"): must be an exact, case-sensitive, non-inverted string_match", i)
			}
			if out.Method != "" {
				return out, fmt.Errorf("headers[%d] (\":method\"): method already matched", i)
			}
			out.Method = hm.Value
			continue
		}
		out.Headers = append(out.Headers, hm)
	}
	return out, nil
}

func buildHeaderMatch(h *routev3.HeaderMatcher) (HeaderMatch, error) {
	hm := HeaderMatch{Name: strings.ToLower(h.GetName()), Invert: h.GetInvertMatch()}
	switch spec := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		hm.Kind = HeaderPresent
		if !spec.PresentMatch {
			hm.Invert = !hm.Invert
		}
	case *routev3.HeaderMatcher_StringMatch:
		sm := spec.StringMatch
		hm.IgnoreCase = sm.GetIgnoreCase()
		switch p := sm.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			hm.Kind, hm.Value = HeaderExact, p.Exact
		case *matcherv3.StringMatcher_Prefix:
			hm.Kind, hm.Value = HeaderPrefix, p.Prefix
		case *matcherv3.StringMatcher_Suffix:
			hm.Kind, hm.Value = HeaderSuffix, p.Suffix
		case *matcherv3.StringMatcher_Contains:
			hm.Kind, hm.Value = HeaderContains, p.Contains
		case *matcherv3.StringMatcher_SafeRegex:
			src := p.SafeRegex.GetRegex()
			if hm.IgnoreCase {
				src = "(?i)" + src
			}
			re, err := compileAnchored(src)
			if err != nil {
				return hm, fmt.Errorf("string_match.safe_regex: %w", err)
			}
			hm.Kind, hm.Value, hm.Regex = HeaderRegex, p.SafeRegex.GetRegex(), re
		default:
			return hm, errors.New("string_match: exact, prefix, suffix, contains or safe_regex must be set")
		}
	default:
		return hm, errors.New("header_match_specifier: only string_match and present_match are supported")
	}
	return hm, nil
}

func buildRetry(rp *routev3.RetryPolicy) (*RetryPolicy, error) {
	out := &RetryPolicy{}
	for c := range strings.SplitSeq(rp.GetRetryOn(), ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if !retryConditions[c] {
			return nil, fmt.Errorf("retry_on: unknown condition %q", c)
		}
		out.On = append(out.On, c)
	}
	if len(out.On) == 0 {
		return nil, errors.New("retry_on: must name at least one condition")
	}
	n := rp.GetNumRetries()
	if n == nil || n.GetValue() < 1 {
		return nil, fmt.Errorf("num_retries: must be ≥ 1, got %d", n.GetValue())
	}
	out.NumRetries = n.GetValue()
	if pt := rp.GetPerTryTimeout(); pt != nil {
		d, err := nonNegativeDuration(pt)
		if err != nil {
			return nil, fmt.Errorf("per_try_timeout: %w", err)
		}
		out.PerTryTimeout = d
	}
	out.BackoffBase = defaultRetryBackoffBase
	if bo := rp.GetRetryBackOff(); bo != nil {
		d, err := positiveDuration(bo.GetBaseInterval())
		if err != nil {
			return nil, fmt.Errorf("retry_back_off.base_interval: %w", err)
		}
		out.BackoffBase = d
	}
	out.BackoffMax = retryBackoffMaxOverBaseFactor * out.BackoffBase
	if mi := rp.GetRetryBackOff().GetMaxInterval(); mi != nil {
		d, err := positiveDuration(mi)
		if err != nil {
			return nil, fmt.Errorf("retry_back_off.max_interval: %w", err)
		}
		if d < out.BackoffBase {
			return nil, fmt.Errorf("retry_back_off.max_interval: %s < base_interval %s", d, out.BackoffBase)
		}
		out.BackoffMax = d
	}
	for i, code := range rp.GetRetriableStatusCodes() {
		if code < 100 || code > 599 {
			return nil, fmt.Errorf("retriable_status_codes[%d]: %d is not an HTTP status", i, code)
		}
		out.RetriableStatusCodes = append(out.RetriableStatusCodes, code)
	}
	return out, nil
}

// applyMeshPolicy decodes causeway.mesh (when present) into the model.
func applyMeshPolicy(s *Snapshot, m *Model) error {
	ext, ok := s.ExtensionConfigs[MeshExtensionName]
	if !ok {
		return nil
	}
	wrap := func(err error) error {
		return fmt.Errorf("extension_config %q: %w", MeshExtensionName, err)
	}
	st := new(structpb.Struct)
	tc := ext.GetTypedConfig()
	if !tc.MessageIs(st) {
		return wrap(fmt.Errorf("typed_config: got %s, want a google.protobuf.Struct", tc.GetTypeUrl()))
	}
	if err := tc.UnmarshalTo(st); err != nil {
		return wrap(fmt.Errorf("typed_config: %w", err))
	}
	mp, err := decodeMeshPolicy(st)
	if err != nil {
		return wrap(err)
	}
	m.Fencing, m.Clock = mp.Fencing, mp.Clock
	for _, svcName := range sortedKeys(mp.Services) {
		ms := mp.Services[svcName]
		svc, ok := m.Services[svcName]
		if !ok {
			return wrap(fmt.Errorf("services.%s: no such service", svcName))
		}
		svc.Fencing = ms.Fencing
		svc.Authorization = ms.Authorization
		for _, routeName := range sortedKeys(ms.Routes) {
			idx := -1
			for i := range svc.Routes {
				if svc.Routes[i].Name == routeName {
					idx = i
					break
				}
			}
			if idx < 0 {
				return wrap(fmt.Errorf("services.%s.routes.%s: no route of that name in service %q", svcName, routeName, svcName))
			}
			mr := ms.Routes[routeName]
			svc.Routes[idx].Fault, svc.Routes[idx].RateLimit = mr.Fault, mr.RateLimit
		}
		m.Services[svcName] = svc
	}
	return nil
}

func compileAnchored(src string) (*regexp.Regexp, error) {
	return regexp.Compile("^(?:" + src + ")$")
}

func positiveDuration(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, errors.New("must be set")
	}
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	v := d.AsDuration()
	if v <= 0 {
		return 0, fmt.Errorf("must be > 0, got %s", v)
	}
	return v, nil
}

func nonNegativeDuration(d *durationpb.Duration) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("must be ≥ 0, got %s", v)
	}
	return v, nil
}
