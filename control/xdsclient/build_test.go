package xdsclient

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestBuildModelGood(t *testing.T) {
	m, err := BuildModel(snapshotFrom(t, "v7", meshResources(t)))
	if err != nil {
		t.Fatalf("BuildModel: %v", err)
	}
	if m.Version != "v7" || len(m.Services) != 2 {
		t.Fatalf("got version %q with %d services, want v7 with 2", m.Version, len(m.Services))
	}
	want := Service{
		Name: "orders",
		Endpoints: []Endpoint{
			{Addr: "127.0.0.1:7001", Health: HealthHealthy, Weight: 1, Zone: "z1", Node: "n1", Version: "v1.2.0"},
			{Addr: "127.0.0.2:7001", Health: HealthDraining, Weight: 3, Zone: "z2", Node: "n2", Version: "v1.2.0"},
		},
		LB:             LBPeakEWMA,
		ConnectTimeout: 2 * time.Second,
		Limits:         ConnectionLimits{MaxConnections: 100, MaxPendingRequests: 50, MaxRequests: 200, MaxRetries: 10},
		RetryBudget:    &RetryBudget{BudgetPercent: 25, MinRetryConcurrency: 2, MinPerSecond: 10, Window: 10 * time.Second},
		Outlier: &OutlierDetection{Consecutive5xx: 7, ConsecutiveGatewayFailure: 3, Interval: 5 * time.Second,
			BaseEjectionTime: 20 * time.Second, MaxEjectionTime: time.Minute, MaxEjectionPercent: 50},
		Breaker: &BreakerSettings{ConsecutiveFailures: 5, FailureRatio: 0.5, MinRequests: 20,
			Window: 10 * time.Second, OpenFor: 30 * time.Second, HalfOpenProbes: 2},
		Routes: []Route{
			{
				Name: "orders/0",
				Match: RouteMatch{PathKind: PathPrefix, Path: "/api/", Method: "POST",
					Headers: []HeaderMatch{{Name: "x-tenant", Kind: HeaderRegex, Value: "t-[0-9]+"}}},
				Backends: []WeightedBackend{{Service: "orders", Weight: 90}, {Service: "payments", Weight: 10}},
				Timeout:  3 * time.Second,
				Retry: &RetryPolicy{On: []string{"5xx", "connect-failure"}, NumRetries: 2, PerTryTimeout: time.Second,
					BackoffBase: 50 * time.Millisecond, BackoffMax: time.Second, RetriableStatusCodes: []uint32{503}},
				Fault: &FaultPolicy{DelayPercent: 10, Delay: Duration(100 * time.Millisecond), AbortPercent: 5,
					AbortStatus: 503, AbortGRPCStatus: 14},
				RateLimit: &RateLimit{PerSecond: 100, Burst: 20},
			},
			{
				Name:     "orders/default",
				Match:    RouteMatch{PathKind: PathPrefix, Path: "/"},
				Backends: []WeightedBackend{{Service: "orders", Weight: 1}},
			},
		},
	}
	opts := cmpopts.IgnoreFields(HeaderMatch{}, "Regex")
	if diff := cmp.Diff(want, m.Services["orders"], opts, cmpopts.IgnoreFields(RouteMatch{}, "PathRegex")); diff != "" {
		t.Errorf("orders service mismatch (-want +got):\n%s", diff)
	}
	re := m.Services["orders"].Routes[0].Match.Headers[0].Regex
	if re == nil || !re.MatchString("t-42") || re.MatchString("xt-42") {
		t.Errorf("header regex %v: want a fully anchored match of t-[0-9]+", re)
	}
	if got := m.Services["payments"].Endpoints[0].Health; got != HealthUnhealthy {
		t.Errorf("payments endpoint health: got %v, want unhealthy", got)
	}
}

func TestBuildModelErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, s *Snapshot)
		want   string
	}{
		{
			name: "outlier ejection percent above 100",
			mutate: func(t *testing.T, s *Snapshot) {
				s.Clusters["orders"].OutlierDetection.MaxEjectionPercent = wrapperspb.UInt32(120)
			},
			want: `cluster "orders": outlier_detection.max_ejection_percent: 120 > 100`,
		},
		{
			name: "max ejection time below base",
			mutate: func(t *testing.T, s *Snapshot) {
				s.Clusters["orders"].OutlierDetection.MaxEjectionTime = durationpb.New(time.Second)
			},
			want: `cluster "orders": outlier_detection.max_ejection_time: 1s < base_ejection_time 20s`,
		},
		{
			name:   "unsupported lb policy",
			mutate: func(t *testing.T, s *Snapshot) { s.Clusters["orders"].LbPolicy = clusterv3.Cluster_RING_HASH },
			want:   `cluster "orders": lb_policy: RING_HASH is not supported, want ROUND_ROBIN or LEAST_REQUEST`,
		},
		{
			name: "static cluster",
			mutate: func(t *testing.T, s *Snapshot) {
				s.Clusters["payments"].ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
			},
			want: `cluster "payments": type: STATIC is not supported, want EDS`,
		},
		{
			name: "failure ratio above 1 in causeway metadata",
			mutate: func(t *testing.T, s *Snapshot) {
				s.Clusters["orders"].Metadata.FilterMetadata[MetadataKey] = mustStruct(t, `{"breaker": {"failureRatio": 2}}`)
			},
			want: `cluster "orders": metadata.filter_metadata.causeway.breaker.failureRatio: 2 is outside [0, 1]`,
		},
		{
			name: "unknown key in causeway metadata",
			mutate: func(t *testing.T, s *Snapshot) {
				s.Clusters["orders"].Metadata.FilterMetadata[MetadataKey] = mustStruct(t, `{"breaker": {"openFr": "1s"}}`)
			},
			want: `cluster "orders": metadata.filter_metadata.causeway: json: unknown field "openFr"`,
		},
		{
			name: "bad duration in causeway metadata",
			mutate: func(t *testing.T, s *Snapshot) {
				s.Clusters["orders"].Metadata.FilterMetadata[MetadataKey] = mustStruct(t, `{"breaker": {"window": 10}}`)
			},
			want: `cluster "orders": metadata.filter_metadata.causeway: want a duration string such as "100ms", got 10`,
		},
		{
			name: "locality without weight",
			mutate: func(t *testing.T, s *Snapshot) {
				s.Endpoints["orders"].Endpoints[1].LoadBalancingWeight = nil
			},
			want: `cluster_load_assignment "orders": endpoints[1].load_balancing_weight: must be ≥ 1 (gRPC drops localities without weight)`,
		},
		{
			name:   "no locality",
			mutate: func(t *testing.T, s *Snapshot) { s.Endpoints["orders"].Endpoints[0].Locality = nil },
			want:   `cluster_load_assignment "orders": endpoints[0].locality: must be set`,
		},
		{
			name: "duplicate endpoint address",
			mutate: func(t *testing.T, s *Snapshot) {
				loc := s.Endpoints["orders"].Endpoints[0]
				loc.LbEndpoints = append(loc.LbEndpoints, loc.LbEndpoints[0])
			},
			want: `cluster_load_assignment "orders": endpoints[0].lb_endpoints[1].endpoint.address: 127.0.0.1:7001 is also endpoints[0].lb_endpoints[0]`,
		},
		{
			name: "degraded endpoint",
			mutate: func(t *testing.T, s *Snapshot) {
				s.Endpoints["payments"].Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_DEGRADED
			},
			want: `cluster_load_assignment "payments": endpoints[0].lb_endpoints[0].health_status: DEGRADED is not supported`,
		},
		{
			name: "zero retries",
			mutate: func(t *testing.T, s *Snapshot) {
				route(s, "orders", 0).GetRoute().RetryPolicy.NumRetries = wrapperspb.UInt32(0)
			},
			want: `route_configuration "orders": route "orders/0": route.retry_policy.num_retries: must be ≥ 1, got 0`,
		},
		{
			name:   "unknown retry condition",
			mutate: func(t *testing.T, s *Snapshot) { route(s, "orders", 0).GetRoute().RetryPolicy.RetryOn = "5xx,5xxx" },
			want:   `route_configuration "orders": route "orders/0": route.retry_policy.retry_on: unknown condition "5xxx"`,
		},
		{
			name: "retry max interval below base",
			mutate: func(t *testing.T, s *Snapshot) {
				route(s, "orders", 0).GetRoute().RetryPolicy.RetryBackOff.MaxInterval = durationpb.New(time.Millisecond)
			},
			want: `route_configuration "orders": route "orders/0": route.retry_policy.retry_back_off.max_interval: 1ms < base_interval 50ms`,
		},
		{
			name: "max stream duration differs from timeout",
			mutate: func(t *testing.T, s *Snapshot) {
				route(s, "orders", 0).GetRoute().MaxStreamDuration.MaxStreamDuration = durationpb.New(time.Second)
			},
			want: `route_configuration "orders": route "orders/0": route.max_stream_duration.max_stream_duration: 1s differs from route.timeout 3s`,
		},
		{
			name: "bad path regex",
			mutate: func(t *testing.T, s *Snapshot) {
				route(s, "orders", 1).Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/a(b"}}
			},
			want: "route_configuration \"orders\": route \"orders/default\": match.safe_regex: error parsing regexp: missing closing ): `^(?:/a(b)$`",
		},
		{
			name:   "inverted method matcher",
			mutate: func(t *testing.T, s *Snapshot) { route(s, "orders", 0).Match.Headers[0].InvertMatch = true },
			want:   `route_configuration "orders": route "orders/0": match.headers[0] (":method"): must be an exact, case-sensitive, non-inverted string_match`,
		},
		{
			name: "weighted cluster naming an unknown cluster",
			mutate: func(t *testing.T, s *Snapshot) {
				route(s, "orders", 0).GetRoute().GetWeightedClusters().Clusters[1].Name = "billing"
			},
			want: `route_configuration "orders": route "orders/0": route.weighted_clusters.clusters[1].name: unknown cluster "billing"`,
		},
		{
			name:   "duplicate route name",
			mutate: func(t *testing.T, s *Snapshot) { route(s, "payments", 1).Name = "payments/0" },
			want:   `route_configuration "payments": virtual_hosts[0].routes[1].name: "payments/0" is also routes[0]`,
		},
		{
			name:   "cluster without listener",
			mutate: func(t *testing.T, s *Snapshot) { delete(s.Listeners, "payments") },
			want:   `service "payments": no listener of the same name`,
		},
		{
			name: "mesh policy with an unknown key",
			mutate: func(t *testing.T, s *Snapshot) {
				s.ExtensionConfigs[MeshExtensionName] = makeMeshExt(t, `{"services": {"orders": {"routes": {"orders/0": {"fault": {"delayPct": 10}}}}}}`)
			},
			want: `extension_config "causeway.mesh": services.orders.routes.orders/0: json: unknown field "delayPct"`,
		},
		{
			name: "mesh policy percent above 100",
			mutate: func(t *testing.T, s *Snapshot) {
				s.ExtensionConfigs[MeshExtensionName] = makeMeshExt(t, `{"services": {"orders": {"routes": {"orders/0": {"fault": {"abortPercent": 150, "abortStatus": 503}}}}}}`)
			},
			want: `extension_config "causeway.mesh": services.orders.routes.orders/0.fault.abortPercent: 150 is outside [0, 100]`,
		},
		{
			name: "mesh policy abort without a status",
			mutate: func(t *testing.T, s *Snapshot) {
				s.ExtensionConfigs[MeshExtensionName] = makeMeshExt(t, `{"services": {"orders": {"routes": {"orders/0": {"fault": {"abortPercent": 5}}}}}}`)
			},
			want: `extension_config "causeway.mesh": services.orders.routes.orders/0.fault.abortStatus: abortPercent is set but neither abortStatus nor abortGrpcStatus is`,
		},
		{
			name: "mesh policy rate limit without burst",
			mutate: func(t *testing.T, s *Snapshot) {
				s.ExtensionConfigs[MeshExtensionName] = makeMeshExt(t, `{"services": {"orders": {"routes": {"orders/0": {"rateLimit": {"perSecond": 5}}}}}}`)
			},
			want: `extension_config "causeway.mesh": services.orders.routes.orders/0.rateLimit.burst: must be ≥ 1, got 0`,
		},
		{
			name: "mesh policy for an unknown route",
			mutate: func(t *testing.T, s *Snapshot) {
				s.ExtensionConfigs[MeshExtensionName] = makeMeshExt(t, `{"services": {"orders": {"routes": {"orders/9": {}}}}}`)
			},
			want: `extension_config "causeway.mesh": services.orders.routes.orders/9: no route of that name in service "orders"`,
		},
		{
			name: "mesh policy for an unknown service",
			mutate: func(t *testing.T, s *Snapshot) {
				s.ExtensionConfigs[MeshExtensionName] = makeMeshExt(t, `{"services": {"billing": {}}}`)
			},
			want: `extension_config "causeway.mesh": services.billing: no such service`,
		},
		{
			name: "fencing with an unknown key",
			mutate: func(t *testing.T, s *Snapshot) {
				s.ExtensionConfigs[MeshExtensionName] = makeMeshExt(t, `{"fencing": {"mode": "on", "quorum": 3}}`)
			},
			want: `extension_config "causeway.mesh": fencing: json: unknown field "quorum"`,
		},
		{
			name: "mesh policy that is not a Struct",
			mutate: func(t *testing.T, s *Snapshot) {
				s.ExtensionConfigs[MeshExtensionName].TypedConfig = mustAny(t, wrapperspb.String("x"))
			},
			want: `extension_config "causeway.mesh": typed_config: got type.googleapis.com/google.protobuf.StringValue, want a google.protobuf.Struct`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshotFrom(t, "v1", meshResources(t))
			tc.mutate(t, s)
			m, err := BuildModel(s)
			if err == nil {
				t.Fatalf("BuildModel succeeded with %d services, want error %q", len(m.Services), tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error mismatch\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}

func route(s *Snapshot, service string, i int) *routev3.Route {
	return s.Routes[service].VirtualHosts[0].Routes[i]
}

func TestDecodeMeshPolicyEmpty(t *testing.T) {
	mp, err := decodeMeshPolicy(&structpb.Struct{})
	if err != nil || len(mp.Services) != 0 {
		t.Fatalf("empty policy: got %v, %v; want no services and no error", mp, err)
	}
}

func BenchmarkBuildModel(b *testing.B) {
	s := snapshotFrom(b, "v1", meshResources(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildModel(s); err != nil {
			b.Fatal(err)
		}
	}
}
