package xds

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/translate"
)

// fixture is a Server whose input the test changes.
type fixture struct {
	srv    *Server
	addr   string
	mu     sync.Mutex
	extra  []string // services to translate
	pushes atomic.Int64
	builds atomic.Int64
}

func newFixture(t *testing.T, debounce, debounceMax time.Duration) *fixture {
	t.Helper()
	f := &fixture{extra: []string{"alpha"}}
	srv, err := New(Config{
		Build: func(services []string) (*translate.Output, error) {
			f.builds.Add(1)
			f.mu.Lock()
			svcs := append(slices.Clone(f.extra), services...)
			f.mu.Unlock()
			return translate.Translate(translate.Input{Services: svcs, Instances: []membership.Instance{
				{Node: "alpha-1", Service: "alpha", Addr: "127.0.0.1:9", Weight: 1, Health: membership.Healthy},
			}})
		},
		Debounce: debounce, DebounceMax: debounceMax,
		OnPush: func(string, int) { f.pushes.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); gs.Stop(); <-done })
	f.addr = lis.Addr().String()
	waitFor(t, "first build", func() bool { return srv.Build().Version != "" })
	return f
}

func (f *fixture) addService(s string) {
	f.mu.Lock()
	f.extra = append(f.extra, s)
	f.mu.Unlock()
	f.srv.Trigger()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// sotwClient is a raw SotW ADS client for one type.
type sotwClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	acked  string
	typ    string
}

func newSotW(t *testing.T, ctx context.Context, addr, nodeID, service, typ string) *sotwClient {
	t.Helper()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, addr)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: st, node: &corev3.Node{Id: nodeID, Cluster: service}, typ: typ}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: typ}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *sotwClient) recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	r, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return r
}

func (c *sotwClient) ack(r *discoveryv3.DiscoveryResponse) {
	c.t.Helper()
	c.acked = r.GetVersionInfo()
	if err := c.stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: c.typ, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *sotwClient) nack(r *discoveryv3.DiscoveryResponse, msg string) {
	c.t.Helper()
	if err := c.stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: c.typ, VersionInfo: c.acked, ResponseNonce: r.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: 3, Message: msg}}); err != nil {
		c.t.Fatal(err)
	}
}

func clusterNames(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var names []string
	for _, a := range r.GetResources() {
		c := &clusterv3.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			t.Fatal(err)
		}
		names = append(names, c.GetName())
	}
	slices.Sort(names)
	return names
}

func TestSotWClientReceivesSnapshot(t *testing.T) {
	f := newFixture(t, 20*time.Millisecond, 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := newSotW(t, ctx, f.addr, "beta-1", "beta", resourcev3.ClusterType)
	r := c.recv()
	if got := clusterNames(t, r); !slices.Equal(got, []string{"alpha"}) {
		t.Errorf("first response: got %v, want [alpha]", got)
	}
	c.ack(r)
	// The node's own service is added by a rebuild it triggered.
	r = c.recv()
	if got := clusterNames(t, r); !slices.Equal(got, []string{"alpha", "beta"}) {
		t.Errorf("second response: got %v, want [alpha beta]", got)
	}
	c.ack(r)
	waitFor(t, "SYNCED", func() bool {
		ps, ok := f.srv.Proxy("beta-1")
		return ok && ps.State == Synced && ps.Version == r.GetVersionInfo() && ps.Service == "beta"
	})
}

func TestDeltaClientReceivesSnapshot(t *testing.T) {
	f := newFixture(t, 20*time.Millisecond, 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, f.addr)).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "delta-1"}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "alpha" || r.GetSystemVersionInfo() == "" {
		t.Fatalf("got %d resources (version %q), want cluster alpha", len(r.GetResources()), r.GetSystemVersionInfo())
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SYNCED", func() bool {
		ps, ok := f.srv.Proxy("delta-1")
		return ok && ps.State == Synced
	})
	// A change reaches the delta client as just the new resource.
	f.addService("gamma")
	r, err = st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "gamma" {
		t.Errorf("got %v, want only the new cluster gamma", r.GetResources())
	}
}

// TestNackIsNotResentAndRollsBack: after a NACK the rejected version is
// not sent again (one rollback response in a bounded window, not a
// storm), the status shows NACKED with the error, and the node gets the
// last version it accepted under a new version string.
func TestNackIsNotResentAndRollsBack(t *testing.T) {
	f := newFixture(t, 20*time.Millisecond, 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := newSotW(t, ctx, f.addr, "n1", "", resourcev3.ClusterType)
	good := c.recv()
	c.ack(good)
	f.addService("bad")
	bad := c.recv()
	if got := clusterNames(t, bad); !slices.Contains(got, "bad") {
		t.Fatalf("got %v, want the new cluster", got)
	}
	c.nack(bad, "cluster bad: something the proxy refuses")

	// Count responses for a bounded period after the NACK.
	responses := make(chan *discoveryv3.DiscoveryResponse, 10000)
	go func() {
		for {
			r, err := c.stream.Recv()
			if err != nil {
				close(responses)
				return
			}
			responses <- r
		}
	}()
	var got []*discoveryv3.DiscoveryResponse
	window := time.After(500 * time.Millisecond)
collect:
	for {
		select {
		case r, ok := <-responses:
			if !ok {
				break collect
			}
			got = append(got, r)
		case <-window:
			break collect
		}
	}
	if len(got) == 0 || len(got) > 2 {
		t.Fatalf("got %d responses in 500ms after the NACK, want the rollback only (1, or 2 when it races the watch)", len(got))
	}
	for _, r := range got {
		if r.GetVersionInfo() == bad.GetVersionInfo() {
			t.Fatalf("the NACKed version %s was resent", bad.GetVersionInfo())
		}
		if names := clusterNames(t, r); !slices.Equal(names, clusterNames(t, good)) {
			t.Errorf("rollback has %v, want the accepted set %v", names, clusterNames(t, good))
		}
	}
	rollback := got[len(got)-1]
	c.ack(rollback)
	waitFor(t, "NACKED status", func() bool {
		ps, _ := f.srv.Proxy("n1")
		return ps.State == Nacked && ps.Error == "cluster bad: something the proxy refuses" &&
			ps.Version == rollback.GetVersionInfo() && ps.Rollbacks == 1
	})
	// The next change is offered again.
	f.addService("later")
	var next *discoveryv3.DiscoveryResponse
	select {
	case next = <-responses:
	case <-ctx.Done():
		t.Fatal("no push after the next change")
	}
	if names := clusterNames(t, next); !slices.Contains(names, "later") {
		t.Errorf("got %v, want the new generation", names)
	}
}

// TestDebounceCoalescesBurst: a burst of changes inside the debounce
// window is built and pushed once.
func TestDebounceCoalescesBurst(t *testing.T) {
	f := newFixture(t, 100*time.Millisecond, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := newSotW(t, ctx, f.addr, "n1", "", resourcev3.ClusterType)
	c.ack(c.recv())
	before := f.pushes.Load()
	for i := range 20 {
		f.addService("svc-" + string(rune('a'+i)))
	}
	r := c.recv()
	if n := len(clusterNames(t, r)); n != 21 {
		t.Errorf("the push has %d clusters, want all 21", n)
	}
	c.ack(r)
	// Watch for a while longer: no second push for the same burst.
	deadline := time.After(400 * time.Millisecond)
	<-deadline
	if got := f.pushes.Load() - before; got != 1 {
		t.Errorf("got %d pushes for one burst, want 1", got)
	}
}

// TestDebounceMaxBoundsDelay: a steady stream of changes still pushes by
// DebounceMax.
func TestDebounceMaxBoundsDelay(t *testing.T) {
	f := newFixture(t, 50*time.Millisecond, 200*time.Millisecond)
	before := f.pushes.Load()
	start := time.Now()
	stop := time.After(2 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for f.pushes.Load() == before {
		select {
		case <-tick.C:
			f.srv.Trigger()
		case <-stop:
			t.Fatal("no push within 2s of continuous changes")
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("first push after %v, want about DebounceMax (200ms)", d)
	}
}
