package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/causeway-mesh/causeway/proxy/cluster"
	"github.com/causeway-mesh/causeway/resilience"
)

// Admin API (PRODUCT.md, Admin API). The admin listener (loopback by
// default) serves everything; the health listener serves only the
// read-only /ready, /live and /metrics.

func (s *Sidecar) healthMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", s.handleReady)
	mux.HandleFunc("GET /live", s.handleLive)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
	return mux
}

func (s *Sidecar) adminMux() *http.ServeMux {
	mux := s.healthMux()
	mux.HandleFunc("GET /server_info", s.handleServerInfo)
	mux.HandleFunc("GET /config_dump", s.handleConfigDump)
	mux.HandleFunc("GET /clusters", s.handleClusters)
	mux.HandleFunc("GET /members", s.handleMembers)
	mux.HandleFunc("GET /fencing", s.handleFencing)
	mux.HandleFunc("GET /clock", s.handleClock)
	mux.HandleFunc("GET /gossip/keys", s.handleGossipKeys)
	mux.HandleFunc("POST /gossip/keys", s.handleGossipKeys)
	// Go profiling (CPU, heap, goroutines), on the loopback admin port only.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		s.StartDrain()
		writeJSON(w, http.StatusOK, map[string]string{"state": "draining"})
	})
	mux.HandleFunc("POST /quitquitquit", func(w http.ResponseWriter, r *http.Request) {
		s.Quit()
		writeJSON(w, http.StatusOK, map[string]string{"state": "shutting down"})
	})
	return mux
}

// readiness returns "" when ready, or why not.
func (s *Sidecar) readiness() string {
	switch {
	case s.draining.Load():
		return "draining"
	case !s.serving.Load():
		return "listeners not started"
	case s.agent != nil && !s.agent.Joined():
		return "gossip join pending (retrying the seeds)"
	case s.certificatePending():
		return "waiting for the mesh certificate from the control plane"
	case s.controlPlanePending():
		return "waiting for the first configuration from the control plane"
	case s.fence.AwaitingVerdict():
		return "waiting for the first fencing verdict from the control plane"
	}
	return ""
}

func (s *Sidecar) handleReady(w http.ResponseWriter, r *http.Request) {
	if reason := s.readiness(); reason != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: " + reason + "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func (s *Sidecar) handleLive(w http.ResponseWriter, r *http.Request) {
	_, _ = w.Write([]byte("live\n"))
}

func (s *Sidecar) state() string {
	switch {
	case s.draining.Load():
		return "DRAINING"
	case s.serving.Load():
		return "LIVE"
	}
	return "INITIALIZING"
}

// buildVersion is the module version the binary was built from.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func (s *Sidecar) handleServerInfo(w http.ResponseWriter, r *http.Request) {
	cfg := s.cfg.Load()
	writeJSON(w, http.StatusOK, map[string]any{
		"service":       cfg.Service,
		"nodeID":        cfg.NodeID,
		"version":       buildVersion(),
		"goVersion":     runtime.Version(),
		"state":         s.state(),
		"uptimeSeconds": int64(time.Since(s.started).Seconds()),
		"listeners":     s.Addrs(),
	})
}

// configPart is one independently versioned part of the configuration.
type configPart struct {
	Version string `json:"version"`
	Source  string `json:"source"`
	Config  any    `json:"config"`
}

func partVersion(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

func (s *Sidecar) handleConfigDump(w http.ResponseWriter, r *http.Request) {
	cfg := *s.cfg.Load()
	upstreams, tcp := cfg.Upstreams, cfg.TCPOutbound
	cfg.Upstreams, cfg.TCPOutbound = nil, nil
	source := "flags"
	if s.file != "" {
		source = "file:" + s.file + "+flags"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"generation":      s.generation.Load(),
		"lastReloadError": s.lastReloadErr.Load(),
		"loadedAt":        s.loadedAt.Load().(time.Time).UTC().Format(time.RFC3339Nano),
		"bootstrap":       configPart{Version: partVersion(cfg), Source: source, Config: cfg},
		"static_upstreams": configPart{Version: partVersion(upstreams), Source: source,
			Config: map[string]any{"upstreams": upstreams, "tcpOutbound": tcp}},
		"control_plane": s.xdsView(),
	})
}

// clusterView is one service in /clusters.
type clusterView struct {
	Name         string `json:"name"`
	LoadBalancer string `json:"loadBalancer"`
	Endpoints    any    `json:"endpoints"`
}

// endpointView is one endpoint in /clusters: balancer figures, and the
// circuit breaker and outlier-ejection state (absent before any request).
type endpointView struct {
	cluster.Stats
	Resilience *resilience.EndpointSnapshot `json:"resilience,omitempty"`
}

func (s *Sidecar) handleClusters(w http.ResponseWriter, r *http.Request) {
	t := s.table.Load()
	health := s.endpoints.Snapshot()
	out := []clusterView{}
	for _, name := range t.Names() {
		svc := t.Lookup(name)
		byAddr := map[string]*resilience.EndpointSnapshot{}
		for i, h := range health[name] {
			byAddr[h.Address] = &health[name][i]
		}
		eps := make([]any, 0, len(svc.Endpoints))
		for _, e := range svc.Endpoints {
			eps = append(eps, endpointView{Stats: e.Stats(), Resilience: byAddr[e.Addr]})
		}
		out = append(out, clusterView{Name: name, LoadBalancer: string(svc.Policy), Endpoints: eps})
	}
	writeJSON(w, http.StatusOK, map[string]any{"clusters": out})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
