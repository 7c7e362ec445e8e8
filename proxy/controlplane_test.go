package proxy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/causeway-mesh/causeway/control/apiclient"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/plane"
	"github.com/causeway-mesh/causeway/control/policy"
	"github.com/causeway-mesh/causeway/control/translate"
	"github.com/causeway-mesh/causeway/control/xds"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// namedApp answers every request with its name.
func namedApp(t *testing.T, name string) string {
	return startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, name)
	}))
}

// cpConfig is a sidecar configuration that takes its routes and endpoints
// from the control plane at xdsAddr (gossip off).
func cpConfig(service, app, xdsAddr string) *config.Config {
	cfg := testConfig(service, app, config.ProtocolHTTP1)
	cfg.ControlPlane = xdsAddr
	return cfg
}

// runningPlane is a control plane serving until stopped.
type runningPlane struct {
	*plane.Plane
	cancel context.CancelFunc
	done   chan struct{}
}

func startPlane(t *testing.T, dataDir, xdsAddr, apiAddr string, mesh membership.Source) *runningPlane {
	t.Helper()
	cfg := plane.Default()
	cfg.DataDir, cfg.XDS, cfg.API, cfg.Gossip = dataDir, xdsAddr, apiAddr, plane.GossipOff
	cfg.Debounce.Duration, cfg.DebounceMax.Duration = 20*time.Millisecond, 200*time.Millisecond
	p, err := plane.New(cfg, slog.New(slog.DiscardHandler), plane.WithMembership(mesh))
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rp := &runningPlane{Plane: p, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(rp.done); _ = p.Run(ctx) }()
	t.Cleanup(rp.stop)
	return rp
}

func (p *runningPlane) stop() {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
	}
}

// cpGet sends GET Host: host through the sidecar's outbound port.
func cpGet(t *testing.T, outbound, host string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(testContext(t, 5*time.Second), "GET", "http://"+outbound+"/stock", nil)
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h1Client().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// runningVersion is the control-plane version a sidecar has applied.
func runningVersion(s *runningSidecar) string {
	if m := s.model.Load(); m != nil {
		return m.Version
	}
	return ""
}

// TestControlPlanePolicyReachesEverySidecar: sidecars take routes and
// endpoints from the control plane; a canary HTTPRoute applied through
// the API takes effect in every sidecar; the control plane is stopped and
// restarted (same data dir and port) while a load runs, with no failed
// request, and the policy survives the restart.
func TestControlPlanePolicyReachesEverySidecar(t *testing.T) {
	dataDir := t.TempDir()
	mesh := membership.NewStatic(nil)
	cp := startPlane(t, dataDir, "127.0.0.1:0", "127.0.0.1:0", mesh)
	xdsAddr, apiAddr := cp.XDSAddr(), cp.APIAddr()

	stable := startSidecar(t, cpConfig("inventory", namedApp(t, "stable"), xdsAddr))
	canary := startSidecar(t, cpConfig("inventory-canary", namedApp(t, "canary"), xdsAddr))
	web := startSidecar(t, cpConfig("web", "127.0.0.1:1", xdsAddr))
	mesh.Set([]membership.Instance{
		{Node: "inventory-1", Service: "inventory", Addr: stable.addr("inbound"), Weight: 1, Health: membership.Healthy},
		{Node: "inventory-canary-1", Service: "inventory-canary", Addr: canary.addr("inbound"), Weight: 1, Health: membership.Healthy},
	})
	cp.XDS().Trigger()
	out := web.addr("outbound")
	waitFor(t, 10*time.Second, "web to reach inventory through the control plane's endpoints", func() bool {
		code, body := cpGet(t, out, "inventory", nil)
		return code == 200 && body == "stable"
	})

	// Apply the canary route: callers that ask for it get the canary.
	doc, err := os.ReadFile(filepath.Join("..", "examples", "policies", "inventory-canary.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := policy.Decode(doc)
	if err != nil {
		t.Fatal(err)
	}
	client := &apiclient.Client{Server: "http://" + apiAddr, Token: cp.Token()}
	if _, _, err := client.Apply(testContext(t, 5*time.Second), res); err != nil {
		t.Fatalf("apply: %v", err)
	}
	waitFor(t, 10*time.Second, "the canary route in effect", func() bool {
		code, body := cpGet(t, out, "inventory", map[string]string{"x-canary": "always"})
		return code == 200 && body == "canary"
	})
	want := cp.XDS().Build().Version
	waitFor(t, 10*time.Second, "every sidecar on version "+want, func() bool {
		for _, s := range []*runningSidecar{stable, canary, web} {
			if runningVersion(s) != want {
				return false
			}
		}
		return true
	})
	// The split sends some of the rest to the canary too (90/10).
	seen := map[string]int{}
	for range 200 {
		_, body := cpGet(t, out, "inventory", nil)
		seen[body]++
	}
	if seen["stable"] < 140 || seen["canary"] == 0 || seen["stable"]+seen["canary"] != 200 {
		t.Fatalf("90/10 split over 200 requests gave %v", seen)
	}

	// Restart the control plane under load: sidecars keep their last
	// configuration, so no request fails.
	var sent, failed atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body := cpGet(t, out, "inventory", map[string]string{"x-canary": "always"})
				sent.Add(1)
				if code != 200 || body != "canary" {
					failed.Add(1)
					lastErr.Store(body)
				}
				time.Sleep(2 * time.Millisecond) // pace the load
			}
		})
	}
	waitFor(t, 5*time.Second, "load running", func() bool { return sent.Load() > 50 })
	cp.stop()
	waitFor(t, 10*time.Second, "sidecars to notice the control plane is gone", func() bool {
		return !web.xds.Status().Connected
	})
	before := sent.Load()
	waitFor(t, 5*time.Second, "requests served while the control plane is down", func() bool { return sent.Load() > before+50 })
	cp2 := startPlane(t, dataDir, xdsAddr, apiAddr, mesh)
	waitFor(t, 30*time.Second, "sidecars back on the restarted control plane", func() bool {
		return web.xds.Status().Connected && runningVersion(web) == cp2.XDS().Build().Version
	})
	close(stop)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d requests failed across the restart (last: %v)", f, sent.Load(), lastErr.Load())
	}
	t.Logf("%d requests across a control-plane restart, none failed", sent.Load())
	got, err := (&apiclient.Client{Server: "http://" + apiAddr, Token: cp2.Token()}).Get(testContext(t, 5*time.Second), policy.KindHTTPRoute, "default", "inventory-canary")
	if err != nil || got == nil {
		t.Fatalf("the policy did not survive the restart: %v", err)
	}
	if code, body := cpGet(t, out, "inventory", map[string]string{"x-canary": "always"}); code != 200 || body != "canary" {
		t.Fatalf("after the restart: %d %q", code, body)
	}
}

// TestControlPlaneNACK: a configuration the sidecar cannot run (here an
// extension key it does not know, as from a newer control plane) is
// rejected; the control plane shows the proxy NACKED with the error, and
// the sidecar keeps serving its previous configuration.
func TestControlPlaneNACK(t *testing.T) {
	app := namedApp(t, "stable")
	var bad atomic.Bool
	var inboundAddr atomic.Value
	inboundAddr.Store("")
	build := func(services []string) (*translate.Output, error) {
		var inst []membership.Instance
		if a := inboundAddr.Load().(string); a != "" {
			inst = []membership.Instance{{Node: "inventory-1", Service: "inventory", Addr: a, Weight: 1, Health: membership.Healthy}}
		}
		out, err := translate.Translate(translate.Input{Instances: inst, Services: append(services, "inventory")})
		if err != nil || !bad.Load() {
			return out, err
		}
		var st structpb.Struct
		if err := out.Extension.TypedConfig.UnmarshalTo(&st); err != nil {
			return nil, err
		}
		st.Fields["futureFeature"] = structpb.NewBoolValue(true)
		a, err := anypb.New(&st)
		if err != nil {
			return nil, err
		}
		out.Extension.TypedConfig = a
		return out, nil
	}
	xs, err := xds.New(xds.Config{Build: build, Debounce: 10 * time.Millisecond, DebounceMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = xs.Run(ctx) }()
	gs := grpc.NewServer()
	xs.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	inv := startSidecar(t, cpConfig("inventory", app, lis.Addr().String()))
	inboundAddr.Store(inv.addr("inbound"))
	web := startSidecar(t, cpConfig("web", "127.0.0.1:1", lis.Addr().String()))
	xs.Trigger()
	waitFor(t, 10*time.Second, "web to reach inventory", func() bool {
		code, body := cpGet(t, web.addr("outbound"), "inventory", nil)
		return code == 200 && body == "stable"
	})
	// Settle: every change so far (both sidecars connecting) is applied.
	waitFor(t, 10*time.Second, "web on the latest good build", func() bool {
		st, ok := xs.Proxy(web.cfg.Load().NodeID)
		return ok && st.State == xds.Synced && runningVersion(web) == xs.Build().Version
	})
	good := runningVersion(web)

	bad.Store(true)
	xs.Trigger()
	waitFor(t, 10*time.Second, "the control plane to see web's NACK", func() bool {
		st, ok := xs.Proxy(web.cfg.Load().NodeID)
		return ok && st.State == xds.Nacked
	})
	st, _ := xs.Proxy(web.cfg.Load().NodeID)
	if b, _ := json.Marshal(st); !strings.Contains(string(b), "futureFeature") {
		t.Errorf("NACKED status does not carry the sidecar's error: %s", b)
	}
	// The control plane rolls the proxy back to the build it accepted,
	// under a new version (GOOD-rbN); either way the same configuration.
	if v := runningVersion(web); v != good && !strings.HasPrefix(v, good+"-rb") {
		t.Fatalf("web runs %q after the NACK, want the previous %q (or its rollback)", v, good)
	}
	if s := web.xds.Status(); s.LastNACK == nil || !strings.Contains(s.LastNACK.Error, "futureFeature") {
		t.Fatalf("web's xDS status shows no NACK: %+v", s)
	}
	if code, body := cpGet(t, web.addr("outbound"), "inventory", nil); code != 200 || body != "stable" {
		t.Fatalf("after the NACK: %d %q", code, body)
	}
	// A good configuration is accepted again.
	bad.Store(false)
	xs.Trigger()
	waitFor(t, 10*time.Second, "web to ACK the next good version", func() bool {
		st, ok := xs.Proxy(web.cfg.Load().NodeID)
		return ok && st.State == xds.Synced && runningVersion(web) != good
	})
}
