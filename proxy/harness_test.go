package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// testConfig returns a configuration for service with every listener on
// 127.0.0.1:0 and no drain period.
func testConfig(service, app string, proto config.Protocol) *config.Config {
	cfg := config.Default()
	cfg.Service = service
	cfg.NodeID = service + "-test"
	cfg.App = app
	cfg.AppProtocol = proto
	cfg.Listeners = config.Listeners{
		Inbound: "127.0.0.1:0", Outbound: "127.0.0.1:0", Admin: "127.0.0.1:0", Health: "127.0.0.1:0",
	}
	cfg.Gossip.Bind = config.GossipOff // tests that gossip set their own
	cfg.Drain.Period.Duration = 0
	cfg.Drain.Timeout.Duration = 5 * time.Second
	return &cfg
}

// testLogger discards logs unless MESH_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// runningSidecar is a sidecar serving in the background of a test.
type runningSidecar struct {
	*Sidecar
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve has returned
	err    error         // Serve's result, once done is closed
}

func (r *runningSidecar) addr(name string) string { return r.Addrs()[name] }

// stop shuts the sidecar down and returns Serve's result.
func (r *runningSidecar) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(15 * time.Second):
		t.Fatal("sidecar did not stop within 15s")
		return nil
	}
}

// startSidecar builds, binds and serves cfg until the test ends.
func startSidecar(t testing.TB, cfg *config.Config) *runningSidecar {
	t.Helper()
	return startSidecarWith(t, cfg)
}

// startSidecarWith is startSidecar with construction options.
func startSidecarWith(t testing.TB, cfg *config.Config, opts ...Option) *runningSidecar {
	t.Helper()
	s, err := New(cfg, testLogger(), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningSidecar{Sidecar: s, cancel: cancel, done: make(chan struct{})}
	go func() { r.err = s.Serve(ctx); close(r.done) }()
	waitFor(t, 5*time.Second, "sidecar ready", s.Ready)
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Error("sidecar did not stop within 15s")
		}
	})
	return r
}

// startApp serves h (HTTP/1.1 and h2c) on 127.0.0.1:0 until the test ends.
func startApp(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// mesh is app ← server sidecar ← client sidecar: requests sent to
// client.addr("outbound") with Host: SERVICE cross the full mesh hop.
type mesh struct {
	server, client *runningSidecar
}

// startMesh fronts app (speaking proto) with a sidecar for service and
// starts a client sidecar that routes service to it.
func startMesh(t testing.TB, service, app string, proto config.Protocol) *mesh {
	t.Helper()
	server := startSidecar(t, testConfig(service, app, proto))
	ccfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	ccfg.Upstreams = map[string]config.Upstream{service: {Endpoints: []string{server.addr("inbound")}}}
	client := startSidecar(t, ccfg)
	return &mesh{server: server, client: client}
}

// startRawApp accepts TCP connections on 127.0.0.1:0 until the test ends
// and runs handle on each (closing it after): an app that speaks bytes,
// not net/http.
func startRawApp(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// waitFor polls cond every 10ms until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// testContext is a context bounded by d that ends with the test.
func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

type urlT = url.URL

func parseURL(s string) (*url.URL, error) { return url.Parse(s) }
