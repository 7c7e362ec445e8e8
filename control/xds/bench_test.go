package xds

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/translate"
)

var benchTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ExtensionConfigType}

// BenchmarkPushToAllACKed measures the time from a policy change (the
// Trigger a store commit makes) until every simulated sidecar has ACKed
// the new version on all five resource types, with the production
// debounce (100ms quiet, 1s max). Each client is a raw SotW ADS stream on
// loopback subscribed to CDS, EDS, LDS, RDS and ECDS; the mesh has 20
// services with 3 instances each. Reports ms/push.
//
//	go test -run '^$' -bench PushToAllACKed -benchtime 5x ./control/xds/
func BenchmarkPushToAllACKed(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run("clients="+strconv.Itoa(n), func(b *testing.B) { benchPush(b, n) })
	}
}

func benchPush(b *testing.B, clients int) {
	var (
		mu      sync.Mutex
		version = 0
	)
	var instances []membership.Instance
	var services []string
	for s := range 20 {
		svc := fmt.Sprintf("svc-%02d", s)
		services = append(services, svc)
		for i := range 3 {
			instances = append(instances, membership.Instance{Node: fmt.Sprintf("%s-%d", svc, i), Service: svc,
				Addr: fmt.Sprintf("10.0.%d.%d:15006", s, i+1), Zone: "z" + strconv.Itoa(i%2), Weight: 1, Health: membership.Healthy})
		}
	}
	pushed := make(chan string, 16)
	srv, err := New(Config{
		Build: func([]string) (*translate.Output, error) {
			mu.Lock()
			svcs := append(slices.Clone(services), "changed-"+strconv.Itoa(version))
			mu.Unlock()
			return translate.Translate(translate.Input{Services: svcs, Instances: instances})
		},
		OnPush: func(v string, _ int) {
			select {
			case pushed <- v:
			default:
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(runDone) }()
	defer func() { cancel(); gs.Stop(); <-runDone }()
	<-pushed // the first build

	var acks sync.Map // version -> *atomic.Int64 of clients with every type ACKed
	count := func(v string) *atomic.Int64 {
		c, _ := acks.LoadOrStore(v, new(atomic.Int64))
		return c.(*atomic.Int64)
	}
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	var wg sync.WaitGroup
	for i := range clients {
		if i%50 == 0 {
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, cc)
		}
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conns[len(conns)-1]).StreamAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		node := &corev3.Node{Id: "bench-" + strconv.Itoa(i)}
		for k, typ := range benchTypes {
			req := &discoveryv3.DiscoveryRequest{TypeUrl: typ}
			if k == 0 {
				req.Node = node
			}
			if err := st.Send(req); err != nil {
				b.Fatal(err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			have := map[string]string{}
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}); err != nil {
					return
				}
				have[r.GetTypeUrl()] = r.GetVersionInfo()
				all := len(have) == len(benchTypes)
				for _, v := range have {
					all = all && v == r.GetVersionInfo()
				}
				if all {
					count(r.GetVersionInfo()).Add(1)
				}
			}
		}()
	}
	// Wait until every client runs the current version.
	waitAll := func(v string) {
		for count(v).Load() < int64(clients) {
			time.Sleep(time.Millisecond)
		}
	}
	waitAll(srv.Build().Version)

	b.ResetTimer()
	var total time.Duration
	for range b.N {
		start := time.Now()
		mu.Lock()
		version++
		mu.Unlock()
		srv.Trigger()
		v := <-pushed
		waitAll(v)
		total += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/push")
	cancel()
	gs.Stop()
	wg.Wait()
}
