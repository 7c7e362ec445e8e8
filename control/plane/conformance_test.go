package plane

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/xds"
)

// TestProxylessGRPCConformance: grpc-go's own xDS client resolves
// xds:///echo through the control plane and calls a real gRPC health
// server, with a route (retries, timeouts) and a backend policy (limits,
// outlier detection, breaker metadata) applied, so gRPC's strict
// validation accepts every resource type Causeway emits.
func TestProxylessGRPCConformance(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := grpc.NewServer()
	healthpb.RegisterHealthServer(hs, health.NewServer())
	go func() { _ = hs.Serve(lis) }()
	defer hs.Stop()

	mesh := membership.NewStatic([]membership.Instance{
		{Node: "echo-1", Service: "echo", Addr: lis.Addr().String(), Zone: "z1", Weight: 1, Health: membership.Healthy},
		{Node: "other-1", Service: "other", Addr: "127.0.0.1:1", Weight: 1, Health: membership.Draining},
	})
	p := startPlane(t, testConfig(t), WithMembership(mesh))
	apply(t, p, "httproutes", "echo", `apiVersion: causeway.dev/v1alpha1
kind: HTTPRoute
metadata: {name: echo}
spec:
  parentRefs: [{name: echo}]
  rules:
  - name: health
    matches:
    - path: {type: PathPrefix, value: /grpc.health.v1.Health/}
      headers: [{name: x-tenant, type: RegularExpression, value: "[a-z]+"}]
    - path: {type: Exact, value: /grpc.health.v1.Health/Check}
    timeouts: {request: 5s, backendRequest: 2s}
    retry: {attempts: 2, backoff: 10ms, codes: [503]}
    fault: {delay: {percent: 0, duration: 1ms}}
    backendRefs: [{name: echo, weight: 100}, {name: other, weight: 0}]
`)
	apply(t, p, "backendpolicies", "echo", `apiVersion: causeway.dev/v1alpha1
kind: BackendPolicy
metadata: {name: echo}
spec:
  targetRef: {name: echo}
  connectTimeout: 1s
  loadBalancer: {type: round-robin}
  limits: {maxRequests: 100, maxConnections: 10}
  circuitBreaker: {consecutiveFailures: 5, openFor: 10s}
  outlierDetection: {consecutive5xx: 5, interval: 1s, baseEjectionTime: 10s, maxEjectionPercent: 50}
  retryBudget: {percent: 20, minRetryConcurrency: 2}
`)
	if err := p.XDS().Rebuild(); err != nil {
		t.Fatalf("build: %v", err)
	}

	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"grpc-client-1"}}`, p.XDSAddr())
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///echo", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Health/Check through xds:///echo: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("got %v, want SERVING", resp.GetStatus())
	}
	// gRPC ACKed everything it was sent.
	waitFor(t, "grpc-client-1 SYNCED", func() bool {
		ps, ok := p.XDS().Proxy("grpc-client-1")
		return ok && ps.State == xds.Synced && ps.Error == ""
	})
}
