package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// gossipConfig is testConfig with gossip on a free loopback port.
func gossipConfig(service, node, app string, join ...string) *config.Config {
	cfg := testConfig(service, app, config.ProtocolHTTP1)
	cfg.NodeID = node
	cfg.Gossip.Bind = "127.0.0.1:0"
	cfg.Gossip.Join = join
	cfg.Gossip.ReconnectInterval.Duration = 500 * time.Millisecond
	return cfg
}

func endpointsOf(s *Sidecar, service string) int {
	if svc := s.table.Load().Lookup(service); svc != nil {
		return len(svc.Endpoints)
	}
	return 0
}

// TestGossipDiscoveryRoutesAndDrains: sidecars find each other through
// gossip; the client spreads requests over every instance; an instance
// that drains is taken out of routing by its own not-ready gossip before
// it stops, so callers see no failure.
func TestGossipDiscoveryRoutesAndDrains(t *testing.T) {
	seed := startSidecar(t, gossipConfig("echo", "echo-1", startApp(t, echoserver.Handler("echo-1"))))
	seedAddr := seed.agent.Addr()
	cfg2 := gossipConfig("echo", "echo-2", startApp(t, echoserver.Handler("echo-2")), seedAddr)
	cfg2.Drain.Period.Duration = 700 * time.Millisecond
	s2 := startSidecar(t, cfg2)
	startSidecar(t, gossipConfig("echo", "echo-3", startApp(t, echoserver.Handler("echo-3")), seedAddr))
	client := startSidecar(t, gossipConfig("client", "client-1", "127.0.0.1:1", seedAddr))
	waitFor(t, 10*time.Second, "3 echo endpoints at the client", func() bool { return endpointsOf(client.Sidecar, "echo") == 3 })

	out := "http://" + client.addr("outbound") + "/"
	c := h1Client()
	served := map[string]int{}
	for range 60 {
		resp, _ := get(t, c, out, "echo")
		served[resp.Header.Get(echoserver.InstanceHeader)]++
	}
	if len(served) != 3 {
		t.Fatalf("served by %v, want all 3 instances", served)
	}

	// /members at the client lists all four, alive.
	_, body := get(t, c, "http://"+client.addr("admin")+"/members", "")
	var mv struct {
		Alive   int
		Members []memberView
	}
	if err := json.Unmarshal(body, &mv); err != nil || mv.Alive != 4 || len(mv.Members) != 4 {
		t.Errorf("/members: %s", body)
	}

	// Drain echo-2 under load: no request may fail.
	var failed, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", out, nil)
				req.Host = "echo"
				sent.Add(1)
				resp, err := c.Do(req)
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("status %d (%s)", resp.StatusCode, resp.Header.Get(HeaderError))
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, "load", func() bool { return sent.Load() > 50 })
	start := time.Now()
	if err := s2.stop(t); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "echo-2 out of the client's table", func() bool { return endpointsOf(client.Sidecar, "echo") == 2 })
	close(stop)
	wg.Wait()
	t.Logf("drained echo-2 in %v; %d requests, %d failed", time.Since(start).Round(time.Millisecond), sent.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during the drain, want 0", failed.Load())
	}
}
