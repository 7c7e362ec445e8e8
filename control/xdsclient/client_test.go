package xdsclient

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testNode = "node-orders-1"

// controlPlane is a real go-control-plane v0.14 server on loopback.
type controlPlane struct {
	addr   string
	cache  cachev3.SnapshotCache
	gs     *grpc.Server
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	nacks []*discoveryv3.DiscoveryRequest
	node  *corev3.Node // as sent on the first request of the last stream
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	var lis net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		lis, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the old listener's port is being released
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cp := &controlPlane{addr: lis.Addr().String(), cancel: cancel, done: make(chan struct{}),
		cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)}
	srv := sotwv3.NewServer(ctx, cp.cache, cp)
	cp.gs = grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: 5 * time.Second, PermitWithoutStream: true}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.gs, adsServer{sotw: srv})
	go func() {
		defer close(cp.done)
		_ = cp.gs.Serve(lis)
	}()
	t.Cleanup(cp.stop)
	return cp
}

// adsServer serves SotW ADS with go-control-plane's sotw server, exactly
// as serverv3.NewServer does. serverv3 itself also imports the ratelimit
// module, which this repository's go.sum does not list.
type adsServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	sotw sotwv3.Server
}

func (a adsServer) StreamAggregatedResources(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.sotw.StreamHandler(s, resourcev3.AnyType)
}

// OnStreamRequest records NACKs and the node of each stream, as a control
// plane's StreamRequestFunc callback would.
func (cp *controlPlane) OnStreamRequest(_ int64, req *discoveryv3.DiscoveryRequest) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if req.GetErrorDetail() != nil {
		cp.nacks = append(cp.nacks, req)
	}
	if req.GetNode() != nil {
		cp.node = req.GetNode()
	}
	return nil
}

func (cp *controlPlane) OnStreamOpen(context.Context, int64, string) error { return nil }
func (cp *controlPlane) OnStreamClosed(int64, *corev3.Node)                {}
func (cp *controlPlane) OnStreamResponse(context.Context, int64, *discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {
}

func (cp *controlPlane) stop() {
	cp.once.Do(func() {
		cp.gs.Stop()
		<-cp.done
		cp.cancel()
	})
}

func (cp *controlPlane) set(t *testing.T, version string, res map[resourcev3.Type][]types.Resource) {
	t.Helper()
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), testNode, snap); err != nil {
		t.Fatal(err)
	}
}

func (cp *controlPlane) nacksCopy() []*discoveryv3.DiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), cp.nacks...)
}

// recorder is the sidecar's side of Apply: it builds the Model and keeps
// the last good one.
type recorder struct {
	mu      sync.Mutex
	current *Model
	applied []string
}

func (r *recorder) apply() ApplyFunc {
	return ModelApplier(func(_ context.Context, m *Model) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.current = m
		r.applied = append(r.applied, m.Version)
		return nil
	})
}

func (r *recorder) model() *Model {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

func (r *recorder) versions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.applied...)
}

func startClient(t *testing.T, addr string, apply ApplyFunc, metrics Metrics) *Client {
	t.Helper()
	c, err := New(Config{
		ServerAddr: addr, NodeID: testNode, ServiceName: "orders", Zone: "z1", Version: "1.0.0",
		Apply: apply, Backoff: Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		RejectedResendDelay: 100 * time.Millisecond, Metrics: metrics,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Run returned %v, want nil after Close", err)
		}
	})
	return c
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func modelAt(r *recorder, version string) func() bool {
	return func() bool { m := r.model(); return m != nil && m.Version == version }
}

func TestAppliesConsistentSnapshotsAtomically(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "v1", meshResources(t))
	var applied atomic.Int64
	rec := &recorder{}
	c := startClient(t, cp.addr, rec.apply(), Metrics{UpdateApplied: func(string) { applied.Add(1) }})

	waitFor(t, "model v1", modelAt(rec, "v1"))
	m := rec.model()
	if got := len(m.Services); got != 2 {
		t.Fatalf("got %d services, want 2", got)
	}
	if f := m.Services["orders"].Routes[0].Fault; f == nil || f.AbortStatus != 503 {
		t.Errorf("orders/0 fault: got %+v, want abortStatus 503 from causeway.mesh", f)
	}

	// v2 removes payments everywhere and changes orders' endpoints.
	res := meshResources(t)
	res[resourcev3.ClusterType] = res[resourcev3.ClusterType][:1]
	res[resourcev3.EndpointType] = []types.Resource{makeCLA(t, "orders",
		testEndpoint{"z3", "127.0.0.9", 7009, 1, 4, "n9"})}
	res[resourcev3.ListenerType] = res[resourcev3.ListenerType][:1]
	rc := makeRouteConfig("orders", "orders")
	res[resourcev3.RouteType] = []types.Resource{rc}
	cp.set(t, "v2", res)
	waitFor(t, "model v2", modelAt(rec, "v2"))

	m = rec.model()
	if _, ok := m.Services["payments"]; ok || len(m.Services) != 1 {
		t.Fatalf("v2 services: got %d (payments present: %v), want only orders", len(m.Services), ok)
	}
	if eps := m.Services["orders"].Endpoints; len(eps) != 1 || eps[0].Addr != "127.0.0.9:7009" || eps[0].Weight != 4 {
		t.Errorf("v2 orders endpoints: got %+v, want one at 127.0.0.9:7009 weight 4", eps)
	}
	// Every apply saw a whole version: never a mix of v1 and v2.
	if got := rec.versions(); strings.Join(got, ",") != "v1,v2" {
		t.Errorf("applied versions: got %v, want [v1 v2]", got)
	}
	st := c.Status()
	if !st.Connected || st.AppliedVersion != "v2" || st.UpdatesApplied != 2 || applied.Load() != 2 {
		t.Errorf("status: got %+v (metric %d), want connected, v2 applied twice", st, applied.Load())
	}
	for _, typeURL := range TypeURLs() {
		if st.ACKed[typeURL] != "v2" {
			t.Errorf("ACKed[%s]: got %q, want v2", typeURL, st.ACKed[typeURL])
		}
	}
	cp.mu.Lock()
	node := cp.node
	cp.mu.Unlock()
	md := node.GetMetadata().GetFields()
	if node.GetId() != testNode || node.GetCluster() != "orders" ||
		md["zone"].GetStringValue() != "z1" || md["version"].GetStringValue() != "1.0.0" {
		t.Errorf("node: got %v, want id %s, cluster orders, metadata zone z1 and version 1.0.0", node, testNode)
	}
}

func TestApplyErrorIsNACKedAndPreviousKept(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "v1", meshResources(t))
	var nackMetric atomic.Int64
	rec := &recorder{}
	c := startClient(t, cp.addr, rec.apply(), Metrics{NACKSent: func(string) { nackMetric.Add(1) }})
	waitFor(t, "model v1", modelAt(rec, "v1"))

	bad := meshResources(t)
	// Valid protos (gRPC would NACK it too), semantically wrong: Apply's
	// BuildModel rejects it.
	rc := bad[resourcev3.RouteType][0].(*routev3.RouteConfiguration)
	rc.VirtualHosts[0].Routes[0].GetRoute().RetryPolicy.NumRetries = wrapperspb.UInt32(0)
	cp.set(t, "v2", bad)
	const want = `route_configuration "orders": route "orders/0": route.retry_policy.num_retries: must be ≥ 1, got 0`
	waitFor(t, "a NACK at the server", func() bool { return len(cp.nacksCopy()) > 0 })
	n := cp.nacksCopy()[0]
	if n.GetErrorDetail().GetMessage() != want || n.GetErrorDetail().GetCode() != int32(codes.InvalidArgument) {
		t.Errorf("NACK error detail: got %v, want INVALID_ARGUMENT %q", n.GetErrorDetail(), want)
	}
	if n.GetVersionInfo() != "v1" {
		t.Errorf("NACK version_info: got %q, want the last accepted v1", n.GetVersionInfo())
	}
	waitFor(t, "NACK in status", func() bool { return c.Status().LastNACK != nil })
	st := c.Status()
	if st.LastNACK.Version != "v2" || st.LastNACK.Error != want || st.AppliedVersion != "v1" {
		t.Errorf("status after NACK: got %+v / %+v, want v2 rejected with %q and v1 applied", st, st.LastNACK, want)
	}
	if m := rec.model(); m.Version != "v1" {
		t.Errorf("model after NACK: got %s, want v1 kept", m.Version)
	}
	if nackMetric.Load() == 0 {
		t.Error("NACKSent metric not called")
	}

	cp.set(t, "v3", meshResources(t))
	waitFor(t, "model v3", modelAt(rec, "v3"))
	if got := rec.versions(); strings.Join(got, ",") != "v1,v3" {
		t.Errorf("applied versions: got %v, want [v1 v3]", got)
	}
	// The resend loop of a NACKed version is throttled: go-control-plane
	// resends at once, the client answers each type at most every 100ms.
	if got := len(cp.nacksCopy()); got > 5*20 {
		t.Errorf("server saw %d NACKs, want the resend loop throttled", got)
	}
}

func TestUnparseableResourceIsNACKedWithoutApply(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "v1", meshResources(t))
	var calls atomic.Int64
	rec := &recorder{}
	inner := rec.apply()
	c := startClient(t, cp.addr, func(ctx context.Context, s *Snapshot) error {
		calls.Add(1)
		return inner(ctx, s)
	}, Metrics{})
	waitFor(t, "model v1", modelAt(rec, "v1"))

	bad := meshResources(t)
	bad[resourcev3.ClusterType][1].(*clusterv3.Cluster).ConnectTimeout = durationpb.New(-time.Second)
	cp.set(t, "v2", bad)
	waitFor(t, "a NACK for the cluster type", func() bool {
		for _, n := range cp.nacksCopy() {
			if n.GetTypeUrl() == resourcev3.ClusterType {
				return true
			}
		}
		return false
	})
	waitFor(t, "NACK in status", func() bool { return c.Status().LastNACK != nil })
	msg := c.Status().LastNACK.Error
	if !strings.HasPrefix(msg, `cluster "payments": invalid Cluster.ConnectTimeout: value must be greater than 0s`) {
		t.Errorf("NACK message: got %q, want the validation error naming cluster payments", msg)
	}
	if calls.Load() != 1 || rec.model().Version != "v1" {
		t.Errorf("Apply calls: got %d (model %s), want 1 and v1 kept", calls.Load(), rec.model().Version)
	}
}

func TestWaitsForEndpointsOfANewCluster(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	full := meshResources(t)
	// v1 has only orders.
	v1 := meshResources(t)
	v1[resourcev3.ClusterType] = v1[resourcev3.ClusterType][:1]
	v1[resourcev3.EndpointType] = v1[resourcev3.EndpointType][:1]
	v1[resourcev3.ListenerType] = v1[resourcev3.ListenerType][:1]
	v1[resourcev3.RouteType] = []types.Resource{makeRouteConfig("orders", "orders")}
	cp.set(t, "v1", v1)
	rec := &recorder{}
	c := startClient(t, cp.addr, rec.apply(), Metrics{})
	waitFor(t, "model v1", modelAt(rec, "v1"))

	// v2: CDS, LDS and RDS add payments, but its endpoints are not there yet.
	v2 := meshResources(t)
	v2[resourcev3.EndpointType] = full[resourcev3.EndpointType][:1]
	cp.set(t, "v2", v2)
	const wantWaiting = `cluster "payments" waits for cluster_load_assignment "payments"`
	waitFor(t, "the client to wait for payments' endpoints", func() bool {
		return strings.Contains(c.Status().Waiting, wantWaiting)
	})
	if m := rec.model(); m.Version != "v1" {
		t.Fatalf("model while waiting: got %s, want v1", m.Version)
	}
	if n := cp.nacksCopy(); len(n) != 0 {
		t.Fatalf("an incomplete snapshot was NACKed: %v", n[0].GetErrorDetail())
	}

	// v3: the endpoints arrive.
	cp.set(t, "v3", full)
	waitFor(t, "model v3", modelAt(rec, "v3"))
	if eps := rec.model().Services["payments"].Endpoints; len(eps) != 1 {
		t.Errorf("payments endpoints: got %d, want 1", len(eps))
	}
	if got := rec.versions(); strings.Join(got, ",") != "v1,v3" {
		t.Errorf("applied versions: got %v, want [v1 v3]", got)
	}
	if w := c.Status().Waiting; w != "" {
		t.Errorf("Waiting after apply: got %q, want empty", w)
	}
}

func TestReconnectsAfterControlPlaneRestart(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "v1", meshResources(t))
	var reconnects atomic.Int64
	rec := &recorder{}
	c := startClient(t, cp.addr, rec.apply(), Metrics{Reconnect: func() { reconnects.Add(1) }})
	waitFor(t, "model v1", modelAt(rec, "v1"))

	cp.stop()
	waitFor(t, "disconnected status", func() bool { return !c.Status().Connected })
	if m := rec.model(); m == nil || m.Version != "v1" {
		t.Fatalf("model while the control plane is away: got %v, want v1 kept", m)
	}

	cp2 := startControlPlane(t, cp.addr)
	cp2.set(t, "v2", meshResources(t))
	waitFor(t, "model v2 after reconnect", modelAt(rec, "v2"))
	st := c.Status()
	if !st.Connected || st.Reconnects < 1 || reconnects.Load() < 1 {
		t.Errorf("status after restart: got %+v (metric %d), want connected with ≥1 reconnect", st, reconnects.Load())
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "v1", meshResources(t))
	rec := &recorder{}
	c, err := New(Config{ServerAddr: cp.addr, NodeID: testNode, ServiceName: "orders", Apply: rec.apply(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background()) }()
	waitFor(t, "model v1", modelAt(rec, "v1"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("Run after Close succeeded, want an error")
	}
	cp.stop()
	goleak.VerifyNone(t)
}

func TestRunStopsWithContext(t *testing.T) {
	// Nothing listens here: the client keeps backing off until ctx ends.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c, err := New(Config{ServerAddr: addr, NodeID: "n", ServiceName: "s",
		Apply:  func(context.Context, *Snapshot) error { return errors.New("unreachable") },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v, want nil on context end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if st := c.Status(); st.Connected || st.AppliedVersion != "" {
		t.Errorf("status: got %+v, want disconnected with nothing applied", st)
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	_, err := New(Config{ServerAddr: "127.0.0.1:1"})
	const want = "xdsclient: config: NodeID, ServiceName, Apply must be set"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}
