package xdsclient

import (
	"encoding/json"
	"testing"
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
)

// The fixtures build resources exactly as the xDS contract in doc.go says
// the control plane does.

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustStruct(t testing.TB, js string) *structpb.Struct {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("fixture JSON %s: %v", js, err)
	}
	st, err := structpb.NewStruct(v)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func makeCluster(t testing.TB, name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{ServiceName: name, EdsConfig: adsSource()},
		LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
		ConnectTimeout:       durationpb.New(2 * time.Second),
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(100), MaxPendingRequests: wrapperspb.UInt32(50),
			MaxRequests: wrapperspb.UInt32(200), MaxRetries: wrapperspb.UInt32(10),
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent: &typev3.Percent{Value: 25}, MinRetryConcurrency: wrapperspb.UInt32(2),
			},
		}}},
		OutlierDetection: &clusterv3.OutlierDetection{
			Consecutive_5Xx: wrapperspb.UInt32(7), ConsecutiveGatewayFailure: wrapperspb.UInt32(3),
			Interval: durationpb.New(5 * time.Second), BaseEjectionTime: durationpb.New(20 * time.Second),
			MaxEjectionTime: durationpb.New(time.Minute), MaxEjectionPercent: wrapperspb.UInt32(50),
		},
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: mustStruct(t,
			`{"breaker": {"consecutiveFailures": 5, "failureRatio": 0.5, "minRequests": 20, "window": "10s", "openFor": "30s", "halfOpenProbes": 2},
			  "retryBudget": {"minPerSecond": 10, "window": "10s"}}`)}},
	}
}

type testEndpoint struct {
	zone, host string
	port       uint32
	health     corev3.HealthStatus
	weight     uint32
	node       string
}

func makeCLA(t testing.TB, name string, eps ...testEndpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	byZone := map[string]*endpointv3.LocalityLbEndpoints{}
	for _, ep := range eps {
		loc, ok := byZone[ep.zone]
		if !ok {
			loc = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: ep.zone}, LoadBalancingWeight: wrapperspb.UInt32(1)}
			byZone[ep.zone] = loc
			cla.Endpoints = append(cla.Endpoints, loc)
		}
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: ep.host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: ep.port}}}}}},
			HealthStatus:        ep.health,
			LoadBalancingWeight: wrapperspb.UInt32(ep.weight),
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: mustStruct(t,
				`{"node": "`+ep.node+`", "version": "v1.2.0"}`)}},
		})
	}
	return cla
}

func makeHCM(t testing.TB, routeName string) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix: routeName,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName, ConfigSource: adsSource()}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: wellknown.Router,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
	}
}

func makeListener(t testing.TB, name string) *listenerv3.Listener {
	hcm := mustAny(t, makeHCM(t, name))
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: hcm},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: wellknown.HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
}

func clusterAction(name string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}}
}

// makeRouteConfig has a canary rule "S/0" (POST /api/ with a header and a
// weighted split to S and canary), then the default route "S/default".
func makeRouteConfig(name, canary string) *routev3.RouteConfiguration {
	first := &routev3.Route{
		Name: name + "/0",
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api/"},
			Headers: []*routev3.HeaderMatcher{
				{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "POST"}}}},
				{Name: "X-Tenant", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "t-[0-9]+"}}}}},
			},
		},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: name, Weight: wrapperspb.UInt32(90)}, {Name: canary, Weight: wrapperspb.UInt32(10)}}}},
			Timeout: durationpb.New(3 * time.Second),
			MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{
				MaxStreamDuration: durationpb.New(3 * time.Second)},
			RetryPolicy: &routev3.RetryPolicy{
				RetryOn: "5xx,connect-failure", NumRetries: wrapperspb.UInt32(2),
				PerTryTimeout: durationpb.New(time.Second),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
					BaseInterval: durationpb.New(50 * time.Millisecond), MaxInterval: durationpb.New(time.Second)},
				RetriableStatusCodes: []uint32{503},
			},
		}},
	}
	last := &routev3.Route{
		Name:   name + "/default",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: clusterAction(name),
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: name, Domains: []string{name, name + ":*"}, Routes: []*routev3.Route{first, last}}}}
}

const goodMeshJSON = `{"services": {"orders": {"routes": {"orders/0": {
	"fault": {"delayPercent": 10, "delay": "100ms", "abortPercent": 5, "abortStatus": 503, "abortGrpcStatus": 14},
	"rateLimit": {"perSecond": 100, "burst": 20}}}, "fencing": {}}}, "fencing": {}, "clock": {}}`

func makeMeshExt(t testing.TB, js string) *corev3.TypedExtensionConfig {
	return &corev3.TypedExtensionConfig{Name: MeshExtensionName, TypedConfig: mustAny(t, mustStruct(t, js))}
}

// meshResources returns the contract's resources for orders (with a
// canary route to payments) and payments.
func meshResources(t testing.TB) map[resourcev3.Type][]types.Resource {
	return map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType: {makeCluster(t, "orders"), makeCluster(t, "payments")},
		resourcev3.EndpointType: {
			makeCLA(t, "orders",
				testEndpoint{"z1", "127.0.0.1", 7001, corev3.HealthStatus_HEALTHY, 1, "n1"},
				testEndpoint{"z2", "127.0.0.2", 7001, corev3.HealthStatus_DRAINING, 3, "n2"}),
			makeCLA(t, "payments", testEndpoint{"z1", "127.0.0.3", 7002, corev3.HealthStatus_UNHEALTHY, 1, "n3"}),
		},
		resourcev3.ListenerType:        {makeListener(t, "orders"), makeListener(t, "payments")},
		resourcev3.RouteType:           {makeRouteConfig("orders", "payments"), makeRouteConfig("payments", "orders")},
		resourcev3.ExtensionConfigType: {makeMeshExt(t, goodMeshJSON)},
	}
}

// snapshotFrom turns resources into the client-side Snapshot.
func snapshotFrom(t testing.TB, version string, res map[resourcev3.Type][]types.Resource) *Snapshot {
	t.Helper()
	var versions [numKinds]string
	var decoded [numKinds]map[string]proto.Message
	for k := range numKinds {
		versions[k] = version
		decoded[k] = map[string]proto.Message{}
		for _, r := range res[kindInfo[k].typeURL] {
			decoded[k][kindInfo[k].name(r)] = r
		}
	}
	return newSnapshot(version, versions, decoded)
}
